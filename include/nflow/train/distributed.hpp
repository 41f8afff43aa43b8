#pragma once
/// @file
/// @brief What train::fit needs to train one model on several processes (data parallelism),
/// without knowing how they talk: the Collective interface (sums and gathers over the
/// processes; nflow/mpi/communicator.hpp implements it on MPI), a hash of a model's parameters,
/// and the checks that every process runs the same training. The core never needs MPI.

#include <Eigen/Core>
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "nflow/core/errors.hpp"
#include "nflow/core/types.hpp"

namespace nflow::train {

/// @brief The collective operations of a data-parallel run over `size()` processes, of which
/// this one is `rank()`. Every process must call each operation, in the same order, with
/// buffers of the same length (as MPI's collectives). train::fit calls them through
/// FitOptions::collective; nflow::mpi::Communicator implements them on an MPI communicator.
class Collective {
 public:
  virtual ~Collective() = default;
  /// This process's index, 0 ≤ rank() < size().
  virtual Index rank() const = 0;
  /// The number of processes.
  virtual Index size() const = 0;
  /// Replaces `values` on every process by their element-wise sum over the processes.
  virtual void sum(std::span<double> values) = 0;
  /// As sum(std::span<double>), for float buffers.
  virtual void sum(std::span<float> values) = 0;
  /// The values of every process, concatenated in rank order (size() · mine.size() entries).
  virtual std::vector<std::uint64_t> all_gather(std::span<const std::uint64_t> mine) = 0;
};

/// @brief Runs `f()`; with a collective (not null), then tells every process whether it threw
/// on any of them (one sum): if it threw here, rethrows its exception; if it threw only on other
/// processes, throws ParameterError saying on how many. A failure on one process (bad
/// arguments, a file that cannot be written) then stops every process at the same point instead
/// of leaving the others waiting in their next collective call. Without a collective: f().
/// With one, collective: every process must call it.
template <typename F>
void agree_on_failure(Collective* collective, const char* who, F&& f) {
  if (collective == nullptr) {
    std::forward<F>(f)();
    return;
  }
  std::exception_ptr error;
  try {
    std::forward<F>(f)();
  } catch (...) {
    error = std::current_exception();
  }
  double failed = error ? 1 : 0;
  collective->sum(std::span(&failed, 1));
  if (error) std::rethrow_exception(error);
  if (failed > 0) {
    throw ParameterError(std::string(who) + ": failed on " + std::to_string(int(failed)) +
                         " other process(es) (their exceptions say why)");
  }
}

namespace detail {

/// FNV-1a over bytes, continuing from `hash`.
inline std::uint64_t fnv1a(const void* data, std::size_t bytes,
                           std::uint64_t hash = 0xcbf29ce484222325ull) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < bytes; ++i) {
    hash ^= p[i];
    hash *= 0x100000001b3ull;
  }
  return hash;
}

/// The hash of the values of an Eigen object (column by column), continuing from `hash`.
template <typename Derived>
std::uint64_t hash_values(const Eigen::DenseBase<Derived>& m,
                          std::uint64_t hash = 0xcbf29ce484222325ull) {
  using S = typename Derived::Scalar;
  for (Index j = 0; j < m.cols(); ++j) {
    for (Index i = 0; i < m.rows(); ++i) {
      const S v = m.derived().coeff(i, j);
      hash = fnv1a(&v, sizeof(S), hash);
    }
  }
  return hash;
}

}  // namespace detail

/// @brief A 64-bit hash (FNV-1a) of the bytes of every parameter of `model`, in visiting order:
/// equal on two processes exactly when their parameters are bit for bit equal (but for a
/// collision, about 2⁻⁶⁴).
template <typename Model>
std::uint64_t parameter_hash(const Model& model) {
  std::uint64_t hash = 0xcbf29ce484222325ull;
  model.visit_parameters(
      [&](const std::string&, const auto& tensor) { hash = detail::hash_values(tensor, hash); });
  return hash;
}

/// @brief Compares the hash of `model`'s parameters across the processes (one gather): empty
/// when they agree, else a sentence naming the first rank whose parameters differ from rank 0's
/// after `step` steps. Every process gets the same answer. train::fit throws TrainingError with
/// it every FitOptions::consistency_check_every_steps steps.
template <typename Model>
std::string parameter_divergence(Collective& collective, const Model& model, Index step) {
  const std::uint64_t mine = parameter_hash(model);
  const std::vector<std::uint64_t> all = collective.all_gather(std::span(&mine, 1));
  for (std::size_t r = 1; r < all.size(); ++r) {
    if (all[r] != all[0]) {
      return "the parameters of rank " + std::to_string(r) + " differ from rank 0's after step " +
             std::to_string(step) + " (hashes " + std::to_string(all[r]) + " and " +
             std::to_string(all[0]) +
             "): the processes no longer train the same model (a rank changed its parameters, "
             "or the ranks compute differently)";
    }
  }
  return {};
}

/// @brief The columns [first, first + count) of a global batch of n columns that process `rank`
/// of `ranks` takes: consecutive, in rank order, as equal as they can be (the first n mod ranks
/// processes take one more).
struct Slice {
  Index first = 0;
  Index count = 0;
};
inline Slice batch_slice(Index n, Index rank, Index ranks) {
  const Index first = rank * (n / ranks) + std::min(rank, n % ranks);
  return {first, n / ranks + (rank < n % ranks ? 1 : 0)};
}

/// @brief Checks that every process of `collective` passed the same `values` (one per name),
/// with one gather. Every process gets the same answer, so either all return or all throw.
/// @throws ParameterError naming the first quantity that differs, its value on rank 0 and on
///   the first rank that disagrees, prefixed by `who`.
inline void check_same_on_every_rank(Collective& collective, const char* who,
                                     std::span<const std::uint64_t> values,
                                     std::span<const char* const> names) {
  const std::vector<std::uint64_t> all = collective.all_gather(values);
  const std::size_t k = values.size();
  for (std::size_t i = 0; i < k; ++i) {
    for (Index r = 1; r < collective.size(); ++r) {
      const std::uint64_t theirs = all[std::size_t(r) * k + i];
      if (theirs != all[i]) {
        throw ParameterError(std::string(who) + ": the processes disagree on " + names[i] +
                             " (rank 0: " + std::to_string(all[i]) + ", rank " + std::to_string(r) +
                             ": " + std::to_string(theirs) +
                             "); every rank must run the same training");
      }
    }
  }
}

}  // namespace nflow::train
