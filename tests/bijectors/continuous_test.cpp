// Continuous flows: the ODE solvers against a linear ODE with a known solution, the exact and
// Hutchinson divergences, round trips, log-dets against finite-difference Jacobians, bad input,
// and flow matching. The shared laws (gradients through RK4 and Dormand-Prince with exact and
// Hutchinson traces included) run in the conformance list (tests/conformance/conformance.hpp).
#include <Eigen/Cholesky>
#include <Eigen/Eigenvalues>
#include <Eigen/LU>
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <nflow/bijectors/continuous.hpp>
#include <nflow/distributions/density.hpp>
#include <nflow/distributions/standard_normal.hpp>
#include <nflow/ode/solvers.hpp>
#include <nflow/train/flow_matching.hpp>
#include <random>
#include <string>
#include <vector>

using namespace nflow;

namespace {

using MatrixXd = Eigen::MatrixXd;

/// exp(A) by scaling and squaring with a Taylor series (A small, test only).
MatrixXd expm(const MatrixXd& a) {
  const int squarings = 8;
  const MatrixXd s = a / double(1 << squarings);
  MatrixXd result = MatrixXd::Identity(a.rows(), a.cols());
  MatrixXd term = result;
  for (int k = 1; k < 20; ++k) {
    term = term * s / double(k);
    result += term;
  }
  for (int i = 0; i < squarings; ++i) result = result * result;
  return result;
}

template <typename B>
B randomize(B b, std::uint64_t seed, double scale) {
  using S = typename B::Scalar;
  std::mt19937_64 g(seed);
  set_parameters(b, Vector<S>(standard_normal_matrix<S>(b.parameter_count(), 1, g) * S(scale)));
  return b;
}

/// log|det| of the central-difference Jacobian of a map of one column.
template <typename Map>
double fd_log_det(Map&& map, const Eigen::VectorXd& x, double h) {
  const Index d = x.size();
  MatrixXd jac(d, d);
  for (Index k = 0; k < d; ++k) {
    auto f = [&](double s) {
      Eigen::VectorXd xs = x;
      xs(k) += s;
      return Eigen::VectorXd(map(xs));
    };
    jac.col(k) = (8.0 * (f(h) - f(-h)) - (f(2 * h) - f(-2 * h))) / (12.0 * h);
  }
  return std::log(std::abs(jac.determinant()));
}

}  // namespace

TEST_CASE("RK4 and Dopri5 solve a linear ODE: z(1) = exp(A) z(0), log-det = tr(A)",
          "[continuous][ode]") {
  MatrixXd a(3, 3);
  a << 0.2, -0.7, 0.1,  //
      0.5, -0.3, 0.4,   //
      -0.2, 0.3, 0.1;
  std::mt19937_64 gen(1);
  const MatrixXd z0 = standard_normal_matrix<double>(3, 5, gen);
  MatrixXd y(4, 5);
  y.topRows(3) = z0;
  y.row(3).setZero();
  auto rhs = [&](double, const MatrixXd& s, MatrixXd& ds) {
    ds.topRows(3) = a * s.topRows(3);
    ds.row(3).setConstant(a.trace());
  };
  const MatrixXd expected = expm(a) * z0;

  MatrixXd y_rk = y;
  const auto rk = ode::rk4_integrate(rhs, 0.0, 1.0, y_rk, 50);
  CHECK(rk.function_evaluations == 200);
  CHECK((y_rk.topRows(3) - expected).cwiseAbs().maxCoeff() < 1e-8);
  CHECK((y_rk.row(3).array() - a.trace()).abs().maxCoeff() < 1e-12);

  MatrixXd y_dp = y;
  ode::Dopri5Options tight;
  tight.rtol = 1e-10;
  tight.atol = 1e-10;
  const auto dp = ode::dopri5_integrate(rhs, 0.0, 1.0, y_dp, tight);
  CHECK(dp.function_evaluations > 0);
  CHECK(dp.accepted_steps > 1);
  CHECK((y_dp.topRows(3) - expected).cwiseAbs().maxCoeff() < 1e-8);
  CHECK((y_dp.row(3).array() - a.trace()).abs().maxCoeff() < 1e-10);

  // Backwards in time returns to the start.
  ode::dopri5_integrate(rhs, 1.0, 0.0, y_dp, tight);
  CHECK((y_dp.topRows(3) - z0).cwiseAbs().maxCoeff() < 1e-8);
  CHECK(y_dp.row(3).cwiseAbs().maxCoeff() < 1e-10);

  // Looser tolerances take fewer evaluations; the error shrinks with the tolerance.
  MatrixXd y_loose = y;
  ode::Dopri5Options loose;
  loose.rtol = 1e-4;
  loose.atol = 1e-4;
  const auto dl = ode::dopri5_integrate(rhs, 0.0, 1.0, y_loose, loose);
  CHECK(dl.function_evaluations < dp.function_evaluations);
  CHECK((y_loose.topRows(3) - expected).cwiseAbs().maxCoeff() < 1e-3);
}

TEST_CASE("the pushforward of N(0, I) under dz/dt = A z is N(0, e^A e^Aᵀ)", "[continuous][ode]") {
  // A linear field built as a ContinuousFlow with an Identity-activation MLP of one hidden layer:
  // f(z) = W₁(W₀ z + C₀ t + b₀) + b₁ with C₀ = 0 and zero biases is linear, A = W₁W₀.
  using Flow = ContinuousFlow<double, 3, Dynamic, nn::Identity>;
  ContinuousFlowOptions o;
  o.hidden_width = 3;
  o.hidden_layers = 1;
  o.solver = OdeSolver::Dopri5;
  o.dopri5.rtol = 1e-11;
  o.dopri5.atol = 1e-11;
  Flow flow(3, o);
  std::mt19937_64 gen(2);
  MatrixXd w0 = standard_normal_matrix<double>(3, 3, gen) * 0.5;
  MatrixXd w1 = standard_normal_matrix<double>(3, 3, gen) * 0.5;
  flow.visit_parameters([&](const std::string& name, auto t) {
    if (name == "field.layers.0.weight")
      t = w0;
    else if (name == "field.layers.1.weight")
      t = w1;
    else
      t.setZero();
  });
  const MatrixXd a = w1 * w0;
  // Sampling: x = inverse(z) = e^{-A} z, so x ~ N(0, e^{-A} e^{-Aᵀ}); equivalently log p(x) =
  // log N(e^{A} x; 0, I) + tr(A). Check log-densities at 100 points.
  const MatrixXd x = standard_normal_matrix<double>(3, 100, gen);
  const auto r = flow.forward_and_log_det(x);
  const MatrixXd ea = expm(a);
  const MatrixXd cov = ea.inverse() * ea.inverse().transpose();  // covariance of x
  const Eigen::LLT<MatrixXd> llt(cov);
  const double log_norm = -1.5 * std::log(2 * Constants<double>::pi) -
                          MatrixXd(llt.matrixL()).diagonal().array().log().sum();
  double worst = 0;
  for (Index j = 0; j < 100; ++j) {
    const double exact = log_norm - 0.5 * x.col(j).dot(llt.solve(x.col(j)));
    const double flow_lp = -1.5 * std::log(2 * Constants<double>::pi) -
                           0.5 * r.value.col(j).squaredNorm() + r.log_det(j);
    worst = std::max(worst, std::abs(exact - flow_lp));
  }
  CHECK(worst < 1e-6);
  CHECK((r.log_det.array() - a.trace()).abs().maxCoeff() < 1e-9);
}

TEST_CASE("the exact divergence equals the trace of the MLP's Jacobian", "[continuous][trace]") {
  using Flow = ContinuousFlow<double, 4, 16, nn::Tanh>;
  const Flow flow = randomize(Flow(4, {.hidden_width = 16, .hidden_layers = 3, .seed = 1}), 3, 0.4);
  std::mt19937_64 gen(4);
  const MatrixXd z = standard_normal_matrix<double>(4, 6, gen);
  const auto div = flow.divergence(z, 0.3);
  for (Index j = 0; j < 6; ++j) {
    MatrixXd tc(1, 1);
    tc(0, 0) = 0.3;
    const MatrixXd jac = flow.field().network().input_jacobian(Eigen::VectorXd(z.col(j)), tc);
    CHECK(std::abs(div(j) - jac.trace()) < 1e-12);
  }
}

TEST_CASE("the closed-form exact trace (one and two hidden layers) equals the Jacobian's trace",
          "[continuous][trace]") {
  for (Index layers : {Index(1), Index(2), Index(3)}) {
    using Flow = ContinuousFlow<double, Dynamic, Dynamic, nn::Tanh>;
    const Flow flow =
        randomize(Flow(5, {.hidden_width = 12, .hidden_layers = layers, .seed = 1}), 3, 0.4);
    const auto& field = flow.field();
    const MatrixXd trace = field.trace_matrix();
    CHECK(trace.size() ==
          (layers == 2 ? 144 : (layers == 1 ? 12 : 0)));  // 3 layers: no closed form
    std::mt19937_64 gen(5);
    const MatrixXd z = standard_normal_matrix<double>(5, 7, gen);
    MatrixXd f, f_closed;
    Eigen::RowVectorXd div, div_closed;
    field.value_and_divergence(0.6, z, MatrixXd(), nullptr, f, div);  // Dim tangent passes
    field.value_and_divergence(0.6, z, MatrixXd(), nullptr, f_closed, div_closed, &trace);
    CHECK((f - f_closed).cwiseAbs().maxCoeff() == 0.0);
    for (Index j = 0; j < 7; ++j) {
      MatrixXd tc(1, 1);
      tc(0, 0) = 0.6;
      const double exact = field.network().input_jacobian(Eigen::VectorXd(z.col(j)), tc).trace();
      CHECK(std::abs(div_closed(j) - exact) < 1e-12);
      CHECK(std::abs(div(j) - exact) < 1e-12);
    }
  }
}

TEST_CASE("Hutchinson's estimate is unbiased", "[continuous][trace]") {
  using Flow = ContinuousFlow<double, 5, 16, nn::Tanh>;
  const Flow flow = randomize(Flow(5, {.hidden_width = 16, .hidden_layers = 2, .seed = 1}), 5, 0.5);
  std::mt19937_64 gen(6);
  const Eigen::VectorXd z = standard_normal_matrix<double>(5, 1, gen);
  const double exact = flow.divergence(z, 0.7)(0);
  for (auto kind :
       {ode::TraceEstimator::HutchinsonRademacher, ode::TraceEstimator::HutchinsonGaussian}) {
    const Index m = 20000;
    const MatrixXd zs = z.replicate(1, m);
    const MatrixXd probes = ode::hutchinson_probes<double>(5, m, kind, 99);
    const Eigen::RowVectorXd est = flow.divergence_estimate(zs, 0.7, probes);
    const double mean = est.mean();
    const double sd = std::sqrt((est.array() - mean).square().sum() / double(m - 1));
    INFO("exact " << exact << " mean " << mean << " standard error " << sd / std::sqrt(double(m)));
    CHECK(std::abs(mean - exact) < 4 * sd / std::sqrt(double(m)));
    CHECK(sd > 0);
  }
}

TEST_CASE("a continuous flow round-trips and its log-det matches the finite-difference Jacobian",
          "[continuous]") {
  using Flow = ContinuousFlow<double, 3, 16, nn::Tanh>;
  std::mt19937_64 gen(7);
  const MatrixXd x = standard_normal_matrix<double>(3, 4, gen);
  for (auto solver : {OdeSolver::RK4, OdeSolver::Dopri5}) {
    Flow flow = randomize(Flow(3, {.hidden_width = 16, .hidden_layers = 2, .seed = 1}), 8, 0.5);
    ode::Dopri5Options tight;
    tight.rtol = 1e-10;
    tight.atol = 1e-10;
    flow.set_solver(solver, 200, tight);
    const auto f = flow.forward_and_log_det(x);
    const auto b = flow.inverse_and_log_det(f.value);
    CHECK((b.value - x).cwiseAbs().maxCoeff() < 1e-8);
    CHECK((f.log_det + b.log_det).cwiseAbs().maxCoeff() < 1e-8);
    for (Index j = 0; j < x.cols(); ++j) {
      const double fd =
          fd_log_det([&](const Eigen::VectorXd& p) { return Eigen::VectorXd(flow.forward(p)); },
                     Eigen::VectorXd(x.col(j)), 1e-3);
      CHECK(std::abs(fd - f.log_det(j)) < 1e-7);
    }
  }
}

TEST_CASE("the context changes the map, and a conditional flow checks its context",
          "[continuous][context]") {
  using Flow = ContinuousFlow<double, 2, 8, nn::Tanh, Dynamic>;
  const Flow flow = randomize(
      Flow(2, {.hidden_width = 8, .hidden_layers = 2, .context_dim = 1, .seed = 1}), 14, 0.5);
  std::mt19937_64 gen(15);
  const MatrixXd x = standard_normal_matrix<double>(2, 5, gen);
  const MatrixXd c0 = MatrixXd::Zero(1, 5);
  const MatrixXd c1 = MatrixXd::Ones(1, 5);
  CHECK((flow.forward(x, c0) - flow.forward(x, c1)).norm() > 1e-3);
  CHECK((flow.inverse(flow.forward(x, c1), c1) - x).cwiseAbs().maxCoeff() < 1e-6);
  CHECK_THROWS_AS(flow.forward(x), ShapeError);
  CHECK_THROWS_AS(flow.forward(x, MatrixXd::Zero(2, 5)), ShapeError);
  CHECK_THROWS_AS(flow.forward(x, MatrixXd::Zero(1, 4)), ShapeError);
  CHECK_THROWS_AS((ContinuousFlow<double, 2>(
                      2, {.hidden_width = 8, .hidden_layers = 2, .context_dim = 1, .seed = 1})),
                  ParameterError);
  CHECK_THROWS_AS((ContinuousFlow<double, 2>(3)), ParameterError);
}

TEST_CASE("bad input: NaN columns stay NaN, ODE failures throw", "[continuous][errors]") {
  using Flow = ContinuousFlow<double, 2, 8, nn::Tanh>;
  Flow flow = randomize(Flow(2, {.hidden_width = 8, .hidden_layers = 2, .seed = 1}), 16, 0.5);
  std::mt19937_64 gen(17);
  MatrixXd x = standard_normal_matrix<double>(2, 4, gen);
  for (auto solver : {OdeSolver::RK4, OdeSolver::Dopri5}) {
    flow.set_solver(solver);
    const auto clean = flow.forward_and_log_det(x);
    MatrixXd bad = x;
    bad(1, 2) = std::numeric_limits<double>::quiet_NaN();
    bad(0, 3) = std::numeric_limits<double>::infinity();
    const auto r = flow.forward_and_log_det(bad);
    CHECK(non_finite_columns(r.value) == std::vector<Index>{2, 3});
    CHECK(!std::isfinite(r.log_det(2)));
    CHECK(!std::isfinite(r.log_det(3)));
    CHECK((r.value.leftCols(2) - clean.value.leftCols(2)).cwiseAbs().maxCoeff() < 1e-6);
    // A batch of only bad columns does not throw.
    CHECK_NOTHROW(flow.forward(MatrixXd::Constant(2, 3, std::numeric_limits<double>::quiet_NaN())));
  }
  // Too few steps allowed.
  ode::Dopri5Options few;
  few.max_steps = 2;
  few.rtol = 1e-12;
  few.atol = 1e-12;
  flow.set_solver(OdeSolver::Dopri5, 20, few);
  CHECK_THROWS_AS(flow.forward(x), ode::OdeError);
  // A field that blows up in finite time: dz/dt = z², z(0) = 2 reaches infinity at t = 1/2.
  MatrixXd y = MatrixXd::Constant(1, 1, 2.0);
  auto rhs = [](double, const MatrixXd& s, MatrixXd& ds) { ds = s.array().square(); };
  MatrixXd y2 = y;
  CHECK_THROWS_AS(ode::dopri5_integrate(rhs, 0.0, 1.0, y2), ode::OdeError);
  MatrixXd y3 = y;
  CHECK_THROWS_AS(ode::rk4_integrate(rhs, 0.0, 1.0, y3, 50), ode::OdeError);
  CHECK_THROWS_AS(ode::rk4_integrate(rhs, 0.0, 1.0, y3, 0), ParameterError);
  ode::Dopri5Options wrong;
  wrong.rtol = -1;
  CHECK_THROWS_AS(ode::dopri5_integrate(rhs, 0.0, 1.0, y3, wrong), ParameterError);
}

TEST_CASE("solve() reports the solver's work", "[continuous][ode]") {
  using Flow = ContinuousFlow<double, 2, 8, nn::Tanh>;
  Flow flow = randomize(Flow(2, {.hidden_width = 8, .hidden_layers = 2, .seed = 1}), 18, 0.5);
  std::mt19937_64 gen(19);
  const MatrixXd x = standard_normal_matrix<double>(2, 8, gen);
  flow.set_solver(OdeSolver::RK4, 10);
  const auto rk = flow.solve(x, MatrixXd(), false);
  CHECK(rk.stats.function_evaluations == 40);
  CHECK(rk.stats.accepted_steps == 10);
  ode::Dopri5Options o;
  flow.set_solver(OdeSolver::Dopri5, 20, o);
  const auto loose = flow.solve(x, MatrixXd(), false);
  o.rtol = o.atol = 1e-9;
  flow.set_solver(OdeSolver::Dopri5, 20, o);
  const auto tight = flow.solve(x, MatrixXd(), false);
  CHECK(loose.stats.function_evaluations > 0);
  CHECK(tight.stats.function_evaluations > loose.stats.function_evaluations);
  CHECK(tight.stats.function_evaluations ==
        2 + 6 * (tight.stats.accepted_steps + tight.stats.rejected_steps));
}

TEST_CASE("solve() says 'no context' as every other call does", "[continuous][context]") {
  using Flow = ContinuousFlow<double, 2, 8, nn::Tanh>;
  const Flow flow = randomize(Flow(2, {.seed = 1}), 18, 0.5);
  std::mt19937_64 gen(19);
  const MatrixXd x = standard_normal_matrix<double>(2, 8, gen);
  const auto a = flow.solve(x, no_context, false);
  const auto b = flow.solve(x, MatrixXd(), false);  // the older spelling still works
  CHECK(a.value == b.value);
  CHECK(a.log_det == b.log_det);
  CHECK(a.value == flow.forward(x));
  using Conditional = ContinuousFlow<double, 2, 8, nn::Tanh, 1>;
  const Conditional conditional(2);
  CHECK_THROWS_WITH(conditional.solve(x, no_context, true),
                    Catch::Contains("conditional") && Catch::Contains("1 rows"));
}

TEST_CASE("a continuous flow's options: 0 means the compile-time Hidden", "[continuous][errors]") {
  using Flow = ContinuousFlow<double, 2, 8, nn::Tanh>;
  CHECK(Flow(2).options().hidden_width == 8);
  CHECK(Flow(2).field().parameter_count() ==
        Flow(2, {.hidden_width = 8}).field().parameter_count());
  CHECK(ContinuousFlow<double>(2).options().hidden_width == 64);
  CHECK_THROWS_WITH(Flow(2, {.hidden_width = 64}),
                    Catch::Contains("'hidden_width' = 64") && Catch::Contains("Hidden = 8"));
}

TEST_CASE("the flow-matching gradient matches finite differences", "[continuous][flow_matching]") {
  using Flow = ContinuousFlow<double, 2, 8, nn::Tanh, Dynamic>;
  Flow flow = randomize(
      Flow(2, {.hidden_width = 8, .hidden_layers = 2, .context_dim = 1, .seed = 1}), 20, 0.5);
  std::mt19937_64 gen(21);
  const MatrixXd x1 = standard_normal_matrix<double>(2, 5, gen);
  const MatrixXd x0 = standard_normal_matrix<double>(2, 5, gen);
  const MatrixXd c = standard_normal_matrix<double>(1, 5, gen);
  Eigen::RowVectorXd tau(5);
  for (Index j = 0; j < 5; ++j) tau(j) = uniform_open01(gen);
  Eigen::VectorXd grad = Eigen::VectorXd::Zero(flow.parameter_count());
  train::flow_matching_loss(flow.field(), x1, x0, tau, c, 0.01, grad);
  const Eigen::VectorXd theta = get_parameters(flow);
  Eigen::VectorXd fd(theta.size());
  Eigen::VectorXd scratch(theta.size());
  for (Index i = 0; i < theta.size(); ++i) {
    auto loss = [&](double h) {
      Eigen::VectorXd t = theta;
      t(i) += h;
      set_parameters(flow, t);
      return train::flow_matching_loss(flow.field(), x1, x0, tau, c, 0.01, scratch);
    };
    const double h = 1e-4;
    fd(i) = (8 * (loss(h) - loss(-h)) - (loss(2 * h) - loss(-2 * h))) / (12 * h);
  }
  set_parameters(flow, theta);
  CHECK((grad - fd).cwiseAbs().maxCoeff() / std::max(1.0, fd.cwiseAbs().maxCoeff()) < 1e-8);
  // The loss alone (validation, no gradient buffer) is the same number, for given noise and
  // times and for noise and times drawn from a generator in the same state.
  CHECK(train::flow_matching_loss_value(flow.field(), x1, x0, tau, c, 0.01) ==
        train::flow_matching_loss(flow.field(), x1, x0, tau, c, 0.01, scratch));
  std::mt19937_64 g1(5), g2(5);
  CHECK(train::flow_matching_loss_value(flow.field(), x1, c, 0.01, g1) ==
        train::flow_matching_loss(flow.field(), x1, c, 0.01, g2, scratch));
  CHECK(g1() == g2());
  CHECK_THROWS_AS(train::flow_matching_loss_value(flow.field(), x1, x0, tau, MatrixXd(), 0.0),
                  ShapeError);
  // A conditional field without its context.
  CHECK_THROWS_AS(train::flow_matching_loss(flow.field(), x1, x0, tau, MatrixXd(), 0.0, grad),
                  ShapeError);
}

namespace {
/// The flow-matching optimum for N(0, I) → N(μ, Σ) in the noise → data convention (σ_min = 0).
Eigen::Vector2d optimal_velocity(const Eigen::Vector2d& x, double tau, const Eigen::Vector2d& mu,
                                 const Eigen::Matrix2d& sigma) {
  const Eigen::Matrix2d i = Eigen::Matrix2d::Identity();
  const Eigen::Matrix2d ct = (1 - tau) * (1 - tau) * i + tau * tau * sigma;
  return mu + (tau * sigma - (1 - tau) * i) * ct.inverse() * (x - tau * mu);
}
}  // namespace

TEST_CASE(
    "flow matching learns a Gaussian: field near the optimum, exact likelihood near the truth",
    "[continuous][flow_matching]") {
  const Eigen::Vector2d mu(1.0, -0.5);
  Eigen::Matrix2d sigma;
  sigma << 0.8, 0.3, 0.3, 0.5;
  const Eigen::Matrix2d chol = sigma.llt().matrixL();
  std::mt19937_64 gen(22);
  const MatrixXd train_data = (chol * standard_normal_matrix<double>(2, 4096, gen)).colwise() + mu;
  const MatrixXd test_data = (chol * standard_normal_matrix<double>(2, 500, gen)).colwise() + mu;

  using Flow = ContinuousFlow<double, 2, 32, nn::Tanh>;
  Flow flow(2, {.hidden_width = 32, .hidden_layers = 2, .seed = 23});
  train::FlowMatchingOptions fm;
  fm.steps = 1500;
  fm.batch_size = 256;
  fm.adam.learning_rate = 3e-3;
  fm.schedule = train::Schedule::cosine(0.05);
  const auto result = train::fit_flow_matching(flow, {.samples = train_data}, fm);
  CHECK(result.steps == 1500);
  CHECK(std::isfinite(result.final_loss));
  // A context for this unconditional flow is an error naming it, raised before any step.
  const Vector<double> trained = get_parameters(flow);
  CHECK_THROWS_WITH(
      (train::fit_flow_matching(flow, {.samples = train_data, .context = test_data}, fm)),
      Catch::Contains("takes no context") && Catch::Contains("data.context"));
  CHECK(get_parameters(flow) == trained);

  // The field against the analytic optimum f*(x, t) = −v*(x, 1 − t), on typical points.
  double field_err = 0;
  double field_scale = 0;
  for (double tau : {0.2, 0.5, 0.8}) {
    const MatrixXd x =
        (tau * mu).replicate(1, 50) +
        MatrixXd(((1 - tau) * (1 - tau) * Eigen::Matrix2d::Identity() + tau * tau * sigma)
                     .llt()
                     .matrixL()) *
            standard_normal_matrix<double>(2, 50, gen);
    const MatrixXd f = flow.field().value(1 - tau, x, MatrixXd());
    for (Index j = 0; j < 50; ++j) {
      const Eigen::Vector2d v = optimal_velocity(x.col(j), tau, mu, sigma);
      field_err += (f.col(j) + v).squaredNorm();
      field_scale += v.squaredNorm();
    }
  }
  INFO("relative mean squared field error " << field_err / field_scale);
  CHECK(field_err / field_scale < 0.02);

  // Exact log-likelihood of held-out data (exact trace, Dopri5) against the true density.
  ode::Dopri5Options tight;
  tight.rtol = tight.atol = 1e-6;
  flow.set_solver(OdeSolver::Dopri5, 20, tight);
  const auto r = flow.forward_and_log_det(test_data);
  const Eigen::LLT<Eigen::Matrix2d> llt(sigma);
  double flow_ll = 0;
  double true_ll = 0;
  for (Index j = 0; j < test_data.cols(); ++j) {
    flow_ll +=
        -std::log(2 * Constants<double>::pi) - 0.5 * r.value.col(j).squaredNorm() + r.log_det(j);
    const Eigen::Vector2d d = test_data.col(j) - mu;
    true_ll += -std::log(2 * Constants<double>::pi) -
               std::log(Eigen::Matrix2d(llt.matrixL()).diagonal().prod()) -
               0.5 * d.dot(llt.solve(d));
  }
  flow_ll /= double(test_data.cols());
  true_ll /= double(test_data.cols());
  INFO("held-out mean log-likelihood: flow " << flow_ll << ", true " << true_ll);
  CHECK(std::abs(flow_ll - true_ll) < 0.05);
}

TEST_CASE("flow matching from a sampler: replaying the data set's batches gives the same field",
          "[continuous][flow_matching][sampler]") {
  std::mt19937_64 gen(26);
  const MatrixXd data = standard_normal_matrix<double>(2, 64, gen);
  using Flow = ContinuousFlow<double, 2, 32, nn::Tanh>;
  const train::FlowMatchingOptions fm{.batch_size = 16, .steps = 9, .seed = 4};
  Flow a(2, {.hidden_width = 32, .hidden_layers = 2, .seed = 27});
  Flow b = a;
  train::fit_flow_matching(a, {.samples = data}, fm);
  // The sampler draws the loop's permutation from the generator it is handed, as the data set's
  // batches are drawn (a fresh one every 64 / 16 = 4 steps).
  Eigen::VectorXi order;
  const auto r = train::fit_flow_matching(
      b, train::sampler([&](auto& x, auto& c, Index step, std::mt19937_64& g) {
        CHECK(c.size() == 0);
        if (step % 4 == 0) order = random_permutation(64, g);
        for (Index j = 0; j < 16; ++j) x.col(j) = data.col(order((step % 4) * 16 + j));
      }),
      fm);
  CHECK(r.steps == 9);
  CHECK(get_parameters(a) == get_parameters(b));
  // Bad batches are named: the wrong rows, a context for this unconditional flow, a gap.
  CHECK_THROWS_WITH(
      (train::fit_flow_matching(
          b, train::sampler([](auto& x, auto&, std::mt19937_64&) { x.setZero(3, 16); }), fm)),
      Catch::Contains("the sampler") && Catch::Contains("3 x 16") && Catch::Contains("2 rows"));
  CHECK_THROWS_WITH((train::fit_flow_matching(b, train::sampler([](auto& x, auto& c, auto&) {
                                                x.setZero();
                                                c.setZero(1, 16);
                                              }),
                                              fm)),
                    Catch::Contains("the sampler") && Catch::Contains("no context"));
  CHECK_THROWS_WITH((train::fit_flow_matching(
                        b, train::sampler([](auto& x, auto&, auto&) { x.col(0).setZero(); }), fm)),
                    Catch::Contains("the sampler") && Catch::Contains("samples x"));
  CHECK(get_parameters(a) == get_parameters(b));
}

TEST_CASE("conditional flow matching: the context selects the Gaussian",
          "[continuous][flow_matching][context]") {
  // Context c ∈ {−1, +1}; data ~ N(c·(1.5, 0), 0.25 I).
  std::mt19937_64 gen(24);
  const Index n = 4096;
  MatrixXd c(1, n);
  for (Index j = 0; j < n; ++j) c(0, j) = uniform_open01(gen) < 0.5 ? -1.0 : 1.0;
  MatrixXd data = 0.5 * standard_normal_matrix<double>(2, n, gen);
  data.row(0) += 1.5 * c;
  using Flow = ContinuousFlow<double, 2, 32, nn::Tanh, 1>;
  Flow flow(2, {.hidden_width = 32, .hidden_layers = 2, .context_dim = 1, .seed = 25});
  train::FlowMatchingOptions fm;
  fm.steps = 1500;
  fm.adam.learning_rate = 3e-3;
  fm.schedule = train::Schedule::cosine(0.05);
  train::fit_flow_matching(flow, {.samples = data, .context = c}, fm);
  // Without its contexts, or with one per sample missing: errors naming them, before any step.
  const Vector<double> trained = get_parameters(flow);
  CHECK_THROWS_WITH((train::fit_flow_matching(flow, {.samples = data}, fm)),
                    Catch::Contains("conditional") && Catch::Contains("data.context"));
  CHECK_THROWS_WITH(
      (train::fit_flow_matching(flow, {.samples = data, .context = c.leftCols(n - 1)}, fm)),
      Catch::Contains("data.context") && Catch::Contains("4096 columns"));
  CHECK(get_parameters(flow) == trained);
  // Held-out mean log-likelihood under the right context is near the truth; under the swapped
  // context it is far lower.
  MatrixXd ct(1, 400);
  for (Index j = 0; j < 400; ++j) ct(0, j) = j % 2 == 0 ? 1.0 : -1.0;
  MatrixXd test = 0.5 * standard_normal_matrix<double>(2, 400, gen);
  test.row(0) += 1.5 * ct;
  flow.set_solver(OdeSolver::Dopri5, 20, ode::Dopri5Options{1e-6, 1e-6});
  auto mean_ll = [&](const MatrixXd& context) {
    const auto r = flow.forward_and_log_det(test, context);
    return (-std::log(2 * Constants<double>::pi) - 0.5 * r.value.colwise().squaredNorm().array() +
            r.log_det.array())
        .mean();
  };
  const double right = mean_ll(ct);
  const double wrong = mean_ll(-ct);
  const double truth =
      -std::log(2 * Constants<double>::pi) - 2 * std::log(0.5) - 1.0;  // E[log N] in 2-D
  INFO("held-out log-likelihood: right context " << right << ", swapped " << wrong << ", true "
                                                 << truth);
  CHECK(std::abs(right - truth) < 0.15);
  CHECK(wrong < truth - 5);
}

TEST_CASE("flow-matching posterior estimation on a linear Gaussian task (known posterior)",
          "[continuous][flow_matching][context]") {
  // θ ~ N(0, I₂), x = aᵀθ + σε: the posterior p(θ | x) is N(μ(x), Σ) with Σ = (I + a aᵀ/σ²)⁻¹ and
  // μ(x) = Σ a x / σ² (correlation 0.77 here). The flow learns p(θ | x) from simulated pairs by
  // conditional flow matching (θ the samples, x the context), as in flow-matching posterior
  // estimation; it is then compared with the exact posterior at three observations.
  const Eigen::Vector2d a(1.0, -0.6);
  const double sigma = 0.4;
  const Eigen::Matrix2d cov =
      (Eigen::Matrix2d::Identity() + a * a.transpose() / (sigma * sigma)).inverse();
  const Eigen::Matrix2d chol = cov.llt().matrixL();
  std::mt19937_64 gen(51);
  const Index n = 4096;
  const MatrixXd theta = standard_normal_matrix<double>(2, n, gen);
  const MatrixXd x = a.transpose() * theta + sigma * standard_normal_matrix<double>(1, n, gen);
  using Flow = ContinuousFlow<double, 2, 32, nn::Tanh, 1>;  // the type of the test above
  Flow flow(2, {.hidden_width = 32, .hidden_layers = 2, .context_dim = 1, .seed = 52});
  train::FlowMatchingOptions fm;
  fm.steps = 1500;
  fm.adam.learning_rate = 3e-3;
  fm.schedule = train::Schedule::cosine(0.05);
  train::fit_flow_matching(flow, {.samples = theta, .context = x}, fm);
  flow.set_solver(OdeSolver::Dopri5, 20, ode::Dopri5Options{1e-6, 1e-6});

  const Index m = 2000;
  const double log_det_cov = std::log(cov.determinant());
  for (const double x_obs : {-1.5, 0.0, 1.0}) {
    const Eigen::Vector2d mu = cov * a * x_obs / (sigma * sigma);
    const MatrixXd context = MatrixXd::Constant(1, m, x_obs);
    // KL(p ‖ q) = E_p[log p − log q] over exact posterior draws.
    const MatrixXd eps = standard_normal_matrix<double>(2, m, gen);
    const MatrixXd exact = (chol * eps).colwise() + mu;
    auto mean_log_q = [&](const MatrixXd& ctx) {
      const auto r = flow.forward_and_log_det(exact, ctx);
      return (-std::log(2 * Constants<double>::pi) - 0.5 * r.value.colwise().squaredNorm().array() +
              r.log_det.array())
          .mean();
    };
    const double mean_log_p = (-std::log(2 * Constants<double>::pi) - 0.5 * log_det_cov -
                               0.5 * eps.colwise().squaredNorm().array())
                                  .mean();
    const double kl = mean_log_p - mean_log_q(context);
    const double kl_wrong = mean_log_p - mean_log_q(MatrixXd::Constant(1, m, x_obs + 2.0));
    // Posterior samples: latents N(0, I) through the inverse; their moments against μ and Σ.
    const MatrixXd samples = flow.inverse(standard_normal_matrix<double>(2, m, gen), context);
    const Eigen::Vector2d mean = samples.rowwise().mean();
    const MatrixXd centred = samples.colwise() - mean;
    const Eigen::Matrix2d sample_cov = centred * centred.transpose() / double(m - 1);
    INFO("x = " << x_obs << ": KL(p‖q) " << kl << " (shifted context " << kl_wrong
                << "), mean error " << (mean - mu).norm() << ", covariance error "
                << (sample_cov - cov).cwiseAbs().maxCoeff());
    CHECK(kl < 0.05);
    CHECK(kl_wrong > 1.0);
    CHECK((mean - mu).norm() < 0.12);  // 0.2 posterior standard deviations
    CHECK((sample_cov - cov).cwiseAbs().maxCoeff() < 0.08);
  }
}

namespace {

/// The closed-form trace's gradient (vjp with TraceGradient::Auto) against the tangent path
/// (TraceGradient::Tangents) and against central differences of the loss
/// Σ gf ∘ f + Σ gdiv ∘ div, in θ (every parameter, the context and time weights included) and z.
template <typename Act>
void check_trace_gradient(Index layers) {
  using Field = ode::MLPVectorField<double, Dynamic, Dynamic, Act>;
  const Index d = 3, n = 4;
  Field field(d, 7, layers, 2, 1);
  std::mt19937_64 gen(31 + std::uint64_t(layers));
  const Eigen::VectorXd theta =
      standard_normal_matrix<double>(field.parameter_count(), 1, gen) * 0.6;
  set_parameters(field, theta);
  const MatrixXd z = standard_normal_matrix<double>(d, n, gen);
  const MatrixXd c = standard_normal_matrix<double>(2, n, gen);
  const MatrixXd gf = standard_normal_matrix<double>(d, n, gen);
  const Eigen::RowVectorXd gdiv = standard_normal_matrix<double>(1, n, gen);
  const double t = 0.4;
  Eigen::VectorXd gp = Eigen::VectorXd::Zero(theta.size());
  Eigen::VectorXd gp_tangent = Eigen::VectorXd::Zero(theta.size());
  const MatrixXd gz = field.vjp(t, z, c, gf, gdiv, nullptr, gp);
  const MatrixXd gz_tangent =
      field.vjp(t, z, c, gf, gdiv, nullptr, gp_tangent, ode::TraceGradient::Tangents);
  const auto rel = [](const MatrixXd& a, const MatrixXd& b) {
    return (a - b).cwiseAbs().maxCoeff() / std::max(1.0, b.cwiseAbs().maxCoeff());
  };
  CHECK(rel(gz, gz_tangent) < 1e-12);
  CHECK(rel(gp, gp_tangent) < 1e-12);
  // The loss through the tangent-pass divergence (independent of the closed form).
  const auto loss = [&](const Field& fl, const MatrixXd& zz) {
    MatrixXd f;
    Eigen::RowVectorXd div;
    fl.value_and_divergence(t, zz, c, nullptr, f, div);
    return (gf.array() * f.array()).sum() + (gdiv.array() * div.array()).sum();
  };
  const double h = 1e-5;
  double worst = 0;
  for (Index i = 0; i < theta.size(); ++i) {
    Field plus = field, minus = field;
    Eigen::VectorXd tp = theta, tm = theta;
    tp(i) += h;
    tm(i) -= h;
    set_parameters(plus, tp);
    set_parameters(minus, tm);
    const double fd = (loss(plus, z) - loss(minus, z)) / (2 * h);
    worst = std::max(worst, std::abs(fd - gp(i)) / std::max(1.0, std::abs(fd)));
  }
  for (Index i = 0; i < z.size(); ++i) {
    MatrixXd zp = z, zm = z;
    zp(i) += h;
    zm(i) -= h;
    const double fd = (loss(field, zp) - loss(field, zm)) / (2 * h);
    worst = std::max(worst, std::abs(fd - gz(i)) / std::max(1.0, std::abs(fd)));
  }
  CHECK(worst < 1e-7);
}

}  // namespace

TEST_CASE("the closed-form exact trace's gradient equals the tangent path's and finite differences",
          "[continuous][trace][gradient]") {
  // (Loops inside the sections: Catch enters a section once per run.)
  SECTION("tanh") {
    for (Index layers : {Index(1), Index(2)}) {
      INFO("tanh, hidden layers: " << layers);
      check_trace_gradient<nn::Tanh>(layers);
    }
  }
  SECTION("silu") {
    for (Index layers : {Index(1), Index(2)}) {
      INFO("silu, hidden layers: " << layers);
      check_trace_gradient<nn::SiLU>(layers);
    }
  }
  SECTION("elu") {
    for (Index layers : {Index(1), Index(2)}) {
      INFO("elu, hidden layers: " << layers);
      check_trace_gradient<nn::ELU>(layers);
    }
  }
}

namespace {

/// One fixed-size point (the allocation-free path) against the same column of a batch (the
/// batch path), forward and inverse, with `ctx` (zero or one context batch of 5 columns).
template <typename Flow, typename... Ctx>
void check_point_matches_batch(const Flow& flow, double tol, const Ctx&... ctx) {
  using S = typename Flow::Scalar;
  constexpr int D = Flow::Dim;
  std::mt19937_64 gen(41);
  const Batch<S, D, Dynamic> x = standard_normal_matrix<S, D>(D, 5, gen);
  for (bool inverse : {false, true}) {
    INFO("inverse: " << inverse);
    const auto batch =
        inverse ? flow.inverse_and_log_det(x, ctx...) : flow.forward_and_log_det(x, ctx...);
    for (Index j = 0; j < x.cols(); ++j) {
      const Eigen::Matrix<S, D, 1> p = x.col(j);
      const auto one =
          inverse
              ? flow.inverse_and_log_det(p, Eigen::Matrix<S, Flow::ContextDim, 1>(ctx.col(j))...)
              : flow.forward_and_log_det(p, Eigen::Matrix<S, Flow::ContextDim, 1>(ctx.col(j))...);
      CHECK(double((one.value - batch.value.col(j)).cwiseAbs().maxCoeff()) < tol);
      CHECK(std::abs(double(one.log_det(0) - batch.log_det(j))) < tol);
    }
  }
}

}  // namespace

TEST_CASE("one fixed-size point (no allocation) equals the same column of a batch",
          "[continuous][point]") {
  for (Index layers : {Index(1), Index(2)}) {
    for (auto solver : {OdeSolver::RK4, OdeSolver::Euler}) {
      INFO("hidden layers: " << layers << ", solver: " << int(solver));
      using F64 = ContinuousFlow<double, 2, 8, nn::Tanh>;
      F64 f64 = randomize(F64(2, {.hidden_width = 8, .hidden_layers = layers, .seed = 1}), 51, 0.5);
      f64.set_solver(solver, 7);
      check_point_matches_batch(f64, 1e-13);
      using F32 = ContinuousFlow<float, 2, 8, nn::Tanh>;
      F32 f32 = randomize(F32(2, {.hidden_width = 8, .hidden_layers = layers, .seed = 1}), 51, 0.5);
      f32.set_solver(solver, 7);
      check_point_matches_batch(f32, 2e-6);
      // With a context (a run-time context size takes the same code, its rows read at run time).
      using C1 = ContinuousFlow<double, 2, 32, nn::Tanh, 1>;
      C1 c1 = randomize(C1(2, {.hidden_width = 32, .hidden_layers = layers, .seed = 1}), 52, 0.3);
      c1.set_solver(solver, 7);
      std::mt19937_64 gen(53);
      check_point_matches_batch(c1, 1e-13, MatrixXd(standard_normal_matrix<double>(1, 5, gen)));
    }
  }
}

namespace {

/// The one-point path at width H (its row panels: PointPanelRows rows each, the last one
/// shorter when that does not divide H) against the batch path, one and two hidden layers,
/// Dim = 3 (odd: the first layer's and the output's remainder columns).
template <typename S, int H>
void check_point_panels(double tol) {
  using Flow = ContinuousFlow<S, 3, H, nn::Tanh>;
  INFO("hidden width " << H << ", panel rows " << Flow::Field::PointPanelRows << ", "
                       << (sizeof(S) == 8 ? "double" : "float"));
  for (Index layers : {Index(1), Index(2)}) {
    INFO("hidden layers: " << layers);
    // Weights ~ N(0, 1/H): pre-activations of order one at every width.
    Flow f = randomize(Flow(3, {.hidden_width = H, .hidden_layers = layers, .seed = 1}), 61,
                       1.0 / std::sqrt(double(H)));
    f.set_solver(OdeSolver::RK4, 5);
    check_point_matches_batch(f, tol);
  }
}

}  // namespace

namespace {

/// MLPVectorField::point_value_and_divergence (one evaluation: a solve uses point_value and
/// deferred point_traces instead) against the batch path's value_and_divergence with the exact
/// trace, at single points, one and two hidden layers.
template <int H>
void check_point_divergence() {
  using Flow = ContinuousFlow<double, 3, H, nn::Tanh>;
  using Field = typename Flow::Field;
  std::mt19937_64 gen(43);
  for (Index layers : {Index(1), Index(2)}) {
    INFO("hidden width " << H << ", hidden layers " << layers);
    const Flow flow = randomize(Flow(3, {.hidden_width = H, .hidden_layers = layers, .seed = 1}),
                                67, 1.0 / std::sqrt(double(H)));
    const Field& field = flow.field();
    typename Field::PointSetup setup;
    field.prepare_point(setup);
    for (double t : {0.0, 0.37, 1.0}) {
      const typename Field::PointVector z = standard_normal_matrix<double, 3>(3, 1, gen).col(0);
      typename Field::PointVector f;
      double div = 0;
      field.point_value_and_divergence(setup, t, z, f, div);
      typename Field::Matrix fb;
      typename Field::Row divb;
      field.value_and_divergence(t, typename Field::Matrix(z), typename Field::Matrix(0, 1),
                                 nullptr, fb, divb);
      CHECK((f - fb.col(0)).cwiseAbs().maxCoeff() <= 1e-13);
      CHECK(std::abs(div - divb(0)) <= 1e-13 * (1 + std::abs(divb(0))));
      CHECK(std::abs(divb(0)) > 1e-3);  // a trace of order one: the check can fail
    }
  }
}

}  // namespace

TEST_CASE("one fixed-size point: point_value_and_divergence equals the batch evaluation",
          "[continuous][point]") {
  check_point_divergence<21>();
  check_point_divergence<64>();
}

TEST_CASE("one fixed-size point: widths that fill the row panels or leave a remainder",
          "[continuous][point]") {
  check_point_panels<double, 21>(1e-13);
  check_point_panels<double, 40>(1e-13);
  check_point_panels<double, 64>(1e-13);
  check_point_panels<double, 128>(1e-13);
  check_point_panels<float, 21>(2e-6);
  check_point_panels<float, 40>(2e-6);
  check_point_panels<float, 64>(2e-6);
  check_point_panels<float, 128>(2e-6);
}

TEST_CASE("one fixed-size point: bad input and failures as in a batch",
          "[continuous][point][errors]") {
  using Flow = ContinuousFlow<double, 2, 8, nn::Tanh, 1>;
  Flow flow = randomize(Flow(2, {.hidden_width = 8, .hidden_layers = 2, .seed = 1}), 16, 0.5);
  const Eigen::Vector2d x(0.3, -0.2);
  const Eigen::Matrix<double, 1, 1> c(0.5);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const auto bad_x = flow.forward_and_log_det(Eigen::Vector2d(nan, 0.1), c);
  CHECK(std::isnan(bad_x.log_det(0)));
  CHECK(!bad_x.value.allFinite());
  const auto bad_c = flow.forward_and_log_det(x, Eigen::Matrix<double, 1, 1>(nan));
  CHECK(std::isnan(bad_c.log_det(0)));
  // A field that blows up: huge weights make the state overflow within the solve.
  Flow big = randomize(Flow(2, {.hidden_width = 8, .hidden_layers = 2, .seed = 1}), 16, 1e200);
  CHECK_THROWS_AS(big.forward(x, c), ode::OdeError);
  CHECK_THROWS_AS(big.forward(Eigen::Matrix<double, 2, Dynamic>(x), MatrixXd(c)), ode::OdeError);
}
