#pragma once
/// @file
/// @brief Compile-time facts about a bijector, with defaults for types that do not state them.
///
/// A bijector may declare, as `static constexpr` members:
/// - `int ContextDim`: rows of the context it takes (0: unconditional, the default);
/// - `bool IsConstantLogDet`: the log-det does not depend on the input (default false);
/// - `Cost ForwardCost`, `Cost InverseCost`: passes each direction takes (default OnePass).

#include "nflow/core/types.hpp"

namespace nflow {

template <typename B>
inline constexpr int context_dim_v = [] {
  if constexpr (requires { B::ContextDim; }) {
    return int(B::ContextDim);
  } else {
    return 0;
  }
}();

/// True when `B` takes a context (its ContextDim is fixed positive or Dynamic).
template <typename B>
inline constexpr bool is_conditional_v = context_dim_v<B> != 0;

template <typename B>
inline constexpr bool is_constant_log_det_v = [] {
  if constexpr (requires { B::IsConstantLogDet; }) {
    return bool(B::IsConstantLogDet);
  } else {
    return false;
  }
}();

template <typename B>
inline constexpr Cost forward_cost_v = [] {
  if constexpr (requires { B::ForwardCost; }) {
    return Cost(B::ForwardCost);
  } else {
    return Cost::OnePass;
  }
}();

template <typename B>
inline constexpr Cost inverse_cost_v = [] {
  if constexpr (requires { B::InverseCost; }) {
    return Cost(B::InverseCost);
  } else {
    return Cost::OnePass;
  }
}();

}  // namespace nflow
