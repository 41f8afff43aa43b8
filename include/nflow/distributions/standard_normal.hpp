#pragma once
/// @file
/// @brief The standard normal base distribution N(0, I).

#include "nflow/core/errors.hpp"
#include "nflow/core/random.hpp"
#include "nflow/core/types.hpp"
#include "nflow/math/constants.hpp"

namespace nflow {

/// @brief The standard normal N(0, I) on R^Dim, the usual base of a flow.
///
/// log p(z) = −½‖z‖² − Dim·½log(2π), per column. No parameters.
/// @tparam Scalar_ float or double.
/// @tparam Dim_ the dimension, fixed or Eigen::Dynamic (then given to the constructor).
template <typename Scalar_, int Dim_ = Dynamic>
class StandardNormal {
 public:
  using Scalar = Scalar_;
  static constexpr int Dim = Dim_;

  StandardNormal() requires(Dim_ != Dynamic) = default;
  explicit StandardNormal(Index dim) : dim_(dim) {
    if (dim <= 0 || (Dim_ != Dynamic && dim != Dim_)) {
      throw ParameterError(
          "nflow::StandardNormal: dim must be positive (and equal Dim when fixed), got " +
          std::to_string(dim));
    }
  }

  Index dim() const { return Dim_ == Dynamic ? dim_ : Index(Dim_); }

  /// log p(z) for each column of `z` (Dim × N); NaN in a column gives NaN for that column only.
  template <typename Z>
  PerSample<Scalar, Z::ColsAtCompileTime> log_prob(const Eigen::MatrixBase<Z>& z) const {
    detail::check_rows("StandardNormal::log_prob", "z", dim(), z.rows(), z.cols());
    return (Scalar(-0.5) * z.colwise().squaredNorm()).array() -
           Scalar(dim()) * Constants<Scalar>::half_log_two_pi;
  }

  /// ∂L/∂z for L depending on log_prob(z) through `grad_log_prob` (1 × N). No parameters.
  template <typename Z, typename G>
  Batch<Scalar, Dim, Z::ColsAtCompileTime> log_prob_vjp(
      const Eigen::MatrixBase<Z>& z, const Eigen::MatrixBase<G>& grad_log_prob,
      Eigen::Ref<Vector<Scalar>> /*grad_params*/) const {
    detail::check_rows("StandardNormal::log_prob_vjp", "z", dim(), z.rows(), z.cols());
    return -(z.array().rowwise() * grad_log_prob.array()).matrix();
  }

  /// `n` samples (Dim × n).
  template <std::uniform_random_bit_generator G>
  Batch<Scalar, Dim, Dynamic> sample(Index n, G& gen) const {
    Batch<Scalar, Dim, Dynamic> z(dim(), n);
    fill_standard_normal(z, gen);
    return z;
  }

  Index parameter_count() const { return 0; }
  template <typename F>
  void visit_parameters(F&&) const {}

 private:
  Index dim_ = Dim_ == Dynamic ? 0 : Dim_;
};

}  // namespace nflow
