#pragma once
/// @file
/// @brief Scalar-dependent constants, so templates never hold a bare literal tolerance.

#include <numbers>

namespace nflow {

/// @brief Constants in the precision of `Scalar` (float or double).
template <typename Scalar>
struct Constants {
  /// log(2π) / 2, the normaliser of a standard normal per dimension.
  static constexpr Scalar half_log_two_pi = Scalar(0.91893853320467274178032973640562);
  static constexpr Scalar log_two = std::numbers::ln2_v<Scalar>;
  static constexpr Scalar pi = std::numbers::pi_v<Scalar>;
  /// Default bound on a coupling or autoregressive log-scale: |log_scale| ≤ this.
  static constexpr Scalar default_log_scale_bound = Scalar(3);
};

}  // namespace nflow
