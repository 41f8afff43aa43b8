// An imported model against the native flow of the same shape: what run-time composition
// (DynamicFlow of type-erased steps, run-time sizes) costs next to a compile-time Flow with fixed
// sizes. The imported model is the zuko NSF fixture (tests/data/fixtures/zuko_nsf: D = 4, three
// autoregressive rational-quadratic transforms of 8 bins, MADE-masked networks of two hidden
// layers of 16, alternating orders); "Typed" is the same model converted by interop::to_typed to
// a compile-time Flow of its own layers with D = 4 and K = 8 fixed; the native one is a Flow of
// three SplineAutoregressive<S, 4, 16, 8> layers with a reversal between them (MADE of the same
// widths; parameters random, which costs the same as the fixture's). log_prob of one point and of
// batches of 256 and 65,536, and sampling of 256, in float and double. Items processed = points.
// Run with e.g. --benchmark_min_time=0.2 for figures (docs/performance.md); CI runs it once,
// briefly.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <string>

#include "../smoke.hpp"
#include "nflow/bijectors/masked_autoregressive.hpp"
#include "nflow/bijectors/reverse.hpp"
#include "nflow/core/flow.hpp"
#include "nflow/core/parameters.hpp"
#include "nflow/core/random.hpp"
#include "nflow/distributions/density.hpp"
#include "nflow/distributions/standard_normal.hpp"
#include "nflow/interop/typed.hpp"
#include "nflow/interop/zuko.hpp"

namespace {

using namespace nflow;

template <typename S>
interop::ImportedFlow<S> imported() {
  return interop::load_zuko_nsf<S>(
      interop::StateDict::from_file(std::string(NFLOW_FIXTURE_DIR) + "/zuko_nsf.safetensors"),
      {.features = 4, .context = 0, .transforms = 3, .bins = 8, .hidden_features = {16, 16}});
}

template <typename S>
using NativeLayer = SplineAutoregressive<S, 4, 16, 8>;
template <typename S>
using NativeFlow =
    Flow<NativeLayer<S>, Reverse<S, 4>, NativeLayer<S>, Reverse<S, 4>, NativeLayer<S>>;
template <typename S>
using Native = Density<StandardNormal<S, 4>, NativeFlow<S>>;

template <typename S>
Native<S> native() {
  auto layer = [](std::uint64_t seed) {
    return NativeLayer<S>(4, {.hidden_width = 16, .seed = seed});
  };
  Native<S> d(StandardNormal<S, 4>(),
              NativeFlow<S>(layer(1), Reverse<S, 4>(), layer(2), Reverse<S, 4>(), layer(3)));
  std::mt19937_64 gen(5);  // random parameters: a fresh layer is the identity, cheaper to run
  set_parameters(d.transform(),
                 standard_normal_matrix<S>(d.transform().parameter_count(), 1, gen) * S(0.1));
  return d;
}

/// The imported model's layers with compile-time sizes.
template <typename S>
using TypedLayer = interop::ImportedSplineAutoregressive<S, 8, 4, 0>;

enum class Kind { Imported, Typed, Native };

/// The imported model, the same converted to a compile-time Flow, or the native one.
template <typename S, Kind kind>
auto make() {
  if constexpr (kind == Kind::Imported) {
    return imported<S>();
  } else if constexpr (kind == Kind::Typed) {
    return interop::to_typed<Flow<TypedLayer<S>, TypedLayer<S>, TypedLayer<S>>>(imported<S>());
  } else {
    return native<S>();
  }
}

template <typename S>
Batch<S, 4, Dynamic> points(Index n) {
  std::mt19937_64 gen(7);
  return standard_normal_matrix<S, 4>(4, n, gen);
}

template <typename S, Kind kind>
void BM_LogProbPoint(benchmark::State& state) {
  const auto flow = make<S, kind>();
  const Eigen::Matrix<S, 4, 1> x = points<S>(1);
  for (auto _ : state) {
    S lp = flow.log_prob(x);
    benchmark::DoNotOptimize(lp);
  }
  state.SetItemsProcessed(state.iterations());
}

template <typename S, Kind kind>
void BM_LogProbBatch(benchmark::State& state) {
  const auto flow = make<S, kind>();
  const Index n = state.range(0);
  const Batch<S, 4, Dynamic> x = points<S>(n);
  for (auto _ : state) {
    auto lp = flow.log_prob(x);
    benchmark::DoNotOptimize(lp.data());
  }
  state.SetItemsProcessed(state.iterations() * n);
}

template <typename S, Kind kind>
void BM_Sample(benchmark::State& state) {
  const auto flow = make<S, kind>();
  const Index n = state.range(0);
  std::mt19937_64 gen(11);
  for (auto _ : state) {
    auto x = flow.sample(n, gen);
    benchmark::DoNotOptimize(x.data());
  }
  state.SetItemsProcessed(state.iterations() * n);
}

#define NFLOW_IMPORTED_BENCHMARKS(S, name)                                                      \
  BENCHMARK(BM_LogProbPoint<S, Kind::Imported>)                                                 \
      ->Name("Imported/zuko_nsf/" name "/log_prob/batch:1");                                    \
  BENCHMARK(BM_LogProbPoint<S, Kind::Typed>)->Name("Typed/zuko_nsf/" name "/log_prob/batch:1"); \
  BENCHMARK(BM_LogProbPoint<S, Kind::Native>)->Name("Native/nsf_ar/" name "/log_prob/batch:1"); \
  BENCHMARK(BM_LogProbBatch<S, Kind::Imported>)                                                 \
      ->Name("Imported/zuko_nsf/" name "/log_prob/batch")                                       \
      ->Arg(256)                                                                                \
      ->Arg(65536);                                                                             \
  BENCHMARK(BM_LogProbBatch<S, Kind::Typed>)                                                    \
      ->Name("Typed/zuko_nsf/" name "/log_prob/batch")                                          \
      ->Arg(256)                                                                                \
      ->Arg(65536);                                                                             \
  BENCHMARK(BM_LogProbBatch<S, Kind::Native>)                                                   \
      ->Name("Native/nsf_ar/" name "/log_prob/batch")                                           \
      ->Arg(256)                                                                                \
      ->Arg(65536);                                                                             \
  BENCHMARK(BM_Sample<S, Kind::Imported>)                                                       \
      ->Name("Imported/zuko_nsf/" name "/sample/batch")                                         \
      ->Arg(256);                                                                               \
  BENCHMARK(BM_Sample<S, Kind::Typed>)->Name("Typed/zuko_nsf/" name "/sample/batch")->Arg(256); \
  BENCHMARK(BM_Sample<S, Kind::Native>)->Name("Native/nsf_ar/" name "/sample/batch")->Arg(256);

NFLOW_IMPORTED_BENCHMARKS(float, "float32")
NFLOW_UNLESS_SMOKE(NFLOW_IMPORTED_BENCHMARKS(double, "float64"))

}  // namespace

BENCHMARK_MAIN();
