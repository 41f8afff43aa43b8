// The Glow layers: ActNorm and LULinear at d = 2, 16, 64 (one point, batches of 256 and 65,536,
// forward and inverse, one backward pass at 256), and Conv1x1 with 16 channels on 8 × 8 images.
// Items are samples.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <nflow/nflow.hpp>
#include <random>

#include "../smoke.hpp"

namespace {

using namespace nflow;

/// A layer with random, non-trivial parameters (ActNorm initialised on data, LULinear random).
template <typename B>
B make_layer() {
  using S = typename B::Scalar;
  std::mt19937_64 gen(1);
  if constexpr (requires { B::random_orthogonal(Index(1), std::uint64_t(1)); }) {
    B b = B::random_orthogonal(B::Dim, 1);
    Vector<S> theta = get_parameters(b);
    theta += standard_normal_matrix<S>(theta.size(), 1, gen) * S(0.1);
    set_parameters(b, theta);
    return b;
  } else {
    B b;
    b.initialize(standard_normal_matrix<S, B::Dim>(B::Dim, 256, gen) * S(2) +
                 Batch<S, B::Dim, Dynamic>::Ones(B::Dim, 256));
    return b;
  }
}

template <typename B>
Batch<typename B::Scalar, B::Dim, Dynamic> make_batch(const B& b, Index n) {
  std::mt19937_64 gen(2);
  return standard_normal_matrix<typename B::Scalar, B::Dim>(b.dim(), n, gen);
}

template <typename B, bool Inverse>
void BM_Point(benchmark::State& state) {
  const B b = make_layer<B>();
  const Eigen::Matrix<typename B::Scalar, B::Dim, 1> x = make_batch(b, 1);
  for (auto _ : state) {
    if constexpr (Inverse) {
      auto r = b.inverse_and_log_det(x);
      benchmark::DoNotOptimize(r);
    } else {
      auto r = b.forward_and_log_det(x);
      benchmark::DoNotOptimize(r);
    }
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations());
}

template <typename B, bool Inverse>
void BM_Batch(benchmark::State& state) {
  const B b = make_layer<B>();
  const Index n = state.range(0);
  const auto x = make_batch(b, n);
  for (auto _ : state) {
    if constexpr (Inverse) {
      auto r = b.inverse_and_log_det(x);
      benchmark::DoNotOptimize(r.value.data());
    } else {
      auto r = b.forward_and_log_det(x);
      benchmark::DoNotOptimize(r.value.data());
    }
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * n);
}

/// One backward pass of the forward (maximum-likelihood) direction: ∂L/∂x and ∂L/∂θ.
template <typename B>
void BM_ForwardVjp(benchmark::State& state) {
  using S = typename B::Scalar;
  const B b = make_layer<B>();
  const Index n = state.range(0);
  const auto x = make_batch(b, n);
  const auto gv = make_batch(b, n);
  const PerSample<S> gl = PerSample<S>::Ones(n);
  Vector<S> gp = Vector<S>::Zero(b.parameter_count());
  for (auto _ : state) {
    auto gx = b.forward_vjp(x, gv, gl, gp);
    benchmark::DoNotOptimize(gx.data());
    benchmark::DoNotOptimize(gp.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * n);
}

#define NFLOW_GLOW_BENCH(...)                                             \
  BENCHMARK_TEMPLATE(BM_Point, __VA_ARGS__, false);                       \
  BENCHMARK_TEMPLATE(BM_Point, __VA_ARGS__, true);                        \
  BENCHMARK_TEMPLATE(BM_Batch, __VA_ARGS__, false)->Arg(256)->Arg(65536); \
  BENCHMARK_TEMPLATE(BM_Batch, __VA_ARGS__, true)->Arg(256)->Arg(65536);  \
  BENCHMARK_TEMPLATE(BM_ForwardVjp, __VA_ARGS__)->Arg(256)

NFLOW_GLOW_BENCH(ActNorm<float, 2>);
NFLOW_GLOW_BENCH(ActNorm<float, 16>);
NFLOW_UNLESS_SMOKE(NFLOW_GLOW_BENCH(ActNorm<float, 64>);)
NFLOW_UNLESS_SMOKE(NFLOW_GLOW_BENCH(ActNorm<double, 2>);)
NFLOW_UNLESS_SMOKE(NFLOW_GLOW_BENCH(ActNorm<double, 16>);)
NFLOW_UNLESS_SMOKE(NFLOW_GLOW_BENCH(ActNorm<double, 64>);)
NFLOW_GLOW_BENCH(LULinear<float, 2>);
NFLOW_GLOW_BENCH(LULinear<float, 16>);
NFLOW_UNLESS_SMOKE(NFLOW_GLOW_BENCH(LULinear<float, 64>);)
NFLOW_UNLESS_SMOKE(NFLOW_GLOW_BENCH(LULinear<double, 2>);)
NFLOW_UNLESS_SMOKE(NFLOW_GLOW_BENCH(LULinear<double, 16>);)
NFLOW_UNLESS_SMOKE(NFLOW_GLOW_BENCH(LULinear<double, 64>);)

// ---- Conv1x1: 16 channels, 8 × 8 images (D = 1024) -------------------------------------------
template <typename S>
Conv1x1<S, 16> make_conv() {
  auto b = Conv1x1<S, 16>::random_orthogonal(16, 8, 8, 3);
  std::mt19937_64 gen(4);
  Vector<S> theta = get_parameters(b);
  theta += standard_normal_matrix<S>(theta.size(), 1, gen) * S(0.1);
  set_parameters(b, theta);
  return b;
}

template <typename S, bool Inverse>
void BM_Conv(benchmark::State& state) {
  const auto b = make_conv<S>();
  const Index n = state.range(0);
  std::mt19937_64 gen(5);
  const Batch<S, Dynamic, Dynamic> x = standard_normal_matrix<S>(b.dim(), n, gen);
  for (auto _ : state) {
    if constexpr (Inverse) {
      auto r = b.inverse_and_log_det(x);
      benchmark::DoNotOptimize(r.value.data());
    } else {
      auto r = b.forward_and_log_det(x);
      benchmark::DoNotOptimize(r.value.data());
    }
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * n);
}

template <typename S>
void BM_ConvForwardVjp(benchmark::State& state) {
  const auto b = make_conv<S>();
  const Index n = state.range(0);
  std::mt19937_64 gen(6);
  const Batch<S, Dynamic, Dynamic> x = standard_normal_matrix<S>(b.dim(), n, gen);
  const Batch<S, Dynamic, Dynamic> gv = standard_normal_matrix<S>(b.dim(), n, gen);
  const PerSample<S> gl = PerSample<S>::Ones(n);
  Vector<S> gp = Vector<S>::Zero(b.parameter_count());
  for (auto _ : state) {
    auto gx = b.forward_vjp(x, gv, gl, gp);
    benchmark::DoNotOptimize(gx.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * n);
}

BENCHMARK_TEMPLATE(BM_Conv, float, false)->Arg(1)->Arg(256);
BENCHMARK_TEMPLATE(BM_Conv, float, true)->Arg(1)->Arg(256);
BENCHMARK_TEMPLATE(BM_ConvForwardVjp, float)->Arg(256);
NFLOW_UNLESS_SMOKE(BENCHMARK_TEMPLATE(BM_Conv, double, false)->Arg(1)->Arg(256);)
NFLOW_UNLESS_SMOKE(BENCHMARK_TEMPLATE(BM_Conv, double, true)->Arg(1)->Arg(256);)
NFLOW_UNLESS_SMOKE(BENCHMARK_TEMPLATE(BM_ConvForwardVjp, double)->Arg(256);)

}  // namespace

BENCHMARK_MAIN();
