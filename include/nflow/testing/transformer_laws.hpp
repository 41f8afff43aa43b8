#pragma once
/// @file
/// @brief Laws every transformer must obey (the elementwise maps that Coupling and
/// MaskedAutoregressive apply; the contract is documented in bijectors/transformers/affine.hpp),
/// checked numerically on their own, without a structure or a conditioner around them. Like the
/// bijector laws, the checks return {law, error, tolerance} results; run your own transformer
/// through them with `nflow::testing::check_transformer_laws(t)`.
///
/// The laws, on seeded random inputs x, z ~ N(0, scale²) and parameters ~ N(0, 1) (n features,
/// `batch` samples):
/// - round_trip:           inverse(forward(x)) ≈ x and forward(inverse(z)) ≈ z
/// - log_det_sum:          forward log-det at x + inverse log-det at forward(x) ≈ 0
/// - forward_log_det:      forward log-det ≈ Σᵢ log|∂zᵢ/∂xᵢ| by finite differences (the map is
///                         coefficient-wise, so its Jacobian is diagonal)
/// - inverse_log_det:      the same for the inverse
/// - log_det_accumulates:  forward and inverse add their log-det into the one they are given
/// - forward_vjp_input, forward_vjp_params, inverse_vjp_input, inverse_vjp_params (double only):
///   forward_backward and inverse_backward ≈ finite differences of
///   L = Σ grad_value ⊙ value + Σ grad_log_det ⊙ log_det
///
/// and at the edges, where splines and their peers fail most (the edge inputs of each feature:
/// random inputs scaled 10³ beyond `input_scale`, ±far (10⁶ in double, 10³ in float), and, for a
/// transformer that exposes its knots (TransformerWithKnots), every knot, the bounds and one ulp
/// either side of them; the inverse gets the knots' images):
/// - edge_round_trip:      both round trips and the log-det sums (relative to 1 + |x|: far out
///                         x itself is known to ε·|x| only) at the edge inputs
/// - edge_log_det:         both log-dets at the edge inputs ≈ one-sided finite differences
///                         (the side and step, of three, that agree best: at a knot the map is
///                         smooth on one side only)
/// - edge_finite:          values, log-dets and both backward passes' gradients are finite at the
///                         edge inputs
/// - extreme_parameters:   with raw parameters ±10⁴ (random signs), all equal, and one huge entry
///                         per feature, at the random inputs: values, log-dets and gradients
///                         finite, forward(inverse(z)) ≈ z (to 10⁻⁸ in double, 10⁻² in float: the
///                         well-conditioned direction; the other is as flat as the map allows)
///
/// Every law has a name in transformer_law_names(); opt out of any of them by name with a reason
/// (LawOptions::skip), as for the bijector laws: a skipped law is reported as passed with the
/// reason, a skip naming no law fails. Finite-difference gradients need a smooth map: the random
/// inputs are almost surely away from a spline's knots; the edge laws use one-sided differences.

#include <Eigen/Core>
#include <algorithm>
#include <array>
#include <cmath>
#include <concepts>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "nflow/testing/bijector_laws.hpp"

namespace nflow::testing {

/// The name of every law check_transformer_laws() reports, in the order it reports them.
inline const std::vector<std::string>& transformer_law_names() {
  static const std::vector<std::string> names = {
      "round_trip",          "log_det_sum",       "forward_log_det",    "inverse_log_det",
      "log_det_accumulates", "forward_vjp_input", "forward_vjp_params", "inverse_vjp_input",
      "inverse_vjp_params",  "edge_round_trip",   "edge_log_det",       "edge_finite",
      "extreme_parameters"};
  return names;
}

/// @brief A transformer that exposes the knots of its piecewise map: `t.knots(params, feature,
/// col)` returns `.x` and `.y` (indexable, `.size()`), the knots of that feature's map in the
/// input and output coordinates, the first and last being the interval's bounds. The edge laws
/// then also run at every knot and bound (and one ulp either side); a transformer without knots
/// (affine, additive) is smooth everywhere and has none.
template <typename T>
concept TransformerWithKnots =
    requires(const T& t, const Eigen::Matrix<typename T::Scalar, Dynamic, Dynamic>& params) {
  t.knots(params, Index(0), Index(0)).x.size();
  t.knots(params, Index(0), Index(0)).y.size();
};

namespace detail {

/// The coefficient-wise derivative of a coefficient-wise map of matrices, by a fourth-order
/// central difference (every coefficient perturbed at once).
template <typename Map, typename M>
Eigen::MatrixXd fd_diagonal(Map&& map, const M& at, double h) {
  auto f = [&](double s) {
    M moved = at;
    moved.array() += typename M::Scalar(s);
    return map(moved).template cast<double>().eval();
  };
  return (8.0 * (f(h) - f(-h)) - (f(2 * h) - f(-2 * h))) / (12.0 * h);
}

/// The reverse-mode laws of one direction: `backward` is forward_backward or inverse_backward,
/// `loss(input, params)` the linear loss L of that direction.
template <typename Scalar, typename Backward, typename Loss>
void check_transformer_gradients(const std::string& dir, Backward&& backward, Loss&& loss,
                                 const Eigen::Matrix<Scalar, Dynamic, Dynamic>& input,
                                 const Eigen::Matrix<Scalar, Dynamic, Dynamic>& params,
                                 const Eigen::Matrix<Scalar, Dynamic, Dynamic>& g_value,
                                 const Eigen::Matrix<Scalar, 1, Dynamic>& g_log_det, double h,
                                 double tol, LawReport& out) {
  if (out.skipped(dir + "_vjp_input") && out.skipped(dir + "_vjp_params")) return;
  using M = Eigen::Matrix<Scalar, Dynamic, Dynamic>;
  M g_input(input.rows(), input.cols());
  M g_params(params.rows(), params.cols());
  backward(input, params, g_value, g_log_det, g_input, g_params);
  auto fd_of = [&](const M& at, auto&& loss_at) {
    Eigen::MatrixXd fd(at.rows(), at.cols());
    for (Index i = 0; i < at.size(); ++i) {
      fd(i) = stencil(
          [&](double s) {
            M moved = at;
            moved(i) += Scalar(s);
            return loss_at(moved);
          },
          h);
    }
    return fd;
  };
  const Eigen::MatrixXd fd_input = fd_of(input, [&](const M& v) { return loss(v, params); });
  const Eigen::MatrixXd fd_params = fd_of(params, [&](const M& p) { return loss(input, p); });
  auto relative = [](const M& analytic, const Eigen::MatrixXd& fd) {
    return (analytic.template cast<double>() - fd).cwiseAbs().maxCoeff() /
           std::max(1.0, fd.cwiseAbs().maxCoeff());
  };
  out.add({dir + "_vjp_input", relative(g_input, fd_input), tol,
           "direct gradient of the input vs finite differences"});
  out.add({dir + "_vjp_params", relative(g_params, fd_params), tol,
           "gradient of the parameters vs finite differences"});
}

/// The edge inputs of each feature (see the file's documentation) as an n × m batch, feature i
/// of every column from `params` column 0 (the edge laws use that column's parameters for all).
template <typename T, typename M>
M edge_inputs(const T& t, const M& random, const M& params, double far, bool inverse) {
  using Scalar = typename T::Scalar;
  const Index n = random.rows();
  std::vector<std::vector<Scalar>> values(static_cast<std::size_t>(n));
  for (Index i = 0; i < n; ++i) {
    auto& v = values[static_cast<std::size_t>(i)];
    for (Index j = 0; j < random.cols(); ++j) v.push_back(random(i, j) * Scalar(1e3));
    v.push_back(Scalar(far));
    v.push_back(Scalar(-far));
    if constexpr (TransformerWithKnots<T>) {
      const auto k = t.knots(params.leftCols(1), i, 0);
      const auto& knots = inverse ? k.y : k.x;
      const Index last = Index(knots.size()) - 1;
      for (Index q = 0; q <= last; ++q) v.push_back(knots[static_cast<std::size_t>(q)]);
      for (Index q : {Index(0), last}) {
        const Scalar bound = knots[static_cast<std::size_t>(q)];
        v.push_back(std::nextafter(bound, -std::numeric_limits<Scalar>::infinity()));
        v.push_back(std::nextafter(bound, std::numeric_limits<Scalar>::infinity()));
      }
    }
  }
  std::size_t m = 0;
  for (const auto& v : values) m = std::max(m, v.size());
  M out(n, Index(m));
  for (Index i = 0; i < n; ++i) {
    const auto& v = values[static_cast<std::size_t>(i)];
    for (std::size_t j = 0; j < m; ++j) out(i, Index(j)) = v[j % v.size()];
  }
  return out;
}

/// max over coefficients of |a − b| / (1 + |b|), infinite if any is not finite.
template <typename A, typename B>
double finite_scaled_error(const A& a, const B& b) {
  if (!a.allFinite() || !b.allFinite()) return std::numeric_limits<double>::infinity();
  return scaled_error(a, b);
}

}  // namespace detail

/// @brief Runs the transformer laws (transformer_law_names()) on `t` over `features` features.
/// Uses LawOptions' batch, seed, input_scale, tolerances, fd_step and skips (the domains do not
/// apply); the gradient laws run in double, the others in T's Scalar.
template <typename T>
std::vector<LawResult> check_transformer_laws(const T& t, const LawOptions& opt = {},
                                              Index features = 3) {
  using Scalar = typename T::Scalar;
  using Defaults = detail::Defaults<Scalar>;
  using M = Eigen::Matrix<Scalar, Dynamic, Dynamic>;
  using Row = Eigen::Matrix<Scalar, 1, Dynamic>;
  constexpr bool is_double = std::is_same_v<Scalar, double>;
  detail::LawReport rep(opt.skipped, transformer_law_names(),
                        "nflow::testing::transformer_law_names()");
  std::mt19937_64 gen(opt.seed);
  const Index n = features;
  const Index m = opt.batch;
  const double rt_tol = detail::pick(opt.round_trip_tol, Defaults::round_trip);
  const double ld_tol = detail::pick(opt.log_det_tol, Defaults::log_det);
  const double h = detail::pick(opt.fd_step, Defaults::fd_step);

  const M x = detail::draw<Scalar, Dynamic>(n, m, Domain::Real, opt.input_scale, gen);
  const M z0 = detail::draw<Scalar, Dynamic>(n, m, Domain::Real, opt.input_scale, gen);
  const M params = detail::draw<Scalar, Dynamic>(T::ParamsPerDim * n, m, Domain::Real, 1.0, gen);

  // Each direction from a log-det of `start`, returning the value and the log-det added.
  struct Out {
    M value;
    Row log_det;
  };
  auto forward = [&](const M& in, const M& p, Scalar start = Scalar(0)) {
    Out o{M(in.rows(), in.cols()), Row::Constant(in.cols(), start)};
    t.forward(in, p, o.value, o.log_det);
    o.log_det.array() -= start;
    return o;
  };
  auto inverse = [&](const M& in, const M& p, Scalar start = Scalar(0)) {
    Out o{M(in.rows(), in.cols()), Row::Constant(in.cols(), start)};
    t.inverse(in, p, o.value, o.log_det);
    o.log_det.array() -= start;
    return o;
  };

  const Out fx = forward(x, params);
  const Out ifx = inverse(fx.value, params);
  const Out iz = inverse(z0, params);
  const Out fiz = forward(iz.value, params);
  rep.add({"round_trip",
           std::max(detail::scaled_error(ifx.value, x), detail::scaled_error(fiz.value, z0)),
           rt_tol, "inverse(forward(x)) vs x and forward(inverse(z)) vs z"});
  rep.add({"log_det_sum", detail::scaled_error(fx.log_det + ifx.log_det, Row::Zero(m)), rt_tol,
           "forward log-det + inverse log-det at forward(x)"});

  auto log_det_error = [&](const Eigen::MatrixXd& diagonal, const Row& log_det) {
    const Eigen::RowVectorXd fd = diagonal.array().abs().log().colwise().sum();
    return ((fd - log_det.template cast<double>()).array().abs() / (1.0 + fd.array().abs()))
        .maxCoeff();
  };
  rep.add({"forward_log_det",
           log_det_error(
               detail::fd_diagonal([&](const M& v) { return forward(v, params).value; }, x, h),
               fx.log_det),
           ld_tol, "vs Σ log|∂zᵢ/∂xᵢ| by finite differences"});
  rep.add({"inverse_log_det",
           log_det_error(
               detail::fd_diagonal([&](const M& v) { return inverse(v, params).value; }, z0, h),
               iz.log_det),
           ld_tol, "vs Σ log|∂xᵢ/∂zᵢ| by finite differences"});

  // Structures accumulate one feature at a time: the calls add into the log-det they are given.
  const Scalar start = Scalar(1.5);
  const double acc = std::max(detail::scaled_error(forward(x, params, start).log_det, fx.log_det),
                              detail::scaled_error(inverse(z0, params, start).log_det, iz.log_det));
  rep.add({"log_det_accumulates", acc, rt_tol, "log-det added to a non-zero log-det vs from zero"});

  const M g_value = detail::draw<Scalar, Dynamic>(n, m, Domain::Real, 1.0, gen);
  const Row g_log_det = detail::draw<Scalar, Dynamic>(1, m, Domain::Real, 1.0, gen);
  if constexpr (is_double) {
    const double g_tol = detail::pick(opt.gradient_tol, Defaults::gradient);
    auto linear = [&](const Out& o) {
      return (o.value.array() * g_value.array()).sum() +
             (o.log_det.array() * g_log_det.array()).sum();
    };
    detail::check_transformer_gradients<Scalar>(
        "forward",
        [&](const M& v, const M& p, const M& gv, const Row& gl, M& gx, M& gp) {
          t.forward_backward(v, p, gv, gl, gx, gp);
        },
        [&](const M& v, const M& p) { return linear(forward(v, p)); }, x, params, g_value,
        g_log_det, h, g_tol, rep);
    detail::check_transformer_gradients<Scalar>(
        "inverse",
        [&](const M& v, const M& p, const M& gv, const Row& gl, M& gz, M& gp) {
          t.inverse_backward(v, p, gv, gl, gz, gp);
        },
        [&](const M& v, const M& p) { return linear(inverse(v, p)); }, z0, params, g_value,
        g_log_det, h, g_tol, rep);
  } else {
    for (const char* law :
         {"forward_vjp_input", "forward_vjp_params", "inverse_vjp_input", "inverse_vjp_params"})
      rep.not_applicable(law, "gradient laws run in double only");
  }

  // ---- the edges: one column of parameters for every edge input ----
  const double far = is_double ? 1e6 : 1e3;
  const std::string knots_note = TransformerWithKnots<T>
                                     ? "far, scaled, knots, bounds and ±1 ulp"
                                     : "far and scaled inputs (the transformer has no knots)";
  const M ex = detail::edge_inputs(t, x, params, far, false);
  const M ez = detail::edge_inputs(t, z0, params, far, true);
  const M ep = params.leftCols(1).replicate(1, ex.cols());
  const M epz = params.leftCols(1).replicate(1, ez.cols());
  const Out efx = forward(ex, ep), eifx = inverse(efx.value, ep);
  const Out eiz = inverse(ez, epz), efiz = forward(eiz.value, epz);
  if (!rep.skipped("edge_round_trip")) {
    // The log-det sums relative to 1 + max |input| of the column: far out, the input itself is
    // known only to ε·|x| (on the circle the reduction by periods rounds there), which moves
    // the log-det by ∂log τ′/∂x times that.
    auto sum_error = [](const Row& sum, const M& in) {
      if (!sum.allFinite()) return std::numeric_limits<double>::infinity();
      const Eigen::RowVectorXd scale =
          1.0 + in.template cast<double>().cwiseAbs().colwise().maxCoeff().array();
      return (sum.template cast<double>().cwiseAbs().array() / scale.array()).maxCoeff();
    };
    const double err = std::max(
        {detail::finite_scaled_error(eifx.value, ex), detail::finite_scaled_error(efiz.value, ez),
         sum_error(efx.log_det + eifx.log_det, ex), sum_error(eiz.log_det + efiz.log_det, ez)});
    rep.add({"edge_round_trip", err, rt_tol, "both round trips and log-det sums at " + knots_note});
  }
  if (!rep.skipped("edge_log_det")) {
    // One-sided (fourth order) from either side, at the steps h, h/10 and h/100 (times |x|/10³
    // beyond 10³, where x itself rounds), each point taking the side and step that agree best: a
    // stencil reaching over a knot, where the second derivative jumps, is off by O(h) (a point
    // on a knot is smooth to its right, one just below it to its left); a wrong log-det is off
    // on both sides at every step.
    auto one_sided_error = [&](auto&& map, const M& at, const Row& log_det) {
      Eigen::MatrixXd best =
          Eigen::MatrixXd::Constant(1, at.cols(), std::numeric_limits<double>::infinity());
      const M scale = (at.array().abs() * Scalar(1e-3)).max(Scalar(1)).matrix();
      for (double side : {1.0, -1.0}) {
        for (double step : {h, h / 10, h / 100}) {
          const M hs = scale * Scalar(side * step);
          std::array<Eigen::MatrixXd, 5> f;
          for (int c = 0; c < 5; ++c)
            f[std::size_t(c)] = map(M(at + Scalar(c) * hs)).template cast<double>();
          const Eigen::MatrixXd diagonal =
              (-25.0 * f[0] + 48.0 * f[1] - 36.0 * f[2] + 16.0 * f[3] - 3.0 * f[4]).array() /
              (12.0 * hs.template cast<double>().array());
          const Eigen::RowVectorXd fd = diagonal.array().abs().log().colwise().sum();
          const Eigen::RowVectorXd err =
              (fd - log_det.template cast<double>()).array().abs() / (1.0 + fd.array().abs());
          for (Index j = 0; j < at.cols(); ++j)
            if (err(j) < best(j)) best(j) = err(j);
        }
      }
      return best.maxCoeff();
    };
    const double err = std::max(
        one_sided_error([&](const M& v) { return forward(v, ep).value; }, ex, efx.log_det),
        one_sided_error([&](const M& v) { return inverse(v, epz).value; }, ez, eiz.log_det));
    rep.add({"edge_log_det", std::isnan(err) ? std::numeric_limits<double>::infinity() : err,
             ld_tol, "vs one-sided finite differences at " + knots_note});
  }
  // Values, log-dets and both backward passes finite (infinite error otherwise).
  auto all_finite = [&](const M& in, const M& p, const Out& f, const Out& i) {
    M g_in(in.rows(), in.cols()), g_p(p.rows(), p.cols());
    const M gv = g_value.leftCols(1).replicate(1, in.cols());
    const Row gl = g_log_det.leftCols(1).replicate(1, in.cols());
    bool ok = f.value.allFinite() && f.log_det.allFinite() && i.value.allFinite() &&
              i.log_det.allFinite();
    t.forward_backward(in, p, gv, gl, g_in, g_p);
    ok = ok && g_in.allFinite() && g_p.allFinite();
    t.inverse_backward(in, p, gv, gl, g_in, g_p);
    return ok && g_in.allFinite() && g_p.allFinite();
  };
  if (!rep.skipped("edge_finite")) {
    const bool ok =
        all_finite(ex, ep, efx, inverse(ex, ep)) && all_finite(ez, epz, forward(ez, epz), eiz);
    rep.add({"edge_finite", ok ? 0.0 : std::numeric_limits<double>::infinity(), 0.0,
             "values, log-dets and gradients finite at " + knots_note});
  }
  if (!rep.skipped("extreme_parameters")) {
    // Raw parameters ±1e4 (random signs), all equal, one huge entry per feature, at the random
    // inputs (the edge laws cover the edge inputs).
    const M& in = x;
    const M& zin = z0;
    std::uniform_int_distribution<int> coin(0, 1);
    double err = 0;
    for (int kind = 0; kind < 3; ++kind) {
      M p(params.rows(), in.cols());
      for (Index c = 0; c < p.cols(); ++c) p.col(c) = params.col(c % m);
      for (Index q = 0; q < p.size(); ++q) {
        if (kind == 0) p(q) = coin(gen) ? Scalar(1e4) : Scalar(-1e4);
        if (kind == 1) p(q) = Scalar(2.5);
      }
      if (kind == 2) p.topRows(n).setConstant(Scalar(1e4));  // parameter 0 of every feature
      const Out f = forward(in, p), i = inverse(zin, p);
      const Out fi = forward(i.value, p);
      if (!all_finite(in, p, f, inverse(in, p)) || !all_finite(zin, p, forward(zin, p), i)) {
        err = std::numeric_limits<double>::infinity();
      } else {
        err = std::max(err, detail::scaled_error(fi.value, zin));
      }
    }
    rep.add({"extreme_parameters", err, is_double ? 1e-8 : 1e-2,
             "finite values, log-dets and gradients, forward(inverse(z)) vs z, with raw "
             "parameters ±1e4, all equal, one huge"});
  }
  return rep.finish();
}

}  // namespace nflow::testing
