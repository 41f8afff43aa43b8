#pragma once
/// @file
/// @brief Laws every bijector must obey, checked numerically. Framework-agnostic: the checks
/// return a list of {law, error, tolerance} results; nflow/testing/catch2.hpp turns each into a
/// Catch2 assertion. Run your own bijector through them with `nflow::testing::check_laws(b)`.
///
/// The laws, on seeded random inputs:
/// - round_trip:            inverse(forward(x)) ≈ x and forward(inverse(z)) ≈ z
/// - forward_log_det:       forward log-det ≈ log|det J| of a finite-difference Jacobian
/// - inverse_log_det:       the same for the inverse
/// - log_det_sum:           forward log-det at x + inverse log-det at forward(x) ≈ 0
/// - fused_unfused:         forward(x), forward_log_det(x) equal forward_and_log_det(x) exactly
/// - batch_point:           each column of a batch ≈ the same column evaluated alone
/// - constant_log_det:      if IsConstantLogDet, log-dets agree across samples
/// - nan_isolation:         a NaN in one column leaves every other column bit-identical and
///                          makes that column's output non-finite
/// - shape_error:           a batch with the wrong number of rows throws nflow::ShapeError
/// - parameter_count:       parameter_count() equals the total size of visited tensors
/// - forward_vjp_input, forward_vjp_params, inverse_vjp_input, inverse_vjp_params (double only,
///   where the bijector provides the vjp): reverse-mode gradients ≈ finite differences
/// - forward_vjp_recorded:  forward_recorded + forward_vjp_recorded give forward_and_log_det's
///                          value and log-det and forward_vjp's gradients (to rounding)
///
/// Finite differences use a fourth-order central stencil. Tolerances default by Scalar and can be
/// overridden in LawOptions.

#include <Eigen/LU>

#include "nflow/core/bijector_base.hpp"
#include "nflow/core/concepts.hpp"
#include "nflow/core/errors.hpp"
#include "nflow/core/parameters.hpp"
#include "nflow/core/random.hpp"
#include "nflow/core/traits.hpp"
#include "nflow/core/types.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

namespace nflow::testing {

/// Where the law inputs are drawn.
enum class Domain {
  Real,          ///< x ~ N(0, scale²) in every coordinate
  UnitInterval,  ///< x ~ U(0.05, 0.95) in every coordinate (for Logit)
};

struct LawOptions {
  Index batch = 7;              ///< samples per law batch
  std::uint64_t seed = 20261129;
  double input_scale = 1.0;     ///< standard deviation of Real-domain inputs
  Domain forward_domain = Domain::Real;
  Domain inverse_domain = Domain::Real;
  Index jacobian_samples = 3;   ///< columns whose full Jacobian is checked
  bool check_gradients = true;  ///< the vjp laws (run in double precision only)
  /// Tolerances; negative means "the default for this Scalar".
  double round_trip_tol = -1;
  double log_det_tol = -1;
  double gradient_tol = -1;     ///< relative, on the infinity norm
  double fd_step = -1;          ///< finite-difference step
};

struct LawResult {
  std::string law;
  double error = 0;
  double tolerance = 0;
  std::string detail;
  bool passed() const { return error <= tolerance; }  // false for NaN errors
};

namespace detail {

template <typename Scalar>
struct Defaults {
  static constexpr bool is_double = std::is_same_v<Scalar, double>;
  static constexpr double round_trip = is_double ? 1e-10 : 2e-4;
  static constexpr double log_det = is_double ? 1e-6 : 2e-2;
  static constexpr double gradient = 1e-6;
  static constexpr double fd_step = is_double ? 1e-3 : 1e-2;
  static constexpr double batch_point = is_double ? 1e-12 : 1e-5;
};

inline double pick(double value, double fallback) { return value < 0 ? fallback : value; }

template <typename Scalar, int Dim>
Batch<Scalar, Dim, Dynamic> draw(Index rows, Index cols, Domain domain, double scale, std::mt19937_64& gen) {
  Batch<Scalar, Dim, Dynamic> m(rows, cols);
  if (domain == Domain::Real) {
    fill_standard_normal(m, gen);
    m *= Scalar(scale);
  } else {
    for (Index i = 0; i < m.size(); ++i) m(i) = Scalar(0.05 + 0.9 * uniform_open01(gen));
  }
  return m;
}

/// Scaled error: |a − b| / (1 + |b|), maximised.
template <typename A, typename B>
double scaled_error(const A& a, const B& b) {
  const auto ad = a.template cast<double>().eval();
  const auto bd = b.template cast<double>().eval();
  if (ad.size() != bd.size()) return std::numeric_limits<double>::infinity();
  if (ad.size() == 0) return 0.0;
  return ((ad - bd).array().abs() / (1.0 + bd.array().abs())).maxCoeff();
}

/// Fourth-order central difference of a scalar function of one coordinate.
template <typename F>
double stencil(F&& f, double h) {
  return (8.0 * (f(h) - f(-h)) - (f(2 * h) - f(-2 * h))) / (12.0 * h);
}

/// log|det| of the Jacobian of `map` (a function of one column) at `x`, by finite differences.
template <typename Scalar, int Dim, typename Map>
double fd_log_abs_det(Map&& map, const Eigen::Matrix<Scalar, Dim, 1>& x, double h) {
  const Index d = x.size();
  Eigen::MatrixXd jac(d, d);
  for (Index k = 0; k < d; ++k) {
    auto f = [&](double step) {
      Eigen::Matrix<Scalar, Dim, 1> xs = x;
      xs(k) += Scalar(step);
      return map(xs).template cast<double>().eval();
    };
    jac.col(k) = (8.0 * (f(h) - f(-h)) - (f(2 * h) - f(-2 * h))) / (12.0 * h);
  }
  return std::log(std::abs(jac.fullPivLu().determinant()));
}

template <typename B, typename V, typename C>
auto call_forward(const B& b, const V& x, const C& ctx) {
  if constexpr (is_no_context_v<C>) {
    return b.forward_and_log_det(x);
  } else {
    return b.forward_and_log_det(x, ctx);
  }
}
template <typename B, typename V, typename C>
auto call_inverse(const B& b, const V& x, const C& ctx) {
  if constexpr (is_no_context_v<C>) {
    return b.inverse_and_log_det(x);
  } else {
    return b.inverse_and_log_det(x, ctx);
  }
}

/// Loss L = Σ gv ⊙ value + Σ gl ⊙ log_det for one direction, in double.
template <typename R, typename GV, typename GL>
double linear_loss(const R& r, const GV& gv, const GL& gl) {
  return (r.value.template cast<double>().array() * gv.array()).sum() +
         (r.log_det.template cast<double>().array() * gl.array()).sum();
}

template <bool inverse, typename B, typename C>
void check_direction_gradients(B& b, const Batch<typename B::Scalar, B::Dim, Dynamic>& input, const C& ctx,
                               double h, double tol, std::mt19937_64& gen,
                               std::vector<LawResult>& out) {
  using Scalar = typename B::Scalar;
  const Index d = input.rows();
  const Index n = input.cols();
  const Eigen::MatrixXd gv = standard_normal_matrix<double>(d, n, gen);
  const Eigen::RowVectorXd gl = standard_normal_matrix<double>(1, n, gen);
  auto loss_at = [&](const Batch<Scalar, B::Dim, Dynamic>& v) {
    if constexpr (inverse) {
      return linear_loss(call_inverse(b, v, ctx), gv, gl);
    } else {
      return linear_loss(call_forward(b, v, ctx), gv, gl);
    }
  };
  Vector<Scalar> gp = Vector<Scalar>::Zero(b.parameter_count());
  const Batch<Scalar, B::Dim, Dynamic> gvs = gv.template cast<Scalar>();
  const PerSample<Scalar, Dynamic> gls = gl.template cast<Scalar>();
  Batch<Scalar, B::Dim, Dynamic> gx;
  if constexpr (inverse && is_no_context_v<C>) {
    gx = b.inverse_vjp(input, gvs, gls, gp);
  } else if constexpr (inverse) {
    gx = b.inverse_vjp(input, gvs, gls, gp, ctx);
  } else if constexpr (is_no_context_v<C>) {
    gx = b.forward_vjp(input, gvs, gls, gp);
  } else {
    gx = b.forward_vjp(input, gvs, gls, gp, ctx);
  }
  if constexpr (!inverse && requires(tape_t<B>& t) { b.forward_recorded(input, t); }) {
    // The recorded path: the same value, log-det and gradients as the unrecorded calls.
    tape_t<B> tape;
    Vector<Scalar> gp_rec = Vector<Scalar>::Zero(b.parameter_count());
    Batch<Scalar, B::Dim, Dynamic> gx_rec;
    double err = 0;
    auto worst = [&](const auto& a, const auto& e) {
      if (a.size() > 0) err = std::max(err, (a.template cast<double>() - e.template cast<double>()).cwiseAbs().maxCoeff());
    };
    if constexpr (is_no_context_v<C>) {
      const auto r = b.forward_recorded(input, tape);
      gx_rec = b.forward_vjp_recorded(tape, gvs, gls, gp_rec);
      const auto f = b.forward_and_log_det(input);
      worst(r.value, f.value);
      worst(r.log_det, f.log_det);
    } else {
      const auto r = b.forward_recorded(input, tape, ctx);
      gx_rec = b.forward_vjp_recorded(tape, gvs, gls, gp_rec, ctx);
      const auto f = b.forward_and_log_det(input, ctx);
      worst(r.value, f.value);
      worst(r.log_det, f.log_det);
    }
    worst(gx_rec, gx);
    worst(gp_rec, gp);
    out.push_back({"forward_vjp_recorded", err, 1e-10, "max |recorded - unrecorded| over value, log-det, gradients"});
  }
  // Input gradient.
  Eigen::MatrixXd fd_x(d, n);
  for (Index i = 0; i < input.size(); ++i) {
    fd_x(i) = stencil(
        [&](double s) {
          Batch<Scalar, B::Dim, Dynamic> v = input;
          v(i) += Scalar(s);
          return loss_at(v);
        },
        h);
  }
  const std::string dir = inverse ? "inverse" : "forward";
  const double scale_x = std::max(1.0, fd_x.cwiseAbs().maxCoeff());
  out.push_back({dir + "_vjp_input", (gx.template cast<double>() - fd_x).cwiseAbs().maxCoeff() / scale_x, tol,
                 "max |analytic - finite difference| / max(1, |fd|)"});
  // Parameter gradient, one flat coordinate at a time.
  if (b.parameter_count() > 0) {
    Vector<Scalar> theta = get_parameters(b);
    Eigen::VectorXd fd_p(theta.size());
    for (Index i = 0; i < theta.size(); ++i) {
      fd_p(i) = stencil(
          [&](double s) {
            Vector<Scalar> t = theta;
            t(i) += Scalar(s);
            set_parameters(b, t);
            return loss_at(input);
          },
          h);
    }
    set_parameters(b, theta);
    const double scale_p = std::max(1.0, fd_p.cwiseAbs().maxCoeff());
    Index worst = 0;
    const double err = (gp.template cast<double>() - fd_p).cwiseAbs().maxCoeff(&worst) / scale_p;
    const auto names = parameter_names(b);
    out.push_back({dir + "_vjp_params", err, tol, "worst flat index " + std::to_string(worst)});
  }
}

}  // namespace detail

/// @brief Runs the bijector laws on `b` (with an optional context generator for conditional
/// bijectors: `make_context(n, gen)` returns a ContextDim × n batch). Returns one result per law.
/// `b` is taken by value: the gradient laws perturb the copy's parameters.
template <Bijector B, typename MakeContext = std::nullptr_t>
std::vector<LawResult> check_laws(B b, const LawOptions& opt = {}, MakeContext make_context = nullptr) {
  using Scalar = typename B::Scalar;
  using Defaults = detail::Defaults<Scalar>;
  using BatchT = Batch<Scalar, B::Dim, Dynamic>;
  using Point = Eigen::Matrix<Scalar, B::Dim, 1>;
  std::vector<LawResult> out;
  std::mt19937_64 gen(opt.seed);
  const Index d = b.dim();
  const Index n = opt.batch;
  const double rt_tol = detail::pick(opt.round_trip_tol, Defaults::round_trip);
  const double ld_tol = detail::pick(opt.log_det_tol, Defaults::log_det);
  const double h = detail::pick(opt.fd_step, Defaults::fd_step);

  const BatchT x = detail::draw<Scalar, B::Dim>(d, n, opt.forward_domain, opt.input_scale, gen);
  const BatchT z0 = detail::draw<Scalar, B::Dim>(d, n, opt.inverse_domain, opt.input_scale, gen);

  auto run = [&](const auto& ctx) {
    // Round trip both ways.
    const auto fx = detail::call_forward(b, x, ctx);
    const auto ifx = detail::call_inverse(b, fx.value, ctx);
    const auto iz = detail::call_inverse(b, z0, ctx);
    const auto fiz = detail::call_forward(b, iz.value, ctx);
    out.push_back({"round_trip", std::max(detail::scaled_error(ifx.value, x), detail::scaled_error(fiz.value, z0)),
                   rt_tol, "inverse(forward(x)) vs x and forward(inverse(z)) vs z"});
    out.push_back({"log_det_sum", detail::scaled_error(fx.log_det + ifx.log_det, PerSample<Scalar, Dynamic>::Zero(n)),
                   rt_tol, "forward log-det + inverse log-det at forward(x)"});

    // Log-dets against finite-difference Jacobians, per column.
    const Index m = std::min(n, opt.jacobian_samples);
    double fwd_err = 0, inv_err = 0;
    for (Index j = 0; j < m; ++j) {
      auto col_ctx = [&] {
        if constexpr (is_no_context_v<std::remove_cvref_t<decltype(ctx)>>) {
          return NoContext{};
        } else {
          return Eigen::Matrix<Scalar, Dynamic, 1>(ctx.col(j));
        }
      }();
      const Point xj = x.col(j);
      const Point zj = z0.col(j);
      auto fmap = [&](const Point& p) { return Point(detail::call_forward(b, p, col_ctx).value); };
      auto imap = [&](const Point& p) { return Point(detail::call_inverse(b, p, col_ctx).value); };
      const double fd_f = detail::fd_log_abs_det<Scalar, B::Dim>(fmap, xj, h);
      const double fd_i = detail::fd_log_abs_det<Scalar, B::Dim>(imap, zj, h);
      fwd_err = std::max(fwd_err, std::abs(fd_f - double(fx.log_det(j))) / (1.0 + std::abs(fd_f)));
      inv_err = std::max(inv_err, std::abs(fd_i - double(iz.log_det(j))) / (1.0 + std::abs(fd_i)));
      if (std::isnan(fd_f) || std::isnan(double(fx.log_det(j)))) fwd_err = std::numeric_limits<double>::quiet_NaN();
      if (std::isnan(fd_i) || std::isnan(double(iz.log_det(j)))) inv_err = std::numeric_limits<double>::quiet_NaN();

      // One column alone equals the same column of the batch.
      const auto pf = detail::call_forward(b, xj, col_ctx);
      const auto pi = detail::call_inverse(b, zj, col_ctx);
      const double bp = std::max({detail::scaled_error(pf.value, fx.value.col(j)),
                                  detail::scaled_error(pf.log_det, fx.log_det.col(j)),
                                  detail::scaled_error(pi.value, iz.value.col(j)),
                                  detail::scaled_error(pi.log_det, iz.log_det.col(j))});
      out.push_back({"batch_point", bp, Defaults::batch_point, "column " + std::to_string(j)});
    }
    out.push_back({"forward_log_det", fwd_err, ld_tol, "vs log|det| of a finite-difference Jacobian"});
    out.push_back({"inverse_log_det", inv_err, ld_tol, "vs log|det| of a finite-difference Jacobian"});

    // Fused and unfused calls agree exactly.
    double fused = 0;
    if constexpr (is_no_context_v<std::remove_cvref_t<decltype(ctx)>>) {
      fused = std::max({(b.forward(x) - fx.value).cwiseAbs().maxCoeff(), (b.forward_log_det(x) - fx.log_det).cwiseAbs().maxCoeff(),
                        (b.inverse(z0) - iz.value).cwiseAbs().maxCoeff(), (b.inverse_log_det(z0) - iz.log_det).cwiseAbs().maxCoeff()});
    } else {
      fused = std::max({(b.forward(x, ctx) - fx.value).cwiseAbs().maxCoeff(),
                        (b.forward_log_det(x, ctx) - fx.log_det).cwiseAbs().maxCoeff(),
                        (b.inverse(z0, ctx) - iz.value).cwiseAbs().maxCoeff(),
                        (b.inverse_log_det(z0, ctx) - iz.log_det).cwiseAbs().maxCoeff()});
    }
    out.push_back({"fused_unfused", double(fused), 0.0, "forward/inverse and their log-dets vs the fused calls"});

    if constexpr (is_constant_log_det_v<B>) {
      const double spread = std::max(fx.log_det.maxCoeff() - fx.log_det.minCoeff(), iz.log_det.maxCoeff() - iz.log_det.minCoeff());
      out.push_back({"constant_log_det", double(spread), Defaults::batch_point, "spread of log-dets across samples"});
    }

    // A NaN in column 0 never reaches another column.
    if (n >= 2) {
      BatchT xn = x;
      xn(0, 0) = std::numeric_limits<Scalar>::quiet_NaN();
      const auto rn = detail::call_forward(b, xn, ctx);
      const double others = std::max((rn.value.rightCols(n - 1) - fx.value.rightCols(n - 1)).cwiseAbs().maxCoeff(),
                                     (rn.log_det.rightCols(n - 1) - fx.log_det.rightCols(n - 1)).cwiseAbs().maxCoeff());
      const bool poisoned = !(rn.value.col(0).allFinite() && std::isfinite(double(rn.log_det(0))));
      out.push_back({"nan_isolation", poisoned ? double(others) : 1.0, 0.0,
                     poisoned ? "other columns changed" : "a NaN input gave a finite output"});
    }

    // Gradients, in double.
    if constexpr (std::is_same_v<Scalar, double> && Parameterized<B>) {
      if (opt.check_gradients) {
        const double g_tol = detail::pick(opt.gradient_tol, Defaults::gradient);
        if constexpr (ForwardDifferentiable<B>) {
          detail::check_direction_gradients<false>(b, x, ctx, h, g_tol, gen, out);
        }
        if constexpr (InverseDifferentiable<B>) {
          detail::check_direction_gradients<true>(b, z0, ctx, h, g_tol, gen, out);
        }
      }
    }
  };

  if constexpr (std::is_same_v<MakeContext, std::nullptr_t>) {
    run(no_context);
  } else {
    const Batch<Scalar, Dynamic, Dynamic> ctx = make_context(n, gen);
    run(ctx);
  }

  // Shape errors.
  {
    const Batch<Scalar, Dynamic, Dynamic> wrong = Batch<Scalar, Dynamic, Dynamic>::Zero(d + 1, 2);
    bool threw = false;
    try {
      if constexpr (std::is_same_v<MakeContext, std::nullptr_t>) {
        (void)b.forward_and_log_det(wrong);
      } else {
        const Batch<Scalar, Dynamic, Dynamic> ctx = make_context(2, gen);
        (void)b.forward_and_log_det(wrong, ctx);
      }
    } catch (const ShapeError&) {
      threw = true;
    }
    out.push_back({"shape_error", threw ? 0.0 : 1.0, 0.0, "a batch with Dim + 1 rows must throw nflow::ShapeError"});
  }

  if constexpr (Parameterized<B>) {
    Index visited = 0;
    b.visit_parameters([&](const std::string&, const auto& t) { visited += t.size(); });
    out.push_back({"parameter_count", double(std::abs(visited - b.parameter_count())), 0.0,
                   "parameter_count() vs the total size of visited tensors"});
  }
  return out;
}

}  // namespace nflow::testing
