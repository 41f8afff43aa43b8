// The machine's fused multiply-add peak, one thread: the ceiling every dense-layer figure in
// docs/performance.md and docs/continuous.md is stated against. Twelve independent chains of
// a ← a·b + c on Eigen's widest packet for the build's target (Eigen::internal::pmadd: one
// vfmadd on 8 floats or 4 doubles with AVX2 + FMA, 16 or 8 with AVX-512; -march=native picks
// what the machine has), so that neither the FMA latency nor a dependency limits the rate. Counter "GFLOP/s": 2 flops per lane per FMA.
//
//   build/benchmarks/peak_benchmark --benchmark_repetitions=5
//
// Built without -march=native (or -mfma), Eigen uses SSE packets and a multiply and an add, and
// the figure is that build's peak, not the machine's.
#include <benchmark/benchmark.h>

#include <Eigen/Core>

namespace {

// Twelve accumulators in registers (named, not an array: an array that DoNotOptimize sees would
// live in memory, and every FMA would wait for a store and a load).
#define NFLOW_PEAK_CHAINS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)

template <typename T>
void fma_peak(benchmark::State& state) {
  using namespace Eigen::internal;
  using Packet = typename packet_traits<T>::type;
  constexpr int lanes = packet_traits<T>::size;
  constexpr int chains = 12;
  constexpr int steps = 1000;
  const Packet b = pset1<Packet>(T(0.999999));
  const Packet c = pset1<Packet>(T(1e-7));
#define NFLOW_PEAK_INIT(k) Packet a##k = pset1<Packet>(T(1) + T(k) * T(1e-3));
  NFLOW_PEAK_CHAINS(NFLOW_PEAK_INIT)
  for (auto _ : state) {
    for (int s = 0; s < steps; ++s) {
#define NFLOW_PEAK_STEP(k) a##k = pmadd(a##k, b, c);
      NFLOW_PEAK_CHAINS(NFLOW_PEAK_STEP)
    }
    benchmark::ClobberMemory();
  }
  Packet sum = pset1<Packet>(T(0));
#define NFLOW_PEAK_SUM(k) sum = padd(sum, a##k);
  NFLOW_PEAK_CHAINS(NFLOW_PEAK_SUM)
  benchmark::DoNotOptimize(sum);
  const double flops = 2.0 * lanes * chains * steps;
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["lanes"] = lanes;
}

}  // namespace

BENCHMARK(fma_peak<float>)->Name("fma_peak/float32");
BENCHMARK(fma_peak<double>)->Name("fma_peak/float64");
BENCHMARK_MAIN();
