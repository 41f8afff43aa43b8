// One affine coupling layer (MLP 2×H conditioner, ReLU): one point, batches of 256 and 65,536,
// and one backward pass (forward_vjp) at 256; d = 2 (H = 64), 16 (H = 128), 64 (H = 256); float
// and double. The whole Real NVP (8 couplings) is in compare/realnvp.cpp, next to PyTorch's.
// Lattice couplings (checkerboard masks, run-time sizes): the convolutional conditioner
// (nn::PeriodicConvNet, 16 hidden channels, 2 hidden layers, 3 × 3 kernels, ReLU) on 8 × 8 and
// 16 × 16 lattices, float and double, one point, a batch of 256 and a backward pass at 256; and,
// for comparison, the dense conditioner of examples/lattice_phi4 (MLP 2 × 64) on 8 × 8 (double).
#include <benchmark/benchmark.h>

#include <nflow/nflow.hpp>
#include <random>

#include "../smoke.hpp"

namespace {

using namespace nflow;

template <typename S, int D, int H>
using Layer = AffineCoupling<S, D, H>;

template <typename S, int D, int H>
Layer<S, D, H> make_layer(int i) {
  return Layer<S, D, H>(
      CouplingMask::half(D, i % 2 == 1),
      CouplingOptions{.hidden_width = H, .hidden_layers = 2, .seed = std::uint64_t(i + 1)});
}

template <typename Model, typename S, int D>
void run_point(benchmark::State& state, const Model& m, bool inverse) {
  std::mt19937_64 gen(1);
  const Eigen::Matrix<S, D, 1> x = standard_normal_matrix<S, D>(D, 1, gen);
  for (auto _ : state) {
    auto r = inverse ? m.inverse_and_log_det(x) : m.forward_and_log_det(x);
    benchmark::DoNotOptimize(r.value.data());
  }
  state.SetItemsProcessed(state.iterations());
}

template <typename Model, typename S, int D>
void run_batch(benchmark::State& state, const Model& m, bool inverse) {
  const Index n = state.range(0);
  std::mt19937_64 gen(2);
  const Batch<S, D, Dynamic> x = standard_normal_matrix<S, D>(D, n, gen);
  for (auto _ : state) {
    auto r = inverse ? m.inverse_and_log_det(x) : m.forward_and_log_det(x);
    benchmark::DoNotOptimize(r.value.data());
  }
  state.SetItemsProcessed(state.iterations() * n);
}

template <typename Model, typename S, int D>
void run_backward(benchmark::State& state, const Model& m) {
  const Index n = state.range(0);
  std::mt19937_64 gen(3);
  const Batch<S, D, Dynamic> x = standard_normal_matrix<S, D>(D, n, gen);
  const Batch<S, D, Dynamic> gv = standard_normal_matrix<S, D>(D, n, gen);
  const PerSample<S, Dynamic> gl = PerSample<S, Dynamic>::Ones(1, n);
  Vector<S> gp = Vector<S>::Zero(m.parameter_count());
  for (auto _ : state) {
    auto g = m.forward_vjp(x, gv, gl, gp);
    benchmark::DoNotOptimize(g.data());
  }
  state.SetItemsProcessed(state.iterations() * n);
}

template <typename S, int D, int H>
void BM_CouplingPoint(benchmark::State& s) {
  run_point<Layer<S, D, H>, S, D>(s, make_layer<S, D, H>(0), false);
}
template <typename S, int D, int H>
void BM_CouplingBatch(benchmark::State& s) {
  run_batch<Layer<S, D, H>, S, D>(s, make_layer<S, D, H>(0), false);
}
template <typename S, int D, int H>
void BM_CouplingBackward(benchmark::State& s) {
  run_backward<Layer<S, D, H>, S, D>(s, make_layer<S, D, H>(0));
}

#define NFLOW_COUPLING_BENCH(S, D, H)                                  \
  BENCHMARK_TEMPLATE(BM_CouplingPoint, S, D, H);                       \
  BENCHMARK_TEMPLATE(BM_CouplingBatch, S, D, H)->Arg(256)->Arg(65536); \
  BENCHMARK_TEMPLATE(BM_CouplingBackward, S, D, H)->Arg(256)

template <typename S>
ConvAffineCoupling<S> make_conv_layer(Index L) {
  return conv_checkerboard_coupling<AffineTransformer<S>>(
      L, L, false, {.hidden_channels = 16, .hidden_layers = 2, .seed = 5});
}

template <typename S>
void BM_ConvCouplingPoint(benchmark::State& s) {
  const Index L = s.range(0);
  const auto layer = make_conv_layer<S>(L);
  std::mt19937_64 gen(1);
  const Vector<S> x = standard_normal_matrix<S>(L * L, 1, gen);
  for (auto _ : s) {
    auto r = layer.forward_and_log_det(x);
    benchmark::DoNotOptimize(r.value.data());
  }
  s.SetItemsProcessed(s.iterations());
}
template <typename S>
void BM_ConvCouplingBatch(benchmark::State& s) {
  const Index L = s.range(0), n = s.range(1);
  const auto layer = make_conv_layer<S>(L);
  std::mt19937_64 gen(2);
  const Batch<S, Dynamic, Dynamic> x = standard_normal_matrix<S>(L * L, n, gen);
  for (auto _ : s) {
    auto r = layer.forward_and_log_det(x);
    benchmark::DoNotOptimize(r.value.data());
  }
  s.SetItemsProcessed(s.iterations() * n);
}
template <typename S>
void BM_ConvCouplingBackward(benchmark::State& s) {
  const Index L = s.range(0), n = s.range(1);
  const auto layer = make_conv_layer<S>(L);
  std::mt19937_64 gen(3);
  const Batch<S, Dynamic, Dynamic> x = standard_normal_matrix<S>(L * L, n, gen);
  const Batch<S, Dynamic, Dynamic> gv = standard_normal_matrix<S>(L * L, n, gen);
  const PerSample<S, Dynamic> gl = PerSample<S, Dynamic>::Ones(1, n);
  Vector<S> gp = Vector<S>::Zero(layer.parameter_count());
  for (auto _ : s) {
    auto g = layer.forward_vjp(x, gv, gl, gp);
    benchmark::DoNotOptimize(g.data());
  }
  s.SetItemsProcessed(s.iterations() * n);
}
// The dense conditioner of examples/lattice_phi4 on the same lattice, for comparison.
[[maybe_unused]] void BM_DenseLatticeCouplingBatch(benchmark::State& s) {
  const Index L = s.range(0), n = s.range(1);
  const AffineCoupling<double> layer(CouplingMask::checkerboard(L, L),
                                     {.hidden_width = 64, .hidden_layers = 2, .seed = 5});
  std::mt19937_64 gen(2);
  const Batch<double, Dynamic, Dynamic> x = standard_normal_matrix<double>(L * L, n, gen);
  for (auto _ : s) {
    auto r = layer.forward_and_log_det(x);
    benchmark::DoNotOptimize(r.value.data());
  }
  s.SetItemsProcessed(s.iterations() * n);
}

// The brief CI run (smoke mode, -O0) uses batches of 16: at -O0 a batch of 256 on 16 × 16 takes
// seconds.
#ifdef NFLOW_BENCHMARK_SMOKE
constexpr int conv_batch = 16;
#else
constexpr int conv_batch = 256;
#endif
#define NFLOW_CONV_COUPLING_BENCH(S)                                                          \
  BENCHMARK_TEMPLATE(BM_ConvCouplingPoint, S)->Arg(8)->Arg(16);                               \
  BENCHMARK_TEMPLATE(BM_ConvCouplingBatch, S)->Args({8, conv_batch})->Args({16, conv_batch}); \
  BENCHMARK_TEMPLATE(BM_ConvCouplingBackward, S)->Args({8, conv_batch})->Args({16, conv_batch})

NFLOW_CONV_COUPLING_BENCH(float);
NFLOW_UNLESS_SMOKE(NFLOW_CONV_COUPLING_BENCH(double);)
NFLOW_UNLESS_SMOKE(BENCHMARK(BM_DenseLatticeCouplingBatch)->Args({8, 256});)

NFLOW_COUPLING_BENCH(float, 2, 64);
NFLOW_UNLESS_SMOKE(NFLOW_COUPLING_BENCH(double, 2, 64);)
NFLOW_COUPLING_BENCH(float, 16, 128);
NFLOW_UNLESS_SMOKE(NFLOW_COUPLING_BENCH(double, 16, 128);)
NFLOW_UNLESS_SMOKE(NFLOW_COUPLING_BENCH(float, 64, 256);)
NFLOW_UNLESS_SMOKE(NFLOW_COUPLING_BENCH(double, 64, 256);)

}  // namespace

BENCHMARK_MAIN();
