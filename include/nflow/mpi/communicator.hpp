#pragma once
/// @file
/// @brief nflow::mpi::Communicator: train::Collective on an MPI communicator (bucketed in-place
/// allreduces, gathers, broadcasts), and the error type of nflow's MPI layer.

#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "nflow/core/types.hpp"
#include "nflow/train/distributed.hpp"

namespace nflow::mpi {

/// @brief Thrown when an MPI call returns an error (with the communicator's error handler set
/// to MPI_ERRORS_RETURN; MPI's default handler aborts the job instead), or when the processes
/// of a collective operation of nflow's were given inconsistent input.
class MpiError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {

/// Throws MpiError naming the call and MPI's message when `code` is not MPI_SUCCESS.
inline void check(int code, const char* call) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  throw MpiError(std::string("nflow::mpi: ") + call + " failed: " + std::string(text, length));
}

template <typename Scalar>
MPI_Datatype datatype() {
  if constexpr (std::is_same_v<Scalar, float>) {
    return MPI_FLOAT;
  } else if constexpr (std::is_same_v<Scalar, double>) {
    return MPI_DOUBLE;
  } else {
    static_assert(std::is_same_v<Scalar, std::uint64_t>,
                  "nflow::mpi: buffers are float, double or std::uint64_t");
    return MPI_UINT64_T;
  }
}

}  // namespace detail

/// @brief The processes of an MPI communicator (MPI_COMM_WORLD by default; not owned: it must
/// outlive this object, and MPI must be initialised) as a train::Collective, which
/// FitOptions::collective takes for data-parallel training.
///
/// sum() is one in-place MPI_Allreduce per bucket of `bucket_elements` values (default 2²⁰:
/// 8 MiB of doubles), in the buffer's layout (a model's flat gradient), so that no single call
/// exceeds MPI's int count and large models overlap nothing they need not. Every operation is
/// collective: every process of the communicator must call it, in the same order, with buffers
/// of the same length.
class Communicator final : public train::Collective {
 public:
  /// @throws MpiError when MPI is not initialised or `bucket_elements` is not positive.
  explicit Communicator(MPI_Comm comm = MPI_COMM_WORLD, Index bucket_elements = Index(1) << 20)
      : comm_(comm), bucket_(bucket_elements) {
    int initialised = 0;
    MPI_Initialized(&initialised);
    if (!initialised) {
      throw MpiError("nflow::mpi::Communicator: MPI is not initialised (call MPI_Init first)");
    }
    if (bucket_elements <= 0 || bucket_elements > INT_MAX) {
      throw MpiError("nflow::mpi::Communicator: bucket_elements must be in [1, INT_MAX], got " +
                     std::to_string(bucket_elements));
    }
    int rank = 0;
    int size = 0;
    detail::check(MPI_Comm_rank(comm_, &rank), "MPI_Comm_rank");
    detail::check(MPI_Comm_size(comm_, &size), "MPI_Comm_size");
    rank_ = rank;
    size_ = size;
  }

  MPI_Comm comm() const { return comm_; }
  Index rank() const override { return rank_; }
  Index size() const override { return size_; }
  Index bucket_elements() const { return bucket_; }

  void sum(std::span<double> values) override { sum_impl(values); }
  void sum(std::span<float> values) override { sum_impl(values); }
  /// Sums unsigned 64-bit counters (exactly) in place.
  void sum(std::span<std::uint64_t> values) { sum_impl(values); }

  std::vector<std::uint64_t> all_gather(std::span<const std::uint64_t> mine) override {
    std::vector<std::uint64_t> all(mine.size() * std::size_t(size_));
    detail::check(MPI_Allgather(mine.data(), int(mine.size()), MPI_UINT64_T, all.data(),
                                int(mine.size()), MPI_UINT64_T, comm_),
                  "MPI_Allgather");
    return all;
  }

  /// The doubles of every process, one vector per rank; each may pass a different number
  /// (counts first, then MPI_Allgatherv).
  std::vector<std::vector<double>> all_gather_varying(std::span<const double> mine) {
    const std::uint64_t n = mine.size();
    const std::vector<std::uint64_t> counts = all_gather(std::span(&n, 1));
    std::vector<int> sizes(counts.size());
    std::vector<int> offsets(counts.size());
    std::uint64_t total = 0;
    for (std::size_t r = 0; r < counts.size(); ++r) {
      if (total + counts[r] > std::uint64_t(INT_MAX)) {
        throw MpiError("nflow::mpi::Communicator::all_gather_varying: more than INT_MAX values");
      }
      sizes[r] = int(counts[r]);
      offsets[r] = int(total);
      total += counts[r];
    }
    std::vector<double> all(total);
    detail::check(MPI_Allgatherv(mine.data(), int(n), MPI_DOUBLE, all.data(), sizes.data(),
                                 offsets.data(), MPI_DOUBLE, comm_),
                  "MPI_Allgatherv");
    std::vector<std::vector<double>> per_rank(counts.size());
    for (std::size_t r = 0; r < counts.size(); ++r) {
      per_rank[r].assign(all.begin() + offsets[r], all.begin() + offsets[r] + sizes[r]);
    }
    return per_rank;
  }

  /// Copies `values` of process `root` to every process (bucketed as sum()).
  template <typename Scalar>
  void broadcast(std::span<Scalar> values, Index root = 0) {
    for_each_bucket(values, [&](Scalar* data, int count) {
      detail::check(MPI_Bcast(data, count, detail::datatype<Scalar>(), int(root), comm_),
                    "MPI_Bcast");
    });
  }

  /// Waits until every process has called it.
  void barrier() { detail::check(MPI_Barrier(comm_), "MPI_Barrier"); }

 private:
  template <typename Scalar, typename F>
  void for_each_bucket(std::span<Scalar> values, F&& f) {
    const std::size_t bucket = std::size_t(bucket_);
    for (std::size_t first = 0; first < values.size(); first += bucket) {
      f(values.data() + first, int(std::min(bucket, values.size() - first)));
    }
  }
  template <typename Scalar>
  void sum_impl(std::span<Scalar> values) {
    for_each_bucket(values, [&](Scalar* data, int count) {
      detail::check(
          MPI_Allreduce(MPI_IN_PLACE, data, count, detail::datatype<Scalar>(), MPI_SUM, comm_),
          "MPI_Allreduce");
    });
  }

  MPI_Comm comm_;
  Index bucket_;
  Index rank_ = 0;
  Index size_ = 1;
};

}  // namespace nflow::mpi
