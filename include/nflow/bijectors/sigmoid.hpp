#pragma once
/// @file
/// @brief Sigmoid: maps R^Dim onto the open unit cube (0, 1)^Dim.

#include <string>

#include "nflow/core/bijector_base.hpp"
#include "nflow/core/errors.hpp"
#include "nflow/math/functions.hpp"

namespace nflow {

/// @brief z = σ(x) = 1/(1 + e^{−x}) elementwise.
///
/// forward:  log|det| = Σᵢ log σ(xᵢ) + log σ(−xᵢ) = −Σᵢ [softplus(xᵢ) + softplus(−xᵢ)]
/// inverse:  x = logit(z) = log z − log(1 − z), log|det| = −Σᵢ [log zᵢ + log(1 − zᵢ)]
/// Domain of the inverse: z ∈ (0, 1)^Dim. A column with z outside it gives NaN (or ±∞ on the
/// boundary) in that column only. For bounded data use Logit (the same map the other way round,
/// with an optional squeeze away from the boundary). No parameters.
/// @tparam Scalar_ float or double. @tparam Dim_ fixed or Eigen::Dynamic.
template <typename Scalar_, int Dim_ = Dynamic>
class Sigmoid : public BijectorBase<Sigmoid<Scalar_, Dim_>> {
 public:
  using Scalar = Scalar_;
  static constexpr int Dim = Dim_;

  Sigmoid() requires(Dim_ != Dynamic) = default;
  explicit Sigmoid(Index dim) : dim_(dim) {
    if (dim <= 0 || (Dim_ != Dynamic && dim != Dim_)) {
      throw ParameterError("nflow::Sigmoid: dim must be positive (and equal Dim when fixed), got " +
                           std::to_string(dim));
    }
  }
  Index dim() const { return Dim_ == Dynamic ? dim_ : Index(Dim_); }

  template <typename X, typename C>
  detail::ResultFor<Scalar, Dim, X> forward_impl(const X& x, const C&) const {
    detail::ResultFor<Scalar, Dim, X> r;
    r.value = sigmoid(x.array()).matrix();
    r.log_det = -(softplus(x.array()) + softplus((-x).array())).colwise().sum();
    return r;
  }
  template <typename Z, typename C>
  detail::ResultFor<Scalar, Dim, Z> inverse_impl(const Z& z, const C&) const {
    detail::ResultFor<Scalar, Dim, Z> r;
    const auto log_z = z.array().log();
    const auto log_1mz = (-z.array()).log1p();
    r.value = (log_z - log_1mz).matrix();
    r.log_det = -(log_z + log_1mz).colwise().sum();
    return r;
  }
  template <typename X, typename GV, typename GL, typename C>
  detail::BatchFor<Scalar, Dim, X> forward_vjp_impl(const X& x, const GV& gv, const GL& gl,
                                                    Eigen::Ref<Vector<Scalar>>, const C&) const {
    // dz/dx = σ(1 − σ); d log|det|/dx = 1 − 2σ.
    const detail::BatchFor<Scalar, Dim, X> s = sigmoid(x.array()).matrix();
    detail::BatchFor<Scalar, Dim, X> gx =
        gv.array() * s.array() * (Scalar(1) - s.array()) +
        (Scalar(1) - Scalar(2) * s.array()).rowwise() * gl.array();
    return gx;
  }
  template <typename Z, typename GV, typename GL, typename C>
  detail::BatchFor<Scalar, Dim, Z> inverse_vjp_impl(const Z& z, const GV& gv, const GL& gl,
                                                    Eigen::Ref<Vector<Scalar>>, const C&) const {
    // dx/dz = 1/(z(1 − z)); d log|det|/dz = −1/z + 1/(1 − z) = (2z − 1)/(z(1 − z)).
    const auto inv_jac = (z.array() * (Scalar(1) - z.array())).inverse();
    detail::BatchFor<Scalar, Dim, Z> gz =
        inv_jac * (gv.array() + (Scalar(2) * z.array() - Scalar(1)).rowwise() * gl.array());
    return gz;
  }

 private:
  Index dim_ = Dim_ == Dynamic ? 0 : Dim_;
};

}  // namespace nflow
