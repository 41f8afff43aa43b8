#pragma once
/// @file
/// @brief Per-thread scratch memory for the temporaries of batch calls: detail::ScratchArena and
/// detail::ScratchMatrix.
///
/// A network's batch pass needs blocks of hidden activations and outputs (up to
/// nn::DenseNetwork's BlockBytes, 256 KB, each call). Allocated with `new` and freed on return,
/// such blocks go through glibc's malloc, which hands freed memory above its trim threshold back
/// to the kernel and maps chunks above its mmap threshold (both 128 KB by default, then adapted):
/// a call whose temporaries add up to a few hundred KB can then map, fault in and unmap them every
/// time. Measured (benchmarks/interop/imported_benchmark, the native 3-layer spline MAF, D = 4,
/// H = 16, K = 8, double, batch 256, -O2, on a 2-core VM whose page faults are expensive): 2.46 ms
/// per call with plain allocations, 0.38 ms with malloc's thresholds raised by GLIBC_TUNABLES —
/// 85 % of the time in page faults and brk.
///
/// So the temporaries come from a per-thread arena that keeps its memory between calls: blocks are
/// taken and given back in LIFO order (ScratchMatrix, RAII); after the first call of a given size
/// a batch call takes no memory from malloc for them. Nested calls (a bijector inside a tile,
/// a conditioner inside a layer) stack on the same arena. Each thread's arena keeps at most
/// MaxRetainedBytes between calls (more is freed when the last block is given back) and is freed
/// when the thread ends. Nothing is shared between threads, so a const flow stays safe to use
/// from many threads at once.

#include <Eigen/Core>
#include <algorithm>
#include <cstddef>
#include <memory>
#include <new>
#include <vector>

#include "nflow/core/types.hpp"

namespace nflow::detail {

/// The calling thread's scratch memory (see the file comment). Not for direct use: ScratchMatrix.
class ScratchArena {
 public:
  /// Every block starts on a multiple of this many bytes.
  static constexpr std::size_t Alignment = 64;
  /// The first chunk's size; later chunks double.
  static constexpr std::size_t MinChunkBytes = std::size_t(64) * 1024;
  /// What a thread keeps between calls at most.
  static constexpr std::size_t MaxRetainedBytes = std::size_t(32) * 1024 * 1024;

  /// The calling thread's arena.
  static ScratchArena& local() {
    thread_local ScratchArena arena;
    return arena;
  }

  /// `bytes` (rounded up to Alignment) of uninitialised memory, aligned to Alignment; to be given
  /// back, with the same `bytes`, before any block taken earlier.
  void* take(std::size_t bytes) {
    bytes = rounded(bytes);
    if (chunks_.empty() || chunks_.back().size - chunks_.back().used < bytes) {
      const std::size_t last = chunks_.empty() ? 0 : chunks_.back().size;
      chunks_.push_back(Chunk(std::max({bytes, MinChunkBytes, 2 * last})));
    }
    Chunk& c = chunks_.back();
    std::byte* p = c.data.get() + c.used;
    c.used += bytes;
    ++depth_;
    return p;
  }

  /// Gives back the block taken last (`bytes` as given to take).
  void give_back(std::size_t bytes) noexcept {
    bytes = rounded(bytes);
    // The last block lives in the last chunk that holds anything (chunks after it, created for a
    // block that did not fit, are empty again).
    for (auto it = chunks_.rbegin(); it != chunks_.rend(); ++it) {
      if (it->used > 0 || bytes == 0) {
        it->used -= std::min(it->used, bytes);
        break;
      }
    }
    if (--depth_ == 0) settle();
  }

  /// Bytes the thread's arena holds now (for tests).
  std::size_t capacity() const {
    std::size_t total = 0;
    for (const Chunk& c : chunks_) total += c.size;
    return total;
  }

 private:
  struct Free {
    void operator()(std::byte* p) const noexcept {
      ::operator delete[](p, std::align_val_t(Alignment));
    }
  };
  struct Chunk {
    explicit Chunk(std::size_t bytes)
        : data(static_cast<std::byte*>(::operator new[](bytes, std::align_val_t(Alignment)))),
          size(bytes) {}
    std::unique_ptr<std::byte[], Free> data;
    std::size_t size = 0;
    std::size_t used = 0;
  };

  static std::size_t rounded(std::size_t bytes) {
    return (bytes + Alignment - 1) / Alignment * Alignment;
  }

  /// With nothing taken: one chunk as large as all of them (the next call of the same sizes then
  /// fits in it), or nothing beyond MaxRetainedBytes.
  void settle() {
    if (chunks_.size() <= 1 && capacity() <= MaxRetainedBytes) return;
    const std::size_t total = capacity();
    chunks_.clear();
    if (total <= MaxRetainedBytes) chunks_.push_back(Chunk(total));
  }

  std::vector<Chunk> chunks_;
  std::size_t depth_ = 0;
};

/// A rows × cols matrix of uninitialised scalars in the calling thread's ScratchArena, given back
/// when it goes out of scope (an Eigen::Map: blocks, products and assignments as for a matrix; it
/// cannot be resized, copied or moved). Scratch matrices of one thread must end in the reverse
/// order of their creation, as locals do.
template <typename Scalar>
class ScratchMatrix : public Eigen::Map<Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>> {
  using Base = Eigen::Map<Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>>;

 public:
  ScratchMatrix(Index rows, Index cols)
      : Base(static_cast<Scalar*>(ScratchArena::local().take(bytes_for(rows, cols))), rows, cols),
        bytes_(bytes_for(rows, cols)) {}
  ~ScratchMatrix() { ScratchArena::local().give_back(bytes_); }
  ScratchMatrix(const ScratchMatrix&) = delete;
  ScratchMatrix& operator=(const ScratchMatrix&) = delete;
  using Base::operator=;

 private:
  static std::size_t bytes_for(Index rows, Index cols) {
    return std::size_t(rows) * std::size_t(cols) * sizeof(Scalar);
  }
  std::size_t bytes_;
};

}  // namespace nflow::detail
