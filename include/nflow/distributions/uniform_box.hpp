#pragma once
/// @file
/// @brief The uniform base distribution on a box [lower, upper] ⊂ R^Dim.

#include <cmath>
#include <limits>
#include <string>

#include "nflow/core/errors.hpp"
#include "nflow/core/random.hpp"
#include "nflow/core/types.hpp"

namespace nflow {

/// @brief The uniform distribution on the closed box [lower₁, upper₁] × … × [lower_Dim, upper_Dim],
/// the base of flows on a bounded domain (bounded splines, neural importance sampling).
///
/// log p(z) = −Σᵢ log(upperᵢ − lowerᵢ) when lowerᵢ ≤ zᵢ ≤ upperᵢ for every i, −∞ when a coordinate
/// is outside, NaN when a coordinate is NaN (per column: a bad column never affects another).
/// The density is flat, so ∂log p/∂z = 0 inside; outside, −∞ has no gradient and 0 is given.
/// Sampling: zᵢ = lowerᵢ + (upperᵢ − lowerᵢ)·u with u = nflow::uniform_open01 (one draw per
/// coefficient, in storage order), so the same seed gives the same samples on every compiler;
/// every sample lies in [lower, upper) (a value that rounds up to upperᵢ is moved one step below).
/// No parameters: the bounds are fixed at construction (neither trained nor saved).
/// Invariant: lowerᵢ < upperᵢ, both finite, and upperᵢ − lowerᵢ finite.
/// References: Müller et al. 2019, "Neural Importance Sampling", arXiv:1808.03856 (flows on the
/// unit hypercube with a uniform base).
/// @tparam Scalar_ float or double.
/// @tparam Dim_ the dimension, fixed or Eigen::Dynamic (then given to the constructor).
template <typename Scalar_, int Dim_ = Dynamic>
class UniformBox {
 public:
  using Scalar = Scalar_;
  static constexpr int Dim = Dim_;
  using Column = Eigen::Matrix<Scalar, Dim, 1>;

  /// The unit box [0, 1]^Dim.
  UniformBox() requires(Dim_ != Dynamic) : UniformBox(Index(Dim_)) {}
  /// The unit box [0, 1]^dim.
  explicit UniformBox(Index dim) {
    if (dim <= 0 || (Dim_ != Dynamic && dim != Dim_)) {
      throw ParameterError(
          "nflow::UniformBox: dim must be positive (and equal Dim when fixed), got " +
          std::to_string(dim));
    }
    lower_ = Column::Zero(dim);
    upper_ = Column::Ones(dim);
  }
  /// The box [lower, upper]: two column vectors of the same size (Dim when fixed), finite, with
  /// lowerᵢ < upperᵢ and a finite width; otherwise ParameterError saying which.
  template <typename L, typename U>
  UniformBox(const Eigen::MatrixBase<L>& lower, const Eigen::MatrixBase<U>& upper) {
    if (lower.cols() != 1 || upper.cols() != 1 || lower.rows() != upper.rows() ||
        lower.rows() == 0 || (Dim_ != Dynamic && lower.rows() != Dim_)) {
      throw ParameterError(
          "nflow::UniformBox: lower and upper must be non-empty column vectors of the same size"
          " (Dim when fixed), got " +
          detail::shape_string(lower.rows(), lower.cols()) + " and " +
          detail::shape_string(upper.rows(), upper.cols()));
    }
    for (Index i = 0; i < lower.rows(); ++i) {
      const Scalar l = lower(i);
      const Scalar u = upper(i);
      if (!std::isfinite(l) || !std::isfinite(u) || !(l < u) || !std::isfinite(u - l)) {
        throw ParameterError("nflow::UniformBox: bound " + std::to_string(i) +
                             " must be finite with lower < upper and a finite width, got [" +
                             std::to_string(l) + ", " + std::to_string(u) + "]");
      }
    }
    lower_ = lower;
    upper_ = upper;
    log_volume_ = (upper_ - lower_).array().log().sum();
  }

  Index dim() const { return lower_.size(); }
  const Column& lower() const { return lower_; }
  const Column& upper() const { return upper_; }

  /// log p(z) for each column of `z` (Dim × N): −log(volume) inside the closed box, −∞ outside,
  /// NaN for a column holding a NaN.
  template <typename Z>
  PerSample<Scalar, Z::ColsAtCompileTime> log_prob(const Eigen::MatrixBase<Z>& z) const {
    detail::check_rows("UniformBox::log_prob", "z", dim(), z.rows(), z.cols());
    PerSample<Scalar, Z::ColsAtCompileTime> lp(1, z.cols());
    for (Index j = 0; j < z.cols(); ++j) lp(j) = column_log_prob(z.col(j));
    return lp;
  }

  /// ∂L/∂z from ∂L/∂log_prob (1 × N): zero (the density is flat; outside the box −∞ has no
  /// gradient and zero is given), NaN in a column of `z` that holds a NaN. No parameters.
  template <typename Z, typename G>
  Batch<Scalar, Dim, Z::ColsAtCompileTime> log_prob_vjp(
      const Eigen::MatrixBase<Z>& z, const Eigen::MatrixBase<G>& /*grad_log_prob*/,
      Eigen::Ref<Vector<Scalar>> /*grad_params*/) const {
    detail::check_rows("UniformBox::log_prob_vjp", "z", dim(), z.rows(), z.cols());
    Batch<Scalar, Dim, Z::ColsAtCompileTime> dz =
        Batch<Scalar, Dim, Z::ColsAtCompileTime>::Zero(dim(), z.cols());
    for (Index j = 0; j < z.cols(); ++j) {
      if (std::isnan(column_log_prob(z.col(j))))
        dz.col(j).setConstant(std::numeric_limits<Scalar>::quiet_NaN());
    }
    return dz;
  }

  /// `n` samples (Dim × n), each in [lower, upper).
  template <std::uniform_random_bit_generator G>
  Batch<Scalar, Dim, Dynamic> sample(Index n, G& gen) const {
    Batch<Scalar, Dim, Dynamic> z(dim(), n);
    for (Index j = 0; j < n; ++j) {
      for (Index i = 0; i < dim(); ++i) {
        // In double, then rounded once to Scalar; rounding may reach upper (float, or a width
        // that rounds up), which the half-open box excludes.
        const double l = double(lower_(i));
        const Scalar v = Scalar(l + (double(upper_(i)) - l) * uniform_open01(gen));
        z(i, j) = v < upper_(i) ? v : std::nextafter(upper_(i), lower_(i));
      }
    }
    return z;
  }

  Index parameter_count() const { return 0; }
  template <typename F>
  void visit_parameters(F&&) const {}

 private:
  template <typename C>
  Scalar column_log_prob(const C& c) const {
    Scalar lp = -log_volume_;
    for (Index i = 0; i < c.size(); ++i) {
      const Scalar v = c(i);
      if (std::isnan(v)) return std::numeric_limits<Scalar>::quiet_NaN();
      if (v < lower_(i) || v > upper_(i)) lp = -std::numeric_limits<Scalar>::infinity();
    }
    return lp;
  }

  Column lower_;
  Column upper_;
  Scalar log_volume_ = 0;  ///< Σᵢ log(upperᵢ − lowerᵢ)
};

}  // namespace nflow
