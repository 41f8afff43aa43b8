#pragma once
/// @file
/// @brief RationalQuadraticSpline: the monotone rational-quadratic spline transformer of neural
/// spline flows (Durkan et al. 2019), on an unbounded, bounded or circular domain, with exact
/// reverse-mode derivatives in both directions, vectorised across features and samples.

#include <Eigen/Core>
#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "nflow/core/errors.hpp"
#include "nflow/core/types.hpp"
#include "nflow/math/constants.hpp"
#include "nflow/math/functions.hpp"

namespace nflow {

/// @brief Where a rational-quadratic spline lives (see RationalQuadraticSpline).
enum class SplineDomain {
  /// R: the spline on [lower, upper], the identity outside (boundary derivatives 1).
  Unbounded,
  /// The interval [lower, upper] onto itself, all K + 1 knot derivatives free; outside it the map
  /// continues linearly with the boundary derivative (finite, invertible, but off the support).
  Bounded,
  /// The circle [lower, upper) with lower ≡ upper (angles): first and last derivative tied; on R
  /// it is the lift that commutes with shifts by the period upper − lower.
  Circular,
};

/// @brief How a RationalQuadraticSpline maps a raw knot-derivative parameter r to δ > 0.
enum class SplineDerivative {
  /// δ = 1 + (1 − min_δ)·(softplus(r) − softplus(0)) / log 2: δ(0) = 1 exactly (nflow's default,
  /// so that zero raw parameters are the identity).
  Shifted,
  /// δ = min_δ + softplus(r), softplus as torch computes it (r itself for r > 20): nflows.
  Softplus,
  /// δ = exp(r): zuko (with the soft clip, so δ ∈ (slope, 1/slope)); needs soft_clip_slope > 0.
  Exp,
};

/// @brief Options of a RationalQuadraticSpline, all run-time (a file can record them).
/// Designated initialisers: `{.lower = -3, .upper = 3, .min_derivative = 1e-4}`; the factories
/// nflows() and zuko() give the libraries' parameterisations. The defaults are nflow's own.
template <typename Scalar>
struct SplineOptions {
  /// The interval [lower, upper] the bins cover; NaN means the domain's default: Unbounded
  /// [−5, 5], Bounded [0, 1], Circular [−π, π].
  Scalar lower = std::numeric_limits<Scalar>::quiet_NaN();
  Scalar upper = std::numeric_limits<Scalar>::quiet_NaN();
  /// Each bin's width (height) is at least this fraction of upper − lower; K·min < 1.
  Scalar min_bin_width = Scalar(1e-3);
  Scalar min_bin_height = Scalar(1e-3);
  /// Every knot derivative is at least this (> 0, < 1; unused by SplineDerivative::Exp).
  Scalar min_derivative = Scalar(1e-3);
  /// The map from raw knot-derivative parameters to derivatives (SplineDerivative).
  SplineDerivative derivative = SplineDerivative::Shifted;
  /// The raw widths and heights are multiplied by this (> 0) before the softmax (nflows'
  /// coupling layers: 1/√hidden_features).
  Scalar raw_scale = Scalar(1);
  /// 0: off. Otherwise s ∈ (0, 1) and, before anything else, zuko's soft clip with
  /// c = |log s|: widths and heights w ← w/(1 + |2w/c|) (into ±c/2), raw derivatives
  /// r ← r/(1 + |r/c|) (into ±c). min_bin_width and min_bin_height may then be 0.
  Scalar soft_clip_slope = Scalar(0);

  /// nflows 0.14 (PiecewiseRationalQuadraticCouplingTransform and the masked autoregressive
  /// one, tails='linear'): [−tail_bound, tail_bound], minimum sizes and derivative 10⁻³,
  /// δ = 10⁻³ + softplus(r); raw_scale 1/√hidden_features for the coupling layers, 1 for MADE.
  static SplineOptions nflows(Scalar tail_bound, Scalar raw_scale = Scalar(1)) {
    return {.lower = -tail_bound,
            .upper = tail_bound,
            .derivative = SplineDerivative::Softplus,
            .raw_scale = raw_scale};
  }
  /// zuko 1.6 MonotonicRQSTransform(bound, slope): [−bound, bound], soft clip with `slope`,
  /// no minimum sizes, δ = exp(r).
  static SplineOptions zuko(Scalar bound = Scalar(5), Scalar slope = Scalar(1e-3)) {
    return {.lower = -bound,
            .upper = bound,
            .min_bin_width = Scalar(0),
            .min_bin_height = Scalar(0),
            .min_derivative = Scalar(0),
            .derivative = SplineDerivative::Exp,
            .soft_clip_slope = slope};
  }
};

/// @brief Elementwise monotone rational-quadratic spline with K bins (Durkan, Bekasov, Murray,
/// Papamakarios 2019, "Neural Spline Flows", arXiv:1906.04032; Gregory & Delbourgo 1982).
///
/// **Parameters of one feature** (ParamsPerDim of them, blocked as in the transformer contract of
/// transformers/affine.hpp: raw parameter p of feature i is row p·n + i): K raw widths u, K raw
/// heights v, then the raw knot derivatives r (Unbounded: the K − 1 interior knots; Bounded: all
/// K + 1; Circular: K, r₀ serving the first and the last knot). With span = upper − lower:
///
///     wₖ = span·(min_w + (1 − K·min_w)·softmax(u)ₖ),  hₖ likewise from v and min_h,
///     Xₖ = lower + Σ_{j<k} w_j (X_K = upper exactly),  Yₖ likewise,
///     δ  = 1 + (1 − min_δ)·(softplus(r) − softplus(0)) / log 2   ∈ (min_δ, ∞),  δ(0) = 1,
///
/// so all-zero raw parameters give the identity map **exactly** (value and log-det 0, bit for
/// bit, inside the interval): a conditioner whose last layer starts at zero starts a deep spline
/// flow at the identity. These are the defaults; SplineOptions also gives the parameterisations
/// of nflows and zuko (SplineOptions::nflows(), ::zuko()), all at run time, in this order:
///
///     soft clip (soft_clip_slope s > 0, c = |log s|):  u ← u/(1 + |2u/c|), v likewise,
///                                                      r ← r/(1 + |r/c|)
///     raw_scale a:                                     u ← a·u, v ← a·v
///     derivative:  Shifted (above) | Softplus δ = min_δ + softplus(r) | Exp δ = e^r
///
/// with min_bin_width = min_bin_height = 0 allowed under the clip (zuko has none: the clip alone
/// keeps every bin at least span/(1 + (K − 1)·e^{a·c}) wide). On Unbounded the two boundary
/// derivatives are exactly 1 in every mode (nflows pads r with a constant giving 1 to rounding,
/// zuko with e⁰). The knots are computed as above in every mode (nflows scales the running sum
/// of the widths, zuko computes B(2·cumsum − 1) and leaves X_K = B only to rounding): the knots
/// agree to rounding, and as the map is continuous in x and in the knots (C¹ in x across every
/// knot, value ±B and slope 1 at the bounds on Unbounded), values and log-dets agree with both
/// libraries to rounding (10⁻¹⁰ relative is what the imports promise). On a tie (x exactly on
/// a knot or bound) the libraries choose other bins than nflow does (nflows: knot j is bin j,
/// x = upper is inside; zuko: knot j is bin j − 1, x = lower is outside, x = X_K inside): both
/// bins give the same value and log-det up to rounding, so the choice does not show.
///
/// **The map** (forward = data → latent). In bin k (Xₖ ≤ x < Xₖ₊₁), with s = hₖ/wₖ,
/// ξ = (x − Xₖ)/wₖ, t = ξ(1 − ξ), D = s + (δₖ + δₖ₊₁ − 2s)·t:
///
///     y = Yₖ + hₖ·(s·ξ² + δₖ·t) / D,    dy/dx = s²·(δₖ₊₁ξ² + 2s·t + δₖ(1 − ξ)²) / D²,
///
/// evaluated in a form that is exact at the identity. The inverse solves the quadratic for ξ with
/// the cancellation-free root ξ = 2c / (−b − √(b² − 4ac)), written (−b + √(b² − 4ac)) / 2a when
/// b < 0 (the discriminant is clamped at 0 and the root to [0, 1]; no assertion, no division by a
/// quantity that can vanish). Monotone: every bin
/// has positive width, height and knot derivatives, so dy/dx > 0 everywhere.
///
/// **Edges** (both directions, documented in docs/bijectors.md): x = lower is bin 0 at ξ = 0
/// (y = lower exactly); x = upper is the right boundary (y = upper exactly); a point exactly on an
/// interior knot Xₖ is bin k at ξ = 0 (y = Yₖ); outside [lower, upper]: Unbounded → identity
/// (log-det 0), Bounded → linear with the boundary derivative (log-det log δ₀ or log δ_K),
/// Circular → reduced by whole periods, mapped, periods added back (±Inf → NaN). NaN in an input
/// gives NaN value and log-det for that element only; ±Inf on Unbounded/Bounded passes through
/// the tails (value ±Inf, finite log-det). Extreme raw parameters (±1e4, all equal, one huge)
/// give finite values, log-dets and gradients: the softmax is shifted by its maximum and every
/// width, height and derivative is bounded below by its minimum.
///
/// **Cost and layout**: elements are processed in tiles of up to 32 (feature, sample) pairs held
/// in stack arrays, so every operation (bin search by counting knots ≤ x, the spline arithmetic,
/// exp, log) vectorises across features and samples, nothing is allocated, and a NaN in one
/// element never reaches another.
///
/// **Run-time bin count**: `Bins_ = Dynamic` takes K from the constructor (1 ≤ K ≤
/// MaxDynamicBins = 64; 8 by default); ParamsPerDim is then Dynamic and params_per_dim() gives it.
/// Same arithmetic in the same order as the fixed-K type (bit-identical results); the stack tiles
/// are sized for 64 bins. Run-time models and imported models use it, so any K loads.
///
/// @tparam Scalar_ float or double. @tparam Bins_ K in [1, 256], or Dynamic (K at run time).
/// @tparam Domain_ see SplineDomain.
template <typename Scalar_, int Bins_ = 8, SplineDomain Domain_ = SplineDomain::Unbounded>
class RationalQuadraticSpline {
  static_assert(std::is_same_v<Scalar_, float> || std::is_same_v<Scalar_, double>,
                "nflow::RationalQuadraticSpline<Scalar, ...>: Scalar must be float or double");
  static_assert(Bins_ == Dynamic || (Bins_ >= 1 && Bins_ <= 256),
                "nflow::RationalQuadraticSpline<Scalar, Bins>: Bins must be in [1, 256] or "
                "Eigen::Dynamic");

 public:
  using Scalar = Scalar_;
  static constexpr int Bins = Bins_;
  static constexpr SplineDomain Domain = Domain_;
  /// The largest run-time bin count (Bins = Dynamic): the stack tiles hold this many bins.
  static constexpr int MaxDynamicBins = 64;
  /// Raw knot-derivative parameters per feature for K bins.
  static constexpr int derivative_params(int bins) {
    return Domain_ == SplineDomain::Unbounded ? bins - 1
           : Domain_ == SplineDomain::Bounded ? bins + 1
                                              : bins;
  }
  /// Raw parameters per feature for K bins: K widths, K heights, derivative_params(K).
  static constexpr int params_for(int bins) { return 2 * bins + derivative_params(bins); }
  static constexpr int DerivativeParams = Bins_ == Dynamic ? Dynamic : derivative_params(Bins_);
  static constexpr int ParamsPerDim = Bins_ == Dynamic ? Dynamic : params_for(Bins_);

  /// @throws nflow::ParameterError (naming the option) if lower ≥ upper or either is not
  /// finite, a minimum is not in (0, 1/K) ([0, 1/K) with the soft clip; derivative: (0, 1),
  /// unused by Exp), raw_scale is not positive and finite, soft_clip_slope is not 0 or in
  /// (0, 1), Exp is asked for without the soft clip (exp of an unclipped raw value over- and
  /// underflows), or the narrowest bin the options allow is too narrow for Scalar to keep its
  /// knots distinct.
  explicit RationalQuadraticSpline(SplineOptions<Scalar> options = {}) : o_(options) { init(); }

  /// A spline of `bins` bins (Bins = Dynamic only), options as above.
  /// @throws nflow::ParameterError if bins is not in [1, MaxDynamicBins], or as above.
  explicit RationalQuadraticSpline(int bins,
                                   SplineOptions<Scalar> options = {}) requires(Bins_ == Dynamic)
      : o_(options), bins_(bins) {
    if (bins < 1 || bins > MaxDynamicBins) {
      throw ParameterError("nflow::RationalQuadraticSpline: the number of bins must be in [1, " +
                           std::to_string(MaxDynamicBins) + "], got " + std::to_string(bins));
    }
    init();
  }

  const SplineOptions<Scalar>& options() const { return o_; }
  Scalar lower() const { return o_.lower; }
  Scalar upper() const { return o_.upper; }
  /// K, the number of bins.
  int bins() const {
    if constexpr (Bins_ == Dynamic) {
      return bins_;
    } else {
      return Bins_;
    }
  }
  /// Raw parameters per feature (ParamsPerDim when Bins is fixed).
  Index params_per_dim() const { return params_for(bins()); }

 private:
  void init() {
    const int Bins = bins();
    if (std::isnan(o_.lower)) o_.lower = default_lower();
    if (std::isnan(o_.upper)) o_.upper = default_upper();
    const std::string who = "nflow::RationalQuadraticSpline: ";
    if (!std::isfinite(o_.lower) || !std::isfinite(o_.upper) || !(o_.lower < o_.upper)) {
      throw ParameterError(who + "options 'lower' < 'upper' must be finite, got [" +
                           std::to_string(double(o_.lower)) + ", " +
                           std::to_string(double(o_.upper)) + "]");
    }
    const Scalar slope = o_.soft_clip_slope;
    if (!(slope == Scalar(0) || (slope > Scalar(0) && slope < Scalar(1)))) {
      throw ParameterError(who + "option 'soft_clip_slope' must be 0 (off) or in (0, 1), got " +
                           std::to_string(double(slope)));
    }
    const bool clip = slope > Scalar(0);
    if (!(o_.raw_scale > Scalar(0)) || !std::isfinite(o_.raw_scale)) {
      throw ParameterError(who + "option 'raw_scale' must be positive and finite, got " +
                           std::to_string(double(o_.raw_scale)));
    }
    check_minimum(who, "min_bin_width", o_.min_bin_width, Scalar(1) / Scalar(Bins), clip);
    check_minimum(who, "min_bin_height", o_.min_bin_height, Scalar(1) / Scalar(Bins), clip);
    if (o_.derivative == SplineDerivative::Exp) {
      if (!clip) {
        throw ParameterError(who +
                             "option 'derivative' Exp needs 'soft_clip_slope' > 0 (exp of "
                             "an unclipped raw parameter over- and underflows)");
      }
    } else {
      check_minimum(who, "min_derivative", o_.min_derivative, Scalar(1), false);
    }
    span_ = o_.upper - o_.lower;
    // softplus(0) by the vectorised code that computes softplus(r) (a whole tile of lanes, so
    // that every lane takes the same path): r = 0 then gives δ = 1 exactly (derivative()).
    softplus_zero_ = softplus(Lane::Zero(TileSize))(0);
    // The smallest softmax weight the raw values allow: 0 without the clip (only the minimum
    // holds a bin open), 1/(1 + (K − 1)·e^{2c}) with them clipped into ±c/2 (times raw_scale).
    Scalar smallest_weight = Scalar(0);
    if (clip) {
      const Scalar c = -std::log(slope);
      clip_width_ = Scalar(2) / c;
      clip_derivative_ = Scalar(1) / c;
      smallest_weight = Scalar(1) / (Scalar(1) + Scalar(Bins - 1) * std::exp(o_.raw_scale * c));
    }
    auto narrowest_bin = [&](Scalar minimum) {
      return span_ * (minimum + (Scalar(1) - Scalar(Bins) * minimum) * smallest_weight);
    };
    const Scalar edge = std::max(std::abs(o_.lower), std::abs(o_.upper));
    const Scalar narrowest =
        std::min(narrowest_bin(o_.min_bin_width), narrowest_bin(o_.min_bin_height));
    if (!(narrowest > Scalar(64) * std::numeric_limits<Scalar>::epsilon() * edge)) {
      throw ParameterError(who + "the narrowest bin (" + std::to_string(double(narrowest)) +
                           ") is too narrow for this Scalar at bound " +
                           std::to_string(double(edge)) +
                           ": raise 'min_bin_width'/'min_bin_height' or use double");
    }
  }

  /// Bins the stack arrays hold.
  static constexpr int Capacity = Bins_ == Dynamic ? MaxDynamicBins : Bins_;
  using KnotArray =
      std::conditional_t<Bins_ == Dynamic, std::vector<Scalar>, std::array<Scalar, Capacity + 1>>;

 public:
  /// The knots (X, Y) and knot derivatives δ of one feature's spline (K + 1 each).
  struct Knots {
    KnotArray x, y, derivative;
  };

  /// The knots of feature `feature` of sample `col`, from blocked raw parameters `params`
  /// ((ParamsPerDim·n) × m, as given to forward()).
  template <typename P>
  Knots knots(const Eigen::MatrixBase<P>& params, Index feature, Index col) const {
    const Index n = params.rows() / params_per_dim();
    Tile t;
    t.resize(1);
    t.i[0] = feature;
    t.j[0] = col;
    Spline sp;
    build(params, n, t, sp);
    Knots k;
    if constexpr (Bins_ == Dynamic) {
      for (auto* v : {&k.x, &k.y, &k.derivative}) v->resize(std::size_t(bins_ + 1));
    }
    for (int b = 0; b <= bins(); ++b) {
      k.x[std::size_t(b)] = sp.x[std::size_t(b)](0);
      k.y[std::size_t(b)] = sp.y[std::size_t(b)](0);
      k.derivative[std::size_t(b)] = sp.d[std::size_t(b)](0);
    }
    return k;
  }

  /// z = spline(x); adds Σᵢ log dzᵢ/dxᵢ (per column) into `log_det`.
  template <typename X, typename P, typename Z, typename L>
  void forward(const Eigen::MatrixBase<X>& x, const Eigen::MatrixBase<P>& params, Z&& z,
               L&& log_det) const {
    for_tiles(x.rows(), x.cols(), [&](const Tile& t) {
      Spline sp;
      Point pt;
      evaluate<false>(x, params, t, sp, pt);
      scatter(t, pt.out, pt.log_det, z, log_det);
    });
  }

  /// x = spline⁻¹(z); adds Σᵢ log dxᵢ/dzᵢ (per column) into `log_det`.
  template <typename Z, typename P, typename X, typename L>
  void inverse(const Eigen::MatrixBase<Z>& z, const Eigen::MatrixBase<P>& params, X&& x,
               L&& log_det) const {
    for_tiles(z.rows(), z.cols(), [&](const Tile& t) {
      Spline sp;
      Point pt;
      evaluate<true>(z, params, t, sp, pt);
      scatter(t, pt.out, pt.log_det, x, log_det);
    });
  }

  /// What forward_recorded() keeps for forward_backward_recorded() (RecordingTransformer): the
  /// softmax weights of every element's widths and heights and its knot derivatives, the part of
  /// the knots that costs exponentials and logarithms (3K + 1 values per element). Reused by the
  /// next recording of the same shape without allocating.
  struct Tape {
    std::vector<Scalar> knots;
    Index rows = -1, cols = -1;
  };

  /// forward(), keeping the knots in `tape`.
  template <typename X, typename P, typename Z, typename L>
  void forward_recorded(const Eigen::MatrixBase<X>& x, const Eigen::MatrixBase<P>& params, Z&& z,
                        L&& log_det, Tape& tape) const {
    const Index per_tile = tape_lanes() * TileSize;
    tape.knots.resize(std::size_t(tile_count(x.rows(), x.cols()) * per_tile));
    tape.rows = x.rows();
    tape.cols = x.cols();
    Index tile = 0;
    for_tiles(x.rows(), x.cols(), [&](const Tile& t) {
      Spline sp;
      Point pt;
      evaluate<false>(x, params, t, sp, pt);
      scatter(t, pt.out, pt.log_det, z, log_det);
      Scalar* out = tape.knots.data() + tile++ * per_tile;
      for_tape_lanes(sp, [&](const Lane& lane) {
        std::copy_n(lane.data(), t.lanes, out);
        out += TileSize;
      });
    });
  }

  /// Reverse mode of forward(): writes ∂L/∂x (parameters fixed) into `grad_x` and ∂L/∂params
  /// (overwritten) into `grad_params`, given ∂L/∂z and ∂L/∂log_det.
  template <typename X, typename P, typename GZ, typename GL, typename GX, typename GP>
  void forward_backward(const Eigen::MatrixBase<X>& x, const Eigen::MatrixBase<P>& params,
                        const Eigen::MatrixBase<GZ>& grad_z,
                        const Eigen::MatrixBase<GL>& grad_log_det, GX&& grad_x,
                        GP&& grad_params) const {
    for_tiles(x.rows(), x.cols(), [&](const Tile& t) {
      Spline sp;
      Point pt;
      evaluate<false>(x, params, t, sp, pt);
      backward_tile(params, x.rows(), grad_z, grad_log_det, t, sp, pt, grad_x, grad_params);
    });
  }

  /// forward_backward() at the x and params `tape` was recorded with (forward_recorded), the
  /// knots taken from the tape instead of being computed again: the same results to the bit.
  /// @throws nflow::ShapeError when x is not of the recorded shape.
  template <typename X, typename P, typename GZ, typename GL, typename GX, typename GP>
  void forward_backward_recorded(const Tape& tape, const Eigen::MatrixBase<X>& x,
                                 const Eigen::MatrixBase<P>& params,
                                 const Eigen::MatrixBase<GZ>& grad_z,
                                 const Eigen::MatrixBase<GL>& grad_log_det, GX&& grad_x,
                                 GP&& grad_params) const {
    if (tape.rows != x.rows() || tape.cols != x.cols()) {
      throw ShapeError(
          "nflow::RationalQuadraticSpline::forward_backward_recorded: the tape holds " +
          std::to_string(tape.rows) + " x " + std::to_string(tape.cols) +
          " elements, the input is " + std::to_string(x.rows()) + " x " + std::to_string(x.cols()));
    }
    const Index per_tile = tape_lanes() * TileSize;
    Index tile = 0;
    for_tiles(x.rows(), x.cols(), [&](const Tile& t) {
      Spline sp;
      const Scalar* in = tape.knots.data() + tile++ * per_tile;
      for_tape_lanes(sp, [&](Lane& lane) {
        lane = Eigen::Map<const Lane>(in, t.lanes);
        in += TileSize;
      });
      cumulate(sp.pw, o_.min_bin_width, sp.x, t.lanes);
      cumulate(sp.ph, o_.min_bin_height, sp.y, t.lanes);
      Point pt;
      gather(x, t, pt.v);
      locate_forward(sp, pt);
      backward_tile(params, x.rows(), grad_z, grad_log_det, t, sp, pt, grad_x, grad_params);
    });
  }

  /// Reverse mode of inverse(): writes ∂L/∂z (parameters fixed) into `grad_z` and ∂L/∂params
  /// (overwritten) into `grad_params`, given ∂L/∂x and ∂L/∂log_det. By the implicit function
  /// theorem at the recovered x: with u = g_x − g_l·∂log τ′/∂x, ∂L/∂z = u/τ′ and the parameter
  /// gradient is forward_backward's with g_z = −u/τ′, g_l' = −g_l.
  template <typename Z, typename P, typename GX, typename GL, typename GZ, typename GP>
  void inverse_backward(const Eigen::MatrixBase<Z>& z, const Eigen::MatrixBase<P>& params,
                        const Eigen::MatrixBase<GX>& grad_x,
                        const Eigen::MatrixBase<GL>& grad_log_det, GZ&& grad_z,
                        GP&& grad_params) const {
    for_tiles(z.rows(), z.cols(), [&](const Tile& t) {
      Spline sp;
      Point pt;
      evaluate<true>(z, params, t, sp, pt);
      // Re-express the point as a forward evaluation at the recovered x (same bin).
      pt.v = pt.out - pt.shift;
      Lane gx, gl;
      gather(grad_x, t, gx);
      gather_per_column(grad_log_det, t, gl);
      const Lane u = gx - gl * pt.dlog_dx;
      const Lane gy = -u / pt.slope;
      const Lane gl_forward = -gl;
      Lane unused;
      backward(params, z.rows(), t, sp, pt, gy, gl_forward, unused, grad_params);
      scatter_values(t, Lane(-gy), grad_z);
    });
  }

 private:
  static constexpr int TileSize = 32;
  using Lane = Eigen::Array<Scalar, Dynamic, 1, Eigen::ColMajor, TileSize, 1>;
  using Mask = Eigen::Array<bool, Dynamic, 1, Eigen::ColMajor, TileSize, 1>;
  static constexpr bool Unbounded = Domain_ == SplineDomain::Unbounded;
  static constexpr bool Circular = Domain_ == SplineDomain::Circular;

  /// Lanes per SIMD packet: a tile is computed on a whole number of packets (the padding lanes
  /// hold zeros and are never written back), so that a short tile (one point) still vectorises.
  static constexpr Index Packet = Eigen::internal::packet_traits<Scalar>::size;
  static_assert(TileSize % Packet == 0, "RationalQuadraticSpline: tile must hold whole packets");

  /// The (feature, sample) pairs of one tile.
  struct Tile {
    std::array<Index, TileSize> i, j;
    Index size = 0;   ///< valid elements
    Index lanes = 0;  ///< size rounded up to whole packets
    void resize(Index s) {
      size = s;
      lanes = (s + Packet - 1) / Packet * Packet;
    }
  };

  /// The knots of every element of a tile, and the softmax weights (for the backward pass).
  struct Spline {
    std::array<Lane, Capacity + 1> x, y, d;
    std::array<Lane, Capacity> pw, ph;
  };

  /// One evaluation: the input v (reduced by periods on the circle), the bin's quantities and
  /// the results.
  struct Point {
    Lane v, shift, bin, xk, yk, w, h, d0, d1;  // bin k: left knot (xk, yk), size (w, h), δₖ, δₖ₊₁
    Lane s, xi, t, den, m;  // s = h/w, ξ, t = ξ(1−ξ), D, M (dy/dx = s²M/D²)
    Mask below, above;      // outside [lower, upper] (below includes NaN)
    Lane out, log_det;      // the value (periods restored) and log|τ′|
    Lane slope, dlog_dx;    // τ′ and ∂log τ′/∂x at the forward point
  };

  Scalar default_lower() const {
    return Domain_ == SplineDomain::Bounded ? Scalar(0)
           : Circular                       ? -Constants<Scalar>::pi
                                            : Scalar(-5);
  }
  Scalar default_upper() const {
    return Domain_ == SplineDomain::Bounded ? Scalar(1)
           : Circular                       ? Constants<Scalar>::pi
                                            : Scalar(5);
  }
  static void check_minimum(const std::string& who, const char* name, Scalar value, Scalar limit,
                            bool zero_allowed) {
    if (!(value > Scalar(0) || (zero_allowed && value == Scalar(0))) || !(value < limit)) {
      throw ParameterError(who + "option '" + name + "' must be in " + (zero_allowed ? "[" : "(") +
                           "0, " + std::to_string(double(limit)) + "), got " +
                           std::to_string(double(value)));
    }
  }

  /// The lanes a tape keeps per tile: the K width and K height weights, the K + 1 derivatives.
  Index tape_lanes() const { return Index(3 * bins() + 1); }
  /// Calls f(lane) for each lane of `sp` that a tape keeps, in the tape's order.
  template <typename S, typename F>
  void for_tape_lanes(S& sp, F&& f) const {
    const int Bins = bins();
    for (int k = 0; k < Bins; ++k) f(sp.pw[std::size_t(k)]);
    for (int k = 0; k < Bins; ++k) f(sp.ph[std::size_t(k)]);
    for (int k = 0; k <= Bins; ++k) f(sp.d[std::size_t(k)]);
  }
  static Index tile_count(Index n, Index m) { return (n * m + TileSize - 1) / TileSize; }

  /// The reverse mode of one tile at its forward point: ∂L/∂x into grad_x, ∂L/∂raw into
  /// grad_params.
  template <typename P, typename GZ, typename GL, typename GX, typename GP>
  void backward_tile(const Eigen::MatrixBase<P>& params, Index n,
                     const Eigen::MatrixBase<GZ>& grad_z, const Eigen::MatrixBase<GL>& grad_log_det,
                     const Tile& t, const Spline& sp, const Point& pt, GX&& grad_x,
                     GP&& grad_params) const {
    Lane gy, gl;
    gather(grad_z, t, gy);
    gather_per_column(grad_log_det, t, gl);
    Lane gx;
    backward(params, n, t, sp, pt, gy, gl, gx, grad_params);
    scatter_values(t, gx, grad_x);
  }

  /// Calls f(tile) for consecutive tiles of the n × m elements (column-major order).
  template <typename F>
  static void for_tiles(Index n, Index m, F&& f) {
    const Index total = n * m;
    Tile t;
    for (Index e0 = 0; e0 < total; e0 += TileSize) {
      const Index size = std::min<Index>(TileSize, total - e0);
      t.resize(size);
      for (Index q = 0; q < size; ++q) {
        const Index e = e0 + q;
        t.j[std::size_t(q)] = e / n;
        t.i[std::size_t(q)] = e - t.j[std::size_t(q)] * n;
      }
      f(t);
    }
  }

  template <typename M>
  static void gather(const Eigen::MatrixBase<M>& m, const Tile& t, Lane& out) {
    out.setZero(t.lanes);
    for (Index q = 0; q < t.size; ++q) out(q) = m.coeff(t.i[std::size_t(q)], t.j[std::size_t(q)]);
  }
  template <typename M>
  static void gather_per_column(const Eigen::MatrixBase<M>& m, const Tile& t, Lane& out) {
    out.setZero(t.lanes);
    for (Index q = 0; q < t.size; ++q) out(q) = m.coeff(0, t.j[std::size_t(q)]);
  }
  template <typename Out>
  static void scatter_values(const Tile& t, const Lane& v, Out&& out) {
    for (Index q = 0; q < t.size; ++q)
      out.coeffRef(t.i[std::size_t(q)], t.j[std::size_t(q)]) = v(q);
  }
  template <typename Out, typename LD>
  static void scatter(const Tile& t, const Lane& v, const Lane& ld, Out&& out, LD&& log_det) {
    scatter_values(t, v, out);
    for (Index q = 0; q < t.size; ++q) log_det.coeffRef(0, t.j[std::size_t(q)]) += ld(q);
  }
  template <typename P>
  static void gather_raw(const Eigen::MatrixBase<P>& params, Index n, const Tile& t, int p,
                         Lane& out) {
    out.setZero(t.lanes);
    for (Index q = 0; q < t.size; ++q)
      out(q) = params.coeff(Index(p) * n + t.i[std::size_t(q)], t.j[std::size_t(q)]);
  }

  /// softmax over the K lanes u[0..K) (in place: u becomes the weights), stable for any input.
  void softmax(std::array<Lane, Capacity>& u) const {
    const int K = bins();
    Lane mx = u[0];
    for (int k = 1; k < K; ++k) mx = mx.max(u[std::size_t(k)]);
    Lane sum = Lane::Zero(mx.size());
    for (int k = 0; k < K; ++k) {
      Lane& v = u[std::size_t(k)];
      v = (v - mx).exp();
      sum += v;
    }
    for (int k = 0; k < K; ++k) u[std::size_t(k)] /= sum;
  }

  /// Knot positions from softmax weights: lower + span·Σ(min + (1 − K·min)·p), last = upper.
  void cumulate(const std::array<Lane, Capacity>& p, Scalar minimum,
                std::array<Lane, Capacity + 1>& k, Index size) const {
    const int Bins = bins();
    const Scalar scale = span_ * (Scalar(1) - Scalar(Bins) * minimum);
    const Scalar floor = span_ * minimum;
    k[0].setConstant(size, o_.lower);
    for (int b = 1; b < Bins; ++b)
      k[std::size_t(b)] = k[std::size_t(b - 1)] + (floor + scale * p[std::size_t(b - 1)]);
    k[std::size_t(Bins)].setConstant(size, o_.upper);
  }

  /// δ(r) of the (clipped) raw derivative r, per SplineDerivative. Shifted:
  /// δ(r) = 1 + (1 − min_δ)·(softplus(r) − softplus(0))/log 2, with softplus(0) computed by the
  /// same vectorised code once, at construction (so r = 0 gives exactly 1 whatever log(2) rounds
  /// to).
  Lane derivative(const Lane& r) const {
    switch (o_.derivative) {
      case SplineDerivative::Softplus:
        return o_.min_derivative + torch_softplus(r);
      case SplineDerivative::Exp:
        return r.exp();
      case SplineDerivative::Shifted:
        break;
    }
    return Scalar(1) + (Scalar(1) - o_.min_derivative) / Constants<Scalar>::log_two *
                           (softplus(r) - softplus_zero_);
  }
  /// softplus as torch computes it (threshold 20: r itself above), exact to rounding (log1p):
  /// with min_δ = 10⁻³, δ is then nflows' to ~10⁻¹⁶ relative.
  static Lane torch_softplus(const Lane& r) {
    return (r > Scalar(20)).select(r, nflow::softplus(r));
  }
  /// softplus(r) = max(r, 0) + log(1 + e^{−|r|}), to an absolute error of one ulp of 1 (all that
  /// δ needs) and vectorised (Eigen 3.4 has no vectorised log1p).
  static Lane softplus(const Lane& r) {
    return r.max(Scalar(0)) + (Scalar(1) + (-r.abs()).exp()).log();
  }
  /// dδ/dr of the (clipped) raw derivative r: Shifted (1 − min_δ)·σ(r)/log 2, Softplus σ(r)
  /// (1 above torch's threshold), Exp e^r.
  Lane derivative_slope(const Lane& r) const {
    if (o_.derivative == SplineDerivative::Exp) return r.exp();
    const Lane sig = r.min(Scalar(0)).exp() / (Scalar(1) + (-r.abs()).exp());
    if (o_.derivative == SplineDerivative::Softplus) return (r > Scalar(20)).select(Scalar(1), sig);
    return (Scalar(1) - o_.min_derivative) / Constants<Scalar>::log_two * sig;
  }

  /// zuko's soft clip v/(1 + |v|·c) (c = clip_width_ or clip_derivative_) and its slope
  /// 1/(1 + |v|·c)².
  static Lane clip(const Lane& v, Scalar c) { return v / (Scalar(1) + v.abs() * c); }
  static Lane clip_slope(const Lane& v, Scalar c) {
    return (Scalar(1) + v.abs() * c).square().inverse();
  }
  bool clipped() const { return clip_width_ > Scalar(0); }
  /// A raw width or height as the softmax sees it: clipped, then times raw_scale.
  void prepare_raw(Lane& v) const {
    if (clipped()) v = clip(v, clip_width_);
    if (o_.raw_scale != Scalar(1)) v *= o_.raw_scale;
  }
  /// A raw derivative parameter as δ(·) sees it: clipped.
  Lane prepare_derivative(const Lane& r) const { return clipped() ? clip(r, clip_derivative_) : r; }

  template <typename P>
  void build(const Eigen::MatrixBase<P>& params, Index n, const Tile& t, Spline& sp) const {
    const int Bins = bins();
    for (int k = 0; k < Bins; ++k) {
      gather_raw(params, n, t, k, sp.pw[std::size_t(k)]);
      gather_raw(params, n, t, Bins + k, sp.ph[std::size_t(k)]);
    }
    if (clipped() || o_.raw_scale != Scalar(1)) {
      for (int k = 0; k < Bins; ++k) {
        prepare_raw(sp.pw[std::size_t(k)]);
        prepare_raw(sp.ph[std::size_t(k)]);
      }
    }
    softmax(sp.pw);
    softmax(sp.ph);
    cumulate(sp.pw, o_.min_bin_width, sp.x, t.lanes);
    cumulate(sp.ph, o_.min_bin_height, sp.y, t.lanes);
    Lane r;
    if constexpr (Unbounded) {
      sp.d[0].setOnes(t.lanes);
      sp.d[std::size_t(Bins)].setOnes(t.lanes);
      for (int k = 1; k < Bins; ++k) {
        gather_raw(params, n, t, 2 * Bins + k - 1, r);
        sp.d[std::size_t(k)] = derivative(prepare_derivative(r));
      }
    } else {
      for (int k = 0; k < derivative_params(Bins); ++k) {
        gather_raw(params, n, t, 2 * Bins + k, r);
        sp.d[std::size_t(k)] = derivative(prepare_derivative(r));
      }
      if constexpr (Circular) sp.d[std::size_t(Bins)] = sp.d[0];
    }
  }

  /// The knots of a tile's elements and the point `input` (x forward, z inverse) located in them.
  template <bool Inverse, typename V, typename P>
  void evaluate(const Eigen::MatrixBase<V>& input, const Eigen::MatrixBase<P>& params,
                const Tile& t, Spline& sp, Point& pt) const {
    build(params, input.rows(), t, sp);
    gather(input, t, pt.v);
    if constexpr (Inverse) {
      locate_inverse(sp, pt);
    } else {
      locate_forward(sp, pt);
    }
  }

  /// On the circle: v ← v − shift with shift a whole number of periods and v in [lower, upper).
  /// Rounding can leave v a hair outside (x just below a multiple of the period): it is wrapped
  /// by one more period, or put on lower if that rounds to upper, so that every finite x is
  /// evaluated in a bin (a tail would have the right value and log-det but a zero ∂log τ′/∂x).
  void reduce(Point& pt) const {
    if constexpr (Circular) {
      pt.shift = span_ * ((pt.v - o_.lower) / span_).floor();
      pt.v -= pt.shift;
      const Mask under = pt.v < o_.lower;  // evaluated now: pt.v changes below
      pt.v = under.select(pt.v + span_, pt.v);
      pt.shift = under.select(pt.shift - span_, pt.shift);
      const Mask over = pt.v >= o_.upper;
      pt.v = over.select(o_.lower, pt.v);
      pt.shift = over.select(pt.shift + span_, pt.shift);
    } else {
      pt.shift.setZero(pt.v.size());
    }
  }

  /// The bin of v among the knots `k` (its index, left and right knots in both coordinates and
  /// derivatives), by counting knots ≤ v: branch-free, so it vectorises.
  void find_bin(const Spline& sp, const std::array<Lane, Capacity + 1>& k, Point& pt) const {
    const int Bins = bins();
    const Index size = pt.v.size();
    pt.bin.setZero(size);
    for (int b = 1; b < Bins; ++b) pt.bin += (k[std::size_t(b)] <= pt.v).template cast<Scalar>();
    pt.xk.resize(size);
    pt.yk.resize(size);
    pt.d0.resize(size);
    pt.d1.resize(size);
    pt.w.resize(size);
    pt.h.resize(size);
    // Gather the bin's quantities by index (exact copies of the knots, no blending).
    for (Index q = 0; q < size; ++q) {
      const std::size_t b = std::size_t(pt.bin(q));
      pt.xk(q) = sp.x[b](q);
      pt.yk(q) = sp.y[b](q);
      pt.d0(q) = sp.d[b](q);
      pt.d1(q) = sp.d[b + 1](q);
      pt.w(q) = sp.x[b + 1](q) - pt.xk(q);
      pt.h(q) = sp.y[b + 1](q) - pt.yk(q);
    }
    pt.s = pt.h / pt.w;
    pt.below = !(pt.v >= k[0]);
    pt.above = pt.v >= k[std::size_t(Bins)];
  }

  /// D, M, log|τ′| = log(s²M/D²), τ′ and ∂log τ′/∂x at pt.xi (inside), tails overriding.
  void finish(Point& pt) const {
    const Lane& s = pt.s;
    const Lane& xi = pt.xi;
    pt.t = xi * (Scalar(1) - xi);
    pt.den = s + (pt.d0 + pt.d1 - Scalar(2) * s) * pt.t;
    pt.m = (s + (pt.d1 - s) * xi.square() + (pt.d0 - s) * (Scalar(1) - xi).square())
               .max(std::numeric_limits<Scalar>::min());
    pt.slope = s.square() * pt.m / pt.den.square();
    pt.log_det = pt.slope.log();
    const Lane m_xi =
        Scalar(2) * (pt.d1 * xi + s * (Scalar(1) - Scalar(2) * xi) - pt.d0 * (Scalar(1) - xi));
    pt.dlog_dx = (m_xi / pt.m - Scalar(2) * (pt.d0 + pt.d1 - Scalar(2) * s) *
                                    (Scalar(1) - Scalar(2) * xi) / pt.den) /
                 pt.w;
  }

  /// The tails outside [lower, upper] for the forward map (`inverse` false) or its inverse.
  void tails(const Spline& sp, Point& pt, bool inverse) const {
    const auto nan = pt.v.isNaN();
    if constexpr (Unbounded) {
      const auto out = pt.below || pt.above;
      pt.out = out.select(pt.v, pt.out);
      pt.log_det = out.select(Scalar(0), pt.log_det);
      pt.slope = out.select(Scalar(1), pt.slope);
      pt.dlog_dx = out.select(Scalar(0), pt.dlog_dx);
    } else {
      const Lane& d0 = sp.d[0];
      const Lane& dk = sp.d[std::size_t(bins())];
      const Scalar lo = o_.lower, hi = o_.upper;
      const Lane left = inverse ? Lane(lo + (pt.v - lo) / d0) : Lane(lo + d0 * (pt.v - lo));
      const Lane right = inverse ? Lane(hi + (pt.v - hi) / dk) : Lane(hi + dk * (pt.v - hi));
      pt.out = pt.below.select(left, pt.above.select(right, pt.out));
      pt.slope = pt.below.select(d0, pt.above.select(dk, pt.slope));
      pt.log_det = pt.below.select(d0.log(), pt.above.select(dk.log(), pt.log_det));
      pt.dlog_dx = (pt.below || pt.above).select(Scalar(0), pt.dlog_dx);
    }
    pt.log_det = nan.select(std::numeric_limits<Scalar>::quiet_NaN(), pt.log_det);
  }

  void locate_forward(const Spline& sp, Point& pt) const {
    reduce(pt);
    find_bin(sp, sp.x, pt);
    const Lane dx = pt.v - pt.xk;
    pt.xi = (dx / pt.w).max(Scalar(0)).min(Scalar(1));
    finish(pt);
    // y = Yₖ + (x − Xₖ)·s·(s + (δₖ − s)(1 − ξ))/D, written as x + (Yₖ − Xₖ) + (x − Xₖ)(q − 1):
    // exactly x at the identity (Yₖ = Xₖ, s = δ = 1, D = 1).
    const Lane q = pt.s * (pt.s + (pt.d0 - pt.s) * (Scalar(1) - pt.xi)) / pt.den;
    pt.out = pt.v + (pt.yk - pt.xk) + dx * (q - Scalar(1));
    tails(sp, pt, false);
    pt.out += pt.shift;
  }

  void locate_inverse(const Spline& sp, Point& pt) const {
    reduce(pt);
    find_bin(sp, sp.y, pt);
    // a ξ² + b ξ + c = 0 with the root in [0, 1]: ξ = 2c/(−b − √(b² − 4ac)) = 2sΔ/den with
    // den = b + √disc. For b < 0 that sum cancels (steep knots: δ ≫ s), and den is computed as
    // the equal 4asΔ/(√disc − b) instead (then a > hs > 0 and Δ > 0): no cancellation either way.
    const Lane dy = (pt.v - pt.yk).max(Scalar(0));
    const Lane e = pt.d0 + pt.d1 - Scalar(2) * pt.s;
    const Lane a = pt.h * (pt.s - pt.d0) + dy * e;
    const Lane b = pt.h * pt.d0 - dy * e;
    const Lane c = -pt.s * dy;
    const Lane root = (b.square() - Scalar(4) * a * c).max(Scalar(0)).sqrt();
    const Lane den = (b >= Scalar(0))
                         .select(b + root, Scalar(4) * a * pt.s * dy / (root - b))
                         .max(std::numeric_limits<Scalar>::min());
    const Lane xi = Scalar(2) * pt.s * dy / den;
    pt.xi = xi.min(Scalar(1));
    // x = Xₖ + wξ, written as y + (Xₖ − Yₖ) + Δ(2h − den)/den: exactly y at the identity.
    const Lane residual = pt.v + (pt.xk - pt.yk) + dy * (Scalar(2) * pt.h - den) / den;
    pt.out = (xi <= Scalar(1)).select(residual, pt.xk + pt.w * pt.xi);
    finish(pt);
    pt.log_det = -pt.log_det;
    tails(sp, pt, true);
    if constexpr (!Unbounded) pt.log_det = (pt.below || pt.above).select(-pt.log_det, pt.log_det);
    pt.out += pt.shift;
  }

  /// Reverse mode at a forward point pt (inside a bin or in a tail): given gy = ∂L/∂y and
  /// gl = ∂L/∂log τ′, writes ∂L/∂x into gx and ∂L/∂raw into grad_params.
  template <typename P, typename GP>
  void backward(const Eigen::MatrixBase<P>& params, Index n, const Tile& t, const Spline& sp,
                const Point& pt, const Lane& gy, const Lane& gl, Lane& gx, GP&& grad_params) const {
    const int Bins = bins();
    const Lane& s = pt.s;
    const Lane& xi = pt.xi;
    const Lane& tt = pt.t;
    const Lane& den = pt.den;
    const Lane den2 = den.square();
    const Lane a = s * xi.square() + pt.d0 * tt;  // y − Yₖ = h·a/D
    const Lane one_m_2t = Scalar(1) - Scalar(2) * tt;
    // ∂y/∂(ξ, s, h, δₖ, δₖ₊₁) and ∂log τ′/∂(ξ, s, δₖ, δₖ₊₁).
    const Lane y_xi = pt.h * s * pt.m / den2;
    const Lane y_s = pt.h * (xi.square() * den - a * one_m_2t) / den2;
    const Lane y_h = a / den;
    const Lane y_d0 = pt.h * tt * (den - a) / den2;
    const Lane y_d1 = -pt.h * tt * a / den2;
    const Lane l_s = Scalar(2) / s + Scalar(2) * tt / pt.m - Scalar(2) * one_m_2t / den;
    const Lane l_d0 = (Scalar(1) - xi).square() / pt.m - Scalar(2) * tt / den;
    const Lane l_d1 = xi.square() / pt.m - Scalar(2) * tt / den;
    const Lane l_xi = pt.dlog_dx * pt.w;
    const auto inside = !(pt.below || pt.above);
    const Lane g_xi = inside.select(gy * y_xi + gl * l_xi, Scalar(0));
    const Lane g_s = inside.select(gy * y_s + gl * l_s, Scalar(0));
    const Lane g_d0 = inside.select(gy * y_d0 + gl * l_d0, Scalar(0));
    const Lane g_d1 = inside.select(gy * y_d1 + gl * l_d1, Scalar(0));
    // Through ξ = (x − Xₖ)/w and s = h/w.
    const Lane g_x = g_xi / pt.w;
    const Lane g_left = -g_x;  // ∂/∂Xₖ
    // (Selected, not multiplied by zero: an inverse at ±Inf leaves ξ NaN outside the interval.)
    const Lane g_w = inside.select(-(g_xi * xi + g_s * s) / pt.w, Scalar(0));  // ∂/∂wₖ
    const Lane g_h = inside.select(gy * y_h + g_s / pt.w, Scalar(0));          // ∂/∂hₖ
    const Lane g_bottom = inside.select(gy, Scalar(0));                        // ∂/∂Yₖ
    if constexpr (Unbounded) {
      gx = inside.select(g_x, gy);
    } else {
      gx = pt.below.select(gy * sp.d[0], pt.above.select(gy * sp.d[std::size_t(Bins)], g_x));
    }
    // Knot j < k moves Xₖ (and Yₖ); knot j = k is the bin's own width (height).
    const Index size = pt.v.size();
    std::array<Lane, Capacity> gw, gh;
    for (int j = 0; j < Bins; ++j) {
      gw[std::size_t(j)].resize(size);
      gh[std::size_t(j)].resize(size);
      for (Index q = 0; q < size; ++q) {
        const Scalar b = pt.bin(q);
        gw[std::size_t(j)](q) = b > Scalar(j) ? g_left(q) : b == Scalar(j) ? g_w(q) : Scalar(0);
        gh[std::size_t(j)](q) = b > Scalar(j) ? g_bottom(q) : b == Scalar(j) ? g_h(q) : Scalar(0);
      }
    }
    softmax_backward(sp.pw, o_.min_bin_width, gw);
    softmax_backward(sp.ph, o_.min_bin_height, gh);
    Lane r;
    for (int k = 0; k < Bins; ++k) {
      for (int p : {k, Bins + k}) {
        Lane& g = p < Bins ? gw[std::size_t(k)] : gh[std::size_t(k)];
        // Through raw_scale and the soft clip (prepare_raw).
        if (o_.raw_scale != Scalar(1)) g *= o_.raw_scale;
        if (clipped()) {
          gather_raw(params, n, t, p, r);
          g *= clip_slope(r, clip_width_);
        }
        scatter_raw(t, n, p, g, grad_params);
      }
    }
    // Knot derivatives: δₖ from the bin's left knot, δₖ₊₁ from its right; tails: δ₀ or δ_K.
    std::array<Lane, Capacity + 1> gd;
    for (int k = 0; k <= Bins; ++k) gd[std::size_t(k)].setZero(size);
    for (Index q = 0; q < size; ++q) {
      const std::size_t b = std::size_t(pt.bin(q));
      gd[b](q) += g_d0(q);
      gd[b + 1](q) += g_d1(q);
    }
    if constexpr (!Unbounded) {
      const Lane& d0 = sp.d[0];
      const Lane& dk = sp.d[std::size_t(Bins)];
      gd[0] += pt.below.select(gy * (pt.v - o_.lower) + gl / d0, Scalar(0));
      gd[std::size_t(Bins)] += pt.above.select(gy * (pt.v - o_.upper) + gl / dk, Scalar(0));
    }
    if constexpr (Circular) gd[0] += gd[std::size_t(Bins)];
    for (int k = 0; k < derivative_params(Bins); ++k) {
      const int p = 2 * Bins + k;
      const int knot = Unbounded ? k + 1 : k;
      gather_raw(params, n, t, p, r);
      Lane g = gd[std::size_t(knot)] * derivative_slope(prepare_derivative(r));
      if (clipped()) g *= clip_slope(r, clip_derivative_);
      scatter_raw(t, n, p, g, grad_params);
    }
  }

  /// ∂/∂u of w = span·(min + (1 − K·min)·softmax(u)) given ∂/∂w (in place).
  void softmax_backward(const std::array<Lane, Capacity>& p, Scalar minimum,
                        std::array<Lane, Capacity>& g) const {
    const int Bins = bins();
    const Scalar scale = span_ * (Scalar(1) - Scalar(Bins) * minimum);
    Lane dot = p[0] * g[0];
    for (int k = 1; k < Bins; ++k) dot += p[std::size_t(k)] * g[std::size_t(k)];
    for (int k = 0; k < Bins; ++k)
      g[std::size_t(k)] = scale * p[std::size_t(k)] * (g[std::size_t(k)] - dot);
  }

  template <typename GP>
  static void scatter_raw(const Tile& t, Index n, int p, const Lane& v, GP&& grad_params) {
    for (Index q = 0; q < t.size; ++q)
      grad_params.coeffRef(Index(p) * n + t.i[std::size_t(q)], t.j[std::size_t(q)]) = v(q);
  }

  SplineOptions<Scalar> o_;
  int bins_ = Bins_ == Dynamic ? 8 : Bins_;  ///< K (read through bins(); used when Dynamic)
  Scalar span_ = Scalar(0);
  Scalar softplus_zero_ = Scalar(0);    ///< softplus(0) as softplus() computes it
  Scalar clip_width_ = Scalar(0);       ///< 2/|log s| (0: no soft clip)
  Scalar clip_derivative_ = Scalar(0);  ///< 1/|log s|
};

}  // namespace nflow
