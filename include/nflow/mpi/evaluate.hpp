#pragma once
/// @file
/// @brief Distributed evaluation and sampling on MPI: the mean negative log-likelihood of a data
/// set sharded over the ranks or its log-densities gathered, importance sampling with per-rank
/// streams reduced into one sampling::ImportanceAccumulator (log Ẑ, ESS, ...), and sampling of
/// N points split over the ranks, written as one safetensors shard per rank with a JSON index.

#include <Eigen/Core>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "nflow/core/errors.hpp"
#include "nflow/core/random.hpp"
#include "nflow/core/types.hpp"
#include "nflow/io/json.hpp"
#include "nflow/io/tensor_conversion.hpp"
#include "nflow/io/tensor_file.hpp"
#include "nflow/mpi/communicator.hpp"
#include "nflow/mpi/train.hpp"
#include "nflow/sampling/importance.hpp"
#include "nflow/train/distributed.hpp"

namespace nflow::mpi {

/// @brief The mean negative log-likelihood −(1/N) Σⱼ log p(xⱼ [| cⱼ]) of a data set of which
/// each rank holds a shard `x` (Dim × nᵣ, any nᵣ ≥ 0, N = Σ nᵣ > 0), with its contexts for a
/// conditional density: one sum of (Σ log p, nᵣ) over the ranks, in double. Every rank gets the
/// value; it equals train::nll_value on the whole set to rounding. Collective.
/// @throws ShapeError on every rank when the ranks hold no sample at all.
template <typename D, typename X, typename C = NoContext>
double mean_nll(Communicator& comm, const D& density, const Eigen::MatrixBase<X>& x,
                const C& context = C{}) {
  double sums[2] = {0.0, double(x.cols())};
  if (x.cols() > 0) sums[0] = -density.log_prob(x, context).template cast<double>().sum();
  comm.sum(std::span<double>(sums, 2));
  if (sums[1] == 0) throw ShapeError("nflow::mpi::mean_nll: no rank holds a sample");
  return sums[0] / sums[1];
}

/// @brief log p(xⱼ [| cⱼ]) of a data set of which each rank holds a shard `x` (Dim × nᵣ, any
/// nᵣ ≥ 0), gathered in rank order on every rank (1 × Σ nᵣ, in double): shard r's values start
/// at Σ_{q<r} n_q. Collective.
template <typename D, typename X, typename C = NoContext>
Eigen::RowVectorXd gather_log_prob(Communicator& comm, const D& density,
                                   const Eigen::MatrixBase<X>& x, const C& context = C{}) {
  Eigen::RowVectorXd mine(x.cols());
  if (x.cols() > 0) mine = density.log_prob(x, context).template cast<double>();
  const std::vector<std::vector<double>> all =
      comm.all_gather_varying(std::span<const double>(mine.data(), std::size_t(mine.size())));
  std::size_t total = 0;
  for (const auto& v : all) total += v.size();
  Eigen::RowVectorXd out(static_cast<Index>(total));
  Index at = 0;
  for (const auto& v : all) {
    for (double value : v) out(at++) = value;
  }
  return out;
}

/// @brief Importance sampling split over the ranks: rank r draws its train::batch_slice of
/// `global_n` samples from `q` with rank_generator(comm, seed), in batches of `batch`
/// (sampling::importance_sample), and the ranks' accumulators are gathered and merged in rank
/// order, so every rank returns the same accumulator: log_z(), ess(), pareto_k(), ... of all
/// global_n samples. The result depends on (seed, number of ranks). Collective.
/// @throws what sampling::importance_sample throws, on every rank (collective_call).
template <typename Q, typename LogTarget>
sampling::ImportanceAccumulator importance_sample(Communicator& comm, const Q& q,
                                                  LogTarget&& log_target, Index global_n,
                                                  std::uint64_t seed, Index batch = 4096) {
  sampling::ImportanceAccumulator mine;
  collective_call(comm, "nflow::mpi::importance_sample", [&] {
    if (global_n < 0) {
      throw std::invalid_argument("nflow::mpi::importance_sample: global_n must be >= 0, got " +
                                  std::to_string(global_n));
    }
    std::mt19937_64 gen = rank_generator(comm, seed);
    const Index n = train::batch_slice(global_n, comm.rank(), comm.size()).count;
    mine = sampling::importance_sample(q, log_target, n, gen, batch);
  });
  const std::vector<double> state = mine.state();
  const std::vector<std::vector<double>> all = comm.all_gather_varying(state);
  sampling::ImportanceAccumulator merged = sampling::ImportanceAccumulator::from_state(all[0]);
  for (std::size_t r = 1; r < all.size(); ++r)
    merged.merge(sampling::ImportanceAccumulator::from_state(all[r]));
  return merged;
}

/// @brief What sample_shards wrote: the index file and, per rank, its shard's file name (in the
/// index's directory), first global row and number of samples.
struct ShardIndex {
  struct Shard {
    std::string file;
    Index first = 0;
    Index count = 0;
  };
  std::filesystem::path index;
  Index total = 0;
  Index dim = 0;
  std::uint64_t seed = 0;
  std::vector<Shard> shards;
};

/// @brief Draws `global_n` samples of `density` split over the ranks (rank r: its
/// train::batch_slice, from rank_generator(comm, seed), in batches of `batch`) and writes them
/// per rank to `directory`/shard-<r>-of-<P>.safetensors: tensor "samples" (nᵣ × Dim, one sample
/// per row, as PyTorch stores a batch) and "log_prob" (nᵣ), in the density's Scalar, with
/// metadata "rank", "ranks", "first", "seed". Rank 0 writes `directory`/index.json:
/// {"total": N, "dim": D, "seed": s, "shards": [{"file": ..., "first": ..., "count": ...}, ...]}.
/// Reproducible: the same (seed, number of ranks) give the same files; ranks draw independent
/// streams. Collective; a failure on any rank throws on every rank.
template <typename D>
ShardIndex sample_shards(Communicator& comm, const D& density, Index global_n, std::uint64_t seed,
                         const std::filesystem::path& directory, Index batch = 65536) {
  using Scalar = typename D::Scalar;
  ShardIndex index;
  index.index = directory / "index.json";
  index.total = global_n;
  index.dim = density.dim();
  index.seed = seed;
  const Index ranks = comm.size();
  auto shard_name = [&](Index r) {
    return "shard-" + std::to_string(r) + "-of-" + std::to_string(ranks) + ".safetensors";
  };
  for (Index r = 0; r < ranks; ++r) {
    const train::Slice s = train::batch_slice(global_n, r, ranks);
    index.shards.push_back({shard_name(r), s.first, s.count});
  }
  collective_call(comm, "nflow::mpi::sample_shards", [&] {
    if (global_n < 0 || batch < 1) {
      throw std::invalid_argument(
          "nflow::mpi::sample_shards: global_n must be >= 0 and batch >= 1, got " +
          std::to_string(global_n) + " and " + std::to_string(batch));
    }
    std::filesystem::create_directories(directory);
    const ShardIndex::Shard& mine = index.shards[std::size_t(comm.rank())];
    std::mt19937_64 gen = rank_generator(comm, seed);
    Batch<Scalar, Dynamic, Dynamic> x(density.dim(), mine.count);
    PerSample<Scalar, Dynamic> log_prob(1, mine.count);
    for (Index done = 0; done < mine.count;) {
      const Index b = std::min(batch, mine.count - done);
      auto drawn = density.sample_and_log_prob(b, gen);
      x.middleCols(done, b) = drawn.samples;
      log_prob.middleCols(done, b) = drawn.log_prob;
      done += b;
    }
    io::TensorFile file;
    file.metadata = {{"rank", std::to_string(comm.rank())},
                     {"ranks", std::to_string(ranks)},
                     {"first", std::to_string(mine.first)},
                     {"seed", std::to_string(seed)}};
    const io::DType dtype = io::dtype_of<Scalar>();
    file.tensors.emplace("samples", io::make_tensor(x.transpose(), dtype, "samples"));
    file.tensors.emplace("log_prob", io::make_tensor(log_prob.transpose(), dtype, "log_prob"));
    io::write_safetensors(directory / mine.file, file);
    if (comm.rank() != 0) return;
    std::string json = "{\"total\": " + std::to_string(global_n) +
                       ", \"dim\": " + std::to_string(density.dim()) +
                       ", \"seed\": " + std::to_string(seed) + ", \"shards\": [";
    for (std::size_t r = 0; r < index.shards.size(); ++r) {
      const ShardIndex::Shard& s = index.shards[r];
      json += std::string(r > 0 ? ", " : "") + "{\"file\": \"" + s.file +
              "\", \"first\": " + std::to_string(s.first) +
              ", \"count\": " + std::to_string(s.count) + "}";
    }
    json += "]}\n";
    std::ofstream out(index.index, std::ios::binary | std::ios::trunc);
    out << json;
    out.close();
    if (!out) throw io::IoError("nflow::mpi::sample_shards: cannot write " + index.index.string());
  });
  return index;
}

/// @brief Reads the samples that sample_shards wrote (any number of ranks, or none: this is not
/// collective) from the index file `index`, as one Dim × N matrix in global order, with their
/// log-densities in `log_prob` if given.
/// @throws io::IoError (or io's format errors) when the index or a shard is missing or does not
///   agree with the index.
template <typename Scalar>
Batch<Scalar, Dynamic, Dynamic> read_shards(const std::filesystem::path& index,
                                            PerSample<Scalar, Dynamic>* log_prob = nullptr) {
  std::ifstream in(index, std::ios::binary);
  if (!in) throw io::IoError("nflow::mpi::read_shards: cannot open " + index.string());
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const io::json::Value root = io::json::parse(text);
  auto number = [&](const io::json::Value* v, const char* what) {
    if (v == nullptr || !v->as_uint64()) {
      throw io::IoError("nflow::mpi::read_shards: " + index.string() + ": '" + what +
                        "' is missing or not a non-negative integer");
    }
    return Index(*v->as_uint64());
  };
  const Index total = number(root.find("total"), "total");
  const Index dim = number(root.find("dim"), "dim");
  const io::json::Value* shards = root.find("shards");
  if (shards == nullptr || !shards->is_array()) {
    throw io::IoError("nflow::mpi::read_shards: " + index.string() + ": no 'shards' array");
  }
  Batch<Scalar, Dynamic, Dynamic> x(dim, total);
  if (log_prob != nullptr) log_prob->resize(1, total);
  Index covered = 0;
  for (const io::json::Value& s : shards->items) {
    const io::json::Value* file = s.find("file");
    const Index first = number(s.find("first"), "first");
    const Index count = number(s.find("count"), "count");
    if (file == nullptr || !file->is_string() || first != covered || first + count > total) {
      throw io::IoError("nflow::mpi::read_shards: " + index.string() +
                        ": the shards do not cover the samples in order");
    }
    const io::TensorFile f = io::read_safetensors(index.parent_path() / file->text);
    const auto samples = f.tensors.find("samples");
    const auto lp = f.tensors.find("log_prob");
    if (samples == f.tensors.end() || lp == f.tensors.end()) {
      throw io::IoError("nflow::mpi::read_shards: " + file->text +
                        " lacks 'samples' or 'log_prob'");
    }
    const ParameterMatrix<Scalar> m = io::to_matrix<Scalar>(samples->second, "samples");
    if (count > 0 && (m.rows() != count || m.cols() != dim)) {
      throw io::IoError("nflow::mpi::read_shards: " + file->text + " holds " +
                        std::to_string(m.rows()) + " x " + std::to_string(m.cols()) +
                        " samples, the index says " + std::to_string(count) + " x " +
                        std::to_string(dim));
    }
    if (count > 0) x.middleCols(first, count) = m.transpose();
    if (log_prob != nullptr && count > 0) {
      log_prob->middleCols(first, count) =
          io::to_matrix<Scalar>(lp->second, "log_prob").reshaped(1, count);
    }
    covered += count;
  }
  if (covered != total) {
    throw io::IoError("nflow::mpi::read_shards: " + index.string() + ": the shards hold " +
                      std::to_string(covered) + " of " + std::to_string(total) + " samples");
  }
  return x;
}

}  // namespace nflow::mpi
