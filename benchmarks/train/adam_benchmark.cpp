// Benchmarks of nflow::train::Adam: one update of a flat parameter vector, and global-norm
// clipping, at the parameter counts of the comparison models' training steps (Real NVP at
// d = 16, H = 128: 157,824 parameters; d = 64, H = 256: 1,184,256 with 8 couplings). Reports
// parameters per second (items).

#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>

#include "../smoke.hpp"
#include "nflow/core/random.hpp"
#include "nflow/train/adam.hpp"

namespace {

using nflow::Index;

template <typename Scalar>
nflow::Vector<Scalar> random_vector(Index n, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  return nflow::standard_normal_matrix<Scalar>(n, 1, gen);
}

template <typename Scalar>
void BM_Adam_step(benchmark::State& state) {
  const Index n = Index(state.range(0));
  nflow::Vector<Scalar> params = random_vector<Scalar>(n, 1);
  const nflow::Vector<Scalar> grad0 = random_vector<Scalar>(n, 2);
  nflow::Vector<Scalar> grad = grad0;
  nflow::train::AdamOptions options;
  options.learning_rate = 1e-6;  // the parameters stay O(1) over millions of steps
  options.clip_norm = state.range(1) != 0 ? 1.0 : 0.0;
  nflow::train::Adam<Scalar> adam(n, options);
  for (auto _ : state) {
    grad = grad0;  // clipping scales the gradient in place
    benchmark::DoNotOptimize(adam.step(params, grad));
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(std::int64_t(state.iterations()) * std::int64_t(n));
}

}  // namespace

// Args: parameter count, clipping on (1) or off (0).
BENCHMARK_TEMPLATE(BM_Adam_step, float)->Args({157824, 0})->Args({157824, 1})->Args({1000, 0});
NFLOW_UNLESS_SMOKE(BENCHMARK_TEMPLATE(BM_Adam_step, float)->Args({1184256, 0});)
NFLOW_UNLESS_SMOKE(BENCHMARK_TEMPLATE(BM_Adam_step, double)->Args({157824, 0})->Args({1184256, 0});)

BENCHMARK_MAIN();
