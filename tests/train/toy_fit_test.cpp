// Training end to end: Real NVP and a 5-layer MAF fitted to the toy densities must reach the test
// NLLs of issue 5 (20,000 fresh test samples, double precision), and a continuous flow trained by
// flow matching must come within 0.3 nats of Real NVP on 8 gaussians (issue 6). The [slow] cases
// are the full runs (3,000 steps at batch 256, Adam 1e-3); the others are shorter runs with
// thresholds to match, for CI.
#include <catch2/catch.hpp>
#include <nflow/nflow.hpp>

using namespace nflow;

namespace {

using Layer = AffineCoupling<double, 2, 64>;
using R = Reverse<double, 2>;
using RealNVP = Flow<Layer, R, Layer, R, Layer, R, Layer, R, Layer, R, Layer, R, Layer, R, Layer>;

Density<StandardNormal<double, 2>, RealNVP> real_nvp() {
  auto layer = [](int i) {
    return Layer(CouplingMask::half(2),
                 CouplingOptions{.hidden_width = 64, .hidden_layers = 2, .seed = std::uint64_t(i)});
  };
  return Density(StandardNormal<double, 2>{},
                 RealNVP(layer(1), R{}, layer(2), R{}, layer(3), R{}, layer(4), R{}, layer(5), R{},
                         layer(6), R{}, layer(7), R{}, layer(8)));
}

// A 5-layer MAF as in Papamakarios et al. (2017): MADE 2 × 128 (ReLU) per layer, orders
// alternating natural / reversed, and a normalisation layer between the MADEs (their batch
// normalisation; here ActNorm, initialised on the first 2,048 training samples). Without the
// ActNorms (or with 2 × 64, tanh, or 3 hidden layers) 8 gaussians stays above 3.04 in 3,000 steps:
// 3.086 (2 × 128), 3.102 (tanh), 3.055 (3 × 128).
using MafLayer = MAF<double, 2, 128, nn::ReLU>;
using Norm = ActNorm<double, 2>;
using Maf5 = Flow<MafLayer, Norm, MafLayer, Norm, MafLayer, Norm, MafLayer, Norm, MafLayer>;

Density<StandardNormal<double, 2>, Maf5> maf() {
  auto layer = [](int i) {
    return MafLayer({.hidden_width = 128,
                     .hidden_layers = 2,
                     .seed = std::uint64_t(i),
                     .order = i % 2 == 1 ? nn::InputOrder::Natural : nn::InputOrder::Reversed});
  };
  return Density(StandardNormal<double, 2>{}, Maf5(layer(1), Norm{}, layer(2), Norm{}, layer(3),
                                                   Norm{}, layer(4), Norm{}, layer(5)));
}

template <typename Model = decltype(real_nvp())>
double fit_and_test(datasets::Toy toy, Index steps, Model density = real_nvp()) {
  train::FitOptions options;
  options.batch_size = 256;
  options.max_steps = steps;
  options.adam.learning_rate = 1e-3;
  options.schedule = train::Schedule::cosine(0.05);
  options.seed = 7;
  const auto data = datasets::toy(toy, 20000, 1);
  initialize_act_norms(density.transform(), data.leftCols(2048));  // the MAF's; Real NVP has none
  train::fit(density, {.samples = data}, options);
  const double nll = train::nll_value(density, datasets::toy(toy, 20000, 3));
  UNSCOPED_INFO("test NLL " << nll);
  return nll;
}

// A continuous flow whose field is an MLP 2 × 64 (tanh) of (z, t), trained by flow matching
// (σ_min = 0, batch 256, Adam with a cosine schedule) on the same 20,000 training samples. Sizes
// are set at run time: this file then compiles about 14 s faster than with <double, 2, 64>, and
// the short run takes about 10 % longer.
using Cnf = ContinuousFlow<double, Dynamic, Dynamic, nn::Tanh>;

Cnf fit_cnf_by_flow_matching(datasets::Toy toy, Index steps, double learning_rate) {
  Cnf flow(2, ContinuousFlowOptions{.hidden_width = 64, .hidden_layers = 2, .seed = 1});
  train::FlowMatchingOptions fm;
  fm.steps = steps;
  fm.batch_size = 256;
  fm.adam.learning_rate = learning_rate;
  fm.schedule = train::Schedule::cosine(0.05);
  fm.seed = 1;
  train::fit_flow_matching(flow, {.samples = datasets::toy(toy, 20000, 1)}, fm);
  return flow;
}

/// The CNF's mean test NLL with the exact trace and the given solver settings.
double cnf_test_nll(Cnf flow, const Batch<double, 2, Dynamic>& test, OdeSolver solver,
                    Index rk4_steps, double tolerance = 1e-5) {
  flow.set_trace(ode::TraceEstimator::Exact);
  flow.set_solver(solver, rk4_steps, ode::Dopri5Options{.rtol = tolerance, .atol = tolerance});
  const double nll = train::nll_value(Density(StandardNormal<double, 2>{}, std::move(flow)), test);
  if (solver == OdeSolver::RK4) {
    UNSCOPED_INFO("CNF test NLL " << nll << " (RK4, " << rk4_steps << " steps)");
  } else {
    UNSCOPED_INFO("CNF test NLL " << nll << " (Dopri5, rtol = atol = " << tolerance << ")");
  }
  return nll;
}

}  // namespace

TEST_CASE("Real NVP learns two moons (short run)", "[fit]") {
  CHECK(fit_and_test(datasets::Toy::TwoMoons, 600) <= 2.60);
}
TEST_CASE("Real NVP learns 8 gaussians (short run)", "[fit]") {
  CHECK(fit_and_test(datasets::Toy::EightGaussians, 600) <= 3.30);
}
TEST_CASE("Real NVP learns the checkerboard (short run)", "[fit]") {
  CHECK(fit_and_test(datasets::Toy::Checkerboard, 600) <= 4.00);
}

TEST_CASE("Real NVP reaches NLL 2.44 on two moons in 3000 steps", "[fit][slow]") {
  CHECK(fit_and_test(datasets::Toy::TwoMoons, 3000) <= 2.44);
}
TEST_CASE("Real NVP reaches NLL 3.04 on 8 gaussians in 3000 steps", "[fit][slow]") {
  CHECK(fit_and_test(datasets::Toy::EightGaussians, 3000) <= 3.04);
}
TEST_CASE("Real NVP reaches NLL 3.77 on the checkerboard in 3000 steps", "[fit][slow]") {
  // The optimum is log 32 = 3.466.
  const double nll = fit_and_test(datasets::Toy::Checkerboard, 3000);
  CHECK(nll <= 3.77);
  CHECK(nll >= std::log(32.0) - 0.02);  // nothing beats the true density beyond sampling noise
}

// Flow matching on 8 gaussians (issue 6). Full run: 10,000 steps at Adam 5e-3 reach 2.8721
// (exact trace, Dopri5 at rtol = atol = 1e-5; RK4 with 20 steps differs by 3e-5; the true
// density's entropy is about 2.84) against 2.9466 for the Real NVP of issue 5. Short run (CI):
// 2,000 steps, 2,000 test samples, RK4 with 8 steps: 2.939 (2.94 to 2.98 over other seeds; 20 RK4
// steps change it by 7e-4), in about 7 s.
TEST_CASE(
    "a continuous flow trained by flow matching on 8 gaussians comes within 0.3 nats of Real NVP",
    "[fit][cnf][slow]") {
  const double real_nvp_nll = fit_and_test(datasets::Toy::EightGaussians, 3000);
  const Cnf flow = fit_cnf_by_flow_matching(datasets::Toy::EightGaussians, 10000, 5e-3);
  const auto test = datasets::toy(datasets::Toy::EightGaussians, 20000, 3);
  const double cnf_nll = cnf_test_nll(flow, test, OdeSolver::Dopri5, 20, 1e-5);
  // The solver's error in the NLL is far below the margin: a different solver agrees.
  CHECK(std::abs(cnf_test_nll(flow, test, OdeSolver::RK4, 20) - cnf_nll) <= 0.01);
  CHECK(std::abs(cnf_nll - real_nvp_nll) <= 0.3);
  CHECK(cnf_nll <= real_nvp_nll + 0.3);
}
TEST_CASE("flow matching learns 8 gaussians (short run)", "[fit][cnf]") {
  const Cnf flow = fit_cnf_by_flow_matching(datasets::Toy::EightGaussians, 2000, 5e-3);
  CHECK(cnf_test_nll(flow, datasets::toy(datasets::Toy::EightGaussians, 2000, 3), OdeSolver::RK4,
                     8) <= 3.05);
}

TEST_CASE("MAF learns two moons (short run)", "[fit][maf]") {
  CHECK(fit_and_test(datasets::Toy::TwoMoons, 600, maf()) <= 2.65);
}
TEST_CASE("MAF learns 8 gaussians (short run)", "[fit][maf]") {
  CHECK(fit_and_test(datasets::Toy::EightGaussians, 600, maf()) <= 3.22);
}
TEST_CASE("MAF learns the checkerboard (short run)", "[fit][maf]") {
  CHECK(fit_and_test(datasets::Toy::Checkerboard, 600, maf()) <= 3.95);
}
// Short runs (600 steps) measured 2.583, 3.144, 3.869; the full runs 2.4291 (two moons),
// 3.0048 (8 gaussians), 3.6914 (checkerboard).
TEST_CASE("MAF reaches NLL 2.44 on two moons in 3000 steps", "[fit][maf][slow]") {
  CHECK(fit_and_test(datasets::Toy::TwoMoons, 3000, maf()) <= 2.44);
}
TEST_CASE("MAF reaches NLL 3.04 on 8 gaussians in 3000 steps", "[fit][maf][slow]") {
  CHECK(fit_and_test(datasets::Toy::EightGaussians, 3000, maf()) <= 3.04);
}
TEST_CASE("MAF reaches NLL 3.77 on the checkerboard in 3000 steps", "[fit][maf][slow]") {
  const double nll = fit_and_test(datasets::Toy::Checkerboard, 3000, maf());
  CHECK(nll <= 3.77);
  CHECK(nll >= std::log(32.0) - 0.02);
}
