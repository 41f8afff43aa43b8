#pragma once
/// @file
/// @brief AffineTransformer: the elementwise affine map that autoregressive (and coupling)
/// structures apply to the features they transform, given the parameters their conditioner
/// produces, with a bounded log-scale and exact reverse-mode derivatives.
///
/// **The transformer contract** (what a structure such as nflow::MaskedAutoregressive calls). A
/// transformer is a small value type with
/// - `using Scalar` and `static constexpr int ParamsPerDim`: unconstrained parameters per feature;
/// - `forward(x, params, z, log_det)`, `inverse(z, params, x, log_det)`;
/// - `forward_backward(x, params, grad_z, grad_log_det, grad_x, grad_params)` and
///   `inverse_backward(z, params, grad_x, grad_log_det, grad_z, grad_params)`;
/// - optionally (nflow::RecordingTransformer, as the spline) a nested `Tape` with
///   `forward_recorded(x, params, z, log_det, tape)` and
///   `forward_backward_recorded(tape, x, params, grad_z, grad_log_det, grad_x, grad_params)`:
///   what the forward pass computed, kept for the backward pass of a training step.
///
/// Shapes, for `n` transformed features of `m` samples: `x`, `z`, `grad_*` of values are `n × m`
/// (one sample per column); `params` and `grad_params` are `(ParamsPerDim·n) × m`, **blocked**:
/// rows `[k·n, (k+1)·n)` hold parameter `k` of the `n` features. `log_det` and `grad_log_det`
/// are `1 × m`; the calls **add** their log-det into `log_det` (so a structure can accumulate
/// one feature at a time). Outputs may be Eigen blocks (passed as rvalues). Every computation is
/// coefficient-wise within a column, so a NaN in one sample never reaches another; nothing is
/// allocated.

#include <Eigen/Core>
#include <cmath>
#include <string>
#include <type_traits>

#include "nflow/core/errors.hpp"
#include "nflow/core/types.hpp"
#include "nflow/math/constants.hpp"

namespace nflow {

/// @brief Elementwise affine transformer with a bounded log-scale.
///
/// Parameters per feature (ParamsPerDim = 2, blocked: all shifts, then all raw log-scales):
/// the shift μ and the unconstrained log-scale r, mapped to the log-scale
///
///     α = B · tanh(r / B)        (|α| < B; α ≈ r near 0; dα/dr = 1 − (α/B)²)
///
/// with the bound B > 0 (default Constants<Scalar>::default_log_scale_bound = 3). Written for
/// the generative direction x = μ + exp(α) ⊙ z, so that
///
///     forward  (data → latent):  z = (x − μ) ⊙ exp(−α),   log|det ∂z/∂x| = −Σᵢ αᵢ
///     inverse  (latent → data):  x = μ + exp(α) ⊙ z,      log|det ∂x/∂z| = +Σᵢ αᵢ
///
/// The bound keeps every scale in [e^−B, e^B]: nothing is ever divided by an unclamped scale, and
/// a Dim-pass inverse (MAF sampling) cannot blow up through one extreme scale. This is the MAF
/// parametrisation (Papamakarios et al. 2017, eq. 3–4); Real NVP's z = x ⊙ exp(s) + t is the same
/// map with s = −α, t = −μ ⊙ exp(−α).
///
/// References: Papamakarios, Pavlakou, Murray 2017, arXiv:1705.07057; Dinh, Sohl-Dickstein, Bengio
/// 2017, arXiv:1605.08803 (tanh-bounded scales in practice).
/// @tparam Scalar_ float or double.
template <typename Scalar_>
class AffineTransformer {
  static_assert(std::is_same_v<Scalar_, float> || std::is_same_v<Scalar_, double>,
                "nflow::AffineTransformer<Scalar>: Scalar must be float or double");

 public:
  using Scalar = Scalar_;
  static constexpr int ParamsPerDim = 2;

  /// @param log_scale_bound B > 0, finite. @throws nflow::ParameterError otherwise.
  explicit AffineTransformer(Scalar log_scale_bound = Constants<Scalar>::default_log_scale_bound)
      : bound_(log_scale_bound) {
    if (!(log_scale_bound > Scalar(0)) || !std::isfinite(log_scale_bound)) {
      throw ParameterError(
          "nflow::AffineTransformer: log_scale_bound must be positive and finite, got " +
          std::to_string(double(log_scale_bound)));
    }
  }

  Scalar log_scale_bound() const { return bound_; }

  /// α = B·tanh(r/B) of raw log-scales r (any Eigen array expression).
  template <typename Derived>
  auto log_scale(const Eigen::ArrayBase<Derived>& raw) const {
    return bound_ * (raw / bound_).tanh();
  }

  /// z = (x − μ) ⊙ exp(−α); adds −Σα (per column) into `log_det`.
  template <typename X, typename P, typename Z, typename L>
  void forward(const Eigen::MatrixBase<X>& x, const Eigen::MatrixBase<P>& params, Z&& z,
               L&& log_det) const {
    const Index n = x.rows();
    const auto mu = params.topRows(n);
    const auto raw = params.middleRows(n, n);
    // z holds α first, then the output (coefficient-wise, so in place is safe).
    z.array() = log_scale(raw.array());
    log_det -= z.colwise().sum();
    z.array() = (x.array() - mu.array()) * (-z.array()).exp();
  }

  /// x = μ + exp(α) ⊙ z; adds +Σα (per column) into `log_det`.
  template <typename Z, typename P, typename X, typename L>
  void inverse(const Eigen::MatrixBase<Z>& z, const Eigen::MatrixBase<P>& params, X&& x,
               L&& log_det) const {
    const Index n = z.rows();
    const auto mu = params.topRows(n);
    const auto raw = params.middleRows(n, n);
    x.array() = log_scale(raw.array());
    log_det += x.colwise().sum();
    x.array() = mu.array() + x.array().exp() * z.array();
  }

  /// Reverse mode of forward(): given gz = ∂L/∂z and gl = ∂L/∂log_det, writes the direct
  /// ∂L/∂x = gz ⊙ exp(−α) (parameters held fixed) into `grad_x` and ∂L/∂params into
  /// `grad_params` (overwritten): ∂L/∂μ = −gz ⊙ exp(−α), ∂L/∂r = (−gz ⊙ z − gl) ⊙ (1 − (α/B)²).
  template <typename X, typename P, typename GZ, typename GL, typename GX, typename GP>
  void forward_backward(const Eigen::MatrixBase<X>& x, const Eigen::MatrixBase<P>& params,
                        const Eigen::MatrixBase<GZ>& grad_z,
                        const Eigen::MatrixBase<GL>& grad_log_det, GX&& grad_x,
                        GP&& grad_params) const {
    const Index n = x.rows();
    const auto mu = params.topRows(n);
    auto g_mu = grad_params.topRows(n);
    auto g_raw = grad_params.middleRows(n, n);
    g_raw.array() = log_scale(params.middleRows(n, n).array());  // α
    grad_x.array() = (-g_raw.array()).exp();                     // exp(−α)
    g_mu.array() = -grad_z.array() * grad_x.array();
    // ∂L/∂α = −gz ⊙ z − gl with z = (x − μ) ⊙ exp(−α); then the chain rule through the bound.
    g_raw.array() = ((g_mu.array() * (x.array() - mu.array())).rowwise() - grad_log_det.array()) *
                    (Scalar(1) - (g_raw.array() / bound_).square());
    grad_x.array() *= grad_z.array();
  }

  /// Reverse mode of inverse(): given gx = ∂L/∂x and gl = ∂L/∂log_det, writes the direct
  /// ∂L/∂z = gx ⊙ exp(α) into `grad_z` and ∂L/∂params into `grad_params` (overwritten):
  /// ∂L/∂μ = gx, ∂L/∂r = (gx ⊙ exp(α) ⊙ z + gl) ⊙ (1 − (α/B)²).
  template <typename Z, typename P, typename GX, typename GL, typename GZ, typename GP>
  void inverse_backward(const Eigen::MatrixBase<Z>& z, const Eigen::MatrixBase<P>& params,
                        const Eigen::MatrixBase<GX>& grad_x,
                        const Eigen::MatrixBase<GL>& grad_log_det, GZ&& grad_z,
                        GP&& grad_params) const {
    const Index n = z.rows();
    auto g_mu = grad_params.topRows(n);
    auto g_raw = grad_params.middleRows(n, n);
    g_raw.array() = log_scale(params.middleRows(n, n).array());  // α
    grad_z.array() = grad_x.array() * g_raw.array().exp();       // gx ⊙ exp(α)
    g_mu = grad_x;
    g_raw.array() = ((grad_z.array() * z.array()).rowwise() + grad_log_det.array()) *
                    (Scalar(1) - (g_raw.array() / bound_).square());
  }

 private:
  Scalar bound_;
};

}  // namespace nflow
