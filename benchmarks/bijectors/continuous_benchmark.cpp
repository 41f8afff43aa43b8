// Continuous flows (FFJORD-style, MLP 2×H tanh vector field): log_prob of one point (a
// fixed-size vector through forward_and_log_det: allocation-free with RK4 and the exact trace)
// and of a batch of 256 (solve()), with the exact and the Hutchinson trace, RK4 (20 steps) and
// Dopri5 (rtol = atol = 1e-5); one maximum-likelihood gradient (forward_vjp, RK4) and one
// flow-matching training step at 256. d = 2 (H = 64) and 16 (H = 128), float and double, with
// fixed sizes; d = 64 (H = 128), double, with run-time sizes (ContinuousFlow<double, Dynamic,
// Dynamic>), log_prob and the flow-matching step only (leaving its gradients out saves compile
// time and CI's brief run).
// Counters: items (samples) per second and function evaluations per solve ("nfe").
#include <benchmark/benchmark.h>

#include <nflow/bijectors/continuous.hpp>
#include <nflow/train/flow_matching.hpp>
#include <random>
#include <string>
#include <tuple>

#include "../smoke.hpp"

namespace {

using namespace nflow;

template <typename S, int D, int H>
using CNF = ContinuousFlow<S, D, H, nn::Tanh>;

/// The sizes of one configuration: D and H when fixed, else read at run time from here.
struct Sizes {
  Index dim;
  Index hidden;
};

template <typename S, int D, int H>
CNF<S, D, H> make_flow(Sizes sizes, OdeSolver solver, ode::TraceEstimator trace) {
  CNF<S, D, H> f(sizes.dim, {.hidden_width = sizes.hidden, .hidden_layers = 2, .seed = 1});
  std::mt19937_64 gen(7);
  // A field of moderate size, so Dopri5 takes a realistic number of steps.
  set_parameters(f, Vector<S>(standard_normal_matrix<S>(f.parameter_count(), 1, gen) * S(0.1)));
  f.set_solver(solver, 20);
  f.set_trace(trace);
  return f;
}

template <typename S, int D>
S standard_normal_log_prob_sum(const Batch<S, D, Dynamic>& z,
                               const PerSample<S, Dynamic>& log_det) {
  return (-S(0.5) * z.colwise().squaredNorm().array() + log_det.array()).sum();
}

template <typename S, int D, int H>
void log_prob(benchmark::State& state, Sizes sizes, OdeSolver solver, ode::TraceEstimator trace) {
  const Index n = state.range(0);
  const auto flow = make_flow<S, D, H>(sizes, solver, trace);
  std::mt19937_64 gen(2);
  const Batch<S, D, Dynamic> x = standard_normal_matrix<S, D>(sizes.dim, n, gen);
  const Index nfe =
      flow.solve(x, Eigen::Matrix<S, Dynamic, Dynamic>(), false).stats.function_evaluations;
  if (n == 1) {
    // One point as a fixed-size vector, as Density::log_prob(point) sends it: with fixed D and
    // H, RK4 and the exact trace this is the allocation-free path (fixed-size vectors); the
    // others (Dopri5, Hutchinson, run-time sizes) take the batch path.
    const Eigen::Matrix<S, D, 1> p = x.col(0);
    for (auto _ : state) {
      const auto r = flow.forward_and_log_det(p);
      benchmark::DoNotOptimize(-S(0.5) * r.value.squaredNorm() + r.log_det(0));
    }
  } else {
    for (auto _ : state) {
      const auto r = flow.solve(x, Eigen::Matrix<S, Dynamic, Dynamic>(), false);
      benchmark::DoNotOptimize(standard_normal_log_prob_sum<S, D>(r.value, r.log_det));
    }
  }
  state.SetItemsProcessed(state.iterations() * n);
  state.counters["nfe"] = double(nfe);
}

template <typename S, int D, int H>
void ml_gradient(benchmark::State& state, Sizes sizes, ode::TraceEstimator trace) {
  const Index n = state.range(0);
  const auto flow = make_flow<S, D, H>(sizes, OdeSolver::RK4, trace);
  std::mt19937_64 gen(3);
  const Batch<S, D, Dynamic> x = standard_normal_matrix<S, D>(sizes.dim, n, gen);
  Vector<S> grad(flow.parameter_count());
  for (auto _ : state) {
    const auto r = flow.forward_and_log_det(x);
    grad.setZero();
    const PerSample<S, Dynamic> gl = PerSample<S, Dynamic>::Constant(1, n, S(-1) / S(n));
    const Batch<S, D, Dynamic> gz = r.value / S(n);
    benchmark::DoNotOptimize(flow.forward_vjp(x, gz, gl, grad).data());
  }
  state.SetItemsProcessed(state.iterations() * n);
}

template <typename S, int D, int H>
void flow_matching_step(benchmark::State& state, Sizes sizes) {
  const Index n = state.range(0);
  auto flow = make_flow<S, D, H>(sizes, OdeSolver::RK4, ode::TraceEstimator::Exact);
  std::mt19937_64 gen(4);
  const Eigen::Matrix<S, Dynamic, Dynamic> x = standard_normal_matrix<S>(sizes.dim, n, gen);
  Vector<S> grad(flow.parameter_count());
  train::Adam<S> adam(flow.parameter_count());
  for (auto _ : state) {
    grad.setZero();
    benchmark::DoNotOptimize(train::flow_matching_loss(
        flow.field(), x, Eigen::Matrix<S, Dynamic, Dynamic>(), 0.0, gen, grad));
    adam.step_model(flow, grad);
  }
  state.SetItemsProcessed(state.iterations() * n);
}

constexpr auto Exact = ode::TraceEstimator::Exact;
constexpr auto Rademacher = ode::TraceEstimator::HutchinsonRademacher;

/// Registers the benchmarks of one configuration; WithGradient = false leaves out (and does not
/// instantiate) the maximum-likelihood gradients.
template <typename S, int D, int H, bool WithGradient = true>
void register_all(const std::string& tag, Sizes sizes = {D, H}) {
  const std::string p = "continuous<" + tag + ">/";
  auto unit = benchmark::kMicrosecond;
  for (auto [name, solver, trace] :
       {std::tuple{"rk4_exact", OdeSolver::RK4, Exact},
        std::tuple{"rk4_hutchinson", OdeSolver::RK4, Rademacher},
        std::tuple{"dopri5_exact", OdeSolver::Dopri5, Exact},
        std::tuple{"dopri5_hutchinson", OdeSolver::Dopri5, Rademacher}}) {
    benchmark::RegisterBenchmark((p + "log_prob/" + name).c_str(), log_prob<S, D, H>, sizes, solver,
                                 trace)
        ->Arg(1)
        ->Arg(256)
        ->Unit(unit);
  }
  if constexpr (WithGradient) {
    benchmark::RegisterBenchmark((p + "ml_gradient/rk4_exact").c_str(), ml_gradient<S, D, H>, sizes,
                                 Exact)
        ->Arg(256)
        ->Unit(unit);
    benchmark::RegisterBenchmark((p + "ml_gradient/rk4_hutchinson").c_str(), ml_gradient<S, D, H>,
                                 sizes, Rademacher)
        ->Arg(256)
        ->Unit(unit);
  }
  benchmark::RegisterBenchmark((p + "flow_matching_step").c_str(), flow_matching_step<S, D, H>,
                               sizes)
      ->Arg(256)
      ->Unit(unit);
}

}  // namespace

int main(int argc, char** argv) {
  register_all<float, 2, 64>("float,d=2,H=64");
  NFLOW_UNLESS_SMOKE(register_all<double, 2, 64>("double,d=2,H=64");)
  register_all<float, 16, 128>("float,d=16,H=128");
  NFLOW_UNLESS_SMOKE(register_all<double, 16, 128>("double,d=16,H=128");)
  // d = 64: run-time sizes, so this adds one instantiation rather than a fixed 64 × 128 one.
  NFLOW_UNLESS_SMOKE(register_all<double, Dynamic, Dynamic, false>("double,d=64,H=128", {64, 128});)
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
