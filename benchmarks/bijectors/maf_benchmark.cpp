// MADE and a 5-layer MAF (MADE with 2 hidden layers of width H, ReLU, orders alternating
// natural / reversed) at d = 2 (H = 64), d = 16 (H = 128), d = 64 (H = 256), in float and double:
// density of one point (latency) and of batches of 256 and 65,536 (throughput), sampling a batch
// of 65,536 (the Dim-pass direction), and one backward pass (log_prob_vjp) on 256 points.
// Items processed = points. Run with e.g. --benchmark_min_time=0.1 for figures; CI runs it once
// with --benchmark_min_time=0.001.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>

#include "nflow/bijectors/masked_autoregressive.hpp"
#include "nflow/core/flow.hpp"
#include "nflow/core/parameters.hpp"
#include "nflow/distributions/density.hpp"
#include "nflow/distributions/standard_normal.hpp"

namespace {

using namespace nflow;

template <typename S, int D, int H>
using Layer = MAF<S, D, H, nn::ReLU>;
template <typename S, int D, int H>
using Maf5 = Flow<Layer<S, D, H>, Layer<S, D, H>, Layer<S, D, H>, Layer<S, D, H>, Layer<S, D, H>>;
template <typename S, int D, int H>
using Maf5Density = Density<StandardNormal<S, D>, Maf5<S, D, H>>;

/// Every parameter from N(0, 0.05²), so that no layer is the identity.
template <typename T>
void randomize(T& object, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  using S = typename T::Scalar;
  set_parameters(object, standard_normal_matrix<S>(object.parameter_count(), 1, gen) * S(0.05));
}

template <typename S, int D, int H>
Layer<S, D, H> make_layer(nn::InputOrder order, std::uint64_t seed) {
  return Layer<S, D, H>({.hidden_width = H, .hidden_layers = 2, .order = order, .seed = seed});
}

template <typename S, int D, int H>
Maf5Density<S, D, H> make_density() {
  using nn::InputOrder;
  Maf5Density<S, D, H> density(
      StandardNormal<S, D>(),
      Maf5<S, D, H>(make_layer<S, D, H>(InputOrder::Natural, 1), make_layer<S, D, H>(InputOrder::Reversed, 2),
                    make_layer<S, D, H>(InputOrder::Natural, 3), make_layer<S, D, H>(InputOrder::Reversed, 4),
                    make_layer<S, D, H>(InputOrder::Natural, 5)));
  randomize(density, 6);
  return density;
}

template <typename S, int D>
Batch<S, D, Dynamic> inputs(Index n) {
  std::mt19937_64 gen(7);
  return standard_normal_matrix<S, D>(D, n, gen);
}

// ---- MADE alone ---------------------------------------------------------------------------------

template <typename S, int D, int H>
void BM_MadeForwardPoint(benchmark::State& state) {
  nn::MADE<S, D, H, nn::ReLU> made(D, H, 2);
  randomize(made, 1);
  const Eigen::Matrix<S, D, 1> x = inputs<S, D>(1);
  for (auto _ : state) {
    auto y = made.forward(x);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetItemsProcessed(state.iterations());
}

template <typename S, int D, int H>
void BM_MadeForwardBatch(benchmark::State& state) {
  nn::MADE<S, D, H, nn::ReLU> made(D, H, 2);
  randomize(made, 1);
  const Index n = state.range(0);
  const Batch<S, D, Dynamic> x = inputs<S, D>(n);
  for (auto _ : state) {
    auto y = made.forward(x);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetItemsProcessed(state.iterations() * n);
}

template <typename S, int D, int H>
void BM_MadeBackward(benchmark::State& state) {
  nn::MADE<S, D, H, nn::ReLU> made(D, H, 2);
  randomize(made, 1);
  const Index n = state.range(0);
  const Batch<S, D, Dynamic> x = inputs<S, D>(n);
  const Eigen::Matrix<S, Dynamic, Dynamic> g = Eigen::Matrix<S, Dynamic, Dynamic>::Ones(2 * D, n);
  Vector<S> gp = Vector<S>::Zero(made.parameter_count());
  for (auto _ : state) {
    auto gx = made.backward(x, g, gp);
    benchmark::DoNotOptimize(gx.data());
  }
  state.SetItemsProcessed(state.iterations() * n);
}

// ---- 5-layer MAF -------------------------------------------------------------------------------

template <typename S, int D, int H>
void BM_Maf5LogProbPoint(benchmark::State& state) {
  const auto density = make_density<S, D, H>();
  const Eigen::Matrix<S, D, 1> x = inputs<S, D>(1);
  for (auto _ : state) {
    S lp = density.log_prob(x);
    benchmark::DoNotOptimize(lp);
  }
  state.SetItemsProcessed(state.iterations());
}

template <typename S, int D, int H>
void BM_Maf5LogProbBatch(benchmark::State& state) {
  const auto density = make_density<S, D, H>();
  const Index n = state.range(0);
  const Batch<S, D, Dynamic> x = inputs<S, D>(n);
  for (auto _ : state) {
    auto lp = density.log_prob(x);
    benchmark::DoNotOptimize(lp.data());
  }
  state.SetItemsProcessed(state.iterations() * n);
}

template <typename S, int D, int H>
void BM_Maf5Sample(benchmark::State& state) {
  const auto density = make_density<S, D, H>();
  const Index n = state.range(0);
  std::mt19937_64 gen(8);
  for (auto _ : state) {
    auto x = density.sample(n, gen);
    benchmark::DoNotOptimize(x.data());
  }
  state.SetItemsProcessed(state.iterations() * n);
}

template <typename S, int D, int H>
void BM_Maf5Backward(benchmark::State& state) {
  const auto density = make_density<S, D, H>();
  const Index n = state.range(0);
  const Batch<S, D, Dynamic> x = inputs<S, D>(n);
  const PerSample<S, Dynamic> w = PerSample<S, Dynamic>::Constant(1, n, S(1) / S(n));
  Vector<S> gp = Vector<S>::Zero(density.parameter_count());
  for (auto _ : state) {
    auto gx = density.log_prob_vjp(x, w, gp);
    benchmark::DoNotOptimize(gx.data());
  }
  state.SetItemsProcessed(state.iterations() * n);
}

#define NFLOW_MAF_BENCHMARKS(S, D, H)                                                        \
  BENCHMARK_TEMPLATE(BM_MadeForwardPoint, S, D, H);                                          \
  BENCHMARK_TEMPLATE(BM_MadeForwardBatch, S, D, H)->Arg(256)->Arg(65536)->Unit(benchmark::kMicrosecond); \
  BENCHMARK_TEMPLATE(BM_MadeBackward, S, D, H)->Arg(256)->Unit(benchmark::kMicrosecond);     \
  BENCHMARK_TEMPLATE(BM_Maf5LogProbPoint, S, D, H);                                          \
  BENCHMARK_TEMPLATE(BM_Maf5LogProbBatch, S, D, H)->Arg(256)->Arg(65536)->Unit(benchmark::kMicrosecond); \
  BENCHMARK_TEMPLATE(BM_Maf5Sample, S, D, H)->Arg(65536)->Unit(benchmark::kMillisecond);     \
  BENCHMARK_TEMPLATE(BM_Maf5Backward, S, D, H)->Arg(256)->Unit(benchmark::kMicrosecond)

NFLOW_MAF_BENCHMARKS(float, 2, 64);
NFLOW_MAF_BENCHMARKS(double, 2, 64);
NFLOW_MAF_BENCHMARKS(float, 16, 128);
NFLOW_MAF_BENCHMARKS(double, 16, 128);
NFLOW_MAF_BENCHMARKS(float, 64, 256);
NFLOW_MAF_BENCHMARKS(double, 64, 256);

}  // namespace

BENCHMARK_MAIN();
