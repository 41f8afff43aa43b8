#pragma once
/// @file
/// @brief ContinuousFlow: a continuous normalizing flow (Neural ODE / FFJORD) whose vector field
/// is an MLP of (z, t, context), with exact or Hutchinson divergence, RK4 or Dormand–Prince, and
/// exact gradients through the solver's steps.

#include <Eigen/Core>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "nflow/core/bijector_base.hpp"
#include "nflow/core/errors.hpp"
#include "nflow/core/parameters.hpp"
#include "nflow/core/types.hpp"
#include "nflow/nn/conditioner.hpp"
#include "nflow/ode/adjoint.hpp"
#include "nflow/ode/solvers.hpp"
#include "nflow/ode/vector_field.hpp"

namespace nflow {

/// Which ODE solver a ContinuousFlow uses.
enum class OdeSolver {
  RK4,     ///< fixed-step classical Runge–Kutta, `rk4_steps` steps over [0, 1]
  Dopri5,  ///< adaptive Dormand–Prince 5(4) with `dopri5` tolerances
  /// fixed-step explicit Euler, `rk4_steps` steps over [0, 1] (the few-step sampler of a
  /// rectified flow: `flow.set_solver(OdeSolver::Euler, 2)`)
  Euler,
};

/// @brief Settings of a ContinuousFlow: the field's sizes and seed, the solver and the trace.
/// Aggregate; designated initialisers only (a positional list is a compile error), e.g.
/// `{.hidden_width = 64, .seed = 3, .solver = OdeSolver::Dopri5}`. The first four fields are
/// ConditionerOptions' (same names, meanings and order); the flow's own follow.
struct ContinuousFlowOptions {
  /// hidden_width, hidden_layers, context_dim, seed (of the field's MLP): see
  /// ConditionerOptions. The default seed is 0, so flows built without one start alike.
  NFLOW_CONDITIONER_OPTIONS_FIELDS;
  bool zero_last_layer = false;  ///< start with f ≡ 0 (the identity map)
  OdeSolver solver = OdeSolver::RK4;
  Index rk4_steps = 20;  ///< steps over [0, 1] of the fixed-step solvers (RK4 and Euler), >= 1
  ode::Dopri5Options dopri5{};
  ode::TraceEstimator trace = ode::TraceEstimator::Exact;
  std::uint64_t probe_seed = 0;  ///< Hutchinson probes: drawn from this seed, fixed per solve
  /// How forward_vjp / inverse_vjp compute gradients: back-propagation through the recorded
  /// steps (exact for the computed value) or, with Dopri5 only, the adjoint ODE (memory
  /// independent of the number of steps; the fixed-step solvers always back-propagate).
  ode::GradientMethod gradient = ode::GradientMethod::Backprop;
};

/// @brief What ContinuousFlow::solve returns: the mapped batch, its log-dets and the solver's
/// work (function evaluations, steps).
template <typename Scalar, int Dim>
struct ContinuousSolveResult {
  Batch<Scalar, Dim, Dynamic> value;
  PerSample<Scalar, Dynamic> log_det;
  ode::SolveStats stats;
};

/// @brief A continuous normalizing flow: the time-1 map of dz/dt = f(z, t, c), with f an MLP.
///
///     forward (data → latent):   z = x + ∫₀¹ f(z(t), t, c) dt,
///                                log|det ∂z/∂x| = +∫₀¹ tr ∂f/∂z (z(t), t, c) dt
///     inverse (latent → data):   integrate the same ODE from t = 1 back to t = 0;
///                                log|det ∂x/∂z| = −∫₀¹ tr ∂f/∂z dt
///
/// (Liouville: d/dt log|det ∂z(t)/∂z(0)| = tr ∂f/∂z.) Hence log p(x) = log p_base(z) + ∫ tr.
/// The log-det is integrated alongside z as one extra row of the state. The time-1 map of a
/// Lipschitz field is a bijection; numerically, forward and inverse are inverse to the solver's
/// accuracy (RK4: O(h⁴); Dopri5: about the tolerance), not to round-off.
///
/// Divergence: exact (the default: in closed form for one or two hidden layers, else Dim
/// forward-mode passes through the MLP) or Hutchinson's
/// unbiased εᵀ(∂f/∂z)ε with one probe per sample, drawn from `probe_seed` and fixed for the whole
/// solve (FFJORD). Change the seed between training steps with set_probe_seed().
///
/// Gradients (forward_vjp, inverse_vjp): reverse mode through the recorded solver steps
/// ("discretise-then-optimise", ode::rk_backprop), so they are the exact gradients of the value
/// the solver computed (RK4, and Dopri5 with its accepted steps held fixed), testable against
/// finite differences. The log-det's gradient needs the MLP's second derivatives; they are
/// implemented for Tanh, SiLU, ELU (and ReLU / Identity, where f″ = 0), for both the exact and the
/// Hutchinson divergence. Back-propagation stores the state at each step (steps × (Dim + 1) × N
/// scalars) but is exact for the computed value. With Dopri5, `options.gradient =
/// ode::GradientMethod::Adjoint` uses the adjoint method instead (ode::adjoint_vjp): a second
/// ODE solved backwards, memory independent of the number of steps, a gradient that differs from
/// the computed value's by the solver's error; it throws ode::OdeError where re-integrating z
/// backwards fails (a strongly contracting flow). See docs/continuous.md.
///
/// One point: a fixed-size point (fixed Dim and Hidden) with RK4 or Euler, the exact trace and
/// one or two hidden layers runs on fixed-size vectors and allocates nothing (run_point); it
/// equals the same column of a batch to rounding. Otherwise one point is a batch of one.
///
/// Batches: one solve per batch. With Dopri5 the step size is shared by the batch, so a column
/// depends on its neighbours to within the tolerance; with RK4 columns are independent. A column
/// whose input (or context) is not finite gives non-finite outputs and leaves the others alone;
/// a column that starts finite and becomes non-finite throws ode::OdeError, as does exceeding
/// Dopri5's max_steps.
///
/// Parameters: the field's MLP, prefixed "field." ("field.layers.0.weight" over z,
/// "field.layers.0.context_weight" over [t; c], "field.layers.0.bias", …).
///
/// References: Chen et al. 2018 (Neural ODEs) arXiv:1806.07366; Grathwohl et al. 2019 (FFJORD)
/// arXiv:1810.01367; Hutchinson 1990.
/// @tparam Scalar_ float or double. @tparam Dim_ dimension or Dynamic.
/// @tparam Hidden hidden width or Dynamic. @tparam Activation nn::Tanh (default), nn::SiLU, ...
/// @tparam ContextDim_ 0 (unconditional), a fixed positive size, or Dynamic (set at run time by
///   options.context_dim).
/// options() returns the options with hidden_width and context_dim resolved (never 0 for the
/// width).
template <typename Scalar_, int Dim_ = Dynamic, int Hidden = Dynamic,
          typename Activation = nn::Tanh, int ContextDim_ = 0>
class ContinuousFlow
    : public BijectorBase<ContinuousFlow<Scalar_, Dim_, Hidden, Activation, ContextDim_>> {
 public:
  using Scalar = Scalar_;
  static constexpr int Dim = Dim_;
  static constexpr int ContextDim = ContextDim_;
  static constexpr Cost ForwardCost = Cost::Iterative;
  static constexpr Cost InverseCost = Cost::Iterative;
  using Field = ode::MLPVectorField<Scalar, Dim_, Hidden, Activation>;
  using Matrix = Eigen::Matrix<Scalar, Dynamic, Dynamic>;

  ContinuousFlow(Index dim, ContinuousFlowOptions options = {})
      : options_(checked(dim, options)),
        field_(dim, options_.hidden_width, options_.hidden_layers, options_.context_dim,
               options_.seed, options_.zero_last_layer) {}

  Index dim() const { return field_.dim(); }
  Index context_dim() const { return field_.context_dim(); }
  const ContinuousFlowOptions& options() const { return options_; }
  /// Changes the solver and trace settings (the field's sizes are fixed at construction).
  /// `steps` (>= 1) is the number of steps of a fixed-step solver (RK4 or Euler; stored as
  /// options().rk4_steps): `flow.set_solver(OdeSolver::Euler, 2)` samples with two Euler steps.
  /// @throws nflow::ParameterError if steps < 1.
  void set_solver(OdeSolver solver, Index steps = 20, ode::Dopri5Options dopri5 = {}) {
    options_.solver = solver;
    options_.rk4_steps = steps;
    options_.dopri5 = dopri5;
    checked(dim(), options_);
  }
  void set_trace(ode::TraceEstimator trace) { options_.trace = trace; }
  void set_probe_seed(std::uint64_t seed) { options_.probe_seed = seed; }
  const Field& field() const { return field_; }
  Field& field() { return field_; }

  /// The parameters: those of the field, prefixed "field.".
  template <typename Self, typename F>
  static void parameters_impl(Self& self, F&& f) {
    self.field_.visit_parameters(detail::prefixed_visitor("field.", f));
  }

  /// @brief Integrates x (Dim × N) from t = 0 to 1 (`inverse` false) or 1 to 0, returning the
  /// value, the log-det and the solver's statistics. Without a context (context_dim() = 0) pass
  /// nflow::no_context (or, as before, an empty matrix). Shapes are not checked here (the
  /// bijector calls check them).
  /// @throws nflow::ShapeError for nflow::no_context when the flow is conditional.
  ContinuousSolveResult<Scalar, Dim> solve(const Matrix& x, NoContext, bool inverse) const {
    if (context_dim() != 0) {
      throw ShapeError(
          "nflow::ContinuousFlow::solve: this flow is conditional and needs a "
          "context of " +
          std::to_string(context_dim()) + " rows and one column per sample");
    }
    return solve(x, Matrix(), inverse);
  }
  /// The same with a context: a context_dim() × N matrix (empty when context_dim() = 0).
  ContinuousSolveResult<Scalar, Dim> solve(const Matrix& x, const Matrix& context,
                                           bool inverse) const {
    const Index d = dim();
    const Index n = x.cols();
    Matrix y = augmented_state(x, context);
    const Matrix probes = probe_matrix(n);
    const Matrix* pp = options_.trace == ode::TraceEstimator::Exact ? nullptr : &probes;
    // The exact trace in closed form (one or two hidden layers), from the weights, once per solve.
    const Matrix trace = pp == nullptr ? field_.trace_matrix() : Matrix();
    Matrix f;
    typename Field::Row div;
    auto rhs = [&](Scalar t, const Matrix& state, Matrix& dstate) {
      field_.value_and_divergence(t, state.topRows(d), context, pp, f, div, &trace);
      dstate.topRows(d) = f;
      dstate.row(d) = div;
    };
    std::vector<Index> bad = non_finite_columns(y);
    ContinuousSolveResult<Scalar, Dim> r;
    r.stats = integrate(rhs, inverse, y, nullptr);
    r.value = y.topRows(d);
    r.log_det = y.row(d);
    // A sample that was not finite has no log-det (its divergence may still be finite where a
    // saturated activation has zero slope).
    for (Index j : bad) r.log_det(j) = std::numeric_limits<Scalar>::quiet_NaN();
    return r;
  }

  /// @brief Exact divergence tr ∂f/∂z at (z, t, c), one value per column (Dim × N in).
  template <typename Z>
  PerSample<Scalar, Dynamic> divergence(const Eigen::MatrixBase<Z>& z, Scalar t,
                                        const Matrix& context = Matrix()) const {
    Matrix f;
    typename Field::Row div;
    field_.value_and_divergence(t, Matrix(z), context, nullptr, f, div);
    return div;
  }
  /// @brief Hutchinson's estimate εⱼᵀ(∂f/∂z)εⱼ per column, with the probes given (Dim × N).
  template <typename Z, typename P>
  PerSample<Scalar, Dynamic> divergence_estimate(const Eigen::MatrixBase<Z>& z, Scalar t,
                                                 const Eigen::MatrixBase<P>& probes,
                                                 const Matrix& context = Matrix()) const {
    Matrix f;
    typename Field::Row div;
    const Matrix p = probes;
    field_.value_and_divergence(t, Matrix(z), context, &p, f, div);
    return div;
  }

  /// Batches are split into tiles (nflow/core/parallel.hpp) only with a fixed-step solver (RK4,
  /// Euler) and the exact trace:
  /// Dopri5's step sizes and Hutchinson's probes depend on the whole batch.
  bool splits_batches() const {
    return options_.solver != OdeSolver::Dopri5 && options_.trace == ode::TraceEstimator::Exact;
  }

  // ---- hooks ------------------------------------------------------------------------------
  template <typename X, typename C>
  detail::ResultFor<Scalar, Dim, X> forward_impl(const X& x, const C& ctx) const {
    return run<X>(x, ctx, false);
  }
  template <typename Z, typename C>
  detail::ResultFor<Scalar, Dim, Z> inverse_impl(const Z& z, const C& ctx) const {
    return run<Z>(z, ctx, true);
  }
  template <typename X, typename GV, typename GL, typename C>
  detail::BatchFor<Scalar, Dim, X> forward_vjp_impl(const X& x, const GV& gv, const GL& gl,
                                                    Eigen::Ref<Vector<Scalar>> gp,
                                                    const C& ctx) const {
    return vjp<X>(x, gv, gl, gp, ctx, false);
  }
  template <typename Z, typename GV, typename GL, typename C>
  detail::BatchFor<Scalar, Dim, Z> inverse_vjp_impl(const Z& z, const GV& gv, const GL& gl,
                                                    Eigen::Ref<Vector<Scalar>> gp,
                                                    const C& ctx) const {
    return vjp<Z>(z, gv, gl, gp, ctx, true);
  }

 private:
  static ContinuousFlowOptions checked(Index dim, ContinuousFlowOptions o) {
    if (Dim_ != Dynamic && dim != Dim_) {
      throw ParameterError("nflow::ContinuousFlow: parameter 'dim' is " + std::to_string(dim) +
                           " but the flow's Dim is " + std::to_string(Dim_));
    }
    if (dim < 1) throw ParameterError("nflow::ContinuousFlow: parameter 'dim' must be >= 1");
    o.hidden_width = detail::resolve_hidden_width<Hidden>("nflow::ContinuousFlow", o.hidden_width);
    o.context_dim =
        detail::resolve_context_dim<ContextDim_>("nflow::ContinuousFlow", o.context_dim);
    if (o.rk4_steps < 1)
      throw ParameterError(
          "nflow::ContinuousFlow: options.rk4_steps (the steps of the fixed-step solvers RK4 and "
          "Euler) must be >= 1, got " +
          std::to_string(o.rk4_steps));
    return o;
  }

  template <typename C>
  Matrix context_matrix(const C& ctx) const {
    if constexpr (is_no_context_v<C>) {
      return Matrix();
    } else {
      return Matrix(ctx);
    }
  }

  /// The ODE state at the start of a solve: the samples with a zero log-det row below, (Dim + 1) × N.
  template <typename In>
  Matrix augmented_state(const In& in, const Matrix& context) const {
    Matrix y(dim() + 1, in.cols());
    y.topRows(dim()) = in;
    y.row(dim()).setZero();
    poison_bad_context(y, context);
    return y;
  }

  /// A column whose context is not finite is not finite in the state either (so that the
  /// solver leaves it out of its error norm and the output is NaN there).
  void poison_bad_context(Matrix& y, const Matrix& context) const {
    for (Index j = 0; j < context.cols(); ++j) {
      if (!context.col(j).allFinite())
        y(y.rows() - 1, j) = std::numeric_limits<Scalar>::quiet_NaN();
    }
  }

  Matrix probe_matrix(Index n) const {
    if (options_.trace == ode::TraceEstimator::Exact) return Matrix();
    return ode::hutchinson_probes<Scalar>(dim(), n, options_.trace, options_.probe_seed);
  }

  template <typename Rhs>
  ode::SolveStats integrate(Rhs& rhs, bool inverse, Matrix& y,
                            ode::StepRecord<Scalar>* record) const {
    const Scalar t0 = inverse ? Scalar(1) : Scalar(0);
    const Scalar t1 = inverse ? Scalar(0) : Scalar(1);
    if (options_.solver == OdeSolver::RK4)
      return ode::rk4_integrate(rhs, t0, t1, y, options_.rk4_steps, record);
    if (options_.solver == OdeSolver::Euler)
      return ode::euler_integrate(rhs, t0, t1, y, options_.rk4_steps, record);
    return ode::dopri5_integrate(rhs, t0, t1, y, options_.dopri5, record);
  }

  template <typename X, typename In, typename C>
  detail::ResultFor<Scalar, Dim, X> run(const In& in, const C& ctx, bool inverse) const {
    if constexpr (std::remove_cvref_t<In>::ColsAtCompileTime == 1 && Field::HasPointPath) {
      if (point_path()) return run_point<X>(in, ctx, inverse);
    }
    const auto s = solve(Matrix(in), context_matrix(ctx), inverse);
    detail::ResultFor<Scalar, Dim, X> r;
    r.value = s.value;
    r.log_det = s.log_det;
    return r;
  }

  /// Whether a fixed-size point takes run_point: a fixed-step solver, the exact trace and a
  /// closed form for it (one or two hidden layers).
  bool point_path() const {
    return options_.solver != OdeSolver::Dopri5 && options_.trace == ode::TraceEstimator::Exact &&
           (field_.network().hidden_layers() == 1 || field_.network().hidden_layers() == 2);
  }

  /// One point (fixed Dim and Hidden) through RK4 or Euler with the closed-form exact trace, on
  /// fixed-size vectors: no heap allocation. The same steps, stages and formulas as solve(), so
  /// the result equals the batch path's to rounding; a point that is not finite (or whose
  /// context is not) has a NaN log-det, one that becomes non-finite throws ode::OdeError.
  template <typename X, typename In, typename C>
  detail::ResultFor<Scalar, Dim, X> run_point(const In& in, const C& ctx, bool inverse) const {
    using PV = typename Field::PointVector;
    typename Field::PointSetup setup;
    bool context_finite = true;
    if constexpr (is_no_context_v<C>) {
      field_.prepare_point(setup);
    } else {
      field_.prepare_point(setup, ctx);
      context_finite = ctx.allFinite();
    }
    PV z = in;
    Scalar l = context_finite ? Scalar(0) : std::numeric_limits<Scalar>::quiet_NaN();
    const bool start_finite = context_finite && z.allFinite();
    const Scalar t0 = inverse ? Scalar(1) : Scalar(0);
    const Scalar t1 = inverse ? Scalar(0) : Scalar(1);
    const Index steps = options_.rk4_steps;
    const Scalar h = (t1 - t0) / Scalar(steps);
    PV k1, k2, k3, k4, stage;
    const bool rk4 = options_.solver == OdeSolver::RK4;
    // RK4's weights, as ode::rk4_tableau (b = 1/6, 1/3, 1/3, 1/6; c = 0, 1/2, 1/2, 1).
    const Scalar half = Scalar(0.5), b1 = Scalar(1) / 6, b2 = Scalar(1) / 3;
    // Two hidden layers: the trace never feeds back into z, so it is deferred: each evaluation
    // runs the MLP only and keeps d₀, d₁ in `chunk`; every PointChunkSize evaluations (and at the
    // end) point_traces computes their traces with one pass over C, and w_i·tr_i is added to l in
    // evaluation order. One hidden layer: tr = c·d₀ at once.
    const bool defer = field_.network().hidden_layers() == 2;
    constexpr int M = Field::PointChunkSize;
    typename Field::PointChunk chunk;
    std::array<Scalar, M> weight{};
    std::array<Scalar, M> trace{};
    int pending = 0;
    const auto flush = [&] {
      field_.point_traces(setup, chunk, pending, trace.data());
      for (int i = 0; i < pending; ++i) l += weight[std::size_t(i)] * trace[std::size_t(i)];
      pending = 0;
    };
    const auto eval = [&](Scalar t, const PV& x, PV& k, Scalar w) {
      if (defer) {
        field_.point_value(setup, t, x, k, chunk, pending);
        weight[std::size_t(pending++)] = w;
        if (pending == M) flush();
      } else {
        Scalar div;
        field_.point_value_and_divergence(setup, t, x, k, div);
        l += w * div;
      }
    };
    for (Index n = 0; n < steps; ++n) {
      const Scalar t = t0 + Scalar(n) * h;
      eval(t, z, k1, rk4 ? h * b1 : h);
      if (!rk4) {
        z += h * k1;
        continue;
      }
      stage = z + (h * half) * k1;
      eval(t + half * h, stage, k2, h * b2);
      stage = z + (h * half) * k2;
      eval(t + half * h, stage, k3, h * b2);
      stage = z + h * k3;
      eval(t + h, stage, k4, h * b1);
      z += (h * b1) * k1;
      z += (h * b2) * k2;
      z += (h * b2) * k3;
      z += (h * b1) * k4;
    }
    if (pending > 0) flush();
    if (start_finite && !(z.allFinite() && std::isfinite(l))) {
      throw ode::OdeError(
          std::string("nflow::ode::") + (rk4 ? "rk4_integrate" : "euler_integrate") +
          ": the state of sample 0 became non-finite by t = " + std::to_string(double(t1)) +
          " (the vector field blows up; lower the learning rate or the "
          "integration time)");
    }
    detail::ResultFor<Scalar, Dim, X> r;
    r.value = z;
    r.log_det(0) = start_finite ? l : std::numeric_limits<Scalar>::quiet_NaN();
    return r;
  }

  template <typename X, typename In, typename GV, typename GL, typename C>
  detail::BatchFor<Scalar, Dim, X> vjp(const In& in, const GV& gv, const GL& gl,
                                       Eigen::Ref<Vector<Scalar>> gp, const C& ctx,
                                       bool inverse) const {
    const Index d = dim();
    const Index n = in.cols();
    const Matrix context = context_matrix(ctx);
    const Matrix probes = probe_matrix(n);
    const Matrix* pp = options_.trace == ode::TraceEstimator::Exact ? nullptr : &probes;
    if (options_.gradient == ode::GradientMethod::Adjoint && options_.solver == OdeSolver::Dopri5) {
      Matrix gx;
      ode::adjoint_vjp(field_, inverse ? Scalar(1) : Scalar(0), inverse ? Scalar(0) : Scalar(1),
                       Matrix(in), context, Matrix(gv), typename Field::Row(gl), pp,
                       options_.dopri5, gx, gp);
      detail::BatchFor<Scalar, Dim, X> out = gx;
      return out;
    }
    Matrix y = augmented_state(in, context);
    Matrix f;
    typename Field::Row div;
    auto rhs = [&](Scalar t, const Matrix& state, Matrix& dstate) {
      field_.value_and_divergence(t, state.topRows(d), context, pp, f, div);
      dstate.topRows(d) = f;
      dstate.row(d) = div;
    };
    ode::StepRecord<Scalar> record;
    integrate(rhs, inverse, y, &record);
    // Stage re-evaluation needs f only (the log-det row feeds no later stage).
    auto stage_rhs = [&](Scalar t, const Matrix& state, Matrix& dstate) {
      dstate.topRows(d) = field_.value(t, state.topRows(d), context);
      dstate.row(d).setZero();
    };
    auto stage_vjp = [&](Scalar t, const Matrix& state, const Matrix& kbar, Matrix& ybar) {
      ybar.topRows(d) =
          field_.vjp(t, state.topRows(d), context, kbar.topRows(d), kbar.row(d), pp, gp);
      ybar.row(d).setZero();
    };
    Matrix adjoint(d + 1, n);
    adjoint.topRows(d) = gv;
    adjoint.row(d) = gl;
    if (options_.solver == OdeSolver::RK4) {
      ode::rk_backprop(ode::rk4_tableau<Scalar>(), record, stage_rhs, stage_vjp, adjoint);
    } else if (options_.solver == OdeSolver::Euler) {
      ode::rk_backprop(ode::euler_tableau<Scalar>(), record, stage_rhs, stage_vjp, adjoint);
    } else {
      ode::rk_backprop(ode::dopri5_tableau<Scalar>(), record, stage_rhs, stage_vjp, adjoint);
    }
    detail::BatchFor<Scalar, Dim, X> gx = adjoint.topRows(d);
    return gx;
  }

  ContinuousFlowOptions options_;
  Field field_;
};

}  // namespace nflow
