#pragma once
/// @file
/// @brief What Flow<Bs...> checks of its steps and derives from them at compile time: one
/// Scalar, one dimension (Eigen::Dynamic matches any), one context dimension among the
/// conditional steps. Each check is made per step, so a failure names the step's index, its type
/// and the sizes that disagree (as template arguments shown with the error).

#include <cstddef>
#include <tuple>
#include <type_traits>
#include <utility>

#include "nflow/core/composite.hpp"
#include "nflow/core/concepts.hpp"
#include "nflow/core/traits.hpp"
#include "nflow/core/types.hpp"

namespace nflow::detail {

inline constexpr int kDimMismatch = -2;

/// Joins compile-time sizes: Dynamic matches anything; two different fixed sizes mismatch.
constexpr int join_dims(int a, int b) {
  if (a == kDimMismatch || b == kDimMismatch) return kDimMismatch;
  if (a == Dynamic) return b;
  if (b == Dynamic || a == b) return a;
  return kDimMismatch;
}

/// The values shown with a failed check of step `Step`: false when its fixed size differs from the
/// size the earlier steps fixed.
template <std::size_t Step, int EarlierStepsDim, int StepDim>
constexpr bool step_dim_matches_earlier_steps() {
  return join_dims(EarlierStepsDim, StepDim) != kDimMismatch;
}
template <std::size_t Step, int EarlierStepsContextDim, int StepContextDim>
constexpr bool step_context_dim_matches_earlier_steps() {
  // 0: unconditional (the step takes no context, or no earlier step does).
  return EarlierStepsContextDim == 0 || StepContextDim == 0 ||
         join_dims(EarlierStepsContextDim, StepContextDim) != kDimMismatch;
}
template <std::size_t Step, typename FirstStepScalar, typename StepScalar>
constexpr bool step_scalar_matches_first_step() {
  return std::is_same_v<FirstStepScalar, StepScalar>;
}

/// One check per size, as a class whose template arguments are the values, so that both compilers
/// print the step index and the sizes with the failed assertion.
template <std::size_t Step, typename FirstStepScalar, typename StepScalar>
struct StepScalarCheck {
  static constexpr bool ok = step_scalar_matches_first_step<Step, FirstStepScalar, StepScalar>();
  static_assert(
      step_scalar_matches_first_step<Step, FirstStepScalar, StepScalar>(),
      "nflow::Flow<Bs...>: every step must use the same Scalar type; do not mix float and "
      "double in one flow (shown with this error: <step index, step 0's Scalar, this "
      "step's Scalar>)");
};
template <std::size_t Step, int EarlierStepsDim, int StepDim>
struct StepDimCheck {
  static constexpr bool ok = step_dim_matches_earlier_steps<Step, EarlierStepsDim, StepDim>();
  static_assert(step_dim_matches_earlier_steps<Step, EarlierStepsDim, StepDim>(),
                "nflow::Flow<Bs...>: every step must have the same dimension Dim (Eigen::Dynamic "
                "matches any); shown with this error: <step index, the earlier steps' Dim, this "
                "step's Dim>");
};
template <std::size_t Step, int EarlierStepsContextDim, int StepContextDim>
struct StepContextDimCheck {
  static constexpr bool ok =
      step_context_dim_matches_earlier_steps<Step, EarlierStepsContextDim, StepContextDim>();
  static_assert(
      step_context_dim_matches_earlier_steps<Step, EarlierStepsContextDim, StepContextDim>(),
      "nflow::Flow<Bs...>: conditional steps in one flow must have the same ContextDim; "
      "shown with this error: <step index, the earlier steps' ContextDim, this step's "
      "ContextDim>");
};

/// The joined Dim of steps [0, End) (Dynamic if none is fixed; kDimMismatch if two differ).
template <std::size_t End, typename... Bs>
constexpr int joined_dim() {
  int d = Dynamic;
  std::size_t i = 0;
  ((d = i++ < End ? join_dims(d, Bs::Dim) : d), ...);
  return d;
}
/// The joined ContextDim of the conditional steps among [0, End) (0 if none is conditional).
template <std::size_t End, typename... Bs>
constexpr int joined_context_dim() {
  int d = 0;
  std::size_t i = 0;
  auto add = [&](int c) {
    if (i++ >= End || c == 0) return;
    d = d == 0 ? c : join_dims(d, c);
  };
  (add(context_dim_v<Bs>), ...);
  return d;
}

/// The checks of step `Step` (type B) of Flow<Bs...>, in the order a user's mistake is most likely
/// to be found: B models Bijector; its Scalar, Dim and ContextDim agree with the earlier steps';
/// its parameter members are all there or none.
template <std::size_t Step, typename B, typename... Bs>
struct FlowStep {
  static_assert(
      Bijector<B>,
      "nflow::Flow<Bs...>: every step must model nflow::Bijector (a Scalar type, a static "
      "constexpr int Dim, dim(), forward_and_log_det(x) and inverse_and_log_det(z)); the step's "
      "index and type are the template arguments of nflow::detail::FlowStep<index, type, ...> "
      "shown with this error, the missing requirement follows; see nflow/core/concepts.hpp");
  static constexpr bool checks_sizes() {
    if constexpr ((Bijector<Bs> && ...)) {
      using First = std::tuple_element_t<0, std::tuple<Bs...>>;
      return StepScalarCheck<Step, typename First::Scalar, typename B::Scalar>::ok &&
             StepDimCheck<Step, joined_dim<Step, Bs...>(), B::Dim>::ok &&
             StepContextDimCheck<Step, joined_context_dim<Step, Bs...>(), context_dim_v<B>>::ok &&
             CheckParameterMembers<Step, B>::ok;
    } else {
      return Bijector<B>;
    }
  }
  static constexpr bool ok = checks_sizes();
};

/// Every step of Flow<Bs...> passes its FlowStep checks (evaluated first in Flow's body).
template <typename... Bs>
constexpr bool check_flow_steps() {
  static_assert(sizeof...(Bs) > 0,
                "nflow::Flow<>: a flow needs at least one bijector; Flow<> with no steps is not a "
                "bijector of any dimension");
  return []<std::size_t... Is>(std::index_sequence<Is...>) {
    return (FlowStep<Is, Bs, Bs...>::ok && ...);
  }
  (std::index_sequence_for<Bs...>{});
}

/// Stands in for the first step when the steps are not all bijectors (their checks have failed).
struct InvalidStep {
  using Scalar = double;
};

/// What Flow<Bs...> derives from its steps (meaningful when check_flow_steps passed).
template <typename... Bs>
struct FlowTraits {
  static constexpr bool valid = sizeof...(Bs) > 0 && (Bijector<Bs> && ...);
  /// The first step's Scalar (double when the steps are not all bijectors).
  using Scalar = typename std::conditional_t<valid, std::tuple_element<0, std::tuple<Bs..., void>>,
                                             std::type_identity<InvalidStep>>::type::Scalar;
  static constexpr int dim = [] {
    if constexpr (valid) {
      const int d = joined_dim<sizeof...(Bs), Bs...>();
      return d == kDimMismatch ? int(Dynamic) : d;
    } else {
      return int(Dynamic);
    }
  }();
  static constexpr int context_dim = [] {
    if constexpr (valid) {
      const int d = joined_context_dim<sizeof...(Bs), Bs...>();
      return d == kDimMismatch ? int(Dynamic) : d;
    } else {
      return 0;
    }
  }();
  static constexpr bool is_constant_log_det = [] {
    if constexpr (valid) {
      return (is_constant_log_det_v<Bs> && ...);
    } else {
      return false;
    }
  }();
  static constexpr Cost forward_cost = [] {
    Cost c = Cost::OnePass;
    if constexpr (valid) ((c = max_cost(c, forward_cost_v<Bs>)), ...);
    return c;
  }();
  static constexpr Cost inverse_cost = [] {
    Cost c = Cost::OnePass;
    if constexpr (valid) ((c = max_cost(c, inverse_cost_v<Bs>)), ...);
    return c;
  }();
};

}  // namespace nflow::detail
