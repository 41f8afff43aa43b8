#pragma once
/// @file
/// @brief Rectified flow (Liu et al. 2023, arXiv:2209.03003) for nflow::ContinuousFlow: reflow
/// (re-training the field by flow matching on the (noise, sample) pairs its own ODE couples, which
/// straightens its paths so that a sampler with one to four Euler steps becomes good) and the
/// straightness of the learned paths.
///
/// Directions and times (nflow/train/flow_matching.hpp): the flow's inverse integrates
/// dy/dt = f(y, t, c) from t = 1 (the noise z ~ N(0, I)) to t = 0 (the sample x). In the
/// noise → data time τ = 1 − t the path x_τ = y(1 − τ) runs from z to x with velocity
/// v(x_τ, τ) = −f(x_τ, 1 − τ).
///
/// Straightness (Liu et al., Definition 3.2), per pair and then averaged over z ~ N(0, I):
///     S = E_z ∫₀¹ ‖(x − z) − v(x_τ, τ)‖² dτ = E_z [ ∫₀¹ ‖v(x_τ, τ)‖² dτ − ‖x − z‖² ],
/// the second form because ∫₀¹ v dτ = x − z along the path. S ≥ 0, and S = 0 exactly when every
/// path is a straight line travelled at constant speed (a path along a straight line at varying
/// speed has S > 0). nflow integrates the kinetic energy ∫‖f‖² dt as one extra row of the ODE
/// state with the flow's own solver, beside y: both integrals then use the solver's quadrature,
/// so for RK4 and Euler S is exactly the weighted variance Σᵢ wᵢ‖vᵢ − (x − z)‖² of the velocities
/// at the solver's stages (weights |h|·bᵢ, summing to 1; never negative). Measure it with an
/// accurate solver (RK4 with 20 steps, or Dopri5): with one Euler step it is 0 by construction.

#include <Eigen/Core>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "nflow/bijectors/continuous.hpp"
#include "nflow/core/errors.hpp"
#include "nflow/core/random.hpp"
#include "nflow/core/types.hpp"
#include "nflow/ode/concepts.hpp"
#include "nflow/ode/solvers.hpp"
#include "nflow/train/flow_matching.hpp"

namespace nflow::train {

namespace internal {

/// The compile-time check of the reflow functions' flow argument.
template <typename Flow>
constexpr void require_solver_flow() {
  static_assert(ode::HasVectorField<Flow>,
                "nflow::train::reflow_pairs / straightness / reflow: the flow must expose its "
                "nflow::ode::VectorField as field() (as nflow::ContinuousFlow does)");
  static_assert(
      requires(const Flow& f) {
        { f.options().solver } -> std::convertible_to<OdeSolver>;
        { f.options().rk4_steps } -> std::convertible_to<Index>;
        { f.options().dopri5 } -> std::convertible_to<ode::Dopri5Options>;
      },
      "nflow::train::reflow_pairs / straightness / reflow: the flow's options() must name its "
      "solver (solver, rk4_steps, dopri5) as nflow::ContinuousFlowOptions does");
}

inline void check_count(const char* where, Index n) {
  if (n < 1) {
    throw ParameterError(std::string("nflow::train::") + where +
                         ": parameter 'n' (the number of noise draws) must be >= 1, got " +
                         std::to_string(n));
  }
}

/// z ~ N(0, I), dim × n, from std::mt19937_64(seed) in storage order.
template <typename S>
Eigen::Matrix<S, Dynamic, Dynamic> reflow_noise(Index dim, Index n, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  return standard_normal_matrix<S>(dim, n, gen);
}

/// Integrates the field alone from t = 1 to t = 0 with the flow's solver, in place on `y`
/// (dim() rows, or dim() + 1 with `energy`: the last row then accumulates ∫ ‖f‖² dt, which is
/// negative since time runs backwards).
template <typename Flow>
void integrate_field_backwards(
    const Flow& flow, const Eigen::Matrix<typename Flow::Scalar, Dynamic, Dynamic>& context,
    Eigen::Matrix<typename Flow::Scalar, Dynamic, Dynamic>& y, bool energy) {
  using S = typename Flow::Scalar;
  using M = Eigen::Matrix<S, Dynamic, Dynamic>;
  const Index d = flow.dim();
  Eigen::Matrix<S, 1, Dynamic> tr(y.cols());
  M f;
  auto rhs = [&](S t, const M& state, M& dstate) {
    tr.setConstant(t);
    f = flow.field().value(tr, state.topRows(d), context);
    dstate.topRows(d) = f;
    if (energy) dstate.row(d) = f.colwise().squaredNorm();
  };
  const auto& o = flow.options();
  if (o.solver == OdeSolver::RK4) {
    ode::rk4_integrate(rhs, S(1), S(0), y, o.rk4_steps);
  } else if (o.solver == OdeSolver::Euler) {
    ode::euler_integrate(rhs, S(1), S(0), y, o.rk4_steps);
  } else {
    ode::dopri5_integrate(rhs, S(1), S(0), y, o.dopri5);
  }
}

template <typename Flow>
CoupledPairs<typename Flow::Scalar> reflow_pairs_impl(
    const Flow& flow, Index n,
    const Eigen::Matrix<typename Flow::Scalar, Dynamic, Dynamic>& context, std::uint64_t seed) {
  CoupledPairs<typename Flow::Scalar> pairs;
  pairs.noise = reflow_noise<typename Flow::Scalar>(flow.dim(), n, seed);
  pairs.samples = pairs.noise;
  pairs.context = context;
  integrate_field_backwards(flow, pairs.context, pairs.samples, false);
  return pairs;
}

inline void check_context(const char* where, Index context_dim, Index rows, Index cols) {
  if (context_dim == 0) {
    throw ShapeError(std::string("nflow::train::") + where +
                     ": the flow takes no context; call it with the number of pairs instead");
  }
  if (rows != context_dim || cols < 1) {
    throw ShapeError(std::string("nflow::train::") + where + ": the context must have " +
                     std::to_string(context_dim) + " rows and at least one column, got " +
                     nflow::detail::shape_string(rows, cols));
  }
}

inline void check_unconditional(const char* where, Index context_dim) {
  if (context_dim != 0) {
    throw ShapeError(std::string("nflow::train::") + where +
                     ": the flow is conditional; pass a context (context_dim × n) instead of n");
  }
}

}  // namespace internal

/// @brief Coupled (noise, sample) pairs of a trained flow: n draws z ~ N(0, I) (Dim × n, from
/// std::mt19937_64(seed), nflow's standard_normal_matrix in storage order) and x, the end of the
/// flow's ODE from z at t = 1 to t = 0 with the flow's current solver (its field alone, without
/// the log-det row: for RK4 and Euler exactly flow.inverse(z), for Dopri5 equal to it within the
/// tolerance). Train on them with fit_flow_matching(flow, pairs, options): one round of reflow.
/// Use an accurate solver (RK4 with 20 steps or Dopri5 at 1e-5) to make them.
/// @throws nflow::ParameterError if n < 1; nflow::ShapeError for a conditional flow (use the
///   overload with a context); nflow::ode::OdeError if the solve fails.
template <typename Flow>
CoupledPairs<typename Flow::Scalar> reflow_pairs(const Flow& flow, Index n, std::uint64_t seed) {
  internal::require_solver_flow<Flow>();
  internal::check_count("reflow_pairs", n);
  internal::check_unconditional("reflow_pairs", flow.context_dim());
  return internal::reflow_pairs_impl(flow, n, {}, seed);
}

/// @brief The same for a conditional flow: one pair per column of `context` (context_dim × n),
/// which the pairs keep (pairs.context), so that fit_flow_matching trains on them.
/// @throws nflow::ShapeError if the flow is unconditional or the context's shape does not fit.
template <typename Flow>
CoupledPairs<typename Flow::Scalar> reflow_pairs(
    const Flow& flow, const Eigen::Matrix<typename Flow::Scalar, Dynamic, Dynamic>& context,
    std::uint64_t seed) {
  internal::require_solver_flow<Flow>();
  internal::check_context("reflow_pairs", flow.context_dim(), context.rows(), context.cols());
  return internal::reflow_pairs_impl(flow, context.cols(), context, seed);
}

/// @brief What straightness returns: the mean of the per-pair straightness over the n draws and
/// its standard error (the sample standard deviation over √n).
struct Straightness {
  double value = 0;
  double standard_error = 0;
};

namespace internal {
template <typename Flow>
Straightness straightness_impl(
    const Flow& flow, Index n,
    const Eigen::Matrix<typename Flow::Scalar, Dynamic, Dynamic>& context, std::uint64_t seed) {
  using S = typename Flow::Scalar;
  const Index d = flow.dim();
  const Eigen::Matrix<S, Dynamic, Dynamic> z = reflow_noise<S>(d, n, seed);
  Eigen::Matrix<S, Dynamic, Dynamic> y(d + 1, n);
  y.topRows(d) = z;
  y.row(d).setZero();
  integrate_field_backwards(flow, context, y, true);
  // Per pair: ∫‖v‖² dτ − ‖x − z‖² (the energy row ran from t = 1 to 0, so it holds −∫‖f‖²).
  Eigen::ArrayXd s(n);
  for (Index j = 0; j < n; ++j) {
    s(j) = -double(y(d, j)) - (y.col(j).head(d) - z.col(j)).template cast<double>().squaredNorm();
  }
  Straightness r;
  r.value = s.mean();
  r.standard_error =
      n > 1 ? std::sqrt((s - r.value).square().sum() / double(n - 1) / double(n)) : 0;
  return r;
}
}  // namespace internal

/// @brief The straightness of the flow's paths (Liu et al. 2023, Definition 3.2; see the file
/// comment), S = E_z ∫₀¹ ‖(x − z) − v(x_τ, τ)‖² dτ, estimated over n draws z ~ N(0, I) (those of
/// reflow_pairs with the same seed) along the paths of the flow's current solver, with the
/// kinetic-energy form E_z[∫₀¹ ‖v‖² dτ − ‖x − z‖²]. 0 for paths that are straight lines at
/// constant speed; in units of squared distance (x's units²).
/// @throws nflow::ParameterError if n < 1; nflow::ShapeError for a conditional flow (use the
///   overload with a context); nflow::ode::OdeError if the solve fails.
template <typename Flow>
Straightness straightness(const Flow& flow, Index n, std::uint64_t seed) {
  internal::require_solver_flow<Flow>();
  internal::check_count("straightness", n);
  internal::check_unconditional("straightness", flow.context_dim());
  return internal::straightness_impl(flow, n, {}, seed);
}

/// @brief The same for a conditional flow, one draw per column of `context` (context_dim × n).
template <typename Flow>
Straightness straightness(const Flow& flow,
                          const Eigen::Matrix<typename Flow::Scalar, Dynamic, Dynamic>& context,
                          std::uint64_t seed) {
  internal::require_solver_flow<Flow>();
  internal::check_context("straightness", flow.context_dim(), context.rows(), context.cols());
  return internal::straightness_impl(flow, context.cols(), context, seed);
}

/// @brief Settings of reflow (unconditional flows).
struct ReflowOptions {
  Index rounds = 1;           ///< reflows, k >= 1
  Index pairs = 10000;        ///< pairs generated per round, >= 1
  std::uint64_t seed = 1;     ///< round r draws its noise from seed + r (r = 0, 1, ...)
  FlowMatchingOptions fit{};  ///< the flow-matching fit of each round
  /// Draws for the straightness measured before the first round and after each (0: not
  /// measured); measured with seed `straightness_seed` every time, so the numbers are comparable.
  Index straightness_samples = 0;
  std::uint64_t straightness_seed = 12345;
};

/// @brief What reflow returns: each round's fit and, if measured, the straightness before the
/// first round (straightness[0]) and after round r (straightness[r]).
struct ReflowResult {
  std::vector<FlowMatchingResult> fits;
  std::vector<Straightness> straightness;
};

/// @brief k rounds of reflow on an unconditional flow: each round makes `pairs` pairs with
/// reflow_pairs(flow, pairs, seed + r) from the flow as it is, then continues training the same
/// field on them with fit_flow_matching(flow, pairs, options.fit):
///
///     flow.set_solver(OdeSolver::RK4, 20);           // the pairs' accuracy
///     train::reflow(flow, {.rounds = 2, .pairs = 20000, .fit = {.steps = 3000}});
///     flow.set_solver(OdeSolver::Euler, 2);          // then sample in two steps
///
/// The pairs and the straightness use the flow's current solver.
/// @throws nflow::ParameterError on bad options (rounds < 1, pairs < 1, straightness_samples < 0,
///   or those of fit_flow_matching); the errors of reflow_pairs and fit_flow_matching.
template <typename Flow>
ReflowResult reflow(Flow& flow, const ReflowOptions& options) {
  internal::require_solver_flow<Flow>();
  if (options.rounds < 1 || options.pairs < 1 || options.straightness_samples < 0) {
    throw ParameterError(
        "nflow::train::reflow: options need rounds >= 1, pairs >= 1, straightness_samples >= 0");
  }
  internal::check_flow_matching_options(options.fit);
  internal::check_unconditional("reflow", flow.context_dim());
  ReflowResult result;
  auto measure = [&] {
    if (options.straightness_samples > 0)
      result.straightness.push_back(
          straightness(flow, options.straightness_samples, options.straightness_seed));
  };
  measure();
  for (Index r = 0; r < options.rounds; ++r) {
    const auto pairs = reflow_pairs(flow, options.pairs, options.seed + std::uint64_t(r));
    result.fits.push_back(fit_flow_matching(flow, pairs, options.fit));
    measure();
  }
  return result;
}

}  // namespace nflow::train
