#pragma once
/// @file
/// @brief ElementwiseAffine: z = x ⊙ exp(log_scale) + shift.

#include <string>

#include "nflow/core/bijector_base.hpp"
#include "nflow/core/errors.hpp"
#include "nflow/core/parameters.hpp"

namespace nflow {

/// @brief Elementwise affine map with a per-dimension scale held in log space.
///
/// forward:  z = x ⊙ exp(s) + b,        log|det| = Σᵢ sᵢ (constant in x)
/// inverse:  x = (z − b) ⊙ exp(−s),     log|det| = −Σᵢ sᵢ
/// Parameters, in visit order: "shift" b (Dim × 1), "log_scale" s (Dim × 1). Invariant: both
/// finite (the setters throw ParameterError otherwise). Starts as the identity.
/// @tparam Scalar_ float or double. @tparam Dim_ fixed or Eigen::Dynamic.
template <typename Scalar_, int Dim_ = Dynamic>
class ElementwiseAffine : public BijectorBase<ElementwiseAffine<Scalar_, Dim_>> {
 public:
  using Scalar = Scalar_;
  static constexpr int Dim = Dim_;
  static constexpr bool IsConstantLogDet = true;
  using Column = Eigen::Matrix<Scalar, Dim, 1>;

  ElementwiseAffine() requires(Dim_ != Dynamic) : ElementwiseAffine(Index(Dim_)) {}
  explicit ElementwiseAffine(Index dim) {
    if (dim <= 0 || (Dim_ != Dynamic && dim != Dim_)) {
      throw ParameterError(
          "nflow::ElementwiseAffine: dim must be positive (and equal Dim when fixed), got " +
          std::to_string(dim));
    }
    shift_ = Column::Zero(dim);
    log_scale_ = Column::Zero(dim);
  }

  Index dim() const { return shift_.size(); }
  const Column& shift() const { return shift_; }
  const Column& log_scale() const { return log_scale_; }
  template <typename D>
  void set_shift(const Eigen::MatrixBase<D>& v) {
    check("shift", v);
    shift_ = v;
  }
  template <typename D>
  void set_log_scale(const Eigen::MatrixBase<D>& v) {
    check("log_scale", v);
    log_scale_ = v;
  }

  template <typename X, typename C>
  detail::ResultFor<Scalar, Dim, X> forward_impl(const X& x, const C&) const {
    detail::ResultFor<Scalar, Dim, X> r;
    r.value = (x.array().colwise() * log_scale_.array().exp()).matrix().colwise() + shift_;
    r.log_det.setConstant(1, x.cols(), log_scale_.sum());
    return r;
  }
  template <typename Z, typename C>
  detail::ResultFor<Scalar, Dim, Z> inverse_impl(const Z& z, const C&) const {
    detail::ResultFor<Scalar, Dim, Z> r;
    r.value = (z.colwise() - shift_).array().colwise() * (-log_scale_.array()).exp();
    r.log_det.setConstant(1, z.cols(), -log_scale_.sum());
    return r;
  }
  template <typename X, typename GV, typename GL, typename C>
  detail::BatchFor<Scalar, Dim, X> forward_vjp_impl(const X& x, const GV& gv, const GL& gl,
                                                    Eigen::Ref<Vector<Scalar>> gp, const C&) const {
    const Column scale = log_scale_.array().exp();
    detail::GradientSlicer<Scalar> slicer(gp);
    slicer.next(dim()) += gv.rowwise().sum();
    slicer.next(dim()) +=
        ((gv.array() * x.array()).rowwise().sum() * scale.array() + gl.sum()).matrix();
    detail::BatchFor<Scalar, Dim, X> gx = gv.array().colwise() * scale.array();
    return gx;
  }
  template <typename Z, typename GV, typename GL, typename C>
  detail::BatchFor<Scalar, Dim, Z> inverse_vjp_impl(const Z& z, const GV& gv, const GL& gl,
                                                    Eigen::Ref<Vector<Scalar>> gp, const C&) const {
    const Column inv_scale = (-log_scale_.array()).exp();
    detail::BatchFor<Scalar, Dim, Z> gz = gv.array().colwise() * inv_scale.array();
    detail::GradientSlicer<Scalar> slicer(gp);
    slicer.next(dim()) -= gz.rowwise().sum();
    // x = (z − b)e^{−s}: ∂x/∂s = −x.
    slicer.next(dim()) -=
        ((gz.array() * (z.colwise() - shift_).array()).rowwise().sum() + gl.sum()).matrix();
    return gz;
  }

  /// The parameters "shift", "log_scale" (the hook BijectorBase derives the visits from).
  template <typename Self, typename F>
  static void parameters_impl(Self& self, F&& f) {
    f("shift", self.shift_);
    f("log_scale", self.log_scale_);
  }

 private:
  template <typename D>
  void check(const char* name, const Eigen::MatrixBase<D>& v) const {
    detail::check_rows("ElementwiseAffine", name, dim(), v.rows(), v.cols());
    if (!v.allFinite()) {
      throw ParameterError(std::string("nflow::ElementwiseAffine: parameter '") + name +
                           "' must be finite");
    }
  }

  Column shift_;
  Column log_scale_;
};

}  // namespace nflow
