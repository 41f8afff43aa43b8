#pragma once
// Test-only bijectors that exercise the machinery: a conditional one (the context shifts and
// scales the input) and one written without BijectorBase (a user's type).
#include <nflow/nflow.hpp>
#include <string>

namespace nflow::test {

/// z = x ⊙ exp(tanh(S c)) + T c, with fixed matrices S, T (Dim × ContextDim). Conditional; its
/// log-det Σ tanh(S c) depends on the context only. Parameters "scale_weight", "shift_weight".
template <typename Scalar_, int Dim_, int ContextDim_>
class ContextAffine : public BijectorBase<ContextAffine<Scalar_, Dim_, ContextDim_>> {
 public:
  using Scalar = Scalar_;
  static constexpr int Dim = Dim_;
  static constexpr int ContextDim = ContextDim_;
  using M = ParameterMatrix<Scalar>;

  ContextAffine(Index dim, Index context_dim, std::uint64_t seed) {
    std::mt19937_64 gen(seed);
    scale_weight_ = standard_normal_matrix<Scalar>(dim, context_dim, gen) * Scalar(0.3);
    shift_weight_ = standard_normal_matrix<Scalar>(dim, context_dim, gen);
  }
  Index dim() const { return scale_weight_.rows(); }
  Index context_dim() const { return scale_weight_.cols(); }

  template <typename X, typename C>
  auto forward_impl(const X& x, const C& c) const {
    const M s = (scale_weight_ * c).array().tanh();
    ResultFor<Scalar, Dim, X> r;
    r.value = (x.array() * s.array().exp()).matrix() + shift_weight_ * c;
    r.log_det = s.colwise().sum();
    return r;
  }
  template <typename Z, typename C>
  auto inverse_impl(const Z& z, const C& c) const {
    const M s = (scale_weight_ * c).array().tanh();
    ResultFor<Scalar, Dim, Z> r;
    r.value = ((z - shift_weight_ * c).array() * (-s.array()).exp()).matrix();
    r.log_det = -s.colwise().sum();
    return r;
  }
  template <typename X, typename GV, typename GL, typename C>
  auto forward_vjp_impl(const X& x, const GV& gv, const GL& gl, Eigen::Ref<Vector<Scalar>> gp,
                        const C& c) const {
    const M s = (scale_weight_ * c).array().tanh();
    const M e = s.array().exp();
    // ∂L/∂s = gv ⊙ x ⊙ e + gl (broadcast); ∂s/∂(S c) = 1 − s².
    const M gs =
        ((gv.array() * x.array() * e.array()).rowwise() + gl.array()) * (1 - s.array().square());
    GradientSlicer<Scalar> slicer(gp);
    slicer.next(dim(), context_dim()) += gs * c.transpose();
    slicer.next(dim(), context_dim()) += gv * c.transpose();
    BatchFor<Scalar, Dim, X> gx = gv.array() * e.array();
    return gx;
  }

  template <typename Self, typename F>
  static void parameters_impl(Self& self, F&& f) {
    f("scale_weight", self.scale_weight_);
    f("shift_weight", self.shift_weight_);
  }

 private:
  M scale_weight_;
  M shift_weight_;
};

/// A user's bijector that does not derive from BijectorBase: z = x + 1 (with shape checks).
template <typename Scalar_, int Dim_>
struct PlainShift {
  using Scalar = Scalar_;
  static constexpr int Dim = Dim_;
  static constexpr bool IsConstantLogDet = true;
  Index dim() const { return Dim_; }
  template <typename X>
  auto forward_and_log_det(const Eigen::MatrixBase<X>& x) const {
    detail::check_rows("PlainShift", "x", Dim_, x.rows(), x.cols());
    return ResultFor<Scalar, Dim, X>{x.array() + Scalar(1),
                                     PerSampleFor<Scalar, X>::Zero(1, x.cols())};
  }
  template <typename Z>
  auto inverse_and_log_det(const Eigen::MatrixBase<Z>& z) const {
    detail::check_rows("PlainShift", "z", Dim_, z.rows(), z.cols());
    return ResultFor<Scalar, Dim, Z>{z.array() - Scalar(1),
                                     PerSampleFor<Scalar, Z>::Zero(1, z.cols())};
  }
  template <typename X>
  auto forward(const Eigen::MatrixBase<X>& x) const {
    return forward_and_log_det(x).value;
  }
  template <typename X>
  auto forward_log_det(const Eigen::MatrixBase<X>& x) const {
    return forward_and_log_det(x).log_det;
  }
  template <typename Z>
  auto inverse(const Eigen::MatrixBase<Z>& z) const {
    return inverse_and_log_det(z).value;
  }
  template <typename Z>
  auto inverse_log_det(const Eigen::MatrixBase<Z>& z) const {
    return inverse_and_log_det(z).log_det;
  }
};

/// A context batch maker for the laws: ContextDim × n standard normals.
template <typename Scalar>
auto context_maker(Index context_dim) {
  return [context_dim](Index n, std::mt19937_64& gen) {
    return standard_normal_matrix<Scalar>(context_dim, n, gen);
  };
}

}  // namespace nflow::test
