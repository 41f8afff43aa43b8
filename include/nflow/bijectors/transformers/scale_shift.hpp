#pragma once
/// @file
/// @brief ScaleShiftTransformer: the elementwise affine map z = x·σ(u) + t in the forms of Real
/// NVP, nflows and zuko (a run-time choice of the scale function σ), with exact reverse-mode
/// derivatives. Imported nflows and zuko affine layers are native Coupling and
/// MaskedAutoregressive layers with this transformer (the importer puts the conditioner's output
/// rows in nflow's blocked order).

#include <Eigen/Core>
#include <cmath>
#include <string>
#include <type_traits>

#include "nflow/core/errors.hpp"
#include "nflow/core/types.hpp"
#include "nflow/math/constants.hpp"
#include "nflow/math/functions.hpp"

namespace nflow {

/// @brief How ScaleShiftTransformer maps its raw scale u to the scale σ > 0 (v = u + offset).
enum class ScaleFunction {
  /// σ = softplus(v) + min_scale, softplus as torch computes it (v itself for v > 20): nflows'
  /// MaskedAffineAutoregressiveTransform (min_scale 10⁻³).
  Softplus,
  /// σ = sigmoid(v) + min_scale: nflows' AffineCouplingTransform (offset 2, min_scale 10⁻³).
  Sigmoid,
  /// log σ = v / (1 + |v / bound|), a soft clip into (−bound, bound): zuko's
  /// MonotonicAffineTransform (bound = −log(slope) = log 10³).
  SoftClippedExp,
  /// log σ = bound·tanh(v / bound): Real NVP's z = x·e^s + t with a bounded log-scale s.
  TanhExp,
};

/// @brief Options of a ScaleShiftTransformer: the scale function and its constants. The
/// factories give the forms of the libraries; designated initialisers give any other,
/// `{.kind = ScaleFunction::TanhExp, .bound = 2}`.
template <typename Scalar>
struct ScaleShiftOptions {
  ScaleFunction kind = ScaleFunction::TanhExp;
  /// Added to the raw scale before σ (every kind; nflows' coupling uses 2).
  Scalar offset = Scalar(0);
  /// Softplus and Sigmoid: the lower bound of σ (> 0). The exponential kinds: must be 0.
  Scalar min_scale = Scalar(0);
  /// SoftClippedExp and TanhExp: |log σ| < bound (> 0, finite). Unused by the others.
  Scalar bound = Constants<Scalar>::default_log_scale_bound;

  /// nflows MaskedAffineAutoregressiveTransform: σ = softplus(u) + 10⁻³.
  static ScaleShiftOptions nflows_autoregressive() {
    return {.kind = ScaleFunction::Softplus, .min_scale = Scalar(1e-3)};
  }
  /// nflows AffineCouplingTransform: σ = sigmoid(u + 2) + 10⁻³.
  static ScaleShiftOptions nflows_coupling() {
    return {.kind = ScaleFunction::Sigmoid, .offset = Scalar(2), .min_scale = Scalar(1e-3)};
  }
  /// zuko MonotonicAffineTransform(slope): log σ = u / (1 + |u / log(slope)|).
  static ScaleShiftOptions zuko(Scalar slope = Scalar(1e-3)) {
    return {.kind = ScaleFunction::SoftClippedExp, .bound = -std::log(slope)};
  }
  /// Real NVP with a tanh-bounded log-scale: log σ = bound·tanh(u / bound).
  static ScaleShiftOptions real_nvp(Scalar bound = Scalar(3)) {
    return {.kind = ScaleFunction::TanhExp, .bound = bound};
  }
};

/// @brief Elementwise affine transformer z = x·σ(u) + t with a choice of scale function.
///
/// Parameters per feature (ParamsPerDim = 2, blocked as in the transformer contract of
/// transformers/affine.hpp: rows [0, n) the shifts t, rows [n, 2n) the raw scales u). With
/// v = u + offset and σ = σ(v) from ScaleFunction:
///
///     forward  (data → latent):  z = x·σ + t,          log|det ∂z/∂x| = Σᵢ log σᵢ
///     inverse  (latent → data):  x = (z − t)·(1/σ),    log|det ∂x/∂z| = −Σᵢ log σᵢ
///
/// The inverse multiplies by 1/σ (Softplus, Sigmoid: σ ≥ min_scale > 0) or by exp(−log σ) (the
/// exponential kinds: |log σ| < bound): never a division by an unbounded scale. log σ is
/// computed stably for every kind and every finite u (|u| up to 10³⁰ and beyond): softplus and
/// sigmoid never overflow (max(v, 0) + log1p(e^{−|v|}), e^{min(v, 0)} / (1 + e^{−|v|})), and
/// log(σ + min_scale) is taken of a sum bounded below by min_scale; the derivatives d log σ / du
/// (σ′/σ, 1/(1 + |v|/bound)², 1 − (log σ / bound)²) are finite everywhere.
///
/// Softplus follows torch's threshold: softplus(v) = v for v > 20. Without it the scale would
/// differ from nflows' by e^{−20}/20 ≈ 1.03·10⁻¹⁰ relative just above 20, beyond the 10⁻¹⁰ the
/// imports promise; with it the two agree to rounding (the jump at 20 is 2·10⁻⁹, invisible to
/// training).
///
/// Zero raw parameters (a fresh conditioner's last layer at zero): TanhExp and SoftClippedExp
/// give σ = 1, the identity (with offset 0); Softplus gives σ = log 2 + min_scale ≈ 0.694 and
/// Sigmoid with offset 2 gives σ = sigmoid(2) + min_scale ≈ 0.882 (as in nflows).
///
/// References: Dinh, Sohl-Dickstein, Bengio 2017 (Real NVP), arXiv:1605.08803; Papamakarios,
/// Pavlakou, Murray 2017 (MAF), arXiv:1705.07057; nflows 0.14 and zuko 1.6 (docs/interop.md).
/// @tparam Scalar_ float or double.
template <typename Scalar_>
class ScaleShiftTransformer {
  static_assert(std::is_same_v<Scalar_, float> || std::is_same_v<Scalar_, double>,
                "nflow::ScaleShiftTransformer<Scalar>: Scalar must be float or double");

 public:
  using Scalar = Scalar_;
  using Options = ScaleShiftOptions<Scalar>;
  static constexpr int ParamsPerDim = 2;

  /// @throws nflow::ParameterError naming the option: offset not finite; Softplus/Sigmoid with
  /// min_scale not in (0, ∞); an exponential kind with bound not in (0, ∞) or min_scale ≠ 0.
  explicit ScaleShiftTransformer(Options options = {}) : o_(options) {
    const std::string who = "nflow::ScaleShiftTransformer: option ";
    auto value = [](Scalar v) { return std::to_string(double(v)); };
    if (!std::isfinite(o_.offset))
      throw ParameterError(who + "'offset' must be finite, got " + value(o_.offset));
    if (exponential()) {
      if (!(o_.bound > Scalar(0)) || !std::isfinite(o_.bound))
        throw ParameterError(who + "'bound' must be positive and finite, got " + value(o_.bound));
      if (o_.min_scale != Scalar(0))
        throw ParameterError(who + "'min_scale' must be 0 for SoftClippedExp and TanhExp, got " +
                             value(o_.min_scale));
    } else if (!(o_.min_scale > Scalar(0)) || !std::isfinite(o_.min_scale)) {
      throw ParameterError(who + "'min_scale' must be positive and finite for Softplus and " +
                           "Sigmoid (the inverse multiplies by 1/σ), got " + value(o_.min_scale));
    }
  }

  const Options& options() const { return o_; }

  /// z = x·σ + t; adds Σ log σ (per column) into `log_det`.
  template <typename X, typename P, typename Z, typename L>
  void forward(const Eigen::MatrixBase<X>& x, const Eigen::MatrixBase<P>& params, Z&& z,
               L&& log_det) const {
    const Index n = x.rows();
    const auto t = params.topRows(n).array();
    dispatch([&](auto kind) {
      // z holds log σ (exponential kinds) or σ first, then the output.
      const auto v = raw(params, n);
      if constexpr (is_exponential(kind)) {
        z.array() = log_scale_exponent(kind, v);
        log_det += z.colwise().sum();
        z.array() = x.array() * z.array().exp() + t;
      } else {
        z.array() = direct_scale(kind, v);
        // Column by column with scalar logs: Eigen's vectorised sum over a one-row block of a
        // fixed-capacity vector (a coupling's one-point path at Dim 2) draws a false
        // -Wmaybe-uninitialized from g++ 12 at -O2.
        for (Index j = 0; j < z.cols(); ++j) {
          Scalar s(0);
          for (Index i = 0; i < n; ++i) s += std::log(z(i, j));
          log_det(0, j) += s;
        }
        z.array() = x.array() * z.array() + t;
      }
    });
  }

  /// x = (z − t)·(1/σ); adds −Σ log σ (per column) into `log_det`.
  template <typename Z, typename P, typename X, typename L>
  void inverse(const Eigen::MatrixBase<Z>& z, const Eigen::MatrixBase<P>& params, X&& x,
               L&& log_det) const {
    const Index n = z.rows();
    const auto t = params.topRows(n).array();
    dispatch([&](auto kind) {
      const auto v = raw(params, n);
      if constexpr (is_exponential(kind)) {
        x.array() = log_scale_exponent(kind, v);
        log_det -= x.colwise().sum();
        x.array() = (z.array() - t) * (-x.array()).exp();
      } else {
        x.array() = direct_scale(kind, v);
        log_det -= x.array().log().matrix().colwise().sum();
        x.array() = (z.array() - t) * x.array().inverse();
      }
    });
  }

  /// Reverse mode of forward(): given gz = ∂L/∂z and gl = ∂L/∂log_det, writes the direct
  /// ∂L/∂x = gz·σ (parameters held fixed) into `grad_x` and ∂L/∂params into `grad_params`
  /// (overwritten): ∂L/∂t = gz, ∂L/∂u = (gz·x·σ + gl)·(log σ)′.
  template <typename X, typename P, typename GZ, typename GL, typename GX, typename GP>
  void forward_backward(const Eigen::MatrixBase<X>& x, const Eigen::MatrixBase<P>& params,
                        const Eigen::MatrixBase<GZ>& grad_z,
                        const Eigen::MatrixBase<GL>& grad_log_det, GX&& grad_x,
                        GP&& grad_params) const {
    const Index n = x.rows();
    auto g_t = grad_params.topRows(n);
    auto g_u = grad_params.middleRows(n, n);
    scale_and_slope(params, n, grad_x, g_u, false);  // σ, (log σ)′
    g_t = grad_z;
    g_u.array() = ((grad_z.array() * x.array() * grad_x.array()).rowwise() + grad_log_det.array()) *
                  g_u.array();
    grad_x.array() *= grad_z.array();
  }

  /// Reverse mode of inverse(): given gx = ∂L/∂x and gl = ∂L/∂log_det, writes the direct
  /// ∂L/∂z = gx/σ into `grad_z` and ∂L/∂params into `grad_params` (overwritten):
  /// ∂L/∂t = −gx/σ, ∂L/∂u = −(gx·x + gl)·(log σ)′ with x = (z − t)/σ.
  template <typename Z, typename P, typename GX, typename GL, typename GZ, typename GP>
  void inverse_backward(const Eigen::MatrixBase<Z>& z, const Eigen::MatrixBase<P>& params,
                        const Eigen::MatrixBase<GX>& grad_x,
                        const Eigen::MatrixBase<GL>& grad_log_det, GZ&& grad_z,
                        GP&& grad_params) const {
    const Index n = z.rows();
    const auto t = params.topRows(n).array();
    auto g_t = grad_params.topRows(n);
    auto g_u = grad_params.middleRows(n, n);
    scale_and_slope(params, n, grad_z, g_u, true);  // 1/σ, (log σ)′
    g_t.array() = -grad_x.array() * grad_z.array();
    // −gx·x = g_t·(z − t).
    g_u.array() = ((g_t.array() * (z.array() - t)).rowwise() - grad_log_det.array()) * g_u.array();
    grad_z = -g_t;
  }

 private:
  template <ScaleFunction K>
  using Kind = std::integral_constant<ScaleFunction, K>;

  bool exponential() const {
    return o_.kind == ScaleFunction::SoftClippedExp || o_.kind == ScaleFunction::TanhExp;
  }
  template <ScaleFunction K>
  static constexpr bool is_exponential(Kind<K>) {
    return K == ScaleFunction::SoftClippedExp || K == ScaleFunction::TanhExp;
  }

  /// Calls f(Kind<k>{}) for the run-time kind: one branch per call, the array loops inside.
  template <typename F>
  void dispatch(F&& f) const {
    switch (o_.kind) {
      case ScaleFunction::Softplus:
        return f(Kind<ScaleFunction::Softplus>{});
      case ScaleFunction::Sigmoid:
        return f(Kind<ScaleFunction::Sigmoid>{});
      case ScaleFunction::SoftClippedExp:
        return f(Kind<ScaleFunction::SoftClippedExp>{});
      case ScaleFunction::TanhExp:
        return f(Kind<ScaleFunction::TanhExp>{});
    }
  }

  /// v = u + offset (an array expression over the raw-scale rows).
  template <typename P>
  auto raw(const Eigen::MatrixBase<P>& params, Index n) const {
    return params.middleRows(n, n).array() + o_.offset;
  }

  /// log σ of the exponential kinds.
  template <ScaleFunction K, typename V>
  auto log_scale_exponent(Kind<K>, const V& v) const {
    if constexpr (K == ScaleFunction::SoftClippedExp) {
      return v / (Scalar(1) + (v / o_.bound).abs());
    } else {
      return soft_clamp(v, o_.bound);
    }
  }
  /// σ of Softplus and Sigmoid.
  template <ScaleFunction K, typename V>
  auto direct_scale(Kind<K>, const V& v) const {
    if constexpr (K == ScaleFunction::Softplus) {
      return (v > torch_softplus_threshold).select(v, softplus(v)) + o_.min_scale;
    } else {
      return sigmoid(v) + o_.min_scale;
    }
  }

  /// Writes σ (or 1/σ if `reciprocal`) into `scale` and (log σ)′ = d log σ / du into `slope`.
  template <typename P, typename S, typename D>
  void scale_and_slope(const Eigen::MatrixBase<P>& params, Index n, S&& scale, D&& slope,
                       bool reciprocal) const {
    dispatch([&](auto kind) {
      constexpr ScaleFunction K = decltype(kind)::value;
      const auto v = raw(params, n);
      if constexpr (is_exponential(kind)) {
        slope.array() = log_scale_exponent(kind, v);
        if (reciprocal) {
          scale.array() = (-slope.array()).exp();
        } else {
          scale.array() = slope.array().exp();
        }
        if constexpr (K == ScaleFunction::SoftClippedExp) {
          slope.array() = (Scalar(1) + (v / o_.bound).abs()).square().inverse();
        } else {
          slope.array() = Scalar(1) - (slope.array() / o_.bound).square();
        }
      } else {
        scale.array() = direct_scale(kind, v);
        // σ′ = sigmoid(v) (Softplus; 1 above torch's threshold) or
        // sigmoid(v)·(1 − sigmoid(v)) = e^{−|v|} / (1 + e^{−|v|})² (Sigmoid), over σ.
        if constexpr (K == ScaleFunction::Softplus) {
          slope.array() = (v > torch_softplus_threshold).select(Scalar(1), sigmoid(v));
        } else {
          slope.array() = (-v.abs()).exp() / (Scalar(1) + (-v.abs()).exp()).square();
        }
        slope.array() /= scale.array();
        if (reciprocal) scale.array() = scale.array().inverse();
      }
    });
  }

  static constexpr Scalar torch_softplus_threshold = Scalar(20);
  Options o_;
};

}  // namespace nflow
