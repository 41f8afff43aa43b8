#pragma once
/// @file
/// @brief The kernels of a dense (fully connected) layer over a batch, shared by the MLP and by
/// masked networks, and the PyTorch-style uniform initialisation.
///
/// A dense layer maps a batch `X` (in × N, one sample per column) to `Y = W·X + b·1ᵀ`
/// (out × N), with `W` out × in (PyTorch's nn.Linear layout) and `b` a column vector. Over a
/// batch the product is one GEMM; the bias is a broadcast add. Its reverse-mode derivatives, for
/// an upstream gradient `G = ∂L/∂Y`, are `∂L/∂W = G·Xᵀ`, `∂L/∂b = G·1` (row sums) and
/// `∂L/∂X = Wᵀ·G`. Column j of `Y` depends on column j of `X` only.

#include <Eigen/Core>
#include <cmath>
#include <random>

#include "nflow/core/random.hpp"
#include "nflow/core/types.hpp"

namespace nflow::nn {

/// @brief Sets every column of `out` to `bias` (a vectorised column copy each; `out.colwise() +=
/// bias` on a block of a matrix compiled to scalar code with g++ 12 and Eigen 3.4, 13 % of a
/// Real NVP batch).
template <typename OutDerived, typename BiasDerived>
void fill_columns(Eigen::MatrixBase<OutDerived>& out, const Eigen::MatrixBase<BiasDerived>& bias) {
  for (Index j = 0; j < out.cols(); ++j) out.col(j) = bias.derived();
}

/// @brief `out = weight · input + bias` broadcast over columns: the bias is written into `out`
/// and the product accumulated onto it, one pass (`out = W·X` would zero `out` first and the bias
/// add pass over it again). `out` must already have the right shape (a plain matrix or a
/// writable block).
template <typename OutDerived, typename WeightDerived, typename InputDerived, typename BiasDerived>
void dense_forward(Eigen::MatrixBase<OutDerived>& out,
                   const Eigen::MatrixBase<WeightDerived>& weight,
                   const Eigen::MatrixBase<InputDerived>& input,
                   const Eigen::MatrixBase<BiasDerived>& bias) {
  fill_columns(out, bias);
  out.noalias() += weight.derived() * input.derived();
}

/// @brief Rvalue overload of dense_forward, for a block of a larger buffer.
template <typename OutDerived, typename WeightDerived, typename InputDerived, typename BiasDerived>
void dense_forward(Eigen::MatrixBase<OutDerived>&& out,
                   const Eigen::MatrixBase<WeightDerived>& weight,
                   const Eigen::MatrixBase<InputDerived>& input,
                   const Eigen::MatrixBase<BiasDerived>& bias) {
  dense_forward(out, weight, input, bias);
}

/// @brief Adds a dense layer's parameter gradients: `grad_weight += delta · inputᵀ` and
/// `grad_bias += delta · 1` (the sum over samples), where `delta = ∂L/∂(W·X + b)`.
template <typename DeltaDerived, typename InputDerived, typename GradWeight, typename GradBias>
void dense_accumulate_parameter_gradients(const Eigen::MatrixBase<DeltaDerived>& delta,
                                          const Eigen::MatrixBase<InputDerived>& input,
                                          GradWeight&& grad_weight, GradBias&& grad_bias) {
  grad_weight.noalias() += delta.derived() * input.derived().transpose();
  grad_bias += delta.derived().rowwise().sum();
}

/// @brief Fills `m`, column by column (column-major order), with draws uniform on (−bound, bound).
///
/// Each draw is `bound · (2u − 1)` with `u = nflow::uniform_open01(gen)` (53 random bits, in
/// double, then rounded to the matrix's scalar), so a seed gives the same values on every
/// compiler and standard library.
template <typename Derived, std::uniform_random_bit_generator G>
void fill_uniform_symmetric(Eigen::DenseBase<Derived>& m, double bound, G& gen) {
  using S = typename Derived::Scalar;
  auto& d = m.derived();
  for (Index j = 0; j < d.cols(); ++j) {
    for (Index i = 0; i < d.rows(); ++i) {
      d.coeffRef(i, j) = S(bound * (2.0 * uniform_open01(gen) - 1.0));
    }
  }
}

/// @brief Rvalue overload of fill_uniform_symmetric (for an `Eigen::Ref` or a block).
template <typename Derived, std::uniform_random_bit_generator G>
void fill_uniform_symmetric(Eigen::DenseBase<Derived>&& m, double bound, G& gen) {
  fill_uniform_symmetric(m, bound, gen);
}

/// @brief The bound of PyTorch's default nn.Linear initialisation, 1/√fan_in (for the weight,
/// kaiming_uniform with a = √5, and for the bias alike); 0 when fan_in is 0.
inline double default_init_bound(Index fan_in) {
  return fan_in > 0 ? 1.0 / std::sqrt(double(fan_in)) : 0.0;
}

}  // namespace nflow::nn
