#pragma once
/// @file
/// @brief Explicit Runge–Kutta solvers for batches of ODEs: fixed-step RK4 and Euler and adaptive
/// Dormand–Prince 5(4), with a record of the steps taken and back-propagation through them.
///
/// The state is a matrix Y (rows × N), one sample per column; continuous flows use rows = Dim + 1
/// (the sample and its accumulated log-det). The right-hand side is a callable
/// `rhs(t, Y, dY)` that writes dY/dt = F(t, Y) into `dY` (already shaped like Y). Time may run
/// backwards (t1 < t0): the step h is then negative.
///
/// Columns are independent in F, but an adaptive solver shares one step size across the batch:
/// the error norm is taken over every finite column, so a column's result depends on its
/// neighbours to within the tolerance (never beyond it). Columns that are not finite at t0 are
/// left out of the error norm and simply carried along (their outputs are NaN or Inf); a column
/// that was finite at t0 and stops being finite is an error (nflow::ode::OdeError).
///
/// Back-propagation ("discretise-then-optimise"): `rk_backprop` runs reverse mode through the
/// recorded steps of either solver, giving the exact gradient of the computed value (for the
/// adaptive solver, with the accepted step sizes held fixed).
///
/// References: Hairer, Nørsett, Wanner, Solving ODEs I (2nd ed., 1993), §II.4 (error norm,
/// starting step) and §II.5 (Dormand–Prince 5(4)); Dormand & Prince 1980.

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "nflow/core/errors.hpp"
#include "nflow/core/types.hpp"

namespace nflow::ode {

/// @brief Thrown when an ODE solve fails: too many steps, a step size that underflows, or a state
/// that becomes non-finite in a column that started finite.
class OdeError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// @brief Work done by one solve (or one backward pass), readable by the caller.
struct SolveStats {
  Index function_evaluations = 0;  ///< calls of the right-hand side (or of its vjp, backwards)
  Index accepted_steps = 0;
  Index rejected_steps = 0;  ///< adaptive solver only
};

/// @brief Settings of the adaptive Dormand–Prince 5(4) solver.
struct Dopri5Options {
  double rtol = 1e-5;         ///< relative tolerance
  double atol = 1e-5;         ///< absolute tolerance
  Index max_steps = 10000;    ///< attempted steps (accepted + rejected) before OdeError
  double safety = 0.9;        ///< factor on the optimal step
  double min_factor = 0.2;    ///< smallest step-size change per step
  double max_factor = 10.0;   ///< largest step-size change per step
  double initial_step = 0.0;  ///< |h| of the first step; 0 chooses it (Hairer's starting step)
};

/// @brief An explicit Butcher tableau: stage i evaluates F at t + c_i h and
/// Y_i = y + h Σ_{j<i} a_ij k_j; the step is y + h Σ b_i k_i.
template <typename Scalar>
struct ButcherTableau {
  int stages = 0;
  Eigen::Matrix<Scalar, Dynamic, Dynamic> a;
  Eigen::Matrix<Scalar, Dynamic, 1> b;
  Eigen::Matrix<Scalar, Dynamic, 1> c;
};

/// The classical fourth-order Runge–Kutta method.
template <typename Scalar>
ButcherTableau<Scalar> rk4_tableau() {
  ButcherTableau<Scalar> t;
  t.stages = 4;
  t.a = Eigen::Matrix<Scalar, Dynamic, Dynamic>::Zero(4, 4);
  t.a(1, 0) = Scalar(0.5);
  t.a(2, 1) = Scalar(0.5);
  t.a(3, 2) = Scalar(1);
  t.b.resize(4);
  t.b << Scalar(1) / 6, Scalar(1) / 3, Scalar(1) / 3, Scalar(1) / 6;
  t.c.resize(4);
  t.c << Scalar(0), Scalar(0.5), Scalar(0.5), Scalar(1);
  return t;
}

/// The explicit (forward) Euler method: one stage, y ← y + h F(t, y). First order; with few
/// steps it is the sampler of rectified flows (a field whose paths are straight lines at
/// constant speed is integrated exactly by one step).
template <typename Scalar>
ButcherTableau<Scalar> euler_tableau() {
  ButcherTableau<Scalar> t;
  t.stages = 1;
  t.a = Eigen::Matrix<Scalar, Dynamic, Dynamic>::Zero(1, 1);
  t.b = Eigen::Matrix<Scalar, Dynamic, 1>::Ones(1);
  t.c = Eigen::Matrix<Scalar, Dynamic, 1>::Zero(1);
  return t;
}

/// Dormand–Prince 5(4): the six stages that make the fifth-order step (the seventh, FSAL stage
/// only enters the error estimate; see dopri5_error_weights()).
template <typename Scalar>
ButcherTableau<Scalar> dopri5_tableau() {
  ButcherTableau<Scalar> t;
  t.stages = 6;
  t.a = Eigen::Matrix<Scalar, Dynamic, Dynamic>::Zero(6, 6);
  t.a(1, 0) = Scalar(1.0 / 5);
  t.a(2, 0) = Scalar(3.0 / 40), t.a(2, 1) = Scalar(9.0 / 40);
  t.a(3, 0) = Scalar(44.0 / 45), t.a(3, 1) = Scalar(-56.0 / 15), t.a(3, 2) = Scalar(32.0 / 9);
  t.a(4, 0) = Scalar(19372.0 / 6561), t.a(4, 1) = Scalar(-25360.0 / 2187),
         t.a(4, 2) = Scalar(64448.0 / 6561), t.a(4, 3) = Scalar(-212.0 / 729);
  t.a(5, 0) = Scalar(9017.0 / 3168), t.a(5, 1) = Scalar(-355.0 / 33),
         t.a(5, 2) = Scalar(46732.0 / 5247), t.a(5, 3) = Scalar(49.0 / 176),
         t.a(5, 4) = Scalar(-5103.0 / 18656);
  t.b.resize(6);
  t.b << Scalar(35.0 / 384), Scalar(0), Scalar(500.0 / 1113), Scalar(125.0 / 192),
      Scalar(-2187.0 / 6784), Scalar(11.0 / 84);
  t.c.resize(6);
  t.c << Scalar(0), Scalar(1.0 / 5), Scalar(3.0 / 10), Scalar(4.0 / 5), Scalar(8.0 / 9), Scalar(1);
  return t;
}

/// Weights e of the embedded error estimate h Σ e_i k_i (7 stages, the last the FSAL one).
template <typename Scalar>
Eigen::Matrix<Scalar, 7, 1> dopri5_error_weights() {
  Eigen::Matrix<Scalar, 7, 1> e;
  e << Scalar(71.0 / 57600), Scalar(0), Scalar(-71.0 / 16695), Scalar(71.0 / 1920),
      Scalar(-17253.0 / 339200), Scalar(22.0 / 525), Scalar(-1.0 / 40);
  return e;
}

/// @brief The steps a solve took, for back-propagation: before step n the time was `t[n]`, the
/// step `h[n]` and the state `y[n]`.
template <typename Scalar>
struct StepRecord {
  std::vector<Scalar> t;
  std::vector<Scalar> h;
  std::vector<Eigen::Matrix<Scalar, Dynamic, Dynamic>> y;
  void clear() {
    t.clear();
    h.clear();
    y.clear();
  }
};

namespace detail {

template <typename Scalar>
using Mat = Eigen::Matrix<Scalar, Dynamic, Dynamic>;

/// Which columns of y are finite (1) or not (0).
template <typename Scalar>
Eigen::Array<bool, 1, Dynamic> finite_columns(const Mat<Scalar>& y) {
  Eigen::Array<bool, 1, Dynamic> m(y.cols());
  for (Index j = 0; j < y.cols(); ++j) m(j) = y.col(j).allFinite();
  return m;
}

/// Throws OdeError if a column flagged in `active` holds a non-finite value.
template <typename Scalar>
void check_active_finite(const char* where, const Mat<Scalar>& y,
                         const Eigen::Array<bool, 1, Dynamic>& active, double t) {
  for (Index j = 0; j < y.cols(); ++j) {
    if (active(j) && !y.col(j).allFinite()) {
      throw OdeError(
          std::string("nflow::ode::") + where + ": the state of sample " + std::to_string(j) +
          " became non-finite by t = " + std::to_string(t) +
          " (the vector field blows up; lower the learning rate or the integration time)");
    }
  }
}

/// Stages i ≥ first of one explicit RK step: k[i] = F(t + c_i h, y + h Σ_{j<i} a_ij k[j]).
template <typename Scalar, typename Rhs>
void rk_stages(const ButcherTableau<Scalar>& tab, Rhs& rhs, Scalar t, Scalar h,
               const Mat<Scalar>& y, std::vector<Mat<Scalar>>& k, Mat<Scalar>& stage, int first) {
  for (int i = first; i < tab.stages; ++i) {
    stage = y;
    for (int j = 0; j < i; ++j) {
      if (tab.a(i, j) != Scalar(0)) stage += (h * tab.a(i, j)) * k[std::size_t(j)];
    }
    k[std::size_t(i)].resize(y.rows(), y.cols());
    rhs(t + tab.c(i) * h, stage, k[std::size_t(i)]);
  }
}

}  // namespace detail

namespace detail {

/// `steps` equal steps of an explicit Runge–Kutta method from t0 to t1, in place (RK4, Euler).
template <typename Scalar, typename Rhs>
SolveStats fixed_step_integrate(const char* where, const ButcherTableau<Scalar>& tab, Rhs& rhs,
                                Scalar t0, Scalar t1, Mat<Scalar>& y, Index steps,
                                StepRecord<Scalar>* record) {
  if (steps < 1)
    throw ParameterError(std::string("nflow::ode::") + where +
                         ": parameter 'steps' must be >= 1, got " + std::to_string(steps));
  const auto active = finite_columns<Scalar>(y);
  std::vector<Mat<Scalar>> k(std::size_t(tab.stages));
  Mat<Scalar> stage;
  const Scalar h = (t1 - t0) / Scalar(steps);
  SolveStats stats;
  if (record != nullptr) record->clear();
  for (Index n = 0; n < steps; ++n) {
    const Scalar t = t0 + Scalar(n) * h;
    if (record != nullptr) {
      record->t.push_back(t);
      record->h.push_back(h);
      record->y.push_back(y);
    }
    rk_stages(tab, rhs, t, h, y, k, stage, 0);
    for (int i = 0; i < tab.stages; ++i) y += (h * tab.b(i)) * k[std::size_t(i)];
    stats.function_evaluations += tab.stages;
    ++stats.accepted_steps;
  }
  check_active_finite<Scalar>(where, y, active, double(t1));
  return stats;
}

}  // namespace detail

/// @brief Integrates dY/dt = rhs(t, Y) from t0 to t1 in `steps` equal RK4 steps, in place.
///
/// Costs 4·steps evaluations. If `record` is given, the steps are stored in it for rk_backprop.
/// @throws nflow::ParameterError if steps < 1; nflow::ode::OdeError if a column that was finite
///   at t0 ends non-finite.
template <typename Scalar, typename Rhs>
SolveStats rk4_integrate(Rhs&& rhs, Scalar t0, Scalar t1,
                         Eigen::Matrix<Scalar, Dynamic, Dynamic>& y, Index steps,
                         StepRecord<Scalar>* record = nullptr) {
  static const ButcherTableau<Scalar> tab = rk4_tableau<Scalar>();
  return detail::fixed_step_integrate("rk4_integrate", tab, rhs, t0, t1, y, steps, record);
}

/// @brief Integrates dY/dt = rhs(t, Y) from t0 to t1 in `steps` equal explicit Euler steps,
/// Y ← Y + h·rhs(t, Y) with h = (t1 − t0)/steps, in place.
///
/// Costs `steps` evaluations; first order (error O(h)), exact when rhs is constant along each
/// step (straight paths at constant speed). If `record` is given, the steps are stored in it for
/// rk_backprop (with euler_tableau()).
/// @throws nflow::ParameterError if steps < 1; nflow::ode::OdeError if a column that was finite
///   at t0 ends non-finite.
template <typename Scalar, typename Rhs>
SolveStats euler_integrate(Rhs&& rhs, Scalar t0, Scalar t1,
                           Eigen::Matrix<Scalar, Dynamic, Dynamic>& y, Index steps,
                           StepRecord<Scalar>* record = nullptr) {
  static const ButcherTableau<Scalar> tab = euler_tableau<Scalar>();
  return detail::fixed_step_integrate("euler_integrate", tab, rhs, t0, t1, y, steps, record);
}

/// @brief Integrates dY/dt = rhs(t, Y) from t0 to t1 with the adaptive Dormand–Prince 5(4)
/// method (fifth-order step, FSAL), in place.
///
/// Error control as in Hairer's DOPRI5: with sc = atol + rtol·max(|y_old|, |y_new|) per entry,
/// err = √(mean((Δ/sc)²)) over every entry of every finite column (the log-det row included);
/// a step is accepted when err ≤ 1, and the next step is h·clamp(safety·err^(−1/5), min_factor,
/// max_factor) (no growth right after a rejection). A non-finite error rejects the step.
/// If `record` is given, the accepted steps are stored in it for rk_backprop.
/// @throws nflow::ode::OdeError after max_steps attempted steps, or when |h| falls below the
///   resolution of t (a state that becomes non-finite ends this way), naming the time reached.
template <typename Scalar, typename Rhs>
SolveStats dopri5_integrate(Rhs&& rhs, Scalar t0, Scalar t1,
                            Eigen::Matrix<Scalar, Dynamic, Dynamic>& y,
                            const Dopri5Options& opt = {}, StepRecord<Scalar>* record = nullptr) {
  using detail::Mat;
  if (!(opt.rtol >= 0) || !(opt.atol >= 0) || !(opt.rtol + opt.atol > 0) || opt.max_steps < 1 ||
      !(opt.safety > 0 && opt.safety <= 1) || !(opt.min_factor > 0 && opt.min_factor <= 1) ||
      !(opt.max_factor >= 1) || !(opt.initial_step >= 0)) {
    throw ParameterError(
        "nflow::ode::dopri5_integrate: options must satisfy rtol, atol >= 0 (not both 0), "
        "max_steps >= 1, "
        "0 < safety <= 1, 0 < min_factor <= 1, max_factor >= 1, initial_step >= 0");
  }
  static const ButcherTableau<Scalar> tab = dopri5_tableau<Scalar>();
  static const Eigen::Matrix<Scalar, 7, 1> e = dopri5_error_weights<Scalar>();
  SolveStats stats;
  if (record != nullptr) record->clear();
  if (t1 == t0) return stats;
  const auto active = detail::finite_columns<Scalar>(y);
  const Index n_active = active.count();
  const double dir = t1 > t0 ? 1.0 : -1.0;
  const double span = std::abs(double(t1) - double(t0));

  // Hairer's RMS norm of v scaled by sc = atol + rtol·max(|a|, |b|), over the active columns.
  auto norm = [&](const Mat<Scalar>& v, const Mat<Scalar>& a, const Mat<Scalar>& b) {
    double sum = 0;
    for (Index j = 0; j < v.cols(); ++j) {
      if (!active(j)) continue;
      for (Index i = 0; i < v.rows(); ++i) {
        const double sc =
            opt.atol + opt.rtol * std::max(std::abs(double(a(i, j))), std::abs(double(b(i, j))));
        const double r = double(v(i, j)) / sc;
        sum += r * r;
      }
    }
    const double count = double(n_active * v.rows());
    return count > 0 ? std::sqrt(sum / count) : 0.0;
  };

  std::vector<Mat<Scalar>> k(7);
  Mat<Scalar> stage;
  Mat<Scalar> y_new;
  Mat<Scalar> err_vec;
  k[0].resize(y.rows(), y.cols());
  rhs(t0, y, k[0]);
  ++stats.function_evaluations;

  double h = opt.initial_step;
  if (n_active == 0) {
    h = span;  // nothing to control: one step carries the non-finite columns along
  } else if (h == 0) {
    // Starting step (Hairer, Nørsett, Wanner §II.4).
    const double d0 = norm(y, y, y);
    const double d1 = norm(k[0], y, y);
    double h0 = (d0 < 1e-5 || d1 < 1e-5) ? 1e-6 : 0.01 * d0 / d1;
    h0 = std::min(h0, span);
    stage = y + Scalar(dir * h0) * k[0];
    Mat<Scalar> f1(y.rows(), y.cols());
    rhs(Scalar(double(t0) + dir * h0), stage, f1);
    ++stats.function_evaluations;
    const double d2 = norm(Mat<Scalar>(f1 - k[0]), y, y) / h0;
    const double dm = std::max(d1, d2);
    const double h1 = dm <= 1e-15 ? std::max(1e-6, h0 * 1e-3) : std::pow(0.01 / dm, 1.0 / 5.0);
    h = std::min(100 * h0, h1);
    if (!std::isfinite(h) || h <= 0) h = 1e-6;
  }
  h = std::min(h, span);

  double t = double(t0);
  bool last_rejected = false;
  Index attempts = 0;
  while (dir * (double(t1) - t) > 0) {
    if (attempts++ >= opt.max_steps) {
      throw OdeError(
          "nflow::ode::dopri5_integrate: more than max_steps = " + std::to_string(opt.max_steps) +
          " steps without reaching t1 = " + std::to_string(double(t1)) +
          " (reached t = " + std::to_string(t) + "); loosen rtol/atol or raise max_steps");
    }
    const double remaining = std::abs(double(t1) - t);
    if (h >= remaining * (1 - 1e-12)) h = remaining;
    const Scalar hs = Scalar(dir * h);
    const Scalar ts = Scalar(t);
    detail::rk_stages(tab, rhs, ts, hs, y, k, stage, 1);
    y_new = y;
    for (int i = 0; i < 6; ++i) {
      if (tab.b(i) != Scalar(0)) y_new += (hs * tab.b(i)) * k[std::size_t(i)];
    }
    const double t_new = (h == remaining) ? double(t1) : t + dir * h;
    k[6].resize(y.rows(), y.cols());
    rhs(Scalar(t_new), y_new, k[6]);
    stats.function_evaluations += 6;
    err_vec = (hs * e(0)) * k[0];
    for (int i = 2; i < 7; ++i) err_vec += (hs * e(i)) * k[std::size_t(i)];
    const double err = n_active == 0 ? 0.0 : norm(err_vec, y, y_new);
    if (std::isfinite(err) && err <= 1.0) {
      if (record != nullptr) {
        record->t.push_back(ts);
        record->h.push_back(hs);
        record->y.push_back(y);
      }
      y.swap(y_new);
      k[0].swap(k[6]);  // FSAL
      t = t_new;
      ++stats.accepted_steps;
      double factor = err == 0 ? opt.max_factor : opt.safety * std::pow(err, -0.2);
      factor = std::clamp(factor, opt.min_factor, last_rejected ? 1.0 : opt.max_factor);
      h *= factor;
      last_rejected = false;
    } else {
      ++stats.rejected_steps;
      const double factor = std::isfinite(err)
                                ? std::clamp(opt.safety * std::pow(err, -0.2), opt.min_factor, 1.0)
                                : opt.min_factor;
      h *= factor;
      last_rejected = true;
    }
    const double resolution =
        16 * std::numeric_limits<Scalar>::epsilon() * std::max(1.0, std::abs(t));
    if (h < resolution) {
      throw OdeError(
          "nflow::ode::dopri5_integrate: the step size underflowed at t = " + std::to_string(t) +
          " (the state became non-finite or the problem is too stiff for the tolerances)");
    }
  }
  detail::check_active_finite<Scalar>("dopri5_integrate", y, active, double(t1));
  return stats;
}

/// @brief Reverse mode through the steps of a recorded solve (discretise-then-optimise).
///
/// On entry `adjoint` holds ∂L/∂Y at the end of the solve; on exit ∂L/∂Y at its start.
/// `stage_rhs(t, Y, K)` re-evaluates the dynamics at a stage (it may fill rows that no later
/// stage reads, such as the log-det row, with anything: they only enter through the adjoint);
/// `stage_vjp(t, Y, Kbar, Ybar)` writes Ybar = Kbarᵀ·∂F/∂Y at (t, Y) and adds the parameter
/// gradients Kbarᵀ·∂F/∂θ wherever the caller keeps them. For step n with stages Y_i, k_i:
///   k̄_i = h b_i ȳ + Σ_{m>i} h a_mi Ȳ_m,  Ȳ_i = vjp(Y_i, k̄_i),  ȳ ← ȳ + Σ_i Ȳ_i.
/// Exact for the computed value: the recorded step sizes are constants.
template <typename Scalar, typename StageRhs, typename StageVjp>
SolveStats rk_backprop(const ButcherTableau<Scalar>& tab, const StepRecord<Scalar>& record,
                       StageRhs&& stage_rhs, StageVjp&& stage_vjp,
                       Eigen::Matrix<Scalar, Dynamic, Dynamic>& adjoint) {
  using detail::Mat;
  const int s = tab.stages;
  std::vector<Mat<Scalar>> k(static_cast<std::size_t>(s));
  std::vector<Mat<Scalar>> inputs(static_cast<std::size_t>(s));
  std::vector<Mat<Scalar>> ybar(static_cast<std::size_t>(s));
  Mat<Scalar> kbar;
  SolveStats stats;
  for (std::size_t n = record.t.size(); n-- > 0;) {
    const Scalar t = record.t[n];
    const Scalar h = record.h[n];
    const Mat<Scalar>& y = record.y[n];
    // Recompute the stage inputs.
    for (int i = 0; i < s; ++i) {
      inputs[std::size_t(i)] = y;
      for (int j = 0; j < i; ++j) {
        if (tab.a(i, j) != Scalar(0))
          inputs[std::size_t(i)] += (h * tab.a(i, j)) * k[std::size_t(j)];
      }
      if (i + 1 < s) {  // the last stage's value feeds nothing
        k[std::size_t(i)].resize(y.rows(), y.cols());
        stage_rhs(t + tab.c(i) * h, inputs[std::size_t(i)], k[std::size_t(i)]);
        ++stats.function_evaluations;
      }
    }
    // Reverse through the stages.
    for (int i = s - 1; i >= 0; --i) {
      kbar = (h * tab.b(i)) * adjoint;
      for (int m = i + 1; m < s; ++m) {
        if (tab.a(m, i) != Scalar(0)) kbar += (h * tab.a(m, i)) * ybar[std::size_t(m)];
      }
      ybar[std::size_t(i)].resize(y.rows(), y.cols());
      stage_vjp(t + tab.c(i) * h, inputs[std::size_t(i)], kbar, ybar[std::size_t(i)]);
      ++stats.function_evaluations;
    }
    for (int i = 0; i < s; ++i) adjoint += ybar[std::size_t(i)];
    ++stats.accepted_steps;
  }
  return stats;
}

}  // namespace nflow::ode
