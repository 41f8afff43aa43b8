#pragma once
/// @file
/// @brief Numerically stable elementwise functions used by the bijectors: softplus, log-sigmoid,
/// log-sum-exp and a smooth clamp. Each works on a scalar and on an Eigen array expression.

#include <Eigen/Core>
#include <cmath>
#include <concepts>
#include <limits>

namespace nflow {

/// @brief softplus(x) = log(1 + exp(x)), exact to rounding for every finite x (no overflow).
template <std::floating_point Scalar>
Scalar softplus(Scalar x) {
  // max(x, 0) + log1p(exp(-|x|)) never overflows and keeps precision for large negative x.
  return (x > Scalar(0) ? x : Scalar(0)) + std::log1p(std::exp(-std::abs(x)));
}

/// @brief log σ(x) = −softplus(−x).
template <std::floating_point Scalar>
Scalar log_sigmoid(Scalar x) {
  return -softplus(-x);
}

/// @brief σ(x) = 1 / (1 + exp(−x)), evaluated without overflow.
template <std::floating_point Scalar>
Scalar sigmoid(Scalar x) {
  if (x >= Scalar(0)) return Scalar(1) / (Scalar(1) + std::exp(-x));
  const Scalar e = std::exp(x);
  return e / (Scalar(1) + e);
}

/// @brief Elementwise softplus of an Eigen array expression.
template <typename Derived>
auto softplus(const Eigen::ArrayBase<Derived>& x) {
  using S = typename Derived::Scalar;
  return x.max(S(0)) + (-x.abs()).exp().log1p();
}

/// @brief Elementwise σ(x) of an Eigen array expression (stable for both signs).
template <typename Derived>
auto sigmoid(const Eigen::ArrayBase<Derived>& x) {
  using S = typename Derived::Scalar;
  // σ(x) = exp(min(x,0)) / (1 + exp(-|x|)): numerator and denominator never overflow.
  return x.min(S(0)).exp() / (S(1) + (-x.abs()).exp());
}

/// @brief log Σ exp(x_i) over a vector, stable for large |x|; −∞ for an empty or all −∞ input.
template <typename Derived>
typename Derived::Scalar log_sum_exp(const Eigen::DenseBase<Derived>& x) {
  using S = typename Derived::Scalar;
  if (x.size() == 0) return -std::numeric_limits<S>::infinity();
  const S m = x.maxCoeff();
  if (!std::isfinite(m)) return m;
  return m + std::log((x.derived().array() - m).exp().sum());
}

/// @brief Smooth bound of a log-scale: bound · tanh(u / bound). Identity near 0, |out| < bound.
/// Its derivative is 1 − tanh²(u / bound).
template <typename Derived>
auto soft_clamp(const Eigen::ArrayBase<Derived>& u, typename Derived::Scalar bound) {
  return bound * (u / bound).tanh();
}

}  // namespace nflow
