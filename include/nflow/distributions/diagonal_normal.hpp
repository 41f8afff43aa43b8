#pragma once
/// @file
/// @brief A diagonal normal base distribution with trainable mean and log-scale.

#include <string>

#include "nflow/core/errors.hpp"
#include "nflow/core/parameters.hpp"
#include "nflow/core/random.hpp"
#include "nflow/core/types.hpp"
#include "nflow/math/constants.hpp"

namespace nflow {

/// @brief N(loc, diag(exp(2·log_scale))) on R^Dim.
///
/// log p(z) = Σᵢ [−½((zᵢ − locᵢ)·exp(−log_scaleᵢ))² − log_scaleᵢ − ½log(2π)].
/// Parameters, in visit order: "loc" (Dim × 1), "log_scale" (Dim × 1). Invariant: both finite
/// (set_loc / set_log_scale reject NaN and Inf with ParameterError).
/// @tparam Scalar_ float or double. @tparam Dim_ fixed or Eigen::Dynamic.
template <typename Scalar_, int Dim_ = Dynamic>
class DiagonalNormal {
 public:
  using Scalar = Scalar_;
  static constexpr int Dim = Dim_;
  using Column = Eigen::Matrix<Scalar, Dim, 1>;

  DiagonalNormal() requires(Dim_ != Dynamic) : DiagonalNormal(Index(Dim_)) {}
  /// Standard normal start: loc = 0, log_scale = 0.
  explicit DiagonalNormal(Index dim) {
    if (dim <= 0 || (Dim_ != Dynamic && dim != Dim_)) {
      throw ParameterError(
          "nflow::DiagonalNormal: dim must be positive (and equal Dim when fixed), got " +
          std::to_string(dim));
    }
    loc_ = Column::Zero(dim);
    log_scale_ = Column::Zero(dim);
  }

  Index dim() const { return loc_.size(); }
  const Column& loc() const { return loc_; }
  const Column& log_scale() const { return log_scale_; }
  template <typename D>
  void set_loc(const Eigen::MatrixBase<D>& loc) {
    check_parameter("loc", loc);
    loc_ = loc;
  }
  template <typename D>
  void set_log_scale(const Eigen::MatrixBase<D>& log_scale) {
    check_parameter("log_scale", log_scale);
    log_scale_ = log_scale;
  }

  template <typename Z>
  PerSample<Scalar, Z::ColsAtCompileTime> log_prob(const Eigen::MatrixBase<Z>& z) const {
    detail::check_rows("DiagonalNormal::log_prob", "z", dim(), z.rows(), z.cols());
    const Column inv_scale = (-log_scale_.array()).exp();
    const auto u = ((z.colwise() - loc_).array().colwise() * inv_scale.array());
    return (Scalar(-0.5) * u.square().colwise().sum()).array() -
           (log_scale_.sum() + Scalar(dim()) * Constants<Scalar>::half_log_two_pi);
  }

  /// ∂L/∂z from ∂L/∂log_prob (1 × N); adds ∂L/∂loc and ∂L/∂log_scale into `grad_params`.
  template <typename Z, typename G>
  Batch<Scalar, Dim, Z::ColsAtCompileTime> log_prob_vjp(
      const Eigen::MatrixBase<Z>& z, const Eigen::MatrixBase<G>& grad_log_prob,
      Eigen::Ref<Vector<Scalar>> grad_params) const {
    detail::check_rows("DiagonalNormal::log_prob_vjp", "z", dim(), z.rows(), z.cols());
    detail::check_size("DiagonalNormal::log_prob_vjp", "grad_params", parameter_count(),
                       grad_params.size());
    const Column inv_scale = (-log_scale_.array()).exp();
    // u = (z − loc)/σ; ∂log p/∂z = −u/σ; ∂log p/∂loc = u/σ; ∂log p/∂log_scale = u² − 1.
    const Batch<Scalar, Dim, Z::ColsAtCompileTime> u =
        (z.colwise() - loc_).array().colwise() * inv_scale.array();
    Batch<Scalar, Dim, Z::ColsAtCompileTime> dz =
        (-(u.array().colwise() * inv_scale.array())).rowwise() * grad_log_prob.array();
    detail::GradientSlicer<Scalar> slicer(grad_params);
    slicer.next(dim()) -= dz.rowwise().sum();
    slicer.next(dim()) += ((u.array().square() - Scalar(1)).rowwise() * grad_log_prob.array())
                              .rowwise()
                              .sum()
                              .matrix();
    return dz;
  }

  template <std::uniform_random_bit_generator G>
  Batch<Scalar, Dim, Dynamic> sample(Index n, G& gen) const {
    Batch<Scalar, Dim, Dynamic> z(dim(), n);
    fill_standard_normal(z, gen);
    const Column scale = log_scale_.array().exp();
    z = (z.array().colwise() * scale.array()).matrix().colwise() + loc_;
    return z;
  }

  Index parameter_count() const { return 2 * dim(); }
  template <typename F>
  void visit_parameters(F&& f) {
    f(std::string("loc"), Eigen::Ref<ParameterMatrix<Scalar>>(loc_));
    f(std::string("log_scale"), Eigen::Ref<ParameterMatrix<Scalar>>(log_scale_));
  }
  template <typename F>
  void visit_parameters(F&& f) const {
    f(std::string("loc"), Eigen::Ref<const ParameterMatrix<Scalar>>(loc_));
    f(std::string("log_scale"), Eigen::Ref<const ParameterMatrix<Scalar>>(log_scale_));
  }

 private:
  template <typename D>
  void check_parameter(const char* name, const Eigen::MatrixBase<D>& v) const {
    detail::check_rows("DiagonalNormal", name, dim(), v.rows(), v.cols());
    if (!v.allFinite()) {
      throw ParameterError(std::string("nflow::DiagonalNormal: parameter '") + name +
                           "' must be finite");
    }
  }

  Column loc_;
  Column log_scale_;
};

}  // namespace nflow
