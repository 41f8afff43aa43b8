// The Flow fold: cost of composing simple bijectors, one point and a batch of 65,536.
#include <benchmark/benchmark.h>

#include <nflow/nflow.hpp>
#include <random>

#include "../smoke.hpp"

namespace {

using namespace nflow;

template <typename S, int D>
using Simple = Flow<ElementwiseAffine<S, D>, Reverse<S, D>, ElementwiseAffine<S, D>,
                    Permutation<S, D>, ElementwiseAffine<S, D>>;

template <typename S, int D>
Simple<S, D> make_flow() {
  Simple<S, D> f{ElementwiseAffine<S, D>{}, Reverse<S, D>{}, ElementwiseAffine<S, D>{},
                 Permutation<S, D>::random(D, 1), ElementwiseAffine<S, D>{}};
  std::mt19937_64 gen(1);
  set_parameters(f, Vector<S>(standard_normal_matrix<S>(f.parameter_count(), 1, gen) * S(0.3)));
  return f;
}

template <typename S, int D>
void BM_FlowForwardPoint(benchmark::State& state) {
  const auto flow = make_flow<S, D>();
  Eigen::Matrix<S, D, 1> x = Eigen::Matrix<S, D, 1>::Random();
  for (auto _ : state) {
    auto r = flow.forward_and_log_det(x);
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(state.iterations());
}

template <typename S, int D>
void BM_FlowForwardBatch(benchmark::State& state) {
  const auto flow = make_flow<S, D>();
  const Index n = state.range(0);
  std::mt19937_64 gen(2);
  const Batch<S, D, Dynamic> x = standard_normal_matrix<S, D>(D, n, gen);
  for (auto _ : state) {
    auto r = flow.forward_and_log_det(x);
    benchmark::DoNotOptimize(r.value.data());
  }
  state.SetItemsProcessed(state.iterations() * n);
}

template <typename S, int D>
void BM_FlowInverseBatch(benchmark::State& state) {
  const auto flow = make_flow<S, D>();
  const Index n = state.range(0);
  std::mt19937_64 gen(3);
  const Batch<S, D, Dynamic> z = standard_normal_matrix<S, D>(D, n, gen);
  for (auto _ : state) {
    auto r = flow.inverse_and_log_det(z);
    benchmark::DoNotOptimize(r.value.data());
  }
  state.SetItemsProcessed(state.iterations() * n);
}

BENCHMARK_TEMPLATE(BM_FlowForwardPoint, float, 2);
NFLOW_UNLESS_SMOKE(BENCHMARK_TEMPLATE(BM_FlowForwardPoint, double, 2);)
BENCHMARK_TEMPLATE(BM_FlowForwardPoint, float, 16);
NFLOW_UNLESS_SMOKE(BENCHMARK_TEMPLATE(BM_FlowForwardPoint, double, 16);)
BENCHMARK_TEMPLATE(BM_FlowForwardBatch, float, 2)->Arg(65536);
NFLOW_UNLESS_SMOKE(BENCHMARK_TEMPLATE(BM_FlowForwardBatch, double, 2)->Arg(65536);)
BENCHMARK_TEMPLATE(BM_FlowForwardBatch, float, 16)->Arg(65536);
NFLOW_UNLESS_SMOKE(BENCHMARK_TEMPLATE(BM_FlowForwardBatch, double, 16)->Arg(65536);)
BENCHMARK_TEMPLATE(BM_FlowInverseBatch, float, 16)->Arg(65536);
NFLOW_UNLESS_SMOKE(BENCHMARK_TEMPLATE(BM_FlowInverseBatch, double, 16)->Arg(65536);)

}  // namespace

BENCHMARK_MAIN();
