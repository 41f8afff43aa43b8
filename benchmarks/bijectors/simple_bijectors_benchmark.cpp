// The simple bijectors one at a time: one point (latency) and a batch of 65,536 (throughput).
#include <benchmark/benchmark.h>

#include <nflow/nflow.hpp>
#include <random>

#include "../smoke.hpp"

namespace {

using namespace nflow;

template <typename B>
B make(std::uint64_t seed) {
  using S = typename B::Scalar;
  if constexpr (std::is_same_v<B, Permutation<S, B::Dim>>) {
    return B::random(B::Dim, seed);
  } else {
    return B{};
  }
}

template <typename B>
void BM_ForwardPoint(benchmark::State& state) {
  using S = typename B::Scalar;
  const B b = make<B>(1);
  Eigen::Matrix<S, B::Dim, 1> x =
      (Eigen::Matrix<S, B::Dim, 1>::Random().array() * S(0.4) + S(0.5)).matrix();
  for (auto _ : state) {
    auto r = b.forward_and_log_det(x);
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(state.iterations());
}

template <typename B>
void BM_ForwardBatch(benchmark::State& state) {
  using S = typename B::Scalar;
  const B b = make<B>(1);
  const Index n = state.range(0);
  const Batch<S, B::Dim, Dynamic> x =
      (Batch<S, B::Dim, Dynamic>::Random(B::Dim, n).array() * S(0.4) + S(0.5)).matrix();
  for (auto _ : state) {
    auto r = b.forward_and_log_det(x);
    benchmark::DoNotOptimize(r.value.data());
  }
  state.SetItemsProcessed(state.iterations() * n);
}

template <typename B>
void BM_InverseBatch(benchmark::State& state) {
  using S = typename B::Scalar;
  const B b = make<B>(1);
  const Index n = state.range(0);
  const Batch<S, B::Dim, Dynamic> z =
      (Batch<S, B::Dim, Dynamic>::Random(B::Dim, n).array() * S(0.4) + S(0.5)).matrix();
  for (auto _ : state) {
    auto r = b.inverse_and_log_det(z);
    benchmark::DoNotOptimize(r.value.data());
  }
  state.SetItemsProcessed(state.iterations() * n);
}

#define NFLOW_SIMPLE_BENCH(...)                                 \
  BENCHMARK_TEMPLATE(BM_ForwardPoint, __VA_ARGS__);             \
  BENCHMARK_TEMPLATE(BM_ForwardBatch, __VA_ARGS__)->Arg(65536); \
  BENCHMARK_TEMPLATE(BM_InverseBatch, __VA_ARGS__)->Arg(65536)

NFLOW_SIMPLE_BENCH(ElementwiseAffine<float, 16>);
NFLOW_UNLESS_SMOKE(NFLOW_SIMPLE_BENCH(ElementwiseAffine<double, 16>);)
NFLOW_SIMPLE_BENCH(Reverse<float, 16>);
NFLOW_UNLESS_SMOKE(NFLOW_SIMPLE_BENCH(Reverse<double, 16>);)
NFLOW_SIMPLE_BENCH(Permutation<float, 16>);
NFLOW_UNLESS_SMOKE(NFLOW_SIMPLE_BENCH(Permutation<double, 16>);)
NFLOW_SIMPLE_BENCH(Sigmoid<float, 16>);
NFLOW_UNLESS_SMOKE(NFLOW_SIMPLE_BENCH(Sigmoid<double, 16>);)
NFLOW_SIMPLE_BENCH(Logit<float, 16>);
NFLOW_UNLESS_SMOKE(NFLOW_SIMPLE_BENCH(Logit<double, 16>);)

}  // namespace

BENCHMARK_MAIN();
