// The adjoint method for Dopri5 (nflow/ode/adjoint.hpp, ContinuousFlowOptions::gradient):
// against the discretise-then-optimise gradient as the tolerance tightens (forward, inverse,
// conditional, Hutchinson), against central finite differences of the loss, and bad input.
// One flow type (double, d = 2, run-time width and context) keeps the TU light.
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <nflow/bijectors/continuous.hpp>
#include <nflow/ode/adjoint.hpp>
#include <random>
#include <string>
#include <vector>

using namespace nflow;

namespace {

using MatrixXd = Eigen::MatrixXd;
using Cnf = ContinuousFlow<double, 2, Dynamic, nn::Tanh, Dynamic>;

/// A tanh field 2 → 12 → 12 → 2 (on [z; t; c]) with random weights of scale 0.6: not trivial
/// (Dopri5 takes several steps) and not stiff.
Cnf make_flow(ode::GradientMethod method, double tol, Index context_dim,
              ode::TraceEstimator trace = ode::TraceEstimator::Exact) {
  ode::Dopri5Options o;
  o.rtol = tol;
  o.atol = tol;
  Cnf f(2, {.hidden_width = 12,
            .hidden_layers = 2,
            .context_dim = context_dim,
            .seed = 4,
            .solver = OdeSolver::Dopri5,
            .dopri5 = o,
            .trace = trace,
            .probe_seed = 9,
            .gradient = method});
  std::mt19937_64 g(21);
  set_parameters(f,
                 Vector<double>(standard_normal_matrix<double>(f.parameter_count(), 1, g) * 0.6));
  return f;
}

/// The data of one case: inputs, context (maybe empty) and the loss's cotangents. The loss is
/// L = Σ G ∘ value + Σ g ∘ log_det (linear, so its cotangents are G and g).
struct Case {
  MatrixXd x;
  MatrixXd context;
  MatrixXd gv;
  Eigen::RowVectorXd gl;
};

Case make_case(Index n, Index context_dim, std::uint64_t seed) {
  std::mt19937_64 g(seed);
  Case c;
  c.x = standard_normal_matrix<double>(2, n, g);
  c.context = standard_normal_matrix<double>(context_dim, context_dim > 0 ? n : 0, g);
  c.gv = standard_normal_matrix<double>(2, n, g);
  c.gl = standard_normal_matrix<double>(1, n, g);
  return c;
}

struct Gradient {
  MatrixXd x;
  Vector<double> params;
  /// Both as one vector, for norms.
  Vector<double> all() const {
    Vector<double> v(x.size() + params.size());
    v << x.reshaped(), params;
    return v;
  }
};

Gradient gradients_of(const Cnf& flow, const Case& c, bool inverse) {
  Gradient r;
  r.params = Vector<double>::Zero(flow.parameter_count());
  if (flow.context_dim() == 0) {
    r.x = inverse ? flow.inverse_vjp(c.x, c.gv, c.gl, r.params)
                  : flow.forward_vjp(c.x, c.gv, c.gl, r.params);
  } else {
    r.x = inverse ? flow.inverse_vjp(c.x, c.gv, c.gl, r.params, c.context)
                  : flow.forward_vjp(c.x, c.gv, c.gl, r.params, c.context);
  }
  return r;
}

double loss_of(const Cnf& flow, const Case& c, const MatrixXd& x, bool inverse) {
  const auto s = flow.solve(x, c.context, inverse);
  return (c.gv.array() * s.value.array()).sum() + (c.gl.array() * s.log_det.array()).sum();
}

/// |adjoint − backprop| / |backprop| at rtol = atol = tol.
double discrepancy(const Case& c, Index context_dim, bool inverse, double tol,
                   ode::TraceEstimator trace = ode::TraceEstimator::Exact) {
  const Gradient bp =
      gradients_of(make_flow(ode::GradientMethod::Backprop, tol, context_dim, trace), c, inverse);
  const Gradient adj =
      gradients_of(make_flow(ode::GradientMethod::Adjoint, tol, context_dim, trace), c, inverse);
  return (adj.all() - bp.all()).norm() / bp.all().norm();
}

}  // namespace

TEST_CASE("the adjoint gradient converges to the back-propagated one as the tolerance tightens",
          "[ode][adjoint]") {
  struct Setting {
    const char* name;
    Index context_dim;
    bool inverse;
    ode::TraceEstimator trace;
  };
  const auto exact = ode::TraceEstimator::Exact;
  for (const Setting& s :
       {Setting{"forward", 0, false, exact}, Setting{"inverse", 0, true, exact},
        Setting{"forward, context", 2, false, exact}, Setting{"inverse, context", 2, true, exact},
        Setting{"forward, Hutchinson", 0, false, ode::TraceEstimator::HutchinsonRademacher}}) {
    SECTION(s.name) {
      const Case c = make_case(5, s.context_dim, 31);
      std::vector<double> err;
      for (double tol : {1e-4, 1e-6, 1e-8}) {
        err.push_back(discrepancy(c, s.context_dim, s.inverse, tol, s.trace));
      }
      INFO("relative differences at 1e-8, 1e-6, 1e-4: " << err[2] << ", " << err[1] << ", "
                                                        << err[0]);
      CHECK(err[1] < err[0]);
      CHECK(err[2] < err[1]);
      CHECK(err[2] < 1e-5);
      CHECK(err[0] > 0);  // the two methods are different computations
    }
  }
}

TEST_CASE("the adjoint gradient matches central finite differences of the loss", "[ode][adjoint]") {
  for (bool inverse : {false, true}) {
    const Index context_dim = inverse ? 1 : 0;
    const Case c = make_case(3, context_dim, 41);
    const double tol = 1e-10;
    const Cnf adj = make_flow(ode::GradientMethod::Adjoint, tol, context_dim);
    const Gradient g = gradients_of(adj, c, inverse);
    const double h = 1e-5;
    // ∂L/∂x, every entry.
    for (Index i = 0; i < c.x.size(); ++i) {
      MatrixXd xp = c.x;
      MatrixXd xm = c.x;
      xp(i) += h;
      xm(i) -= h;
      const double fd = (loss_of(adj, c, xp, inverse) - loss_of(adj, c, xm, inverse)) / (2 * h);
      INFO("inverse " << inverse << ", x entry " << i);
      CHECK(g.x(i) == Approx(fd).epsilon(1e-6).margin(1e-7));
    }
    // ∂L/∂θ, every fifth parameter.
    const Vector<double> theta = get_parameters(adj);
    for (Index i = 0; i < theta.size(); i += 5) {
      Cnf moved = adj;
      Vector<double> t = theta;
      t(i) += h;
      set_parameters(moved, t);
      const double lp = loss_of(moved, c, c.x, inverse);
      t(i) = theta(i) - h;
      set_parameters(moved, t);
      const double lm = loss_of(moved, c, c.x, inverse);
      INFO("inverse " << inverse << ", parameter " << i);
      CHECK(g.params(i) == Approx((lp - lm) / (2 * h)).epsilon(1e-6).margin(1e-7));
    }
  }
}

TEST_CASE("the adjoint: bad input, fallbacks and errors", "[ode][adjoint][errors]") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const Cnf adj = make_flow(ode::GradientMethod::Adjoint, 1e-6, 1);
  Case c = make_case(5, 1, 51);

  SECTION("non-finite samples get NaN and leave the other samples' gradients alone") {
    // The adjoint drops bad columns from both solves, so the result is the clean sub-batch's
    // (to the bit: the same solves run).
    Case bad = c;
    bad.x(1, 1) = nan;
    bad.context(0, 3) = std::numeric_limits<double>::infinity();
    Case clean;
    const std::vector<Index> keep{0, 2, 4};
    clean.x = bad.x(Eigen::all, keep);
    clean.context = bad.context(Eigen::all, keep);
    clean.gv = bad.gv(Eigen::all, keep);
    clean.gl = bad.gl(Eigen::all, keep);
    const Gradient gb = gradients_of(adj, bad, false);
    const Gradient gc = gradients_of(adj, clean, false);
    CHECK(std::isnan(gb.x(0, 1)));
    CHECK(std::isnan(gb.x(1, 3)));
    CHECK(gb.params.allFinite());
    CHECK(gb.params == gc.params);
    CHECK(MatrixXd(gb.x(Eigen::all, keep)) == gc.x);
    // A batch of only bad samples: NaN gradients for x, nothing added to the parameters.
    Case all_bad = c;
    all_bad.x.setConstant(nan);
    const Gradient ga = gradients_of(adj, all_bad, true);
    CHECK(ga.x.array().isNaN().all());
    CHECK(ga.params.isZero(0));
  }

  SECTION("fixed-step solvers back-propagate whatever the option says") {
    Cnf a = adj;
    Cnf b = make_flow(ode::GradientMethod::Backprop, 1e-6, 1);
    for (auto solver : {OdeSolver::RK4, OdeSolver::Euler}) {
      a.set_solver(solver, 7);
      b.set_solver(solver, 7);
      CHECK(gradients_of(a, c, false).all() == gradients_of(b, c, false).all());
    }
  }

  SECTION("solver failures and invalid options throw") {
    Cnf a = adj;
    ode::Dopri5Options few;
    few.max_steps = 3;
    few.rtol = few.atol = 1e-12;
    a.set_solver(OdeSolver::Dopri5, 20, few);
    CHECK_THROWS_AS(gradients_of(a, c, false), ode::OdeError);
    ode::Dopri5Options wrong;
    wrong.rtol = -1;
    a.set_solver(OdeSolver::Dopri5, 20, wrong);
    CHECK_THROWS_AS(gradients_of(a, c, true), ParameterError);
  }

  SECTION("a flow that contracts too strongly to be re-integrated backwards throws") {
    // Weights N(0, 1), the output layer's × 5: log-dets about −15, and z integrated back to
    // t = 0 misses x by ~1 whatever the tolerance (the adjoint's gradient is then off by 26 %
    // at 1e-4, 0.4 % at 1e-10). Default tolerances (1e-5).
    Cnf f(2, {.hidden_width = 16,
              .seed = 1,
              .solver = OdeSolver::Dopri5,
              .gradient = ode::GradientMethod::Adjoint});
    std::mt19937_64 g(7);
    Vector<double> p = standard_normal_matrix<double>(f.parameter_count(), 1, g);
    p.segment(p.size() - 2 - 32, 32) *= 5.0;
    set_parameters(f, p);
    Case strong = make_case(16, 0, 61);
    CHECK(f.forward_and_log_det(strong.x).log_det.mean() < -10);
    CHECK_THROWS_AS(gradients_of(f, strong, false), ode::OdeError);
    // The healthy flow of the other cases stays well below the bound.
    MatrixXd gx;
    Vector<double> gp = Vector<double>::Zero(adj.parameter_count());
    const auto s =
        ode::adjoint_vjp(adj.field(), 0.0, 1.0, c.x, c.context, c.gv, Eigen::RowVectorXd(c.gl),
                         nullptr, adj.options().dopri5, gx, gp);
    CHECK(s.reconstruction_error < 100);
    CHECK(s.reconstruction_miss < 1e-4);
  }

  SECTION("ode::adjoint_vjp checks its shapes") {
    MatrixXd gx;
    Vector<double> gp = Vector<double>::Zero(adj.parameter_count());
    Vector<double> short_gp = Vector<double>::Zero(3);
    const Eigen::RowVectorXd gl = c.gl;
    CHECK_THROWS_AS(ode::adjoint_vjp(adj.field(), 0.0, 1.0, c.x, c.context, c.gv, gl, nullptr,
                                     adj.options().dopri5, gx, short_gp),
                    ShapeError);
    CHECK_THROWS_AS(
        ode::adjoint_vjp(adj.field(), 0.0, 1.0, c.x, c.context, MatrixXd(c.gv.leftCols(2)), gl,
                         nullptr, adj.options().dopri5, gx, gp),
        ShapeError);
    const MatrixXd probes(2, 2);
    CHECK_THROWS_AS(ode::adjoint_vjp(adj.field(), 0.0, 1.0, c.x, c.context, c.gv, gl, &probes,
                                     adj.options().dopri5, gx, gp),
                    ShapeError);
    // The working set does not depend on the number of steps.
    const auto loose = ode::adjoint_vjp(adj.field(), 0.0, 1.0, c.x, c.context, c.gv, gl, nullptr,
                                        adj.options().dopri5, gx, gp);
    ode::Dopri5Options tight;
    tight.rtol = tight.atol = 1e-10;
    const auto strict =
        ode::adjoint_vjp(adj.field(), 0.0, 1.0, c.x, c.context, c.gv, gl, nullptr, tight, gx, gp);
    CHECK(strict.backward.accepted_steps > 4 * loose.backward.accepted_steps);
    CHECK(strict.working_scalars() == loose.working_scalars());
    CHECK(loose.state_rows == 4);
    CHECK(loose.state_cols == 5 + (adj.parameter_count() + 3) / 4);
  }
}
