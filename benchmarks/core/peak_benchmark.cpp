// The machine's fused multiply-add peak, one thread: the ceiling every dense-layer figure in
// docs/performance.md and docs/continuous.md is stated against. Twelve independent chains of
// a ← a·b + c on Eigen's widest packet for the build's target (Eigen::internal::pmadd: one
// vfmadd on 8 floats or 4 doubles with AVX2 + FMA, i.e. -march=native here), so that neither the
// FMA latency nor a dependency limits the rate. Counter "GFLOP/s": 2 flops per lane per FMA.
//
//   build/benchmarks/peak_benchmark --benchmark_repetitions=5
//
// Built without -march=native (or -mfma), Eigen uses SSE packets and a multiply and an add, and
// the figure is that build's peak, not the machine's.
#include <benchmark/benchmark.h>

#include <Eigen/Core>

namespace {

template <typename T>
void fma_peak(benchmark::State& state) {
  using Packet = typename Eigen::internal::packet_traits<T>::type;
  constexpr int lanes = Eigen::internal::unpacket_traits<Packet>::size;
  constexpr int chains = 12;
  constexpr int steps = 1000;
  Packet acc[chains];
  const Packet b = Eigen::internal::pset1<Packet>(T(0.999999));
  const Packet c = Eigen::internal::pset1<Packet>(T(1e-7));
  for (int k = 0; k < chains; ++k) acc[k] = Eigen::internal::pset1<Packet>(T(1) + T(k) * T(1e-3));
  for (auto _ : state) {
    for (int s = 0; s < steps; ++s) {
      for (int k = 0; k < chains; ++k) acc[k] = Eigen::internal::pmadd(acc[k], b, c);
    }
    for (int k = 0; k < chains; ++k) benchmark::DoNotOptimize(acc[k]);
  }
  const double flops = 2.0 * lanes * chains * steps;
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["lanes"] = lanes;
}

}  // namespace

BENCHMARK(fma_peak<float>)->Name("fma_peak/float32");
BENCHMARK(fma_peak<double>)->Name("fma_peak/float64");
BENCHMARK_MAIN();
