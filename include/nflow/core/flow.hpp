#pragma once
/// @file
/// @brief Flow<B1, ..., Bn>: compile-time composition of bijectors.
///
/// Conventions (see docs/conventions.md):
/// - **Direction.** `forward` maps data x to latent z (the normalizing direction, as in nflows,
///   zuko, Real NVP and Glow); `inverse` maps z to x (sampling). TFP and distrax call these the
///   other way round.
/// - **Order.** `Flow<B1, B2, B3>::forward` applies B1 first; `inverse` applies B3⁻¹ first.
/// - **Log-det.** Always log|det J| of the map that was applied; a flow adds its steps' log-dets,
///   so log p(x) = log p_base(forward(x)) + forward_log_det(x).
/// - **Batches.** `Dim × N`, one sample per column; log-dets `1 × N`.
/// - **Context.** A context batch given to a flow reaches every conditional step; unconditional
///   steps never see it.
/// - **Parameters.** Step `i`'s tensors are named `"i.<name>"`; the flat gradient is their
///   concatenation in step order.

#include "nflow/core/bijector_base.hpp"
#include "nflow/core/buffers.hpp"
#include "nflow/core/composite.hpp"
#include "nflow/core/concepts.hpp"
#include "nflow/core/parameters.hpp"

#include <array>
#include <cstddef>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

namespace nflow {

namespace detail {

inline constexpr int kDimMismatch = -2;

/// Joins compile-time sizes: Dynamic matches anything; two different fixed sizes mismatch.
constexpr int join_dims(int a, int b) {
  if (a == kDimMismatch || b == kDimMismatch) return kDimMismatch;
  if (a == Dynamic) return b;
  if (b == Dynamic || a == b) return a;
  return kDimMismatch;
}

template <typename... Bs>
struct FlowTraits {
  static constexpr bool non_empty = sizeof...(Bs) > 0;
  static constexpr bool all_bijectors = (Bijector<Bs> && ...);
  static constexpr bool valid = non_empty && all_bijectors;

  template <typename First, typename... Rest>
  static constexpr bool same_scalar_impl() {
    return (std::is_same_v<typename First::Scalar, typename Rest::Scalar> && ...);
  }
  static constexpr bool same_scalar = [] {
    if constexpr (valid) {
      return same_scalar_impl<Bs...>();
    } else {
      return true;
    }
  }();
  static constexpr int dim = [] {
    if constexpr (valid) {
      int d = Dynamic;
      ((d = join_dims(d, Bs::Dim)), ...);
      return d;
    } else {
      return int(Dynamic);
    }
  }();
  static constexpr int context_dim = [] {
    int d = 0;
    bool any = false;
    auto add = [&](int c) {
      if (c == 0) return;
      d = any ? join_dims(d, c) : c;
      any = true;
    };
    (add(context_dim_v<Bs>), ...);
    return d;
  }();
  using Scalar = typename std::conditional_t<valid, std::tuple_element<0, std::tuple<Bs..., void>>,
                                             std::type_identity<struct InvalidFlow>>::type;
};

template <typename... Bs>
struct FlowScalar {
  using type = double;
};
template <typename B, typename... Bs>
  requires requires { typename B::Scalar; }
struct FlowScalar<B, Bs...> {
  using type = typename B::Scalar;
};

/// Calls a step with the flow's context if the step is conditional, without it otherwise.
template <typename B, typename V, typename C>
auto step_forward(const B& b, const V& v, const C& ctx) {
  if constexpr (is_no_context_v<C> || !is_conditional_v<B>) {
    return b.forward_and_log_det(v);
  } else {
    return b.forward_and_log_det(v, ctx);
  }
}
template <typename B, typename V, typename C>
auto step_inverse(const B& b, const V& v, const C& ctx) {
  if constexpr (is_no_context_v<C> || !is_conditional_v<B>) {
    return b.inverse_and_log_det(v);
  } else {
    return b.inverse_and_log_det(v, ctx);
  }
}
template <typename B, typename V, typename G, typename L, typename P, typename C>
auto step_forward_vjp(const B& b, const V& v, const G& gv, const L& gl, P&& gp, const C& ctx) {
  if constexpr (is_no_context_v<C> || !is_conditional_v<B>) {
    return b.forward_vjp(v, gv, gl, std::forward<P>(gp));
  } else {
    return b.forward_vjp(v, gv, gl, std::forward<P>(gp), ctx);
  }
}
template <typename B, typename V, typename G, typename L, typename P, typename C>
auto step_inverse_vjp(const B& b, const V& v, const G& gv, const L& gl, P&& gp, const C& ctx) {
  if constexpr (is_no_context_v<C> || !is_conditional_v<B>) {
    return b.inverse_vjp(v, gv, gl, std::forward<P>(gp));
  } else {
    return b.inverse_vjp(v, gv, gl, std::forward<P>(gp), ctx);
  }
}

/// A step's recorded forward pass (a bijector not built on BijectorBase records its input).
template <typename B, typename V, typename T, typename C>
auto step_record(const B& b, const V& v, T& tape, const C& ctx) {
  if constexpr (!requires { b.forward_recorded(v, tape); }) {
    tape.input = v;
    return step_forward(b, tape.input, ctx);
  } else if constexpr (is_no_context_v<C> || !is_conditional_v<B>) {
    return b.forward_recorded(v, tape);
  } else {
    return b.forward_recorded(v, tape, ctx);
  }
}
template <typename B, typename T, typename G, typename L, typename P, typename C>
auto step_vjp_recorded(const B& b, const T& tape, const G& gv, const L& gl, P&& gp, const C& ctx) {
  if constexpr (!requires { b.forward_vjp_recorded(tape, gv, gl, gp); }) {
    return step_forward_vjp(b, tape.input, gv, gl, std::forward<P>(gp), ctx);
  } else if constexpr (is_no_context_v<C> || !is_conditional_v<B>) {
    return b.forward_vjp_recorded(tape, gv, gl, std::forward<P>(gp));
  } else {
    return b.forward_vjp_recorded(tape, gv, gl, std::forward<P>(gp), ctx);
  }
}

}  // namespace detail

/// @brief The composition B1 → B2 → … → Bn of bijectors, itself a bijector.
///
/// forward(x) = Bn(…B2(B1(x))), with log-det Σᵢ log|det J_Bᵢ| evaluated along the way;
/// inverse(z) = B1⁻¹(…Bn⁻¹(z)). Every step must share one Scalar and one dimension (a Dynamic
/// dimension matches any, checked at construction); conditional steps must agree on the
/// context dimension. IsConstantLogDet holds when it holds for every step; each direction costs
/// what its most expensive step costs.
///
/// @tparam Bs the steps, in forward (data → latent) order. Each must model nflow::Bijector.
template <typename... Bs>
class Flow : public BijectorBase<Flow<Bs...>> {
  using Traits = detail::FlowTraits<Bs...>;
  static_assert(Traits::non_empty,
                "nflow::Flow<>: a flow needs at least one bijector; Flow<> with no steps is not a "
                "bijector of any dimension");
  static_assert(Traits::all_bijectors,
                "nflow::Flow<Bs...>: every argument must model nflow::Bijector (a Scalar type, a "
                "static constexpr int Dim, dim(), forward_and_log_det(x) and "
                "inverse_and_log_det(z)); see nflow/core/concepts.hpp");
  static_assert(Traits::same_scalar,
                "nflow::Flow<Bs...>: every bijector must use the same Scalar type; do not mix float "
                "and double in one flow");
  static_assert(Traits::dim != detail::kDimMismatch,
                "nflow::Flow<Bs...>: every bijector must have the same dimension Dim (Eigen::Dynamic "
                "matches any dimension)");
  static_assert(Traits::context_dim != detail::kDimMismatch,
                "nflow::Flow<Bs...>: conditional bijectors in one flow must have the same "
                "ContextDim");
  static_assert([]<std::size_t... Is>(std::index_sequence<Is...>) {
    return (detail::CheckParameterMembers<Is, Bs>::ok && ...);
  }(std::index_sequence_for<Bs...>{}));

  static constexpr std::size_t N = sizeof...(Bs);

 public:
  using Scalar = typename detail::FlowScalar<Bs...>::type;
  static constexpr int Dim = Traits::dim == detail::kDimMismatch ? Dynamic : Traits::dim;
  static constexpr int ContextDim =
      Traits::context_dim == detail::kDimMismatch ? Dynamic : Traits::context_dim;
  static constexpr bool IsConstantLogDet = (is_constant_log_det_v<Bs> && ...);
  static constexpr Cost ForwardCost = [] {
    Cost c = Cost::OnePass;
    ((c = max_cost(c, forward_cost_v<Bs>)), ...);
    return c;
  }();
  static constexpr Cost InverseCost = [] {
    Cost c = Cost::OnePass;
    ((c = max_cost(c, inverse_cost_v<Bs>)), ...);
    return c;
  }();

  Flow()
    requires(std::default_initializable<Bs> && ...)
  {
    validate();
  }
  /// Takes the steps by value, in forward order. Throws ShapeError if their run-time
  /// dimensions or context dimensions disagree.
  explicit Flow(Bs... steps) : steps_(std::move(steps)...) { validate(); }

  static constexpr std::size_t size() { return N; }

  /// The I-th step (0-based, forward order).
  template <std::size_t I>
  auto& step() {
    return std::get<I>(steps_);
  }
  template <std::size_t I>
  const auto& step() const {
    return std::get<I>(steps_);
  }

  Index dim() const { return std::get<0>(steps_).dim(); }
  Index context_dim() const {
    Index cd = 0;
    for_each_step([&](const auto& b, auto) {
      if constexpr (is_conditional_v<std::remove_cvref_t<decltype(b)>>) cd = b.context_dim();
    });
    return cd;
  }

  /// The parameters of every step, in step order, named "<index>.<name>" (the hook
  /// BijectorBase derives the visits and the count from).
  template <typename Self, typename F>
  static void parameters_impl(Self& self, F&& f) {
    [&]<std::size_t... Is>(std::index_sequence<Is...>) {
      (detail::visit_part_parameters(std::get<Is>(self.steps_), std::to_string(Is) + ".", f), ...);
    }(std::make_index_sequence<N>{});
  }
  /// Visits the buffers of every step that has any (see nflow/core/buffers.hpp), names prefixed
  /// with "<index>.". A step that rejects a new value throws; the steps before it keep theirs.
  template <typename F>
  void visit_buffers(F&& f) {
    visit_buffers_impl(*this, f);
  }
  template <typename F>
  void visit_buffers(F&& f) const {
    visit_buffers_impl(*this, f);
  }

  // ---- hooks for BijectorBase ----------------------------------------------------------------
  template <typename X, typename C>
  auto forward_impl(const X& x, const C& ctx) const {
    using V = detail::BatchFor<Scalar, Dim, X>;
    auto first = detail::step_forward(std::get<0>(steps_), x, ctx);
    V v = std::move(first.value);
    detail::PerSampleFor<Scalar, X> ld = std::move(first.log_det);
    [&]<std::size_t... Is>(std::index_sequence<Is...>) {
      ((apply_forward<Is + 1>(v, ld, ctx)), ...);
    }(std::make_index_sequence<N - 1>{});
    return detail::ResultFor<Scalar, Dim, X>{std::move(v), std::move(ld)};
  }

  template <typename Z, typename C>
  auto inverse_impl(const Z& z, const C& ctx) const {
    using V = detail::BatchFor<Scalar, Dim, Z>;
    auto last = detail::step_inverse(std::get<N - 1>(steps_), z, ctx);
    V v = std::move(last.value);
    detail::PerSampleFor<Scalar, Z> ld = std::move(last.log_det);
    [&]<std::size_t... Is>(std::index_sequence<Is...>) {
      ((apply_inverse<N - 2 - Is>(v, ld, ctx)), ...);
    }(std::make_index_sequence<N - 1>{});
    return detail::ResultFor<Scalar, Dim, Z>{std::move(v), std::move(ld)};
  }

  /// What forward_recorded() keeps: each step's tape (see nflow::tape_t).
  struct Tape {
    std::tuple<tape_t<Bs>...> steps;
    /// The number of samples recorded.
    Index cols() const { return std::get<0>(steps).cols(); }
  };

  template <typename C>
  auto record_forward_impl(const Batch<Scalar, Dim, Dynamic>& x, const C& ctx, Tape& tape) const {
    using V = Batch<Scalar, Dim, Dynamic>;
    auto first = detail::step_record(std::get<0>(steps_), x, std::get<0>(tape.steps), ctx);
    V v = std::move(first.value);
    PerSample<Scalar, Dynamic> ld = std::move(first.log_det);
    [&]<std::size_t... Is>(std::index_sequence<Is...>) {
      ((record_step<Is + 1>(v, ld, ctx, tape)), ...);
    }(std::make_index_sequence<N - 1>{});
    return ValueAndLogDet<Scalar, Dim, Dynamic>{std::move(v), std::move(ld)};
  }

  /// The steps' vjps in reverse order, each from its own tape.
  template <typename GV, typename GL, typename C>
  auto taped_vjp_impl(const Tape& tape, const GV& gv, const GL& gl, Eigen::Ref<Vector<Scalar>> gp,
                      const C& ctx) const {
    const std::array<Index, N + 1> offsets = parameter_offsets();
    Batch<Scalar, Dim, Dynamic> g = gv;
    [&]<std::size_t... Is>(std::index_sequence<Is...>) {
      ((g = detail::step_vjp_recorded(std::get<N - 1 - Is>(steps_), std::get<N - 1 - Is>(tape.steps), g, gl,
                                      gp.segment(offsets[N - 1 - Is], offsets[N - Is] - offsets[N - 1 - Is]),
                                      ctx)),
       ...);
    }(std::make_index_sequence<N>{});
    return g;
  }

  template <typename X, typename GV, typename GL, typename C>
    requires(ForwardDifferentiable<Bs> && ...)
  auto forward_vjp_impl(const X& x, const GV& gv, const GL& gl, Eigen::Ref<Vector<Scalar>> gp,
                        const C& ctx) const {
    // A recorded forward pass, then the steps' vjps from their tapes.
    Tape tape;
    const auto& xb = detail::as_batch<Scalar, Dim>(x);
    record_forward_impl(xb, ctx, tape);
    return detail::BatchFor<Scalar, Dim, X>(taped_vjp_impl(tape, gv, gl, gp, ctx));
  }

  template <typename Z, typename GV, typename GL, typename C>
    requires(InverseDifferentiable<Bs> && ...)
  auto inverse_vjp_impl(const Z& z, const GV& gv, const GL& gl, Eigen::Ref<Vector<Scalar>> gp,
                        const C& ctx) const {
    using V = detail::BatchFor<Scalar, Dim, Z>;
    // inputs[i] is what step i's inverse receives; the inverse runs from step N-1 down to 0.
    std::array<V, N> inputs;
    inputs[N - 1] = z;
    [&]<std::size_t... Is>(std::index_sequence<Is...>) {
      ((inputs[N - 2 - Is] =
            detail::step_inverse(std::get<N - 1 - Is>(steps_), inputs[N - 1 - Is], ctx).value),
       ...);
    }(std::make_index_sequence<N - 1>{});
    const std::array<Index, N + 1> offsets = parameter_offsets();
    V g = gv;
    [&]<std::size_t... Is>(std::index_sequence<Is...>) {
      ((g = detail::step_inverse_vjp(std::get<Is>(steps_), inputs[Is], g, gl,
                                     gp.segment(offsets[Is], offsets[Is + 1] - offsets[Is]), ctx)),
       ...);
    }(std::make_index_sequence<N>{});
    return g;
  }

 private:
  template <std::size_t I, typename V, typename L, typename C>
  void apply_forward(V& v, L& ld, const C& ctx) const {
    auto r = detail::step_forward(std::get<I>(steps_), v, ctx);
    v = std::move(r.value);
    ld += r.log_det;
  }
  template <std::size_t I, typename V, typename L, typename C>
  void record_step(V& v, L& ld, const C& ctx, Tape& tape) const {
    auto r = detail::step_record(std::get<I>(steps_), v, std::get<I>(tape.steps), ctx);
    v = std::move(r.value);
    ld += r.log_det;
  }
  template <std::size_t I, typename V, typename L, typename C>
  void apply_inverse(V& v, L& ld, const C& ctx) const {
    auto r = detail::step_inverse(std::get<I>(steps_), v, ctx);
    v = std::move(r.value);
    ld += r.log_det;
  }

  template <typename F>
  void for_each_step(F&& f) const {
    [&]<std::size_t... Is>(std::index_sequence<Is...>) {
      (f(std::get<Is>(steps_), std::integral_constant<std::size_t, Is>{}), ...);
    }(std::make_index_sequence<N>{});
  }

  template <typename Self, typename F>
  static void visit_buffers_impl(Self& self, F& f) {
    [&]<std::size_t... Is>(std::index_sequence<Is...>) {
      (detail::visit_prefixed_buffers(std::get<Is>(self.steps_), std::to_string(Is) + ".", f), ...);
    }(std::make_index_sequence<N>{});
  }

  std::array<Index, N + 1> parameter_offsets() const {
    std::array<Index, N + 1> off{};
    for_each_step([&](const auto& b, auto i) {
      off[decltype(i)::value + 1] = off[decltype(i)::value] + detail::part_parameter_count(b);
    });
    return off;
  }

  void validate() const {
    const Index d = dim();
    Index cd = -1;
    for_each_step([&](const auto& b, auto i) {
      using B = std::remove_cvref_t<decltype(b)>;
      if (b.dim() != d) {
        throw ShapeError("nflow::Flow: step " + std::to_string(decltype(i)::value) + " has dimension " +
                         std::to_string(b.dim()) + ", but step 0 has dimension " + std::to_string(d));
      }
      if constexpr (is_conditional_v<B>) {
        if (cd >= 0 && b.context_dim() != cd) {
          throw ShapeError("nflow::Flow: step " + std::to_string(decltype(i)::value) +
                           " takes a context of " + std::to_string(b.context_dim()) +
                           " rows, but an earlier conditional step takes " + std::to_string(cd));
        }
        cd = b.context_dim();
      }
    });
  }

  std::tuple<Bs...> steps_;
};

template <typename... Bs>
Flow(Bs...) -> Flow<Bs...>;

}  // namespace nflow
