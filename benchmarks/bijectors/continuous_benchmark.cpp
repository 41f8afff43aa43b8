// Continuous flows (FFJORD-style, MLP 2×H tanh vector field): log_prob of one point (a
// fixed-size vector through forward_and_log_det: allocation-free with RK4 and the exact trace)
// and of a batch of 256 (solve()), with the exact and the Hutchinson trace, RK4 (20 steps) and
// Dopri5 (rtol = atol = 1e-5); one maximum-likelihood gradient (forward_vjp, RK4) and one
// flow-matching training step at 256. d = 2 (H = 64) and 16 (H = 128), float and double, with
// fixed sizes; d = 64 (H = 128), double, with run-time sizes (ContinuousFlow<double, Dynamic,
// Dynamic>), log_prob and the flow-matching step only (leaving its gradients out saves compile
// time and CI's brief run).
// Counters: items (samples) per second and function evaluations per solve ("nfe").
// long_gradient (double only, so not in CI's smoke run; one iteration, tens of seconds each): the
// maximum-likelihood gradient of a long Dopri5 integration (a fast field, about a thousand steps
// or more, N = 256) by back-propagation and by the adjoint, with the memory of each: the
// StepRecord's bytes ("record_bytes") against the adjoint's Dopri5 working set ("adjoint_bytes"),
// the steps of each solve and the adjoint's relative distance to the back-propagated gradient
// ("rel_diff"). Run: continuous_benchmark --benchmark_filter=long_gradient
#include <benchmark/benchmark.h>

#include <cmath>
#include <map>
#include <nflow/bijectors/continuous.hpp>
#include <nflow/ode/adjoint.hpp>
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

#ifndef NFLOW_BENCHMARK_SMOKE
/// A long integration: a near-rotation of angular speed ω = 150 (about 24 turns over [0, 1]),
/// H = 16, so that Dopri5 takes thousands of steps while the flow stays close to
/// volume-preserving (re-integrating z backwards, as the adjoint does, is then stable).
/// f(z) = W₂ tanh(W₁ tanh(W₀z + C₀t + b₀) + b₁) + b₂ with W₀ = εU, W₁ = I + noise and
/// W₂ = (ω/ε)(d/h)·K·Uᵀ (K antisymmetric, U with entries of variance 1/d, so UᵀU ≈ (h/d)·I):
/// near 0, f ≈ ω K z, whose eigenvalues are imaginary. Run-time sizes, so d = 2 and 16 share
/// one instantiation.
using LongFlow = ContinuousFlow<double, Dynamic, Dynamic, nn::Tanh>;

struct LongCase {
  Index dim;
  ode::TraceEstimator trace;
  double tol;
};

LongFlow long_flow(const LongCase& c, ode::GradientMethod method) {
  using M = Eigen::MatrixXd;
  ode::Dopri5Options o;
  o.rtol = o.atol = c.tol;
  o.max_steps = 100000;
  const Index h = 16;
  const Index d = c.dim;
  LongFlow f(d, {.hidden_width = h,
                 .hidden_layers = 2,
                 .seed = 1,
                 .solver = OdeSolver::Dopri5,
                 .dopri5 = o,
                 .trace = c.trace,
                 .probe_seed = 3,
                 .gradient = method});
  std::mt19937_64 gen(7);
  const double eps = 0.3;
  const double omega = 150;
  const M u = standard_normal_matrix<double>(h, d, gen) / std::sqrt(double(d));
  const M a = standard_normal_matrix<double>(d, d, gen);
  M k = a - a.transpose();
  if (d == 2) k << 0, -1, 1, 0;
  k /= k.norm() / std::sqrt(double(d));
  const M w0 = eps * u;
  const M c0 = 0.1 * standard_normal_matrix<double>(h, 1, gen);
  const M b0 = 0.1 * standard_normal_matrix<double>(h, 1, gen);
  const M w1 = M::Identity(h, h) + 0.05 * standard_normal_matrix<double>(h, h, gen);
  const M b1 = 0.1 * standard_normal_matrix<double>(h, 1, gen);
  const M w2 = (omega / eps) * k * u.transpose() * (double(d) / double(h));  // UᵀU ≈ (h/d)·I
  const M b2 = 0.1 * standard_normal_matrix<double>(d, 1, gen);
  Vector<double> p(f.parameter_count());
  Index at = 0;
  for (const M* m : {&w0, &c0, &b0, &w1, &b1, &w2, &b2}) {
    p.segment(at, m->size()) = m->reshaped();
    at += m->size();
  }
  set_parameters(f, p);
  return f;
}

/// The back-propagated gradients, for the adjoint's rel_diff (the backprop case runs first).
std::map<Index, Vector<double>>& backprop_gradients() {
  static std::map<Index, Vector<double>> m;
  return m;
}

void long_gradient(benchmark::State& state, LongCase c, ode::GradientMethod method) {
  using M = Eigen::MatrixXd;
  const Index n = state.range(0);
  const Index d = c.dim;
  const auto flow = long_flow(c, method);
  std::mt19937_64 gen(3);
  const M x = standard_normal_matrix<double>(d, n, gen);
  const M gz = standard_normal_matrix<double>(d, n, gen) / double(n);
  const Eigen::RowVectorXd gl = Eigen::RowVectorXd::Constant(n, -1.0 / double(n));
  const M probes = c.trace == ode::TraceEstimator::Exact
                       ? M()
                       : ode::hutchinson_probes<double>(d, n, c.trace, 3);
  const M* pp = c.trace == ode::TraceEstimator::Exact ? nullptr : &probes;
  Vector<double> grad(flow.parameter_count());
  M gx;
  for (auto _ : state) {
    grad.setZero();
    if (method == ode::GradientMethod::Backprop) {
      benchmark::DoNotOptimize(flow.forward_vjp(x, gz, gl, grad).data());
    } else {
      // What flow.forward_vjp runs with this option, called directly for its statistics.
      const auto s = ode::adjoint_vjp(flow.field(), 0.0, 1.0, x, M(), gz, gl, pp,
                                      flow.options().dopri5, gx, grad);
      state.counters["steps"] = double(s.forward.accepted_steps);
      state.counters["backward_steps"] = double(s.backward.accepted_steps);
      state.counters["adjoint_bytes"] = double(s.working_scalars()) * double(sizeof(double));
      state.counters["reconstruction_error"] = s.reconstruction_error;
    }
  }
  if (method == ode::GradientMethod::Backprop) {
    // The record the gradient stored: the same forward solve again, outside the timing.
    M y(d + 1, n);
    y.topRows(d) = x;
    y.row(d).setZero();
    M f;
    Eigen::RowVectorXd div;
    const M trace = flow.field().trace_matrix();
    auto rhs = [&](double t, const M& s, M& ds) {
      flow.field().value_and_divergence(t, s.topRows(d), M(), pp, f, div);
      ds.topRows(d) = f;
      ds.row(d) = div;
    };
    ode::StepRecord<double> record;
    ode::dopri5_integrate(rhs, 0.0, 1.0, y, flow.options().dopri5, &record);
    double scalars = double(record.t.size() + record.h.size());
    for (const auto& m : record.y) scalars += double(m.size());
    state.counters["steps"] = double(record.t.size());
    state.counters["record_bytes"] = scalars * double(sizeof(double));
    backprop_gradients()[d] = grad;
  } else if (backprop_gradients().count(d) > 0) {
    const Vector<double>& bp = backprop_gradients()[d];
    state.counters["rel_diff"] = (grad - bp).norm() / bp.norm();
  }
}

void register_long() {
  for (const LongCase& c : {LongCase{2, ode::TraceEstimator::Exact, 1e-10},
                            LongCase{16, ode::TraceEstimator::HutchinsonRademacher, 1e-9}}) {
    for (auto [name, method] : {std::tuple{"backprop", ode::GradientMethod::Backprop},
                                std::tuple{"adjoint", ode::GradientMethod::Adjoint}}) {
      const std::string tag = "continuous<double,d=" + std::to_string(c.dim) + ",H=16," +
                              (c.trace == ode::TraceEstimator::Exact ? "exact" : "hutchinson") +
                              ">/long_gradient/";
      benchmark::RegisterBenchmark((tag + name).c_str(), long_gradient, c, method)
          ->Arg(256)
          ->Iterations(1)
          ->Unit(benchmark::kMillisecond);
    }
  }
}

#endif  // NFLOW_BENCHMARK_SMOKE

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
  NFLOW_UNLESS_SMOKE(register_long();)
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
