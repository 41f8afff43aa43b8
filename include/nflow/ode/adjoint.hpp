#pragma once
/// @file
/// @brief The adjoint method ("optimise-then-discretise") for a continuous flow solved with
/// Dormand–Prince 5(4): gradients in memory independent of the number of steps.
///
/// The flow integrates dz/dt = f(z, t, c; θ) and dl/dt = tr ∂f/∂z (the log-det) from t0 to t1
/// (t1 < t0 is allowed: the inverse of a flow runs from 1 to 0). For a loss L(z(t1), l(t1)) with
/// cotangents g_z = ∂L/∂z(t1) and g_l = ∂L/∂l(t1), the adjoint a(t) = ∂L/∂z(t) and the parameter
/// adjoint θ̄(t) satisfy, backwards from t1 to t0 (Chen et al. 2018; Grathwohl et al. 2019):
///
///     dz/dt = f,   da/dt = −aᵀ ∂f/∂z − g_l ∂(tr ∂f/∂z)/∂z,   dθ̄/dt = −aᵀ ∂f/∂θ − g_l ∂tr/∂θ,
///     a(t1) = g_z,  θ̄(t1) = 0;   ∂L/∂z(t0) = a(t0),  ∂L/∂θ = θ̄(t0)
///
/// (∂L/∂l is constant in time: nothing depends on l). One field vjp per evaluation gives the a
/// and θ̄ parts together (MLPVectorField::vjp with gf = a and gdiv = g_l), plus one value pass for
/// z. The Hutchinson probes, if any, are those of the forward solve (fixed per solve).
///
/// θ̄ is part of the ODE state, so Dopri5 controls its error like that of z and a. The state is
/// one matrix (what ode::dopri5_integrate integrates): 2·Dim rows, N columns holding [z; a] per
/// sample, then ⌈P / (2·Dim)⌉ columns holding the P entries of θ̄ (column-major, zero-padded).
/// Hairer's RMS norm then runs over every entry of z, a and θ̄ alike, each scaled by its own
/// atol + rtol·|value|; θ̄ is one vector for the batch (the field's vjp sums over columns).
/// Why in the norm: θ̄ is a quadrature of the adjoint along the path, and left out of the error
/// control (the "seminorm" of Kidger et al. 2021) its error is bounded by nothing but luck; in
/// the norm, the gradient's error follows the tolerance, which is what the tests check.
///
/// Memory: Dopri5 holds 11 matrices of the state's size (stages, candidate, error), so
/// 11 · 2·Dim · (N + ⌈P/(2·Dim)⌉) scalars whatever the number of steps, against steps ·
/// (Dim + 1) · N stored by back-propagation (StepRecord). Cost: close to back-propagation's (a
/// forward solve of f alone, then per backward step six value passes and six vjps, against a
/// forward solve with the trace, then five value passes and six vjps per recorded step), over
/// the backward solve's own steps (chosen for [z, a, θ̄]). The gradient is that of the exact
/// flow: it differs from the gradient of the computed value by the solvers' error, which
/// shrinks with the tolerance.
///
/// Reference: Chen et al. 2018 (Neural ODEs) arXiv:1806.07366, appendix B; Kidger, Chen, Lyons
/// 2021, "Hey, that's not an ODE" arXiv:2009.09457 (the seminorm, not used here).

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "nflow/core/errors.hpp"
#include "nflow/core/types.hpp"
#include "nflow/ode/solvers.hpp"

namespace nflow::ode {

/// How ContinuousFlow computes gradients (`ContinuousFlowOptions::gradient`).
enum class GradientMethod {
  /// Reverse mode through the recorded solver steps: the exact gradient of the computed value;
  /// memory steps × (Dim + 1) × N.
  Backprop,
  /// The adjoint ODE solved backwards with Dopri5 (ode::adjoint_vjp): the gradient of the exact
  /// flow to within the tolerance; memory independent of the number of steps. Dopri5 only: with
  /// the fixed-step solvers (RK4, Euler), whose memory is known in advance, gradients are
  /// back-propagated whatever this says.
  Adjoint,
};

/// @brief What ode::adjoint_vjp did: its two solves and the size of the adjoint's state.
struct AdjointStats {
  SolveStats forward;    ///< z from t0 to t1 (no record)
  SolveStats backward;   ///< [z, a, θ̄] from t1 back to t0
  Index state_rows = 0;  ///< 2·Dim
  Index state_cols = 0;  ///< N finite samples + ⌈P / (2·Dim)⌉ columns of θ̄
  /// How far the backward solve's z came back from the input: the largest
  /// |z_back(t0) − x| / (atol + rtol·max(|x|, |z_back(t0)|)) over the finite samples, i.e. the
  /// round trip's global error in units of the tolerance (see adjoint_vjp).
  double reconstruction_error = 0;
  /// The same miss relative to the input's size: the largest |z_back(t0) − x| / (1 + |x|).
  double reconstruction_miss = 0;
  /// Scalars Dopri5 keeps during the backward solve (11 matrices of the state's size).
  Index working_scalars() const { return 11 * state_rows * state_cols; }
};

namespace detail {

/// The field's value, f = field(t, z, c), and vjp (returns ∂/∂z, adds ∂/∂θ into gp), type-erased:
/// the adjoint's body and its two dopri5_integrate calls are then instantiated once per Scalar,
/// whatever the field (every ContinuousFlow type instantiates its vjp, hence this).
template <typename Scalar>
using AdjointValue = std::function<void(Scalar, const Eigen::Matrix<Scalar, Dynamic, Dynamic>&,
                                        const Eigen::Matrix<Scalar, Dynamic, Dynamic>&,
                                        Eigen::Matrix<Scalar, Dynamic, Dynamic>&)>;
template <typename Scalar>
using AdjointVjp = std::function<Eigen::Matrix<Scalar, Dynamic, Dynamic>(
    Scalar, const Eigen::Matrix<Scalar, Dynamic, Dynamic>&,
    const Eigen::Matrix<Scalar, Dynamic, Dynamic>&, const Eigen::Matrix<Scalar, Dynamic, Dynamic>&,
    const Eigen::Matrix<Scalar, 1, Dynamic>&, const Eigen::Matrix<Scalar, Dynamic, Dynamic>*,
    Eigen::Ref<Vector<Scalar>>)>;

template <typename Scalar>
AdjointStats adjoint_vjp_erased(Index parameter_count, const AdjointValue<Scalar>& value,
                                const AdjointVjp<Scalar>& vjp, Scalar t0, Scalar t1,
                                const Eigen::Matrix<Scalar, Dynamic, Dynamic>& x,
                                const Eigen::Matrix<Scalar, Dynamic, Dynamic>& context,
                                const Eigen::Matrix<Scalar, Dynamic, Dynamic>& grad_value,
                                const Eigen::Matrix<Scalar, 1, Dynamic>& grad_log_det,
                                const Eigen::Matrix<Scalar, Dynamic, Dynamic>* probes,
                                const Dopri5Options& options,
                                Eigen::Matrix<Scalar, Dynamic, Dynamic>& grad_x,
                                Eigen::Ref<Vector<Scalar>> grad_params,
                                double max_reconstruction_error) {
  using Mat = Eigen::Matrix<Scalar, Dynamic, Dynamic>;
  using Row = Eigen::Matrix<Scalar, 1, Dynamic>;
  using Rhs = std::function<void(Scalar, const Mat&, Mat&)>;
  const Index d = x.rows();
  const Index n_all = x.cols();
  const Index p = parameter_count;
  auto shape = [](bool ok, const char* what, Index rows, Index cols) {
    if (!ok)
      throw ShapeError(std::string("nflow::ode::adjoint_vjp: ") + what + " must be " +
                       std::to_string(rows) + " x " + std::to_string(cols));
  };
  shape(grad_value.rows() == d && grad_value.cols() == n_all, "grad_value", d, n_all);
  shape(grad_log_det.cols() == n_all, "grad_log_det", 1, n_all);
  shape(context.cols() == 0 || context.cols() == n_all, "context (when not empty)", context.rows(),
        n_all);
  shape(probes == nullptr || (probes->rows() == d && probes->cols() == n_all), "probes", d, n_all);
  shape(grad_params.size() == p, "grad_params", p, 1);
  grad_x.resize(d, n_all);

  // The finite samples (a non-finite context column counts as a non-finite sample).
  std::vector<Index> good;
  good.reserve(std::size_t(n_all));
  for (Index j = 0; j < n_all; ++j) {
    if (x.col(j).allFinite() && (context.cols() == 0 || context.col(j).allFinite()))
      good.push_back(j);
    else
      grad_x.col(j).setConstant(std::numeric_limits<Scalar>::quiet_NaN());
  }
  const Index n = Index(good.size());
  Mat z(d, n);
  Mat c(context.rows(), context.cols() == 0 ? 0 : n);
  Mat gv(d, n);
  Row gl(1, n);
  Mat pr(probes != nullptr ? probes->rows() : 0, probes != nullptr ? n : 0);
  for (Index k = 0; k < n; ++k) {
    const Index j = good[std::size_t(k)];
    z.col(k) = x.col(j);
    if (c.cols() > 0) c.col(k) = context.col(j);
    gv.col(k) = grad_value.col(j);
    gl(k) = grad_log_det(j);
    if (probes != nullptr) pr.col(k) = probes->col(j);
  }
  const Mat* pp = probes != nullptr ? &pr : nullptr;
  const Mat x_good = z;

  AdjointStats stats;
  if (n == 0) return stats;
  Rhs forward = [&](Scalar t, const Mat& state, Mat& dstate) { value(t, state, c, dstate); };
  stats.forward = dopri5_integrate(forward, t0, t1, z, options);

  // The adjoint state: [z; a] in the first n columns, θ̄ packed column-major after them.
  const Index rows = 2 * d;
  const Index q = rows > 0 ? (p + rows - 1) / rows : 0;
  stats.state_rows = rows;
  stats.state_cols = n + q;
  Mat y = Mat::Zero(rows, n + q);
  y.topLeftCorner(d, n) = z;
  y.bottomLeftCorner(d, n) = gv;
  Mat zs;
  Mat as;
  Mat fs;
  Vector<Scalar> gp_stage(p);
  Rhs backward = [&](Scalar t, const Mat& state, Mat& dstate) {
    zs = state.topLeftCorner(d, n);
    as = state.bottomLeftCorner(d, n);
    dstate.setZero();
    value(t, zs, c, fs);
    dstate.topLeftCorner(d, n) = fs;
    gp_stage.setZero();
    dstate.bottomLeftCorner(d, n) = -vjp(t, zs, c, as, gl, pp, gp_stage);
    Eigen::Map<Vector<Scalar>>(dstate.data() + rows * n, p) = -gp_stage;
  };
  stats.backward = dopri5_integrate(backward, t1, t0, y, options);

  for (Index k = 0; k < n; ++k) {
    for (Index i = 0; i < d; ++i) {
      const double a = double(x_good(i, k));
      const double b = double(y(i, k));
      const double sc = options.atol + options.rtol * std::max(std::abs(a), std::abs(b));
      stats.reconstruction_error = std::max(stats.reconstruction_error, std::abs(a - b) / sc);
      stats.reconstruction_miss =
          std::max(stats.reconstruction_miss, std::abs(a - b) / (1 + std::abs(a)));
    }
  }
  if (!(stats.reconstruction_error <= max_reconstruction_error) &&
      !(stats.reconstruction_miss <= 0.01)) {
    throw OdeError(
        "nflow::ode::adjoint_vjp: integrated back to t0, z misses the input by " +
        std::to_string(stats.reconstruction_miss) + " relative (" +
        std::to_string(stats.reconstruction_error) + " tolerances, more than 0.01 and " +
        std::to_string(max_reconstruction_error) +
        "): the flow contracts too strongly to be re-integrated backwards, so the adjoint "
        "gradient would be wrong; use back-propagation (GradientMethod::Backprop)");
  }
  for (Index k = 0; k < n; ++k) grad_x.col(good[std::size_t(k)]) = y.bottomRows(d).col(k);
  grad_params += Eigen::Map<const Vector<Scalar>>(y.data() + rows * n, p);
  return stats;
}

}  // namespace detail

/// @brief Gradients of a flow dz/dt = field(z, t, c), dl/dt = tr ∂field/∂z by the adjoint
/// method, with Dopri5 at `options` for both solves.
///
/// Integrates x (Dim × N) from t0 to t1 without recording, then the adjoint state backwards
/// (see the file's comment). On exit `grad_x` (resized to Dim × N) holds ∂L/∂x for the
/// cotangents `grad_value` = ∂L/∂z(t1) (Dim × N) and `grad_log_det` = ∂L/∂l(t1) (1 × N), and
/// ∂L/∂θ has been ADDED into `grad_params` (the field's flat layout, parameter_count() long).
/// `probes`: null for the exact trace, else the Hutchinson probes (Dim × N) of the forward solve.
/// Columns whose x (or context) are not finite get NaN in `grad_x` and are left out of both
/// solves, so they add nothing to `grad_params` and do not steer the step size.
/// Field: ode::MLPVectorField or anything with value(t, z, c), vjp(t, z, c, gf, gdiv, probes,
/// gp) and parameter_count().
/// Check: the backward solve re-integrates z, and where the forward flow contracts strongly
/// (large negative log-dets) that is unstable: z(t0) comes back far from x and the gradient is
/// wrong beyond the tolerance. AdjointStats::reconstruction_error measures the miss in units of
/// the tolerance (healthy solves: 1 to a few 10³, growing with the length of the path) and
/// reconstruction_miss relative to |x|; when the first exceeds `max_reconstruction_error`
/// (default 10⁴) and the second 1 %, the call throws instead of returning that gradient.
/// @throws nflow::ode::OdeError when the reconstruction misses by more than both;
///   nflow::ShapeError for inconsistent shapes; nflow::ode::OdeError as
///   ode::dopri5_integrate (max_steps, a state that blows up); nflow::ParameterError for invalid
///   options.
template <typename Field>
AdjointStats adjoint_vjp(const Field& field, typename Field::Scalar t0, typename Field::Scalar t1,
                         const Eigen::Matrix<typename Field::Scalar, Dynamic, Dynamic>& x,
                         const Eigen::Matrix<typename Field::Scalar, Dynamic, Dynamic>& context,
                         const Eigen::Matrix<typename Field::Scalar, Dynamic, Dynamic>& grad_value,
                         const Eigen::Matrix<typename Field::Scalar, 1, Dynamic>& grad_log_det,
                         const Eigen::Matrix<typename Field::Scalar, Dynamic, Dynamic>* probes,
                         const Dopri5Options& options,
                         Eigen::Matrix<typename Field::Scalar, Dynamic, Dynamic>& grad_x,
                         Eigen::Ref<Vector<typename Field::Scalar>> grad_params,
                         double max_reconstruction_error = 1e4) {
  using Scalar = typename Field::Scalar;
  using Mat = Eigen::Matrix<Scalar, Dynamic, Dynamic>;
  using Row = Eigen::Matrix<Scalar, 1, Dynamic>;
  const detail::AdjointValue<Scalar> value = [&field](Scalar t, const Mat& z, const Mat& c,
                                                      Mat& f) { f = field.value(t, z, c); };
  const detail::AdjointVjp<Scalar> vjp =
      [&field](Scalar t, const Mat& z, const Mat& c, const Mat& a, const Row& gl, const Mat* pp,
               Eigen::Ref<Vector<Scalar>> gp) { return Mat(field.vjp(t, z, c, a, gl, pp, gp)); };
  return detail::adjoint_vjp_erased<Scalar>(field.parameter_count(), value, vjp, t0, t1, x, context,
                                            grad_value, grad_log_det, probes, options, grad_x,
                                            grad_params, max_reconstruction_error);
}

}  // namespace nflow::ode
