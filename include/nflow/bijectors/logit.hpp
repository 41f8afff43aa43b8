#pragma once
/// @file
/// @brief Logit: maps data in the open unit cube (0, 1)^Dim onto R^Dim, with an optional squeeze.

#include <cmath>
#include <concepts>
#include <string>

#include "nflow/core/bijector_base.hpp"
#include "nflow/core/errors.hpp"
#include "nflow/math/functions.hpp"

namespace nflow {

/// @brief z = logit(α + (1 − 2α)·x) elementwise, for data x ∈ (0, 1)^Dim (images, fractions).
///
/// With y = α + (1 − 2α)x:
/// forward:  z = log y − log(1 − y),  log|det| = Σᵢ [log(1 − 2α) − log yᵢ − log(1 − yᵢ)]
/// inverse:  x = (σ(z) − α)/(1 − 2α),  log|det| = Σᵢ [log σ(zᵢ) + log σ(−zᵢ) − log(1 − 2α)]
/// α ∈ [0, ½) keeps y away from 0 and 1 (Real NVP uses α = 0.05 for images); α = 0 is the plain
/// logit. A column with x outside (0, 1) (outside [−α/(1−2α), (1−α)/(1−2α)] when α > 0) gives NaN
/// or ±∞ in that column only. No trainable parameters; α is fixed at construction.
///
/// Construction: `Logit<S, D>()` or `Logit<S, D>(alpha)` with a fixed D, `Logit<S>(dim)` or
/// `Logit<S>(dim, alpha)`; an integer argument is always the dimension and a floating-point one
/// α (of any floating type), so `Logit<float, 2>(0.05)` is α = 0.05, not an ambiguous call.
/// @tparam Scalar_ float or double. @tparam Dim_ fixed or Eigen::Dynamic.
template <typename Scalar_, int Dim_ = Dynamic>
class Logit : public BijectorBase<Logit<Scalar_, Dim_>> {
 public:
  using Scalar = Scalar_;
  static constexpr int Dim = Dim_;

  /// @brief The fixed dimension Dim, α = 0.
  Logit() requires(Dim_ != Dynamic) : Logit(Index(Dim_)) {}
  /// @brief The fixed dimension Dim and α (any floating-point type; a Dynamic Logit needs its
  /// dimension first, Logit(dim, alpha)).
  template <std::floating_point A>
  explicit Logit(A alpha) : Logit(Index(Dim_ == Dynamic ? 0 : Dim_), Scalar(alpha)) {
    static_assert(Dim_ != Dynamic,
                  "nflow::Logit<Scalar, Eigen::Dynamic>(alpha): a Logit of run-time dimension "
                  "needs the dimension first, Logit(dim, alpha)");
  }
  /// @brief Dimension `dim` (equal to Dim when fixed) and α ∈ [0, ½).
  /// @throws nflow::ParameterError naming 'dim' or 'alpha'.
  template <std::integral I>
  explicit Logit(I dim, Scalar alpha = Scalar(0)) : dim_(Index(dim)), alpha_(alpha) {
    if (dim <= 0 || (Dim_ != Dynamic && Index(dim) != Dim_)) {
      throw ParameterError(
          "nflow::Logit: parameter 'dim' must be positive (and equal Dim when fixed), got " +
          std::to_string(dim) +
          " (an integer argument is the dimension; α is a floating-point one, e.g. "
          "Logit<double, 2>(0.05))");
    }
    if (!(alpha >= Scalar(0) && alpha < Scalar(0.5))) {
      throw ParameterError("nflow::Logit: parameter 'alpha' must lie in [0, 0.5), got " +
                           std::to_string(double(alpha)));
    }
    log_squeeze_ = std::log1p(Scalar(-2) * alpha_);
  }
  Index dim() const { return dim_; }
  Scalar alpha() const { return alpha_; }

  template <typename X, typename C>
  detail::ResultFor<Scalar, Dim, X> forward_impl(const X& x, const C&) const {
    detail::ResultFor<Scalar, Dim, X> r;
    const detail::BatchFor<Scalar, Dim, X> y =
        (alpha_ + (Scalar(1) - Scalar(2) * alpha_) * x.array()).matrix();
    const auto log_y = y.array().log();
    const auto log_1my = (-y.array()).log1p();
    r.value = (log_y - log_1my).matrix();
    r.log_det = (log_squeeze_ - log_y - log_1my).colwise().sum();
    return r;
  }
  template <typename Z, typename C>
  detail::ResultFor<Scalar, Dim, Z> inverse_impl(const Z& z, const C&) const {
    detail::ResultFor<Scalar, Dim, Z> r;
    r.value = ((sigmoid(z.array()) - alpha_) / (Scalar(1) - Scalar(2) * alpha_)).matrix();
    r.log_det = (-(softplus(z.array()) + softplus((-z).array())) - log_squeeze_).colwise().sum();
    return r;
  }
  template <typename X, typename GV, typename GL, typename C>
  detail::BatchFor<Scalar, Dim, X> forward_vjp_impl(const X& x, const GV& gv, const GL& gl,
                                                    Eigen::Ref<Vector<Scalar>>, const C&) const {
    // dz/dx = c/(y(1 − y)) with c = 1 − 2α; d log|det|/dx = c·(2y − 1)/(y(1 − y)).
    const Scalar c = Scalar(1) - Scalar(2) * alpha_;
    const detail::BatchFor<Scalar, Dim, X> y = (alpha_ + c * x.array()).matrix();
    const auto inv = c * (y.array() * (Scalar(1) - y.array())).inverse();
    detail::BatchFor<Scalar, Dim, X> gx =
        inv * (gv.array() + (Scalar(2) * y.array() - Scalar(1)).rowwise() * gl.array());
    return gx;
  }
  template <typename Z, typename GV, typename GL, typename C>
  detail::BatchFor<Scalar, Dim, Z> inverse_vjp_impl(const Z& z, const GV& gv, const GL& gl,
                                                    Eigen::Ref<Vector<Scalar>>, const C&) const {
    // dx/dz = σ(1 − σ)/c; d log|det|/dz = 1 − 2σ.
    const Scalar c = Scalar(1) - Scalar(2) * alpha_;
    const detail::BatchFor<Scalar, Dim, Z> s = sigmoid(z.array()).matrix();
    detail::BatchFor<Scalar, Dim, Z> gz =
        gv.array() * s.array() * (Scalar(1) - s.array()) / c +
        (Scalar(1) - Scalar(2) * s.array()).rowwise() * gl.array();
    return gz;
  }

 private:
  Index dim_;
  Scalar alpha_;
  Scalar log_squeeze_ = Scalar(0);
};

}  // namespace nflow
