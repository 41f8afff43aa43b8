// One training step (maximum likelihood: forward pass, backward pass, Adam update) at batch 256:
// Real NVP (8 affine couplings, MLP 2 × H, ReLU, features reversed between them) and a 5-layer MAF
// (MADE 2 × H, ReLU, orders alternating natural / reversed), d = 2 (H = 64) and d = 16 (H = 128),
// float and double. Items processed = training samples.
#include <benchmark/benchmark.h>

#include <nflow/nflow.hpp>

#include <cstdint>
#include <random>

namespace {

using namespace nflow;

template <typename S, int D, int H>
using Cpl = AffineCoupling<S, D, H, nn::ReLU>;
template <typename S, int D>
using Rev = Reverse<S, D>;
template <typename S, int D, int H>
using RealNVP8 = Flow<Cpl<S, D, H>, Rev<S, D>, Cpl<S, D, H>, Rev<S, D>, Cpl<S, D, H>, Rev<S, D>, Cpl<S, D, H>,
                      Rev<S, D>, Cpl<S, D, H>, Rev<S, D>, Cpl<S, D, H>, Rev<S, D>, Cpl<S, D, H>, Rev<S, D>,
                      Cpl<S, D, H>>;
template <typename S, int D, int H>
using Maf = MAF<S, D, H, nn::ReLU>;
template <typename S, int D, int H>
using Maf5 = Flow<Maf<S, D, H>, Maf<S, D, H>, Maf<S, D, H>, Maf<S, D, H>, Maf<S, D, H>>;

template <typename S, int D, int H>
auto make_real_nvp() {
  auto c = [](std::uint64_t seed) { return Cpl<S, D, H>(CouplingMask::half(D), CouplingOptions{H, 2, 0, seed}); };
  const Rev<S, D> r{};
  return Density(StandardNormal<S, D>{},
                 RealNVP8<S, D, H>(c(1), r, c(2), r, c(3), r, c(4), r, c(5), r, c(6), r, c(7), r, c(8)));
}

template <typename S, int D, int H>
auto make_maf() {
  auto m = [](nn::InputOrder order, std::uint64_t seed) {
    return Maf<S, D, H>({.hidden_width = H, .hidden_layers = 2, .order = order, .seed = seed});
  };
  using nn::InputOrder;
  return Density(StandardNormal<S, D>{},
                 Maf5<S, D, H>(m(InputOrder::Natural, 1), m(InputOrder::Reversed, 2), m(InputOrder::Natural, 3),
                               m(InputOrder::Reversed, 4), m(InputOrder::Natural, 5)));
}

/// Steps on a fixed batch (the data pipeline is not what is measured). Parameters are first moved
/// off the identity so that no layer is trivial.
template <typename S, int D, typename Model>
void run(benchmark::State& state, Model density) {
  std::mt19937_64 gen(3);
  set_parameters(density, standard_normal_matrix<S>(density.parameter_count(), 1, gen) * S(0.05));
  const Index n = 256;
  const Batch<S, D, Dynamic> x = standard_normal_matrix<S, D>(D, n, gen);
  train::Adam<S> adam(density.parameter_count(), {.learning_rate = 1e-5});
  Vector<S> grad(density.parameter_count());
  for (auto _ : state) {
    grad.setZero();
    const double loss = train::nll(density, x, grad);
    adam.step_model(density, grad);
    benchmark::DoNotOptimize(loss);
  }
  state.SetItemsProcessed(state.iterations() * n);
}

template <typename S, int D, int H>
void BM_RealNVPTrainStep(benchmark::State& state) {
  run<S, D>(state, make_real_nvp<S, D, H>());
}
template <typename S, int D, int H>
void BM_MafTrainStep(benchmark::State& state) {
  run<S, D>(state, make_maf<S, D, H>());
}

}  // namespace

BENCHMARK_TEMPLATE(BM_RealNVPTrainStep, float, 2, 64)->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(BM_RealNVPTrainStep, double, 2, 64)->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(BM_RealNVPTrainStep, float, 16, 128)->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(BM_RealNVPTrainStep, double, 16, 128)->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(BM_MafTrainStep, float, 2, 64)->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(BM_MafTrainStep, double, 2, 64)->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(BM_MafTrainStep, float, 16, 128)->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(BM_MafTrainStep, double, 16, 128)->Unit(benchmark::kMicrosecond);

BENCHMARK_MAIN();
