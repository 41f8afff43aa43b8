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
///   steps never see it (nflow::with_context).
/// - **Parameters.** Step `i`'s tensors are named `"i.<name>"`; the flat gradient is their
///   concatenation in step order.
///
/// What the steps must satisfy, and what the flow derives from them, is in flow_traits.hpp; the
/// recorded pass and the vjps in flow_gradients.hpp.

#include <concepts>
#include <cstddef>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "nflow/core/bijector_base.hpp"
#include "nflow/core/buffers.hpp"
#include "nflow/core/composite.hpp"
#include "nflow/core/concepts.hpp"
#include "nflow/core/flow_gradients.hpp"
#include "nflow/core/flow_traits.hpp"

namespace nflow {

template <typename... Bs>
class Flow;
template <typename... Bs, typename F>
void visit_steps(Flow<Bs...>& flow, F&& f);
template <typename... Bs, typename F>
void visit_steps(const Flow<Bs...>& flow, F&& f);

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
  static_assert(detail::check_flow_steps<Bs...>());
  using Traits = detail::FlowTraits<Bs...>;
  static constexpr std::size_t N = sizeof...(Bs);

 public:
  using Scalar = typename Traits::Scalar;
  static constexpr int Dim = Traits::dim;
  static constexpr int ContextDim = Traits::context_dim;
  static constexpr bool IsConstantLogDet = Traits::is_constant_log_det;
  static constexpr Cost ForwardCost = Traits::forward_cost;
  static constexpr Cost InverseCost = Traits::inverse_cost;

  Flow() requires(std::default_initializable<Bs>&&...) { validate(); }
  /// Takes the steps by value, in forward order. Throws ShapeError if their run-time
  /// dimensions or context dimensions disagree.
  explicit Flow(Bs... steps) : steps_(std::move(steps)...) { validate(); }

  static constexpr std::size_t size() { return N; }

  /// The I-th step (0-based, forward order). See also nflow::visit_steps.
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
    visit_steps(*this, [&](const auto& b, auto) {
      if constexpr (is_conditional_v<std::remove_cvref_t<decltype(b)>>) cd = b.context_dim();
    });
    return cd;
  }

  /// The parameters of every step, in step order, named "<index>.<name>" (the hook BijectorBase
  /// derives the visits and the count from).
  template <typename Self, typename F>
  static void parameters_impl(Self& self, F&& f) {
    visit_steps(self, [&](auto& b, auto i) {
      detail::visit_part_parameters(b, std::to_string(i()) + ".", f);
    });
  }
  /// Visits the buffers of every step that has any (see nflow/core/buffers.hpp), names prefixed
  /// with "<index>.". A step that rejects a new value throws; the steps before it keep theirs.
  template <typename F>
  void visit_buffers(F&& f) {
    visit_steps(*this, [&](auto& b, auto i) {
      detail::visit_prefixed_buffers(b, std::to_string(i()) + ".", f);
    });
  }
  template <typename F>
  void visit_buffers(F&& f) const {
    visit_steps(*this, [&](auto& b, auto i) {
      detail::visit_prefixed_buffers(b, std::to_string(i()) + ".", f);
    });
  }

  // ---- hooks for BijectorBase: the fold -------------------------------------------------------
  template <typename X, typename C>
  detail::ResultFor<Scalar, Dim, X> forward_impl(const X& x, const C& ctx) const {
    auto first = apply_step<false, 0>(x, ctx);
    detail::BatchFor<Scalar, Dim, X> v = std::move(first.value);
    detail::PerSampleFor<Scalar, X> ld = std::move(first.log_det);
    [&]<std::size_t... Is>(std::index_sequence<Is...>) {
      ((accumulate(apply_step<false, Is + 1>(v, ctx), v, ld)), ...);
    }
    (std::make_index_sequence<N - 1>{});
    return detail::ResultFor<Scalar, Dim, X>{std::move(v), std::move(ld)};
  }
  template <typename Z, typename C>
  detail::ResultFor<Scalar, Dim, Z> inverse_impl(const Z& z, const C& ctx) const {
    auto last = apply_step<true, N - 1>(z, ctx);
    detail::BatchFor<Scalar, Dim, Z> v = std::move(last.value);
    detail::PerSampleFor<Scalar, Z> ld = std::move(last.log_det);
    [&]<std::size_t... Is>(std::index_sequence<Is...>) {
      ((accumulate(apply_step<true, N - 2 - Is>(v, ctx), v, ld)), ...);
    }
    (std::make_index_sequence<N - 1>{});
    return detail::ResultFor<Scalar, Dim, Z>{std::move(v), std::move(ld)};
  }

  // ---- hooks for BijectorBase: gradients (nflow/core/flow_gradients.hpp) ----------------------
  /// What forward_recorded() keeps: each step's tape (see nflow::tape_t).
  struct Tape {
    std::tuple<tape_t<Bs>...> steps;
    /// The number of samples recorded.
    Index cols() const { return std::get<0>(steps).cols(); }
  };
  template <typename C>
  ValueAndLogDet<Scalar, Dim, Dynamic> record_forward_impl(const Batch<Scalar, Dim, Dynamic>& x,
                                                           const C& ctx, Tape& tape) const {
    return detail::record_steps(steps_, x, ctx, tape.steps);
  }
  /// (gc: where every conditional step adds its part of ∂L/∂c, or nullptr.)
  template <typename GV, typename GL, typename C>
  Batch<Scalar, Dim, Dynamic> taped_vjp_impl(const Tape& tape, const GV& gv, const GL& gl,
                                             Eigen::Ref<Vector<Scalar>> gp, const C& ctx,
                                             ContextGradient<Scalar>* gc = nullptr) const {
    return detail::taped_vjp_steps<Scalar, Dim>(steps_, tape.steps, gv, gl, gp, ctx, gc);
  }
  template <typename X, typename GV, typename GL, typename C>
  requires(ForwardDifferentiable<Bs>&&...) detail::BatchFor<Scalar, Dim, X> forward_vjp_impl(
      const X& x, const GV& gv, const GL& gl, Eigen::Ref<Vector<Scalar>> gp, const C& ctx,
      ContextGradient<Scalar>* gc = nullptr)
  const {
    Tape tape;  // a recorded forward pass, then the steps' vjps from their tapes
    record_forward_impl(detail::as_batch<Scalar, Dim>(x), ctx, tape);
    return detail::BatchFor<Scalar, Dim, X>(taped_vjp_impl(tape, gv, gl, gp, ctx, gc));
  }
  template <typename Z, typename GV, typename GL, typename C>
  requires(InverseDifferentiable<Bs>&&...) detail::BatchFor<Scalar, Dim, Z> inverse_vjp_impl(
      const Z& z, const GV& gv, const GL& gl, Eigen::Ref<Vector<Scalar>> gp, const C& ctx,
      ContextGradient<Scalar>* gc = nullptr)
  const {
    return detail::inverse_vjp_steps<detail::BatchFor<Scalar, Dim, Z>>(steps_, z, gv, gl, gp, ctx,
                                                                       gc);
  }

 private:
  /// Step I's forward (or inverse) pass, with the flow's context if the step is conditional.
  template <bool Inverse, std::size_t I, typename V, typename C>
  auto apply_step(const V& v, const C& ctx) const {
    const auto& b = std::get<I>(steps_);
    return with_context<decltype(b)>(ctx, [&](const auto&... c) {
      if constexpr (Inverse) {
        return b.inverse_and_log_det(v, c...);
      } else {
        return b.forward_and_log_det(v, c...);
      }
    });
  }
  template <typename R, typename V, typename L>
  static void accumulate(R&& r, V& v, L& ld) {
    v = std::move(r.value);
    ld += r.log_det;
  }

  void validate() const {
    const Index d = dim();
    Index cd = -1;
    visit_steps(*this, [&](const auto& b, auto i) {
      if (b.dim() != d) {
        throw ShapeError("nflow::Flow: step " + std::to_string(i()) + " has dimension " +
                         std::to_string(b.dim()) + ", but step 0 has dimension " +
                         std::to_string(d));
      }
      if constexpr (is_conditional_v<std::remove_cvref_t<decltype(b)>>) {
        if (cd >= 0 && b.context_dim() != cd) {
          throw ShapeError("nflow::Flow: step " + std::to_string(i()) + " takes a context of " +
                           std::to_string(b.context_dim()) +
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

/// @brief Calls `f(step, index)` for each step of `flow` in forward order, `index` a
/// std::integral_constant<std::size_t, i> (so `index()` is usable in `if constexpr` and as a
/// template argument). Steps are passed as const references when `flow` is const. Nested flows
/// are single steps here (recurse with visit_steps on them).
template <typename... Bs, typename F>
void visit_steps(Flow<Bs...>& flow, F&& f) {
  [&]<std::size_t... Is>(std::index_sequence<Is...>) {
    (f(flow.template step<Is>(), std::integral_constant<std::size_t, Is>{}), ...);
  }
  (std::index_sequence_for<Bs...>{});
}
template <typename... Bs, typename F>
void visit_steps(const Flow<Bs...>& flow, F&& f) {
  [&]<std::size_t... Is>(std::index_sequence<Is...>) {
    (f(flow.template step<Is>(), std::integral_constant<std::size_t, Is>{}), ...);
  }
  (std::index_sequence_for<Bs...>{});
}

namespace detail {
template <std::size_t, typename T>
using RepeatedType = T;
/// Flow<Block, …, Block> with N steps; a sentence when N < 1.
template <int N, typename Block>
struct RepeatFlow {
  static_assert(N >= 1,
                "nflow::Repeat<N, Block> / nflow::repeat<N>: N must be at least 1 (a flow needs at "
                "least one step; for a depth chosen at run time, possibly 0 while it is built, use "
                "nflow::Stack<Block>)");
  template <std::size_t... Is>
  static Flow<RepeatedType<Is, Block>...> make(std::index_sequence<Is...>);
  using type = decltype(make(std::make_index_sequence<std::size_t(N >= 1 ? N : 1)>{}));
};
}  // namespace detail

/// @brief Flow<Block, …, Block>: N steps of one type, repeated at compile time. Steps are
/// addressable with step<i>() and named "<i>.<name>" as in any Flow, so Repeat<n, Block> and a
/// Stack<Block> of n blocks (nflow/core/stack.hpp) share names, layout and files. N < 1 does not
/// compile (with a sentence).
/// @tparam N the number of steps, at least 1.
/// @tparam Block the step type (an nflow::Bijector).
template <int N, typename Block>
using Repeat = typename detail::RepeatFlow<N, Block>::type;

/// @brief The Repeat<N, Block> of the blocks make(0), …, make(N − 1) (called in that order), so
/// each block can get its own seed or mask; Block is what make returns. Example:
/// `repeat<4>([](Index i) { return AffineCoupling<double, 4>(CouplingMask::half(4, i % 2 == 1),
/// {.seed = std::uint64_t(i)}); })`.
template <int N, typename F>
requires std::invocable<F&, Index>
auto repeat(F&& make) {
  using Block = std::remove_cvref_t<std::invoke_result_t<F&, Index>>;
  return [&]<std::size_t... Is>(std::index_sequence<Is...>) {
    return Repeat<N, Block>{make(Index(Is))...};  // braces: called in order 0, 1, …
  }
  (std::make_index_sequence<std::size_t(N >= 1 ? N : 1)>{});
}
/// @brief The Repeat<N, Block> of N copies of `block`.
template <int N, typename Block>
requires(!std::invocable<const Block&, Index>) auto repeat(const Block& block) {
  return repeat<N>([&block](Index) { return block; });
}

}  // namespace nflow
