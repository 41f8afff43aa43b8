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
/// - parameter_visits:      the const and the non-const visit_parameters see the same names and
///                          sizes in the same order
/// - parameter_round_trip:  set_parameters(b, get_parameters(b)) leaves forward and inverse
///                          values and log-dets bit-identical
/// - forward_vjp_input, forward_vjp_params, inverse_vjp_input, inverse_vjp_params (double only):
///   reverse-mode gradients ≈ finite differences
/// - forward_vjp_recorded:  forward_recorded + forward_vjp_recorded give forward_and_log_det's
///                          value and log-det and forward_vjp's gradients (to rounding)
///
/// A law is never skipped silently. A law that cannot run for a type (the vjp laws of a type that
/// is not ForwardDifferentiable, the parameter laws of one that is not Parameterized, nan_isolation
/// with a batch of one) is a FAILED result whose detail says why, unless the caller opted out of
/// it by name with a reason: `opt.skip("inverse_vjp_params", "why")`; an opted-out law is not run
/// and appears as a passed result whose detail records the reason. What the harness itself
/// decides (gradient laws run in double only; constant_log_det applies where IsConstantLogDet) is
/// reported as passed with a note. A skip naming no law is a failed result.
///
/// Finite differences use a fourth-order central stencil. The gradient laws also judge
/// piecewise-smooth bijectors (ReLU and other piecewise-linear conditioners) at random
/// parameters: each coordinate's stencil at step h must agree with the one at h/2; where they
/// disagree a kink lies within 2h and the step is halved until they agree (up to 8 times). A
/// coordinate sitting on a kink (no agreement at any step) is left out and counted in the
/// detail; more than a quarter of them fails the law. A wrong gradient still fails: away from
/// kinks the finite differences are as accurate as for a smooth bijector. The log-det laws use
/// the plain stencil (a coupling's or an autoregressive layer's log-det is smooth along the
/// coordinates it depends on). Tolerances default by Scalar and can be overridden in LawOptions.

#include <Eigen/LU>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "nflow/core/bijector_base.hpp"
#include "nflow/core/composite.hpp"
#include "nflow/core/concepts.hpp"
#include "nflow/core/errors.hpp"
#include "nflow/core/parameters.hpp"
#include "nflow/core/random.hpp"
#include "nflow/core/traits.hpp"
#include "nflow/core/types.hpp"

namespace nflow::testing {

/// Where the law inputs are drawn.
enum class Domain {
  Real,          ///< x ~ N(0, scale²) in every coordinate
  UnitInterval,  ///< x ~ U(0.05, 0.95) in every coordinate (for Logit)
};

/// The name of every law check_laws() reports, in the order it reports them.
inline const std::vector<std::string>& law_names() {
  static const std::vector<std::string> names = {
      "round_trip",           "log_det_sum",       "batch_point",        "forward_log_det",
      "inverse_log_det",      "fused_unfused",     "constant_log_det",   "nan_isolation",
      "forward_vjp_recorded", "forward_vjp_input", "forward_vjp_params", "inverse_vjp_input",
      "inverse_vjp_params",   "parameter_count",   "parameter_visits",   "parameter_round_trip",
      "shape_error"};
  return names;
}
/// The laws that check reverse-mode gradients (all run in double only).
inline const std::vector<std::string>& gradient_law_names() {
  static const std::vector<std::string> names = {"forward_vjp_recorded", "forward_vjp_input",
                                                 "forward_vjp_params", "inverse_vjp_input",
                                                 "inverse_vjp_params"};
  return names;
}

/// A law the caller opted out of, and why.
struct LawSkip {
  std::string law;
  std::string reason;
};

struct LawOptions {
  Index batch = 7;  ///< samples per law batch
  std::uint64_t seed = 20261129;
  double input_scale = 1.0;  ///< standard deviation of Real-domain inputs
  Domain forward_domain = Domain::Real;
  Domain inverse_domain = Domain::Real;
  Index jacobian_samples = 3;  ///< columns whose full Jacobian is checked
  /// Flat parameter coordinates whose gradient is checked by finite differences: 0 means all;
  /// n > 0 means n of them, evenly spaced over the flat vector (the first and the last
  /// included), for models with thousands of parameters where each coordinate costs a full
  /// evaluation.
  Index parameter_samples = 0;
  /// Tolerances; negative means "the default for this Scalar".
  double round_trip_tol = -1;
  double log_det_tol = -1;
  double gradient_tol = -1;  ///< relative, on the infinity norm
  double fd_step = -1;       ///< finite-difference step
  /// Laws not to run, each with the reason (reported as passed, with the reason as detail).
  std::vector<LawSkip> skipped;

  /// Opts out of `law` (a name from law_names()) for `reason`.
  LawOptions& skip(std::string law, std::string reason) {
    skipped.push_back({std::move(law), std::move(reason)});
    return *this;
  }
  /// Opts out of each of `laws` (e.g. gradient_law_names()) for `reason`.
  LawOptions& skip_all(const std::vector<std::string>& laws, const std::string& reason) {
    for (const std::string& law : laws) skip(law, reason);
    return *this;
  }
};

struct LawResult {
  std::string law;
  double error = 0;
  double tolerance = 0;
  std::string detail;
  bool passed() const { return error <= tolerance; }  // false for NaN errors
};

namespace detail {

/// Collects the results of one harness call (check_laws(), check_transformer_laws()) and applies
/// the caller's opt-outs; `names` is that harness's list of laws, `list` the function returning
/// it (named when a skip names no law).
class LawReport {
 public:
  explicit LawReport(const std::vector<LawSkip>& skipped,
                     const std::vector<std::string>& names = law_names(),
                     const char* list = "nflow::testing::law_names()")
      : skipped_(skipped), names_(names), list_(list) {}

  /// Whether the caller opted out of `law` (then it is not run).
  bool skipped(const std::string& law) const {
    return std::any_of(skipped_.begin(), skipped_.end(),
                       [&](const LawSkip& s) { return s.law == law; });
  }
  /// A law's result (dropped if the caller opted out of the law).
  void add(LawResult r) {
    if (!skipped(r.law)) out_.push_back(std::move(r));
  }
  /// The law could not run for this type: a failure that says why, unless opted out.
  void cannot_run(const std::string& law, const std::string& why) {
    add({law, 1.0, 0.0,
         "not run: " + why + " (opt out with LawOptions::skip(\"" + law + "\", reason))"});
  }
  /// The harness's own policy leaves nothing to check: passed, with the note.
  void not_applicable(const std::string& law, const std::string& note) {
    add({law, 0.0, 0.0, note});
  }

  /// The results, then one passed result per opted-out law (a skip naming no law fails).
  std::vector<LawResult> finish() {
    for (const LawSkip& s : skipped_) {
      if (std::find(names_.begin(), names_.end(), s.law) == names_.end()) {
        out_.push_back(
            {s.law, 1.0, 0.0, std::string("LawOptions::skip names no law (see ") + list_ + ")"});
      } else {
        out_.push_back({s.law, 0.0, 0.0, "skipped by the caller: " + s.reason});
      }
    }
    return std::move(out_);
  }

 private:
  const std::vector<LawSkip>& skipped_;
  const std::vector<std::string>& names_;
  const char* list_;
  std::vector<LawResult> out_;
};

/// Why B is not Parameterized (empty if it is).
template <typename B>
std::string why_not_parameterized() {
  using M = nflow::detail::ParameterMembers<B>;
  if constexpr (Parameterized<B>) {
    return "";
  } else if constexpr (!M::count) {
    return "not Parameterized because parameter_count() is missing";
  } else if constexpr (!M::const_visit) {
    return "not Parameterized because visit_parameters(f) const is missing";
  } else {
    return "not Parameterized because visit_parameters(f) is missing";
  }
}

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
Batch<Scalar, Dim, Dynamic> draw(Index rows, Index cols, Domain domain, double scale,
                                 std::mt19937_64& gen) {
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

/// The derivative at 0 of a scalar function `f` that may have kinks (a conditioner with ReLU or
/// another piecewise-linear activation): the fourth-order stencil at step h and at h/2 (which
/// reuses f(±h): six evaluations in all) must agree to `agree` × max(1, |estimate|). When they do
/// not, a kink lies within 2h of the point, and the step is halved (a kink at distance δ leaves
/// the stencils at h < δ/2 alone) up to 8 times. Returns the h/2 estimate; `smooth` says whether
/// the two agreed (false: the point sits on a kink, where no derivative exists to compare with).
inline double kink_safe_stencil(double (*call)(const void*, double), const void* f, double h,
                                double agree, bool& smooth) {
  double f2p = call(f, 2 * h), f2m = call(f, -2 * h), f1p = call(f, h), f1m = call(f, -h);
  for (int halvings = 0;; ++halvings) {
    const double fhp = call(f, h / 2), fhm = call(f, -h / 2);
    const double coarse = (8.0 * (f1p - f1m) - (f2p - f2m)) / (12.0 * h);
    const double fine = (8.0 * (fhp - fhm) - (f1p - f1m)) / (6.0 * h);
    smooth = std::abs(coarse - fine) <= agree * std::max(1.0, std::abs(fine));
    if (smooth || halvings == 8) return fine;
    f2p = f1p;
    f2m = f1m;
    f1p = fhp;
    f1m = fhm;
    h /= 2;
  }
}

/// The same for any callable double(double) (the loop above is compiled once, not per callable).
template <typename F>
double kink_safe_stencil(const F& f, double h, double agree, bool& smooth) {
  return kink_safe_stencil([](const void* p, double s) { return (*static_cast<const F*>(p))(s); },
                           &f, h, agree, smooth);
}

/// A gradient law's result: max |analytic − fd| / max(1, max |fd|) over the coordinates whose
/// finite differences avoided every kink; those that could not are left out and counted in the
/// detail, and more than a quarter of them fails the law.
inline LawResult gradient_verdict(const std::string& law, const Eigen::VectorXd& analytic,
                                  const Eigen::VectorXd& fd, const std::vector<bool>& smooth,
                                  double tol, std::string detail) {
  double scale = 1.0, err = 0.0;
  Index kinked = 0;
  for (Index k = 0; k < fd.size(); ++k) {
    if (smooth[std::size_t(k)]) {
      scale = std::max(scale, std::abs(fd(k)));
    } else {
      ++kinked;
    }
  }
  for (Index k = 0; k < fd.size(); ++k)
    if (smooth[std::size_t(k)]) err = std::max(err, std::abs(analytic(k) - fd(k)) / scale);
  if (std::isnan(analytic.sum()) || std::isnan(fd.sum()))
    err = std::numeric_limits<double>::quiet_NaN();
  if (kinked > 0) detail += "; " + std::to_string(kinked) + " coordinate(s) on a kink left out";
  if (4 * kinked > fd.size()) {
    err = std::numeric_limits<double>::infinity();
    detail += " (more than a quarter: the law cannot judge the gradient)";
  }
  return {law, err, tol, detail};
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

/// Loss L = Σ gv ⊙ value + Σ gl ⊙ log_det for one direction, in double.
template <typename R, typename GV, typename GL>
double linear_loss(const R& r, const GV& gv, const GL& gl) {
  return (r.value.template cast<double>().array() * gv.array()).sum() +
         (r.log_det.template cast<double>().array() * gl.array()).sum();
}

/// The vjp laws of one direction (and, forward, the recorded path), in double.
template <bool inverse, typename B, typename C>
void check_direction_gradients(B& b, const Batch<typename B::Scalar, B::Dim, Dynamic>& input,
                               const C& ctx, double h, double tol, std::mt19937_64& gen,
                               LawReport& rep, Index samples) {
  using Scalar = typename B::Scalar;
  const std::string dir = inverse ? "inverse" : "forward";
  constexpr bool differentiable = inverse ? InverseDifferentiable<B> : ForwardDifferentiable<B>;
  if constexpr (!differentiable) {
    const std::string why =
        std::string("not ") + (inverse ? "InverseDifferentiable" : "ForwardDifferentiable") +
        (Parameterized<B>
             ? " because " + dir + "_vjp(x, grad_value, grad_log_det, grad_params) is missing"
             : ": " + why_not_parameterized<B>());
    rep.cannot_run(dir + "_vjp_input", why);
    rep.cannot_run(dir + "_vjp_params", why);
    if constexpr (!inverse) rep.cannot_run("forward_vjp_recorded", why);
  } else {
    // Every law of this direction opted out: the vjp is not called at all (a type-erased
    // bijector, nflow::DynamicFlow, answers a missing vjp at run time by throwing).
    if (rep.skipped(dir + "_vjp_input") && rep.skipped(dir + "_vjp_params") &&
        (inverse || rep.skipped("forward_vjp_recorded")))
      return;
    const Index d = input.rows();
    const Index n = input.cols();
    const Eigen::MatrixXd gv = standard_normal_matrix<double>(d, n, gen);
    const Eigen::RowVectorXd gl = standard_normal_matrix<double>(1, n, gen);
    auto loss_at = [&](const Batch<Scalar, B::Dim, Dynamic>& v) {
      return with_context<B>(ctx, [&](const auto&... c) {
        if constexpr (inverse) {
          return linear_loss(b.inverse_and_log_det(v, c...), gv, gl);
        } else {
          return linear_loss(b.forward_and_log_det(v, c...), gv, gl);
        }
      });
    };
    Vector<Scalar> gp = Vector<Scalar>::Zero(b.parameter_count());
    const Batch<Scalar, B::Dim, Dynamic> gvs = gv.template cast<Scalar>();
    const PerSample<Scalar, Dynamic> gls = gl.template cast<Scalar>();
    const Batch<Scalar, B::Dim, Dynamic> gx = with_context<B>(ctx, [&](const auto&... c) {
      if constexpr (inverse) {
        return Batch<Scalar, B::Dim, Dynamic>(b.inverse_vjp(input, gvs, gls, gp, c...));
      } else {
        return Batch<Scalar, B::Dim, Dynamic>(b.forward_vjp(input, gvs, gls, gp, c...));
      }
    });
    if constexpr (!inverse) {
      if constexpr (!requires(tape_t<B> & t) { b.forward_recorded(input, t); }) {
        rep.cannot_run("forward_vjp_recorded",
                       "forward_recorded(x, tape) is missing (derive from nflow::BijectorBase)");
      } else if (!rep.skipped("forward_vjp_recorded")) {
        // The recorded path: the same value, log-det and gradients as the unrecorded calls.
        tape_t<B> tape;
        Vector<Scalar> gp_rec = Vector<Scalar>::Zero(b.parameter_count());
        double err = 0;
        auto worst = [&](const auto& a, const auto& e) {
          if (a.size() > 0)
            err = std::max(
                err, (a.template cast<double>() - e.template cast<double>()).cwiseAbs().maxCoeff());
        };
        with_context<B>(ctx, [&](const auto&... c) {
          const auto r = b.forward_recorded(input, tape, c...);
          const Batch<Scalar, B::Dim, Dynamic> gx_rec =
              b.forward_vjp_recorded(tape, gvs, gls, gp_rec, c...);
          const auto f = b.forward_and_log_det(input, c...);
          worst(r.value, f.value);
          worst(r.log_det, f.log_det);
          worst(gx_rec, gx);
        });
        worst(gp_rec, gp);
        rep.add({"forward_vjp_recorded", err, 1e-10,
                 "max |recorded - unrecorded| over value, log-det, gradients"});
      }
    }
    // Input gradient.
    if (!rep.skipped(dir + "_vjp_input")) {
      Eigen::VectorXd fd_x(input.size());
      std::vector<bool> smooth(static_cast<std::size_t>(input.size()));
      for (Index i = 0; i < input.size(); ++i) {
        bool ok = true;
        fd_x(i) = kink_safe_stencil(
            [&](double s) {
              Batch<Scalar, B::Dim, Dynamic> v = input;
              v(i) += Scalar(s);
              return loss_at(v);
            },
            h, tol / 10, ok);
        smooth[std::size_t(i)] = ok;
      }
      const Eigen::MatrixXd gxd = gx.template cast<double>();
      rep.add(gradient_verdict(dir + "_vjp_input", gxd.reshaped(), fd_x, smooth, tol,
                               "max |analytic - finite difference| / max(1, |fd|)"));
    }
    // Parameter gradient, one flat coordinate at a time.
    if (rep.skipped(dir + "_vjp_params")) return;
    if (b.parameter_count() == 0) {
      rep.not_applicable(dir + "_vjp_params", "no parameters (parameter_count() is 0)");
      return;
    }
    Vector<Scalar> theta = get_parameters(b);
    const Index total = theta.size();
    const Index count = samples > 0 && samples < total ? samples : total;
    std::vector<Index> which(static_cast<std::size_t>(count));
    for (Index k = 0; k < count; ++k)
      which[std::size_t(k)] = count == total || count == 1 ? k : k * (total - 1) / (count - 1);
    Eigen::VectorXd fd_p(count), an_p(count);
    std::vector<bool> smooth(static_cast<std::size_t>(count));
    for (Index k = 0; k < count; ++k) {
      const Index i = which[std::size_t(k)];
      an_p(k) = double(gp(i));
      bool ok = true;
      fd_p(k) = kink_safe_stencil(
          [&](double s) {
            Vector<Scalar> t = theta;
            t(i) += Scalar(s);
            set_parameters(b, t);
            return loss_at(input);
          },
          h, tol / 10, ok);
      smooth[std::size_t(k)] = ok;
    }
    set_parameters(b, theta);
    Index worst = 0;
    (an_p - fd_p).cwiseAbs().maxCoeff(&worst);
    rep.add(gradient_verdict(
        dir + "_vjp_params", an_p, fd_p, smooth, tol,
        "largest |analytic - fd| at flat index " + std::to_string(which[std::size_t(worst)]) +
            " (" + std::to_string(count) + " of " + std::to_string(total) + " checked)"));
  }
}

/// The parameter laws: parameter_count, parameter_visits, parameter_round_trip.
template <typename B, typename C>
void check_parameters(const B& b, const Batch<typename B::Scalar, B::Dim, Dynamic>& x,
                      const Batch<typename B::Scalar, B::Dim, Dynamic>& z, const C& ctx,
                      LawReport& rep) {
  if constexpr (!Parameterized<B>) {
    for (const char* law : {"parameter_count", "parameter_visits", "parameter_round_trip"}) {
      rep.cannot_run(law, why_not_parameterized<B>());
    }
  } else {
    // Names and sizes as the const and the non-const visit see them.
    std::vector<std::pair<std::string, Index>> seen_const, seen;
    b.visit_parameters(
        [&](const std::string& name, const auto& t) { seen_const.emplace_back(name, t.size()); });
    B copy = b;
    copy.visit_parameters(
        [&](const std::string& name, const auto& t) { seen.emplace_back(name, t.size()); });
    Index visited = 0;
    for (const auto& entry : seen_const) visited += entry.second;
    rep.add({"parameter_count", double(std::abs(visited - b.parameter_count())), 0.0,
             "parameter_count() vs the total size of visited tensors"});
    std::string first_difference = "the same names and sizes in the same order";
    for (std::size_t i = 0; i < std::max(seen.size(), seen_const.size()); ++i) {
      if (i >= seen.size() || i >= seen_const.size() || seen[i] != seen_const[i]) {
        first_difference = "tensor " + std::to_string(i) + ": const visit sees '" +
                           (i < seen_const.size() ? seen_const[i].first : std::string("(none)")) +
                           "', non-const visit sees '" +
                           (i < seen.size() ? seen[i].first : std::string("(none)")) + "'";
        break;
      }
    }
    rep.add({"parameter_visits", seen == seen_const ? 0.0 : 1.0, 0.0, first_difference});
    // set_parameters(get_parameters()) changes nothing, bit for bit.
    set_parameters(copy, get_parameters(b));
    double diff = 0;
    auto compare = [&](const auto& a, const auto& e) {
      if (a.size() != e.size()) {
        diff = std::numeric_limits<double>::infinity();
      } else {
        for (Index i = 0; i < a.size(); ++i) {
          const double u = double(a(i)), v = double(e(i));
          if (!(u == v || (std::isnan(u) && std::isnan(v))))
            diff = std::max(diff, std::isnan(u - v) ? 1.0 : std::abs(u - v));
        }
      }
    };
    with_context<B>(ctx, [&](const auto&... c) {
      const auto f0 = b.forward_and_log_det(x, c...), f1 = copy.forward_and_log_det(x, c...);
      const auto i0 = b.inverse_and_log_det(z, c...), i1 = copy.inverse_and_log_det(z, c...);
      compare(f1.value, f0.value);
      compare(f1.log_det, f0.log_det);
      compare(i1.value, i0.value);
      compare(i1.log_det, i0.log_det);
    });
    rep.add({"parameter_round_trip", diff, 0.0,
             "set_parameters(b, get_parameters(b)) vs b: forward and inverse values and log-dets, "
             "bit for bit"});
  }
}

}  // namespace detail

/// @brief Runs the bijector laws on `b` (with a context generator for conditional bijectors:
/// `make_context(n, gen)` returns a ContextDim × n batch). Returns one result per law (batch_point
/// one per checked column), then one passed result per law opted out of in `opt.skipped`.
/// `b` is taken by value: the gradient laws perturb the copy's parameters.
template <Bijector B, typename MakeContext = std::nullptr_t>
std::vector<LawResult> check_laws(B b, const LawOptions& opt = {},
                                  MakeContext make_context = nullptr) {
  using Scalar = typename B::Scalar;
  using Defaults = detail::Defaults<Scalar>;
  using BatchT = Batch<Scalar, B::Dim, Dynamic>;
  using Point = Eigen::Matrix<Scalar, B::Dim, 1>;
  constexpr bool has_context = !std::is_same_v<MakeContext, std::nullptr_t>;
  static_assert(
      !has_context || is_conditional_v<B>,
      "nflow::testing::check_laws: a make_context(n, gen) was given, but the bijector is not "
      "conditional (its ContextDim is 0)");
  detail::LawReport rep(opt.skipped);
  std::mt19937_64 gen(opt.seed);
  const Index d = b.dim();
  const Index n = opt.batch;
  const double rt_tol = detail::pick(opt.round_trip_tol, Defaults::round_trip);
  const double ld_tol = detail::pick(opt.log_det_tol, Defaults::log_det);
  const double h = detail::pick(opt.fd_step, Defaults::fd_step);

  const BatchT x = detail::draw<Scalar, B::Dim>(d, n, opt.forward_domain, opt.input_scale, gen);
  const BatchT z0 = detail::draw<Scalar, B::Dim>(d, n, opt.inverse_domain, opt.input_scale, gen);

  auto run = [&](const auto& ctx) {
    auto forward = [&](const auto& v, const auto& context) {
      return with_context<B>(context,
                             [&](const auto&... c) { return b.forward_and_log_det(v, c...); });
    };
    auto inverse = [&](const auto& v, const auto& context) {
      return with_context<B>(context,
                             [&](const auto&... c) { return b.inverse_and_log_det(v, c...); });
    };
    // Round trip both ways.
    const auto fx = forward(x, ctx);
    const auto ifx = inverse(fx.value, ctx);
    const auto iz = inverse(z0, ctx);
    const auto fiz = forward(iz.value, ctx);
    rep.add({"round_trip",
             std::max(detail::scaled_error(ifx.value, x), detail::scaled_error(fiz.value, z0)),
             rt_tol, "inverse(forward(x)) vs x and forward(inverse(z)) vs z"});
    rep.add({"log_det_sum",
             detail::scaled_error(fx.log_det + ifx.log_det, PerSample<Scalar, Dynamic>::Zero(n)),
             rt_tol, "forward log-det + inverse log-det at forward(x)"});

    // Log-dets against finite-difference Jacobians, per column.
    const Index m = std::min(n, opt.jacobian_samples);
    if (m == 0) {
      for (const char* law : {"batch_point", "forward_log_det", "inverse_log_det"}) {
        rep.cannot_run(law, "LawOptions::jacobian_samples (or batch) is 0");
      }
    }
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
      auto fmap = [&](const Point& p) { return Point(forward(p, col_ctx).value); };
      auto imap = [&](const Point& p) { return Point(inverse(p, col_ctx).value); };
      if (!rep.skipped("forward_log_det") || !rep.skipped("inverse_log_det")) {
        const double fd_f = detail::fd_log_abs_det<Scalar, B::Dim>(fmap, xj, h);
        const double fd_i = detail::fd_log_abs_det<Scalar, B::Dim>(imap, zj, h);
        fwd_err =
            std::max(fwd_err, std::abs(fd_f - double(fx.log_det(j))) / (1.0 + std::abs(fd_f)));
        inv_err =
            std::max(inv_err, std::abs(fd_i - double(iz.log_det(j))) / (1.0 + std::abs(fd_i)));
        if (std::isnan(fd_f) || std::isnan(double(fx.log_det(j))))
          fwd_err = std::numeric_limits<double>::quiet_NaN();
        if (std::isnan(fd_i) || std::isnan(double(iz.log_det(j))))
          inv_err = std::numeric_limits<double>::quiet_NaN();
      }

      // One column alone equals the same column of the batch.
      const auto pf = forward(xj, col_ctx);
      const auto pi = inverse(zj, col_ctx);
      const double bp = std::max({detail::scaled_error(pf.value, fx.value.col(j)),
                                  detail::scaled_error(pf.log_det, fx.log_det.col(j)),
                                  detail::scaled_error(pi.value, iz.value.col(j)),
                                  detail::scaled_error(pi.log_det, iz.log_det.col(j))});
      rep.add({"batch_point", bp, Defaults::batch_point, "column " + std::to_string(j)});
    }
    if (m > 0) {
      rep.add({"forward_log_det", fwd_err, ld_tol, "vs log|det| of a finite-difference Jacobian"});
      rep.add({"inverse_log_det", inv_err, ld_tol, "vs log|det| of a finite-difference Jacobian"});
    }

    // Fused and unfused calls agree exactly.
    const double fused = with_context<B>(ctx, [&](const auto&... c) {
      return double(std::max({(b.forward(x, c...) - fx.value).cwiseAbs().maxCoeff(),
                              (b.forward_log_det(x, c...) - fx.log_det).cwiseAbs().maxCoeff(),
                              (b.inverse(z0, c...) - iz.value).cwiseAbs().maxCoeff(),
                              (b.inverse_log_det(z0, c...) - iz.log_det).cwiseAbs().maxCoeff()}));
    });
    rep.add({"fused_unfused", fused, 0.0, "forward/inverse and their log-dets vs the fused calls"});

    if constexpr (is_constant_log_det_v<B>) {
      const double spread = std::max(fx.log_det.maxCoeff() - fx.log_det.minCoeff(),
                                     iz.log_det.maxCoeff() - iz.log_det.minCoeff());
      rep.add({"constant_log_det", double(spread), Defaults::batch_point,
               "spread of log-dets across samples"});
    } else {
      rep.not_applicable("constant_log_det", "IsConstantLogDet is false: nothing to check");
    }

    // A NaN in column 0 never reaches another column.
    if (n >= 2) {
      BatchT xn = x;
      xn(0, 0) = std::numeric_limits<Scalar>::quiet_NaN();
      const auto rn = forward(xn, ctx);
      const double others = std::max(
          (rn.value.rightCols(n - 1) - fx.value.rightCols(n - 1)).cwiseAbs().maxCoeff(),
          (rn.log_det.rightCols(n - 1) - fx.log_det.rightCols(n - 1)).cwiseAbs().maxCoeff());
      const bool poisoned = !(rn.value.col(0).allFinite() && std::isfinite(double(rn.log_det(0))));
      rep.add({"nan_isolation", poisoned ? double(others) : 1.0, 0.0,
               poisoned ? "other columns changed" : "a NaN input gave a finite output"});
    } else {
      rep.cannot_run("nan_isolation", "needs LawOptions::batch >= 2");
    }

    // Gradients, in double.
    if constexpr (std::is_same_v<Scalar, double>) {
      const double g_tol = detail::pick(opt.gradient_tol, Defaults::gradient);
      detail::check_direction_gradients<false>(b, x, ctx, h, g_tol, gen, rep,
                                               opt.parameter_samples);
      detail::check_direction_gradients<true>(b, z0, ctx, h, g_tol, gen, rep,
                                              opt.parameter_samples);
    } else {
      for (const std::string& law : gradient_law_names()) {
        rep.not_applicable(
            law,
            "the gradient laws run in double only (finite differences in float are too coarse)");
      }
    }
    detail::check_parameters(b, x, z0, ctx, rep);
  };

  if constexpr (has_context) {
    const Batch<Scalar, Dynamic, Dynamic> ctx = make_context(n, gen);
    run(ctx);
  } else {
    run(no_context);
  }

  // Shape errors.
  {
    const Batch<Scalar, Dynamic, Dynamic> wrong = Batch<Scalar, Dynamic, Dynamic>::Zero(d + 1, 2);
    bool threw = false;
    try {
      if constexpr (has_context) {
        const Batch<Scalar, Dynamic, Dynamic> ctx = make_context(2, gen);
        (void)b.forward_and_log_det(wrong, ctx);
      } else {
        (void)b.forward_and_log_det(wrong);
      }
    } catch (const ShapeError&) {
      threw = true;
    }
    rep.add({"shape_error", threw ? 0.0 : 1.0, 0.0,
             "a batch with Dim + 1 rows must throw nflow::ShapeError"});
  }
  return rep.finish();
}

}  // namespace nflow::testing
