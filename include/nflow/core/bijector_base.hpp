#pragma once
/// @file
/// @brief BijectorBase: the CRTP base that turns a bijector's minimum API into the full one.
///
/// Minimum API, written by a derived class `D` (all `const`, all templates over the input type):
/// | hook | returns |
/// |---|---|
/// | `Index dim() const` | the dimension |
/// | `forward_impl(x, ctx)` | `ValueAndLogDet` of x → z (ctx is a context batch or NoContext) |
/// | `inverse_impl(z, ctx)` | `ValueAndLogDet` of z → x |
/// | `forward_vjp_impl(x, gv, gl, gp, ctx [, gc])` (optional) | ∂L/∂x; adds ∂L/∂θ into `gp` |
/// | `inverse_vjp_impl(z, gv, gl, gp, ctx [, gc])` (optional) | ∂L/∂z; adds ∂L/∂θ into `gp` |
/// | `static parameters_impl(self, f)` (optional) | calls `f(name, tensor)` per trainable tensor |
/// | `update_parameters_impl(write)` (optional) | runs `write()`, then validates and refreshes |
/// | `context_dim()` (optional) | rows of the context; defaults to `D::ContextDim` (or 0) |
///
/// The parameter hook is one static member template, `template <typename Self, typename F> static
/// void parameters_impl(Self& self, F&& f)`, where `Self` is `D` or `const D`: it calls
/// `f("name", tensor)` for each trainable tensor in a fixed order (tensor: a ParameterMatrix or
/// fixed-size column lvalue, or an Eigen::Ref). Without it a bijector has no parameters. From it
/// the base derives `parameter_count()` and both `visit_parameters(f)`, so they cannot disagree;
/// a derived class that writes its own visit_parameters or parameter_count fails a static_assert.
/// A bijector with caches or invariants over its parameters (ActNorm, LULinear) also writes
/// `template <typename Write> void update_parameters_impl(Write&& write)`: it runs `write()` (the
/// non-const visit), then validates and refreshes, restoring the old values and rethrowing if the
/// new ones are rejected.
///
/// Deduced API, supplied here: `forward_and_log_det`, `inverse_and_log_det`, `forward`,
/// `inverse`, `forward_log_det`, `inverse_log_det`, `forward_vjp`, `inverse_vjp`, each with an
/// optional trailing context batch, and `parameter_count()`, `visit_parameters(f)`. Every deduced call checks shapes first and throws
/// nflow::ShapeError naming expected and actual shapes; the hooks may then assume them.
///
/// The vector-Jacobian products implement reverse mode for a scalar loss L that depends on the
/// output `value` and on `log_det`: given gv = ∂L/∂value (Dim × N) and gl = ∂L/∂log_det (1 × N),
/// they return ∂L/∂input and *add* ∂L/∂θ into `gp`, a flat vector laid out in the order of
/// `visit_parameters` (each tensor column-major). See docs/gradients.md.
///
/// Gradients with respect to the context: a conditional bijector's vjp hooks (and
/// `taped_vjp_impl`) may take a trailing `ContextGradient<Scalar>* gc = nullptr`; when it is not
/// null they *add* ∂L/∂c (context_dim × N) into it. The deduced vjps take the same optional
/// trailing `grad_context` pointer after the context, check its shape, and pass it to a hook that
/// takes it (a hook without it is called as before; asking such a bijector for ∂L/∂c throws
/// nflow::UnsupportedError). A null pointer costs nothing: it is the same instantiation.

#include <concepts>
#include <type_traits>
#include <utility>

#include "nflow/core/errors.hpp"
#include "nflow/core/parameters.hpp"
#include "nflow/core/tiling.hpp"
#include "nflow/core/traits.hpp"
#include "nflow/core/types.hpp"

namespace nflow {

/// A context argument: either nflow::NoContext or an Eigen matrix expression (ContextDim × N).
template <typename C>
concept ContextArg = is_no_context_v<C> ||
    std::derived_from<std::remove_cvref_t<C>, Eigen::MatrixBase<std::remove_cvref_t<C>>>;

namespace detail {
template <typename D, typename X, typename C>
concept HasForwardImpl = requires(const D& d, const X& x, const C& c) {
  d.forward_impl(x, c);
};
template <typename D, typename X, typename C>
concept HasInverseImpl = requires(const D& d, const X& x, const C& c) {
  d.inverse_impl(x, c);
};
/// The input's Scalar and compile-time rows fit bijector D (see CheckCallTypes).
template <typename D, typename X>
concept InputTypeFits = std::is_same_v<typename X::Scalar, typename D::Scalar> &&
    (D::Dim == Dynamic || X::RowsAtCompileTime == Dynamic || X::RowsAtCompileTime == D::Dim);

/// The compile-time checks of a call's argument types. Every deduced call makes them first, so a
/// float batch given to a double bijector reports this sentence before any error in the hooks.
template <typename D, typename X, typename C>
struct CheckCallTypes {
  static_assert(std::is_same_v<typename X::Scalar, typename D::Scalar>,
                "nflow: the input's Scalar must match the bijector's Scalar (float or double); "
                "convert with .template cast<Scalar>() first");
  static_assert(D::Dim == Dynamic || X::RowsAtCompileTime == Dynamic ||
                    X::RowsAtCompileTime == D::Dim,
                "nflow: the input must have Dim rows (one sample per column)");
  static constexpr bool context_fits = [] {
    if constexpr (is_no_context_v<C>) {
      return true;
    } else {
      return std::is_same_v<typename C::Scalar, typename D::Scalar>;
    }
  }();
  static_assert(context_fits, "nflow: the context's Scalar must match the bijector's Scalar");
  static constexpr bool ok = true;
};

template <typename D, typename X, typename GV, typename GL, typename C>
concept HasForwardVjpImpl = requires(const D& d, const X& x, const GV& gv, const GL& gl,
                                     Eigen::Ref<Vector<typename D::Scalar>> gp, const C& c) {
  d.forward_vjp_impl(x, gv, gl, gp, c);
};
template <typename D, typename X, typename GV, typename GL, typename C>
concept HasInverseVjpImpl = requires(const D& d, const X& x, const GV& gv, const GL& gl,
                                     Eigen::Ref<Vector<typename D::Scalar>> gp, const C& c) {
  d.inverse_vjp_impl(x, gv, gl, gp, c);
};
/// `T`, made dependent on `Ds`: a member template's constraint that names the CRTP class through
/// this is checked only when the member is used (clang 14 substitutes non-dependent parts of a
/// member's requires-clause when the class template is instantiated, when Derived is incomplete).
template <typename T, typename... Ds>
struct delay {
  using type = T;
};
template <typename T, typename... Ds>
using delay_t = typename delay<T, Ds...>::type;

template <typename D, typename X, typename C>
using ContextRefT = std::conditional_t<
    is_no_context_v<C>,
    std::conditional_t<(context_dim_v<D> > 0),
                       Eigen::Matrix<typename D::Scalar, context_dim_v<D>, X::ColsAtCompileTime>,
                       NoContext>,
    C>;
}  // namespace detail

namespace detail {
/// A hook's `{value, log_det}` as the declared result type R (moved through when it is R, as the
/// built-in hooks' are; member by member when a user's hook returns another such struct).
template <typename R, typename H>
R as_result(H&& h) {
  if constexpr (std::is_same_v<std::remove_cvref_t<H>, R>) {
    return std::forward<H>(h);
  } else {
    return R{std::move(h.value), std::move(h.log_det)};
  }
}

/// The UnsupportedError of a conditional bijector asked for ∂L/∂c by a hook that cannot give it.
inline void no_context_gradient(const char* where) {
  throw UnsupportedError(std::string("nflow: ") + where +
                         ": this bijector does not compute the gradient with respect to its "
                         "context (its vjp takes no grad_context; nflow::ContinuousFlow is one, "
                         "see docs/gradients.md)");
}

/// Calls a vjp hook (forward_vjp_impl, or inverse_vjp_impl when Inverse) with the context
/// gradient sink `gc` when the hook takes one, without it otherwise (then gc must be null).
template <bool Inverse, typename D, typename X, typename GV, typename GL, typename C, typename S>
auto call_vjp_hook(const D& d, const X& x, const GV& gv, const GL& gl, Eigen::Ref<Vector<S>> gp,
                   const C& ctx, ContextGradient<S>* gc) {
  if constexpr (Inverse) {
    if constexpr (requires { d.inverse_vjp_impl(x, gv, gl, gp, ctx, gc); }) {
      return d.inverse_vjp_impl(x, gv, gl, gp, ctx, gc);
    } else {
      if (gc != nullptr) no_context_gradient("inverse_vjp");
      return d.inverse_vjp_impl(x, gv, gl, gp, ctx);
    }
  } else {
    if constexpr (requires { d.forward_vjp_impl(x, gv, gl, gp, ctx, gc); }) {
      return d.forward_vjp_impl(x, gv, gl, gp, ctx, gc);
    } else {
      if (gc != nullptr) no_context_gradient("forward_vjp");
      return d.forward_vjp_impl(x, gv, gl, gp, ctx);
    }
  }
}
}  // namespace detail

/// @brief The default tape of a bijector without its own: the input of the recorded call (the
/// backward pass then runs the bijector's forward_vjp from it).
template <typename Scalar, int Dim>
struct InputTape {
  Batch<Scalar, Dim, Dynamic> input;
  /// The number of samples recorded.
  Index cols() const { return input.cols(); }
};

namespace detail {
template <typename B>
struct TapeOf {
  using type = InputTape<typename B::Scalar, B::Dim>;
};
template <typename B>
requires requires { typename B::Tape; }
struct TapeOf<B> {
  using type = typename B::Tape;
};
template <typename B>
concept HasTapeHooks = requires {
  typename B::Tape;
};

/// x as a Batch<S, Dim, Dynamic>: a reference when it is one, a copy otherwise.
template <typename S, int Dim, typename X>
decltype(auto) as_batch(const Eigen::MatrixBase<X>& x) {
  if constexpr (std::is_same_v<X, Batch<S, Dim, Dynamic>>) {
    return (x.derived());
  } else {
    return Batch<S, Dim, Dynamic>(x);
  }
}
}  // namespace detail

/// @brief What a bijector of type B records in forward_recorded() for forward_vjp_recorded():
/// `B::Tape` when B declares one (coupling layers: the conditioner's activations), otherwise
/// nflow::InputTape (the input).
template <typename B>
using tape_t = typename detail::TapeOf<std::remove_cvref_t<B>>::type;

template <typename Derived>
class BijectorBase {
 public:
  // ---- forward: data x → latent z ----------------------------------------------------------
  /// (Available when the derived class writes forward_impl for this input and context.)
  template <typename X, ContextArg C = NoContext>
  requires(!detail::InputTypeFits<detail::delay_t<Derived, X>, X> ||
           detail::HasForwardImpl<detail::delay_t<Derived, X>, X,
                                  detail::ContextRefT<detail::delay_t<Derived, X>, X, C>>)
      detail::ResultOf<detail::delay_t<Derived, X>, X> forward_and_log_det(
          const Eigen::MatrixBase<X>& x, const C& context = C{})
  const {
    static_assert(detail::CheckCallTypes<Derived, X, C>::ok);
    check_call("forward_and_log_det", x, context);
    if constexpr (X::ColsAtCompileTime == Dynamic) {
      if (detail::tiles_batch(derived().splits_batches(), x.cols()))
        return detail::as_result<detail::ResultOf<Derived, X>>(tiled<false>(x, context));
    }
    return detail::as_result<detail::ResultOf<Derived, X>>(
        derived().forward_impl(x.derived(), context_or_placeholder(x, context)));
  }
  template <typename X, ContextArg C = NoContext>
  detail::BatchOf<detail::delay_t<Derived, X>, X> forward(const Eigen::MatrixBase<X>& x,
                                                          const C& context = C{}) const {
    return forward_and_log_det(x, context).value;
  }
  template <typename X, ContextArg C = NoContext>
  PerSampleFor<typename detail::delay_t<Derived, X>::Scalar, X> forward_log_det(
      const Eigen::MatrixBase<X>& x, const C& context = C{}) const {
    return forward_and_log_det(x, context).log_det;
  }

  // ---- inverse: latent z → data x ----------------------------------------------------------
  /// (Available when the derived class writes inverse_impl for this input and context.)
  template <typename Z, ContextArg C = NoContext>
  requires(!detail::InputTypeFits<detail::delay_t<Derived, Z>, Z> ||
           detail::HasInverseImpl<detail::delay_t<Derived, Z>, Z,
                                  detail::ContextRefT<detail::delay_t<Derived, Z>, Z, C>>)
      detail::ResultOf<detail::delay_t<Derived, Z>, Z> inverse_and_log_det(
          const Eigen::MatrixBase<Z>& z, const C& context = C{})
  const {
    static_assert(detail::CheckCallTypes<Derived, Z, C>::ok);
    check_call("inverse_and_log_det", z, context);
    if constexpr (Z::ColsAtCompileTime == Dynamic) {
      if (detail::tiles_batch(derived().splits_batches(), z.cols()))
        return detail::as_result<detail::ResultOf<Derived, Z>>(tiled<true>(z, context));
    }
    return detail::as_result<detail::ResultOf<Derived, Z>>(
        derived().inverse_impl(z.derived(), context_or_placeholder(z, context)));
  }
  template <typename Z, ContextArg C = NoContext>
  detail::BatchOf<detail::delay_t<Derived, Z>, Z> inverse(const Eigen::MatrixBase<Z>& z,
                                                          const C& context = C{}) const {
    return inverse_and_log_det(z, context).value;
  }
  template <typename Z, ContextArg C = NoContext>
  PerSampleFor<typename detail::delay_t<Derived, Z>::Scalar, Z> inverse_log_det(
      const Eigen::MatrixBase<Z>& z, const C& context = C{}) const {
    return inverse_and_log_det(z, context).log_det;
  }

  // ---- reverse-mode gradients ----------------------------------------------------------------
  /// ∂L/∂x for L(forward_and_log_det(x)); adds ∂L/∂θ into `grad_params`, and, when
  /// `grad_context` is given (with a context), ∂L/∂c into it (context_dim × N, sized by the
  /// caller).
  /// @throws nflow::ShapeError on a shape mismatch, or a grad_context given to an unconditional
  ///   bijector; nflow::UnsupportedError if the bijector cannot differentiate its context.
  template <typename X, typename GV, typename GL, typename GP, ContextArg C = NoContext>
  detail::BatchOf<detail::delay_t<Derived, X>, X> forward_vjp(
      const Eigen::MatrixBase<X>& x, const Eigen::MatrixBase<GV>& grad_value,
      const Eigen::MatrixBase<GL>& grad_log_det, GP&& grad_params, const C& context = C{},
      ContextGradient<typename detail::delay_t<Derived, X>::Scalar>* grad_context = nullptr) const
      requires detail::HasForwardVjpImpl<detail::delay_t<Derived, X>, X, GV, GL,
                                         detail::ContextRefT<detail::delay_t<Derived, X>, X, C>> {
    check_context_gradient("forward_vjp", grad_context);
    check_vjp("forward_vjp", x, grad_value, grad_log_det, grad_params, context);
    check_context_gradient_shape("forward_vjp", grad_context, x.cols());
    Eigen::Ref<Vector<typename Derived::Scalar>> gp(grad_params);
    return detail::call_vjp_hook<false>(derived(), x.derived(), grad_value.derived(),
                                        grad_log_det.derived(), gp,
                                        context_or_placeholder(x, context), grad_context);
  }
  /// ∂L/∂z for L(inverse_and_log_det(z)); adds ∂L/∂θ into `grad_params` (and ∂L/∂c into
  /// `grad_context`, as forward_vjp).
  template <typename Z, typename GV, typename GL, typename GP, ContextArg C = NoContext>
  detail::BatchOf<detail::delay_t<Derived, Z>, Z> inverse_vjp(
      const Eigen::MatrixBase<Z>& z, const Eigen::MatrixBase<GV>& grad_value,
      const Eigen::MatrixBase<GL>& grad_log_det, GP&& grad_params, const C& context = C{},
      ContextGradient<typename detail::delay_t<Derived, Z>::Scalar>* grad_context = nullptr) const
      requires detail::HasInverseVjpImpl<detail::delay_t<Derived, Z>, Z, GV, GL,
                                         detail::ContextRefT<detail::delay_t<Derived, Z>, Z, C>> {
    check_context_gradient("inverse_vjp", grad_context);
    check_vjp("inverse_vjp", z, grad_value, grad_log_det, grad_params, context);
    check_context_gradient_shape("inverse_vjp", grad_context, z.cols());
    Eigen::Ref<Vector<typename Derived::Scalar>> gp(grad_params);
    return detail::call_vjp_hook<true>(derived(), z.derived(), grad_value.derived(),
                                       grad_log_det.derived(), gp,
                                       context_or_placeholder(z, context), grad_context);
  }

  // ---- recorded forward pass and its vjp (training) ------------------------------------------
  /// @brief forward_and_log_det(x) of a batch that also records in `tape` (a nflow::tape_t of
  /// this bijector) what forward_vjp_recorded() needs. Never split into tiles. Same checks and
  /// exceptions as forward_and_log_det. A tape holds values, not references (it stays valid when
  /// x goes away) and describes the parameters as they were: change them and record again.
  template <typename X, typename T, ContextArg C = NoContext>
  detail::ResultOf<detail::delay_t<Derived, X>, Batch<double, Dynamic, Dynamic>> forward_recorded(
      const Eigen::MatrixBase<X>& x, T& tape, const C& context = C{}) const {
    using S = typename Derived::Scalar;
    static_assert(
        std::is_same_v<T, tape_t<Derived>>,
        "nflow: forward_recorded(x, tape): the tape must be a nflow::tape_t<B> of this bijector");
    check_call("forward_recorded", x, context);
    if constexpr (detail::HasTapeHooks<Derived>) {
      const auto& xb = detail::as_batch<S, Derived::Dim>(x);
      return derived().record_forward_impl(xb, context_or_placeholder(xb, context), tape);
    } else {
      tape.input = x;
      return derived().forward_impl(tape.input, context_or_placeholder(tape.input, context));
    }
  }

  /// @brief forward_vjp() at the batch a forward_recorded() call recorded into `tape`, reading
  /// what was recorded instead of running the forward pass again. The context must be the one
  /// given to forward_recorded(). Returns ∂L/∂x; adds ∂L/∂θ into `grad_params` (and ∂L/∂c into
  /// `grad_context` when given, as forward_vjp).
  /// @throws nflow::ShapeError if grad_value, grad_log_det, grad_params, the context or
  ///   grad_context do not match the bijector and the tape's batch.
  template <typename T, typename GV, typename GL, typename GP, ContextArg C = NoContext>
  detail::BatchOf<detail::delay_t<Derived, T>, Batch<double, Dynamic, Dynamic>>
  forward_vjp_recorded(
      const T& tape, const Eigen::MatrixBase<GV>& grad_value,
      const Eigen::MatrixBase<GL>& grad_log_det, GP&& grad_params, const C& context = C{},
      ContextGradient<typename detail::delay_t<Derived, T>::Scalar>* grad_context = nullptr) const {
    static_assert(std::is_same_v<T, tape_t<Derived>>,
                  "nflow: forward_vjp_recorded(tape, ...): the tape must be a nflow::tape_t<B> of "
                  "this bijector");
    check_context_gradient("forward_vjp_recorded", grad_context);
    check_vjp("forward_vjp_recorded", grad_value, grad_value, grad_log_det, grad_params, context);
    detail::check_cols("forward_vjp_recorded", "grad_value", tape.cols(), grad_value.rows(),
                       grad_value.cols());
    check_context_gradient_shape("forward_vjp_recorded", grad_context, grad_value.cols());
    Eigen::Ref<Vector<typename Derived::Scalar>> gp(grad_params);
    const auto ctx = context_or_placeholder(grad_value, context);
    if constexpr (detail::HasTapeHooks<Derived>) {
      if constexpr (requires {
                      derived().taped_vjp_impl(tape, grad_value.derived(), grad_log_det.derived(),
                                               gp, ctx, grad_context);
                    }) {
        return derived().taped_vjp_impl(tape, grad_value.derived(), grad_log_det.derived(), gp, ctx,
                                        grad_context);
      } else {
        if (grad_context != nullptr) detail::no_context_gradient("forward_vjp_recorded");
        return derived().taped_vjp_impl(tape, grad_value.derived(), grad_log_det.derived(), gp,
                                        ctx);
      }
    } else {
      static_assert(detail::HasForwardVjpImpl<Derived, decltype(tape.input), GV, GL,
                                              std::remove_cvref_t<decltype(ctx)>>,
                    "nflow: forward_vjp_recorded: this bijector has no forward vjp (it is not "
                    "ForwardDifferentiable)");
      return detail::call_vjp_hook<false>(derived(), tape.input, grad_value.derived(),
                                          grad_log_det.derived(), gp, ctx, grad_context);
    }
  }

  /// @brief A batch's forward pass and its vector-Jacobian product in one call, for a loss L
  /// that depends on the output: computes (z, log_det) = forward_and_log_det(x) (recording), calls
  /// `seed(z, log_det, grad_value, grad_log_det)`, which writes ∂L/∂z (Dim × N) into
  /// `grad_value` and ∂L/∂log_det (1 × N) into `grad_log_det` (both sized, zero-filled), then
  /// returns ∂L/∂x and adds ∂L/∂θ into `grad_params`. Each layer's forward pass runs once
  /// (forward_and_log_det followed by forward_vjp runs coupling conditioners three times).
  /// This is what train::nll uses. Exceptions: as forward_and_log_det and forward_vjp.
  template <typename X, typename Seed, typename GP, ContextArg C = NoContext>
  detail::BatchOf<detail::delay_t<Derived, X>, Batch<double, Dynamic, Dynamic>> forward_and_vjp(
      const Eigen::MatrixBase<X>& x, Seed&& seed, GP&& grad_params, const C& context = C{}) const {
    tape_t<Derived> tape;
    return forward_and_vjp(x, std::forward<Seed>(seed), std::forward<GP>(grad_params), context,
                           tape);
  }
  /// @brief forward_and_vjp() recording into a caller's tape: give the same tape to every step
  /// of a training loop and its buffers are reused (one tape per thread). With `grad_context`
  /// (and a context), ∂L/∂c is added into it as well (see forward_vjp).
  template <typename X, typename Seed, typename GP, ContextArg C, typename T>
  detail::BatchOf<detail::delay_t<Derived, X>, Batch<double, Dynamic, Dynamic>> forward_and_vjp(
      const Eigen::MatrixBase<X>& x, Seed&& seed, GP&& grad_params, const C& context, T& tape,
      ContextGradient<typename detail::delay_t<Derived, X>::Scalar>* grad_context = nullptr) const {
    using S = typename Derived::Scalar;
    const auto r = forward_recorded(x, tape, context);
    Batch<S, Derived::Dim, Dynamic> grad_value =
        Batch<S, Derived::Dim, Dynamic>::Zero(r.value.rows(), r.value.cols());
    PerSample<S, Dynamic> grad_log_det = PerSample<S, Dynamic>::Zero(1, r.value.cols());
    seed(r.value, r.log_det, grad_value, grad_log_det);
    return forward_vjp_recorded(tape, grad_value, grad_log_det, std::forward<GP>(grad_params),
                                context, grad_context);
  }

  // ---- parameters, derived from the one hook parameters_impl ----------------------------------
  /// @brief The number of trainable scalars: the total size of the tensors parameters_impl visits.
  /// Visits the tensors (a composite's names are built on the way): call it once per batch, never
  /// per sample.
  Index parameter_count() const {
    Index n = 0;
    visit_parameters([&n](const std::string& /*name*/, const auto& tensor) { n += tensor.size(); });
    return n;
  }
  /// @brief Calls `f(name, Eigen::Ref<ParameterMatrix<Scalar>>)` for each trainable tensor, in the
  /// order of parameters_impl, inside the update_parameters_impl hook (which validates what `f`
  /// wrote, refreshes caches, and restores the old values if that fails).
  template <typename F>
  void visit_parameters(F&& f) {
    visit_parameters_erased(detail::VisitorRef<typename Derived::Scalar, false>(f));
  }
  /// @brief Calls `f(name, Eigen::Ref<const ParameterMatrix<Scalar>>)` for each trainable tensor.
  template <typename F>
  void visit_parameters(F&& f) const {
    using V = const detail::VisitorRef<typename Derived::Scalar, true>;
    V v(f);
    Derived::parameters_impl(derived(), detail::RefVisitor<typename Derived::Scalar, true, V>{v});
  }

  Index context_dim() const {
    constexpr int cd = context_dim_v<Derived>;
    return cd == Dynamic ? Index(0) : Index(cd);
  }
  /// @brief Whether batch calls may be split into tiles of columns (nflow/core/tiling.hpp): true.
  /// A bijector whose columns are not independent for some settings declares its own.
  bool splits_batches() const { return true; }

 protected:
  BijectorBase() = default;

  // ---- defaults of the optional hooks (a derived class hides them by declaring its own) ------
  /// No trainable tensors.
  template <typename Self, typename F>
  static void parameters_impl(Self& /*self*/, F&& /*f*/) {}
  /// Nothing to validate or refresh after the parameters were written.
  template <typename Write>
  void update_parameters_impl(Write&& write) {
    write();
  }

  const Derived& derived() const { return static_cast<const Derived&>(*this); }

  /// The one instantiation of the mutable visit per bijector type (V is a detail::VisitorRef).
  template <typename V>
  void visit_parameters_erased(const V& v) {
    Derived& self = static_cast<Derived&>(*this);
    self.update_parameters_impl([&] {
      Derived::parameters_impl(self,
                               detail::RefVisitor<typename Derived::Scalar, false, const V>{v});
    });
  }

  /// The compile-time part of the contract that concepts cannot see: parameters come from the one
  /// hook, never from a redefined visit_parameters or parameter_count.
  static constexpr bool check_parameter_hooks() {
    static_assert(
        detail::InheritsParameterMembers<Derived, BijectorBase>,
        "nflow::BijectorBase: a bijector derived from BijectorBase must not define its own "
        "visit_parameters or parameter_count; write the one hook `template <typename Self, "
        "typename F> static void parameters_impl(Self& self, F&& f)` calling f(name, tensor) "
        "for each tensor, and the base derives both visits and the count from it");
    return true;
  }

  template <bool Inverse, typename X, typename C>
  auto call_impl(const X& x, const C& context) const {
    if constexpr (Inverse) {
      return derived().inverse_impl(x, context);
    } else {
      return derived().forward_impl(x, context);
    }
  }

  /// The batch, tile by tile (nflow/core/tiling.hpp).
  template <bool Inverse, typename X, typename C>
  auto tiled(const Eigen::MatrixBase<X>& x, const C& context) const {
    using R = decltype(call_impl<Inverse>(x.derived(), context_or_placeholder(x, context)));
    return detail::evaluate_tiled<R, typename Derived::Scalar, Derived::Dim>(
        x, context, [&](const auto& xt, const auto& ct) { return call_impl<Inverse>(xt, ct); },
        [&](const auto& xt) { return context_or_placeholder(xt, context); });
  }

  /// What the hooks receive as context. A bijector whose ContextDim is fixed and positive never
  /// sees NoContext: a call without a context has already thrown in check_call, and the hooks
  /// are instantiated with a placeholder matrix only so that the call compiles. Bijectors with
  /// ContextDim == 0 or Dynamic receive NoContext when no context is given.
  template <typename X, typename C>
  static decltype(auto) context_or_placeholder(const Eigen::MatrixBase<X>& x, const C& context) {
    if constexpr (is_no_context_v<C> && (context_dim_v < Derived >> 0)) {
      return Eigen::Matrix<typename Derived::Scalar, context_dim_v<Derived>, X::ColsAtCompileTime>(
          context_dim_v<Derived>, x.cols());
    } else if constexpr (is_no_context_v<C>) {
      return NoContext{};
    } else {
      return (context);
    }
  }

  template <typename X, typename C>
  void check_call(const char* where, const Eigen::MatrixBase<X>& x, const C& context) const {
    static_assert(check_parameter_hooks());
    static_assert(detail::CheckCallTypes<Derived, X, C>::ok);
    detail::check_rows(where, "input", derived().dim(), x.rows(), x.cols());
    const Index cd = derived().context_dim();
    if constexpr (is_no_context_v<C>) {
      if (cd != 0) {
        throw ShapeError(std::string("nflow: ") + where +
                         ": this bijector is conditional and needs a context of " +
                         std::to_string(cd) + " rows and one column per sample");
      }
    } else {
      if (cd == 0) {
        throw ShapeError(std::string("nflow: ") + where +
                         ": this bijector takes no context, but a context of " +
                         detail::shape_string(context.rows(), context.cols()) + " was given");
      }
      detail::check_rows(where, "context", cd, context.rows(), context.cols());
      detail::check_cols(where, "context", x.cols(), context.rows(), context.cols());
    }
  }

  /// A grad_context given to an unconditional bijector: a ShapeError with a sentence (before the
  /// context's own checks, which would only say that a context is not taken).
  template <typename G>
  void check_context_gradient(const char* where, const G* grad_context) const {
    if (grad_context != nullptr && derived().context_dim() == 0) {
      throw ShapeError(std::string("nflow: ") + where +
                       ": grad_context was given, but this bijector is unconditional "
                       "(context_dim 0): there is no context to differentiate");
    }
  }
  /// grad_context (when given) is context_dim × n.
  template <typename G>
  void check_context_gradient_shape(const char* where, const G* grad_context, Index n) const {
    if (grad_context == nullptr) return;
    detail::check_rows(where, "grad_context", derived().context_dim(), grad_context->rows(),
                       grad_context->cols());
    detail::check_cols(where, "grad_context", n, grad_context->rows(), grad_context->cols());
  }

  template <typename X, typename GV, typename GL, typename GP, typename C>
  void check_vjp(const char* where, const Eigen::MatrixBase<X>& x, const Eigen::MatrixBase<GV>& gv,
                 const Eigen::MatrixBase<GL>& gl, const GP& gp, const C& context) const {
    check_call(where, x, context);
    detail::check_rows(where, "grad_value", x.rows(), gv.rows(), gv.cols());
    detail::check_cols(where, "grad_value", x.cols(), gv.rows(), gv.cols());
    detail::check_rows(where, "grad_log_det", 1, gl.rows(), gl.cols());
    detail::check_cols(where, "grad_log_det", x.cols(), gl.rows(), gl.cols());
    detail::check_size(where, "grad_params", derived().parameter_count(), gp.size());
  }
};

}  // namespace nflow
