// Benchmarks of nflow::nn::MLP: latency of one point, throughput on batches of 256 and 65,536,
// and the backward pass (input and parameter gradients) on a batch of 256.
//
// Shapes (In, Hidden) = (2, 64), (16, 128), (64, 256), two hidden layers, Out = 2·In (an affine
// coupling conditioner: a shift and a log-scale per transformed feature), ReLU. All sizes are
// compile-time constants except where the name says "dynamic". Besides items (samples) per
// second, each benchmark reports FLOP/s of the model's multiply-adds (2 flops each), to compare
// with the machine's GEMM rate.

#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>

#include "../smoke.hpp"
#include "nflow/core/random.hpp"
#include "nflow/nn/mlp.hpp"

namespace {

using nflow::Index;
constexpr Index hidden_layers = 2;

/// Multiply-add flops of one forward pass of one sample.
double forward_flops(Index in, Index hidden, Index out) {
  return 2.0 * double(in * hidden + (hidden_layers - 1) * hidden * hidden + hidden * out);
}

template <typename Net>
Net make_net(Index in, Index hidden) {
  Net net(in, 2 * in, hidden, hidden_layers);
  net.initialize(1, /*zero_last_layer=*/false);
  return net;
}

template <typename Scalar>
Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> random_batch(Index rows, Index cols) {
  std::mt19937_64 gen(7);
  return nflow::standard_normal_matrix<Scalar>(rows, cols, gen);
}

void set_counters(benchmark::State& state, Index samples_per_iteration, double flops_per_sample) {
  const auto items = std::int64_t(state.iterations()) * std::int64_t(samples_per_iteration);
  state.SetItemsProcessed(items);
  state.counters["FLOP/s"] =
      benchmark::Counter(double(items) * flops_per_sample, benchmark::Counter::kIsRate);
}

template <typename Scalar, int In, int Hidden>
void BM_MLP_forward_point(benchmark::State& state) {
  using Net = nflow::nn::MLP<Scalar, In, 2 * In, Hidden>;
  const Net net = make_net<Net>(In, Hidden);
  Eigen::Matrix<Scalar, In, 1> x = random_batch<Scalar>(In, 1);
  for (auto _ : state) {
    benchmark::DoNotOptimize(x.data());
    auto y = net.forward(x);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, 1, forward_flops(In, Hidden, 2 * In));
}

/// The same point, with every size dynamic (activations on the heap).
template <typename Scalar, int In, int Hidden>
void BM_MLP_forward_point_dynamic(benchmark::State& state) {
  using Net = nflow::nn::MLP<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::Dynamic>;
  const Net net = make_net<Net>(In, Hidden);
  Eigen::Matrix<Scalar, Eigen::Dynamic, 1> x = random_batch<Scalar>(In, 1);
  for (auto _ : state) {
    benchmark::DoNotOptimize(x.data());
    auto y = net.forward(x);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, 1, forward_flops(In, Hidden, 2 * In));
}

template <typename Scalar, int In, int Hidden>
void BM_MLP_forward_batch(benchmark::State& state) {
  using Net = nflow::nn::MLP<Scalar, In, 2 * In, Hidden>;
  const Net net = make_net<Net>(In, Hidden);
  const Index n = Index(state.range(0));
  const Eigen::Matrix<Scalar, In, Eigen::Dynamic> x = random_batch<Scalar>(In, n);
  for (auto _ : state) {
    auto y = net.forward(x);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, n, forward_flops(In, Hidden, 2 * In));
}

template <typename Scalar, int In, int Hidden>
void BM_MLP_backward_batch(benchmark::State& state) {
  using Net = nflow::nn::MLP<Scalar, In, 2 * In, Hidden>;
  const Net net = make_net<Net>(In, Hidden);
  const Index n = Index(state.range(0));
  const Eigen::Matrix<Scalar, In, Eigen::Dynamic> x = random_batch<Scalar>(In, n);
  const Eigen::Matrix<Scalar, 2 * In, Eigen::Dynamic> grad_out = random_batch<Scalar>(2 * In, n);
  nflow::Vector<Scalar> grad_params = nflow::Vector<Scalar>::Zero(net.parameter_count());
  for (auto _ : state) {
    auto grad_x = net.backward(x, grad_out, grad_params);
    benchmark::DoNotOptimize(grad_x.data());
    benchmark::DoNotOptimize(grad_params.data());
    benchmark::ClobberMemory();
  }
  // Recomputed forward (1×) plus the backward's two products per layer (2×).
  set_counters(state, n, 3.0 * forward_flops(In, Hidden, 2 * In));
}

}  // namespace

#define NFLOW_MLP_BENCHMARKS(Scalar, In, Hidden)                                      \
  BENCHMARK_TEMPLATE(BM_MLP_forward_point, Scalar, In, Hidden);                       \
  BENCHMARK_TEMPLATE(BM_MLP_forward_batch, Scalar, In, Hidden)->Arg(256)->Arg(65536); \
  BENCHMARK_TEMPLATE(BM_MLP_backward_batch, Scalar, In, Hidden)->Arg(256)

NFLOW_MLP_BENCHMARKS(float, 2, 64);
NFLOW_MLP_BENCHMARKS(float, 16, 128);
NFLOW_UNLESS_SMOKE(NFLOW_MLP_BENCHMARKS(float, 64, 256);)
NFLOW_UNLESS_SMOKE(NFLOW_MLP_BENCHMARKS(double, 2, 64);)
NFLOW_UNLESS_SMOKE(NFLOW_MLP_BENCHMARKS(double, 16, 128);)
NFLOW_UNLESS_SMOKE(NFLOW_MLP_BENCHMARKS(double, 64, 256);)

BENCHMARK_TEMPLATE(BM_MLP_forward_point_dynamic, float, 16, 128);
NFLOW_UNLESS_SMOKE(BENCHMARK_TEMPLATE(BM_MLP_forward_point_dynamic, double, 16, 128);)

BENCHMARK_MAIN();
