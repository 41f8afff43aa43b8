// The MADE conditioner alone (2 hidden layers of width H, ReLU) at d = 2 (H = 64), d = 16
// (H = 128), d = 64 (H = 256), in float and double: one point, batches of 256 and 65,536, and one
// backward pass on 256 points. Items processed = points. The 5-layer MAF (density, sampling,
// training step) is in compare/maf.cpp, next to PyTorch's. Run with e.g. --benchmark_min_time=0.1 for figures; CI runs it once
// with --benchmark_min_time=0.001.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>

#include "../smoke.hpp"
#include "nflow/core/parameters.hpp"
#include "nflow/core/random.hpp"
#include "nflow/nn/made.hpp"

namespace {

using namespace nflow;

/// Every parameter from N(0, 0.05²), so that no layer is the identity.
template <typename T>
void randomize(T& object, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  using S = typename T::Scalar;
  set_parameters(object, standard_normal_matrix<S>(object.parameter_count(), 1, gen) * S(0.05));
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

#define NFLOW_MAF_BENCHMARKS(S, D, H)               \
  BENCHMARK_TEMPLATE(BM_MadeForwardPoint, S, D, H); \
  BENCHMARK_TEMPLATE(BM_MadeForwardBatch, S, D, H)  \
      ->Arg(256)                                    \
      ->Arg(65536)                                  \
      ->Unit(benchmark::kMicrosecond);              \
  BENCHMARK_TEMPLATE(BM_MadeBackward, S, D, H)->Arg(256)->Unit(benchmark::kMicrosecond)

NFLOW_MAF_BENCHMARKS(float, 2, 64);
NFLOW_UNLESS_SMOKE(NFLOW_MAF_BENCHMARKS(double, 2, 64);)
NFLOW_MAF_BENCHMARKS(float, 16, 128);
NFLOW_UNLESS_SMOKE(NFLOW_MAF_BENCHMARKS(double, 16, 128);)
NFLOW_UNLESS_SMOKE(NFLOW_MAF_BENCHMARKS(float, 64, 256);)
NFLOW_UNLESS_SMOKE(NFLOW_MAF_BENCHMARKS(double, 64, 256);)

}  // namespace

BENCHMARK_MAIN();
