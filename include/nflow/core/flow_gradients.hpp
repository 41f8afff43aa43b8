#pragma once
/// @file
/// @brief The reverse-mode passes of Flow<Bs...>, on its tuple of steps: the recorded forward
/// pass (each step records into its own tape), the steps' vjps from their tapes in reverse order,
/// and the inverse direction's vjp. Flow's hooks call these; see docs/gradients.md.

#include <array>
#include <cstddef>
#include <tuple>
#include <utility>

#include "nflow/core/bijector_base.hpp"
#include "nflow/core/composite.hpp"
#include "nflow/core/errors.hpp"
#include "nflow/core/types.hpp"

namespace nflow::detail {

/// A step's recorded forward pass. A step not built on BijectorBase has no forward_recorded: its
/// tape is nflow::InputTape, which records the input (its vjp then runs forward_vjp from it).
template <typename B, typename V, typename T, typename C>
auto step_record(const B& b, const V& v, T& tape, const C& ctx) {
  if constexpr (requires { b.forward_recorded(v, tape); }) {
    return with_context<B>(ctx,
                           [&](const auto&... c) { return b.forward_recorded(v, tape, c...); });
  } else {
    tape.input = v;
    return with_context<B>(
        ctx, [&](const auto&... c) { return b.forward_and_log_det(tape.input, c...); });
  }
}

/// A conditional step's forward_vjp (or inverse_vjp when Inverse) with its context `c`, adding
/// ∂L/∂c into `gc` when that is not null (UnsupportedError if the step cannot).
template <bool Inverse, typename B, typename X, typename G, typename L, typename P, typename S,
          typename C>
auto step_vjp_with_context(const B& b, const X& x, const G& gv, const L& gl, P&& gp,
                           ContextGradient<S>* gc, const C& c) {
  if constexpr (Inverse) {
    if constexpr (requires { b.inverse_vjp(x, gv, gl, gp, c, gc); }) {
      return b.inverse_vjp(x, gv, gl, std::forward<P>(gp), c, gc);
    } else {
      if (gc != nullptr) no_context_gradient("inverse_vjp");
      return b.inverse_vjp(x, gv, gl, std::forward<P>(gp), c);
    }
  } else {
    if constexpr (requires { b.forward_vjp(x, gv, gl, gp, c, gc); }) {
      return b.forward_vjp(x, gv, gl, std::forward<P>(gp), c, gc);
    } else {
      if (gc != nullptr) no_context_gradient("forward_vjp");
      return b.forward_vjp(x, gv, gl, std::forward<P>(gp), c);
    }
  }
}

/// A step's forward_vjp (or inverse_vjp when Inverse), called with `c...` (the context, or
/// nothing; after `gc`, so that the pack is deduced), adding ∂L/∂c into `gc` as
/// step_vjp_recorded does. (Nested `if constexpr`, so that no call is ever formed with gc in the
/// place of the context.)
template <bool Inverse, typename B, typename X, typename G, typename L, typename P, typename S,
          typename... C>
auto step_vjp(const B& b, const X& x, const G& gv, const L& gl, P&& gp, ContextGradient<S>* gc,
              const C&... c) {
  if constexpr (sizeof...(c) == 1) {
    return step_vjp_with_context<Inverse>(b, x, gv, gl, std::forward<P>(gp), gc, c...);
  } else if constexpr (Inverse) {
    return b.inverse_vjp(x, gv, gl, std::forward<P>(gp));
  } else {
    return b.forward_vjp(x, gv, gl, std::forward<P>(gp));
  }
}

/// A conditional step's vjp from its tape with its context `c` (see step_vjp_recorded).
template <typename B, typename T, typename G, typename L, typename P, typename S, typename C>
auto step_vjp_recorded_with_context(const B& b, const T& tape, const G& gv, const L& gl, P&& gp,
                                    ContextGradient<S>* gc, const C& c) {
  if constexpr (requires { b.forward_vjp_recorded(tape, gv, gl, gp, c, gc); }) {
    return b.forward_vjp_recorded(tape, gv, gl, std::forward<P>(gp), c, gc);
  } else {
    if (gc != nullptr) no_context_gradient("forward_vjp_recorded");
    return b.forward_vjp_recorded(tape, gv, gl, std::forward<P>(gp), c);
  }
}

/// A step's vjp from its tape (see step_record). A conditional step given the context also
/// adds its ∂L/∂c into `gc` when that is not null (every conditional step of a composite adds its
/// part: the same context reaches them all); an unconditional one contributes nothing.
template <typename B, typename T, typename G, typename L, typename P, typename C, typename S>
auto step_vjp_recorded(const B& b, const T& tape, const G& gv, const L& gl, P&& gp, const C& ctx,
                       ContextGradient<S>* gc) {
  return with_context<B>(ctx, [&](const auto&... c) {
    if constexpr (!requires { b.forward_vjp_recorded(tape, gv, gl, gp); }) {
      return step_vjp<false>(b, tape.input, gv, gl, std::forward<P>(gp), gc, c...);
    } else if constexpr (sizeof...(c) == 1) {
      return step_vjp_recorded_with_context(b, tape, gv, gl, std::forward<P>(gp), gc, c...);
    } else {
      return b.forward_vjp_recorded(tape, gv, gl, std::forward<P>(gp));
    }
  });
}

/// step_vjp with a flow's context `ctx` (NoContext or a matrix), which reaches the step only when
/// it is conditional.
template <bool Inverse, typename B, typename X, typename G, typename L, typename P, typename C,
          typename S>
auto step_vjp_in_context(const B& b, const X& x, const G& gv, const L& gl, P&& gp, const C& ctx,
                         ContextGradient<S>* gc) {
  return with_context<B>(ctx, [&](const auto&... c) {
    return step_vjp<Inverse>(b, x, gv, gl, std::forward<P>(gp), gc, c...);
  });
}

/// Where each step's slice of the flat parameter vector starts (and, last, the total).
template <typename... Bs>
std::array<Index, sizeof...(Bs) + 1> step_parameter_offsets(const std::tuple<Bs...>& steps) {
  std::array<Index, sizeof...(Bs) + 1> off{};
  [&]<std::size_t... Is>(std::index_sequence<Is...>) {
    ((off[Is + 1] = off[Is] + part_parameter_count(std::get<Is>(steps))), ...);
  }
  (std::index_sequence_for<Bs...>{});
  return off;
}

/// The recorded forward pass of a flow: step i records into std::get<i>(tapes).
template <typename Scalar, int Dim, typename... Bs, typename Tapes, typename C>
ValueAndLogDet<Scalar, Dim, Dynamic> record_steps(const std::tuple<Bs...>& steps,
                                                  const Batch<Scalar, Dim, Dynamic>& x,
                                                  const C& ctx, Tapes& tapes) {
  auto first = step_record(std::get<0>(steps), x, std::get<0>(tapes), ctx);
  Batch<Scalar, Dim, Dynamic> v = std::move(first.value);
  PerSample<Scalar, Dynamic> ld = std::move(first.log_det);
  [&]<std::size_t... Is>(std::index_sequence<Is...>) {
    (
        [&] {
          auto r = step_record(std::get<Is + 1>(steps), v, std::get<Is + 1>(tapes), ctx);
          v = std::move(r.value);
          ld += r.log_det;
        }(),
        ...);
  }
  (std::make_index_sequence<sizeof...(Bs) - 1>{});
  return {std::move(v), std::move(ld)};
}

/// The steps' vjps from their tapes, last step first; returns ∂L/∂x and adds ∂L/∂θ into gp.
template <typename Scalar, int Dim, typename... Bs, typename Tapes, typename GV, typename GL,
          typename C>
Batch<Scalar, Dim, Dynamic> taped_vjp_steps(const std::tuple<Bs...>& steps, const Tapes& tapes,
                                            const GV& gv, const GL& gl,
                                            Eigen::Ref<Vector<Scalar>> gp, const C& ctx,
                                            ContextGradient<Scalar>* gc) {
  constexpr std::size_t N = sizeof...(Bs);
  const auto offsets = step_parameter_offsets(steps);
  Batch<Scalar, Dim, Dynamic> g = gv;
  [&]<std::size_t... Is>(std::index_sequence<Is...>) {
    ((g = step_vjp_recorded(std::get<N - 1 - Is>(steps), std::get<N - 1 - Is>(tapes), g, gl,
                            gp.segment(offsets[N - 1 - Is], offsets[N - Is] - offsets[N - 1 - Is]),
                            ctx, gc)),
     ...);
  }
  (std::make_index_sequence<N>{});
  return g;
}

/// The inverse direction's vjp: the inverse pass (step N-1 first) keeping what each step
/// receives, then the steps' inverse vjps from step 0 up; returns ∂L/∂z and adds ∂L/∂θ into gp.
template <typename V, typename... Bs, typename Z, typename GV, typename GL, typename Scalar,
          typename C>
V inverse_vjp_steps(const std::tuple<Bs...>& steps, const Z& z, const GV& gv, const GL& gl,
                    Eigen::Ref<Vector<Scalar>> gp, const C& ctx, ContextGradient<Scalar>* gc) {
  constexpr std::size_t N = sizeof...(Bs);
  std::array<V, N> inputs;  // inputs[i]: what step i's inverse receives
  inputs[N - 1] = z;
  auto inverse_step = [&]<std::size_t I>(std::integral_constant<std::size_t, I>) {
    const auto& b = std::get<I>(steps);
    inputs[I - 1] = with_context<decltype(b)>(ctx, [&](const auto&... c) {
                      return b.inverse_and_log_det(inputs[I], c...);
                    }).value;
  };
  [&]<std::size_t... Is>(std::index_sequence<Is...>) {
    (inverse_step(std::integral_constant<std::size_t, N - 1 - Is>{}), ...);
  }
  (std::make_index_sequence<N - 1>{});
  const auto offsets = step_parameter_offsets(steps);
  V g = gv;
  auto vjp_step = [&]<std::size_t I>(std::integral_constant<std::size_t, I>) {
    const auto& b = std::get<I>(steps);
    g = step_vjp_in_context<true>(b, inputs[I], g, gl,
                                  gp.segment(offsets[I], offsets[I + 1] - offsets[I]), ctx, gc);
  };
  [&]<std::size_t... Is>(std::index_sequence<Is...>) {
    (vjp_step(std::integral_constant<std::size_t, Is>{}), ...);
  }
  (std::make_index_sequence<N>{});
  return g;
}

}  // namespace nflow::detail
