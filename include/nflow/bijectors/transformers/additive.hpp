#pragma once
/// @file
/// @brief AdditiveTransformer: z = x − μ, the volume-preserving transformer of NICE.

#include <Eigen/Core>
#include <type_traits>

namespace nflow {

/// @brief Elementwise shift with log-det exactly 0 (NICE's additive coupling law).
///
/// One parameter per feature (ParamsPerDim = 1), the shift μ produced by the conditioner:
///
///     forward  (data → latent):  z = x − μ,   log|det ∂z/∂x| = 0
///     inverse  (latent → data):  x = z + μ,   log|det ∂x/∂z| = 0
///
/// Follows the transformer contract documented in transformers/affine.hpp. The sign matches
/// AffineTransformer (whose forward is (x − μ)·e^{−α}), so an affine transformer with α = 0 is this.
/// References: Dinh, Krueger, Bengio 2015 (NICE), arXiv:1410.8516.
/// @tparam Scalar_ float or double.
template <typename Scalar_>
class AdditiveTransformer {
  static_assert(std::is_same_v<Scalar_, float> || std::is_same_v<Scalar_, double>,
                "nflow::AdditiveTransformer<Scalar>: Scalar must be float or double");

 public:
  using Scalar = Scalar_;
  static constexpr int ParamsPerDim = 1;
  static constexpr bool IsVolumePreserving = true;

  template <typename X, typename P, typename Z, typename L>
  void forward(const Eigen::MatrixBase<X>& x, const Eigen::MatrixBase<P>& params, Z&& z,
               L&& /*log_det*/) const {
    z = x - params;
  }
  template <typename Z, typename P, typename X, typename L>
  void inverse(const Eigen::MatrixBase<Z>& z, const Eigen::MatrixBase<P>& params, X&& x,
               L&& /*log_det*/) const {
    x = z + params;
  }
  /// ∂L/∂x = gz (direct), ∂L/∂μ = −gz.
  template <typename X, typename P, typename GZ, typename GL, typename GX, typename GP>
  void forward_backward(const Eigen::MatrixBase<X>&, const Eigen::MatrixBase<P>&,
                        const Eigen::MatrixBase<GZ>& grad_z, const Eigen::MatrixBase<GL>&,
                        GX&& grad_x, GP&& grad_params) const {
    grad_x = grad_z;
    grad_params = -grad_z;
  }
  /// ∂L/∂z = gx (direct), ∂L/∂μ = gx.
  template <typename Z, typename P, typename GX, typename GL, typename GZ, typename GP>
  void inverse_backward(const Eigen::MatrixBase<Z>&, const Eigen::MatrixBase<P>&,
                        const Eigen::MatrixBase<GX>& grad_x, const Eigen::MatrixBase<GL>&,
                        GZ&& grad_z, GP&& grad_params) const {
    grad_z = grad_x;
    grad_params = grad_x;
  }
};

}  // namespace nflow
