#pragma once
// Shared harness of the side-by-side benchmarks (benchmarks/compare/*.cpp, run and tabulated by
// benchmarks/compare.py). Each binary builds one model family exactly as the PyTorch reference
// flows (../shared/bench/flows.py: same layers, widths and step counts; d = 2, 16, 64 with
// H = 64, 128, 256) and registers, under names compare.py parses,
//
//   <Model>/<op>/<dtype>/d:<d>/H:<H>/batch:<B>/threads:<T>   op = log_prob | sample | train_step
//   Roofline/<Model>/<op>/<dtype>/d:<d>/H:<H>
//
// The first kind times nflow; items/s are samples/s and the counter flops_per_sample is the
// model's dense-layer arithmetic per sample. The second times only that arithmetic: the model's
// matrix products, with the same shapes, on a tile of 256 samples (plain Eigen GEMMs, no
// activations, no bookkeeping), so its samples/s is what the model would reach at this machine's
// GEMM rate for its layer shapes: the roofline every nflow figure is a fraction of.
//
// Compile-time budget: one-point latency uses fixed Dim and Hidden (d = 2, 16; the targets are
// there); batches use run-time sizes, so one instantiation serves d = 2, 16 and 64.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <nflow/core/parallel.hpp>
#include <nflow/core/parameters.hpp>
#include <nflow/core/random.hpp>
#include <nflow/nn/dense.hpp>
#include <nflow/train/adam.hpp>
#include <nflow/train/objectives.hpp>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../smoke.hpp"

namespace nflow::bench {

/// The reference sizes: d → H.
constexpr int hidden_for(Index d) { return d <= 2 ? 64 : (d <= 16 ? 128 : 256); }

template <typename S>
const char* dtype_name() {
  return std::is_same_v<S, float> ? "float32" : "float64";
}

inline std::string bench_name(const std::string& model, const std::string& op, const char* dtype,
                              Index d, Index batch, int threads = 1) {
  return model + "/" + op + "/" + dtype + "/d:" + std::to_string(d) +
         "/H:" + std::to_string(hidden_for(d)) + "/batch:" + std::to_string(batch) +
         "/threads:" + std::to_string(threads);
}

/// One dense layer's matrix product per sample: out × in.
struct Shape {
  Index out;
  Index in;
};
using Shapes = std::vector<Shape>;

/// Appends an MLP in → H → H → out (two hidden layers), as flows.py's mlp().
inline void add_mlp(Shapes& s, Index in, Index h, Index out) {
  s.push_back({h, in});
  s.push_back({h, h});
  s.push_back({out, h});
}

inline double flops_per_sample(const Shapes& shapes) {
  double f = 0;
  for (const Shape& s : shapes) f += 2.0 * double(s.out) * double(s.in);
  return f;
}

/// Every parameter drawn from N(0, scale²) (seeded), so that no layer is the identity.
template <typename Model>
void randomize(Model& m, std::uint64_t seed, double scale = 0.05) {
  using S = typename Model::Scalar;
  std::mt19937_64 gen(seed);
  set_parameters(m, Vector<S>(standard_normal_matrix<S>(m.parameter_count(), 1, gen) * S(scale)));
}

template <typename S, int D>
Eigen::Matrix<S, D, Dynamic> inputs(Index d, Index n, std::uint64_t seed = 2) {
  std::mt19937_64 gen(seed);
  return standard_normal_matrix<S, D>(d, n, gen);
}

/// Sets nflow's batch thread count (nflow::set_num_threads) for one benchmark.
class ThreadCount {
 public:
  explicit ThreadCount(int n) { set_num_threads(n); }
  ~ThreadCount() { set_num_threads(1); }
  ThreadCount(const ThreadCount&) = delete;
  ThreadCount& operator=(const ThreadCount&) = delete;
};

/// log_prob of one point (fixed-size vector) or of a batch.
template <typename S, int D, typename Density>
void run_log_prob(benchmark::State& state, const Density& density, Index d, Index n, double flops) {
  if (n == 1) {
    const Eigen::Matrix<S, D, 1> x = inputs<S, D>(d, 1);
    for (auto _ : state) {
      auto lp = density.log_prob(x);
      benchmark::DoNotOptimize(lp);
    }
  } else {
    const Eigen::Matrix<S, D, Dynamic> x = inputs<S, D>(d, n);
    for (auto _ : state) {
      auto lp = density.log_prob(x);
      benchmark::DoNotOptimize(lp.data());
    }
  }
  state.SetItemsProcessed(state.iterations() * n);
  state.counters["flops_per_sample"] = flops;
}

/// Draws n samples (the inverse direction), from a seeded generator.
template <typename Density>
void run_sample(benchmark::State& state, const Density& density, Index n, double flops) {
  std::mt19937_64 gen(5);
  for (auto _ : state) {
    auto x = density.sample(n, gen);
    benchmark::DoNotOptimize(x.data());
  }
  state.SetItemsProcessed(state.iterations() * n);
  state.counters["flops_per_sample"] = flops;
}

/// One maximum-likelihood step on a fixed batch: gradient of the mean NLL, then Adam, as
/// ../shared/bench/bench_train.py does (zero_grad, log_prob, mean, backward, step). The NLL
/// records into one tape reused by every step, as train::fit does.
template <typename S, int D, typename Density>
void run_train_step(benchmark::State& state, Density density, Index d, Index n, double flops) {
  const Eigen::Matrix<S, D, Dynamic> x = inputs<S, D>(d, n, 3);
  train::Adam<S> adam(density.parameter_count(), {.learning_rate = 1e-4});
  Vector<S> grad(density.parameter_count());
  train::NllTape<Density> tape;
  for (auto _ : state) {
    grad.setZero();
    const double loss = train::nll(density, x, grad, no_context, tape);
    adam.step_model(density, grad);
    benchmark::DoNotOptimize(loss);
  }
  state.SetItemsProcessed(state.iterations() * n);
  state.counters["flops_per_sample"] = flops;
}

/// The roofline: the given matrix products on a tile of `tile` samples, nothing else, at the
/// best rate the build's GEMM reaches for them (nn::gemm: Eigen's, or the BLAS library's in a
/// NFLOW_USE_BLAS build, as the layers compute them): every product reads and writes the same two
/// cache-resident buffers (as a network's layers do), accumulates into its output (no zero-fill
/// pass) and is followed by nothing else. For a training step (`train` true) each product also
/// runs its two backward products (∂X = Wᵀ·G and ∂W = G·Xᵀ), three times the forward arithmetic.
/// The buffers' values grow linearly with the iterations (no feedback loop), far from overflow.
template <typename S>
void run_roofline(benchmark::State& state, const Shapes& shapes, bool train, Index tile = 256) {
  using M = Eigen::Matrix<S, Dynamic, Dynamic>;
  std::mt19937_64 gen(9);
  Index rows = 1;
  for (const Shape& s : shapes) rows = std::max({rows, s.in, s.out});
  std::vector<M> w, gw;
  for (const Shape& s : shapes) {
    w.push_back(standard_normal_matrix<S>(s.out, s.in, gen));
    gw.push_back(M::Zero(s.out, s.in));
  }
  const M x = standard_normal_matrix<S>(rows, tile, gen);
  M y = M::Zero(rows, tile);
  M gx = M::Zero(rows, tile);
  for (auto _ : state) {
    for (std::size_t i = 0; i < shapes.size(); ++i) {
      const Index in = shapes[i].in, out = shapes[i].out;
      nn::gemm<false, false>(y.topRows(out), w[i], x.topRows(in), true);
      if (train) {
        nn::gemm<true, false>(gx.topRows(in), w[i], y.topRows(out), true);
        nn::gemm<false, true>(gw[i], y.topRows(out), x.topRows(in), true);
      }
    }
    benchmark::DoNotOptimize(y.data());
    benchmark::DoNotOptimize(gx.data());
    benchmark::ClobberMemory();
  }
  const double flops = flops_per_sample(shapes) * (train ? 3.0 : 1.0);
  state.SetItemsProcessed(state.iterations() * tile);
  state.counters["flops_per_sample"] = flops;
  state.counters["gemm_flops_per_second"] =
      benchmark::Counter(flops * double(tile), benchmark::Counter::kIsIterationInvariantRate);
}

/// What a model family provides to register_family() (derive from FamilyDefaults<Family>):
///   static make<S, D, H>(d): the density, with fixed or run-time (Dynamic) Dim and Hidden;
///   shapes(op, d): the dense products of one sample for op ("log_prob" or "sample");
///   the batch sizes, which follow ../shared/bench/bench_torch.py's (smaller where a call would
///   take seconds).
template <typename Derived>
struct FamilyDefaults {
  /// The density with fixed Dim and Hidden (one-point latency; D = 2 or 16).
  template <typename S, int D>
  auto point() const {
    return Derived::template make<S, D, hidden_for(D)>(D);
  }
  /// The density with run-time sizes.
  template <typename S>
  auto dynamic(Index d) const {
    return Derived::template make<S, Dynamic, Dynamic>(d);
  }
  std::vector<Index> log_prob_batches(Index) const { return {256, 65536}; }
  Index sample_batch(Index) const { return 65536; }
  bool train(Index d) const { return d <= 16; }  // bench_train.py: d = 2 and 16
};

template <typename S, typename Family>
void register_family(const std::string& model, const Family& family) {
  const char* dt = dtype_name<S>();
  // One point, fixed sizes (in CI's smoke build, run-time sizes: the same code, fewer types).
#ifndef NFLOW_BENCHMARK_SMOKE
  benchmark::RegisterBenchmark(bench_name(model, "log_prob", dt, 2, 1).c_str(),
                               [family](benchmark::State& st) {
                                 run_log_prob<S, 2>(st, family.template point<S, 2>(), 2, 1,
                                                    flops_per_sample(family.shapes("log_prob", 2)));
                               })
      ->Unit(benchmark::kMicrosecond)
      ->UseRealTime();
  benchmark::RegisterBenchmark(bench_name(model, "log_prob", dt, 16, 1).c_str(),
                               [family](benchmark::State& st) {
                                 run_log_prob<S, 16>(
                                     st, family.template point<S, 16>(), 16, 1,
                                     flops_per_sample(family.shapes("log_prob", 16)));
                               })
      ->Unit(benchmark::kMicrosecond)
      ->UseRealTime();
  constexpr Index first_dynamic_point = 64;
#else
  constexpr Index first_dynamic_point = 2;
#endif
  for (Index d : {Index(2), Index(16), Index(64)}) {
    if (d >= first_dynamic_point) {
      benchmark::RegisterBenchmark(bench_name(model, "log_prob", dt, d, 1).c_str(),
                                   [family, d](benchmark::State& st) {
                                     run_log_prob<S, Dynamic>(
                                         st, family.template dynamic<S>(d), d, 1,
                                         flops_per_sample(family.shapes("log_prob", d)));
                                   })
          ->Unit(benchmark::kMicrosecond)
          ->UseRealTime();
    }
    for (Index n : family.log_prob_batches(d)) {
      for (int t : {1, 2}) {
        benchmark::RegisterBenchmark(bench_name(model, "log_prob", dt, d, n, t).c_str(),
                                     [family, d, n, t](benchmark::State& st) {
                                       const ThreadCount threads(t);
                                       run_log_prob<S, Dynamic>(
                                           st, family.template dynamic<S>(d), d, n,
                                           flops_per_sample(family.shapes("log_prob", d)));
                                     })
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
      }
    }
    const Index n_sample = family.sample_batch(d);
    for (int t : {1, 2}) {
      if (n_sample == 0) break;
      benchmark::RegisterBenchmark(bench_name(model, "sample", dt, d, n_sample, t).c_str(),
                                   [family, d, n_sample, t](benchmark::State& st) {
                                     const ThreadCount threads(t);
                                     run_sample(st, family.template dynamic<S>(d), n_sample,
                                                flops_per_sample(family.shapes("sample", d)));
                                   })
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
    }
    if (family.train(d)) {
      benchmark::RegisterBenchmark(bench_name(model, "train_step", dt, d, 256).c_str(),
                                   [family, d](benchmark::State& st) {
                                     run_train_step<S, Dynamic>(
                                         st, family.template dynamic<S>(d), d, 256,
                                         3.0 * flops_per_sample(family.shapes("log_prob", d)));
                                   })
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
    }
    const std::string suffix =
        std::string("/") + dt + "/d:" + std::to_string(d) + "/H:" + std::to_string(hidden_for(d));
    for (const char* op : {"log_prob", "sample", "train_step"}) {
      if (std::string(op) == "sample" && n_sample == 0) continue;
      if (std::string(op) == "train_step" && !family.train(d)) continue;
      const bool train = std::string(op) == "train_step";
      const Shapes shapes = family.shapes(train ? "log_prob" : op, d);
      benchmark::RegisterBenchmark(
          ("Roofline/" + model + "/" + op + suffix).c_str(),
          [shapes, train](benchmark::State& st) { run_roofline<S>(st, shapes, train); })
          ->Unit(benchmark::kMicrosecond)
          ->UseRealTime();
    }
  }
}

/// main() of a comparison binary: registers float and double, then runs.
template <typename Family>
int compare_main(int argc, char** argv, const std::string& model, const Family& family) {
  register_family<float>(model, family);
  NFLOW_UNLESS_SMOKE(register_family<double>(model, family);)
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace nflow::bench
