#pragma once
/// @file
/// @brief How a batch call splits its columns: into tiles of a fixed number of columns, which
/// it evaluates one after another or on several threads.
///
/// Every bijector's public batch calls (`forward_and_log_det`, `inverse_and_log_det` and what is
/// derived from them, hence `Density::log_prob` and `Density::sample`) evaluate a batch of more
/// than `tile_columns()` columns tile by tile: each tile goes through the whole bijector (every
/// layer of a Flow) while its activations are still in cache, and with `num_threads() > 1` the
/// tiles are shared among that many threads. Samples are independent columns, so this changes
/// nothing but the speed: the tile boundaries do not depend on the thread count, hence the
/// results are the same, bit for bit, with 1 thread or 8. (Gradients, `forward_vjp` and
/// `inverse_vjp`, are not split: training batches are small.)
///
/// Defaults: 1 thread (nflow never starts threads unless asked; a program that already runs its
/// own threads keeps control), tiles of 256 columns. A call made from inside a tile (a layer of a
/// Flow) is not split again. Threads are started per call (std::thread; about 20–50 µs), so only
/// batches of at least two tiles use them.
///
/// Thread safety: the settings are atomics, safe to change at any time; a call reads them once,
/// when it starts. An exception thrown by a tile (e.g. a ShapeError) is rethrown by the call
/// after every thread has finished; which tile's exception wins when several throw is unspecified.

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "nflow/core/errors.hpp"
#include "nflow/core/types.hpp"

namespace nflow {

namespace detail {
inline std::atomic<int>& num_threads_setting() {
  static std::atomic<int> n{1};
  return n;
}
inline std::atomic<Index>& tile_columns_setting() {
  static std::atomic<Index> n{256};
  return n;
}
/// True on a thread while it evaluates a tile (so nested bijector calls run unsplit).
inline thread_local bool inside_tile = false;
}  // namespace detail

/// @brief Threads a batch call may use (>= 1; default 1). @throws ParameterError if n < 1.
inline void set_num_threads(int n) {
  if (n < 1)
    throw ParameterError("nflow::set_num_threads: need at least 1 thread, got " +
                         std::to_string(n));
  detail::num_threads_setting().store(n);
}
/// @brief The thread count batch calls use (see set_num_threads).
inline int num_threads() { return detail::num_threads_setting().load(); }

/// @brief Columns per tile of a batch call (>= 1; default 256). @throws ParameterError if n < 1.
inline void set_tile_columns(Index n) {
  if (n < 1)
    throw ParameterError("nflow::set_tile_columns: need at least 1 column, got " +
                         std::to_string(n));
  detail::tile_columns_setting().store(n);
}
/// @brief The tile width of batch calls (see set_tile_columns).
inline Index tile_columns() { return detail::tile_columns_setting().load(); }

namespace detail {

/// Whether a batch of n columns, called from this thread, is split into tiles.
inline bool splits_batch(Index n) { return !inside_tile && n > tile_columns(); }

/// Marks the current thread as inside a tile for the scope's lifetime.
class TileScope {
 public:
  TileScope() : previous_(inside_tile) { inside_tile = true; }
  ~TileScope() { inside_tile = previous_; }
  TileScope(const TileScope&) = delete;
  TileScope& operator=(const TileScope&) = delete;

 private:
  bool previous_;
};

/// Calls f(begin, count) for consecutive tiles of [0, n) of `tile_columns()` columns, on up to
/// `num_threads()` threads (the caller is one of them). Each call runs inside a TileScope.
template <typename F>
void for_each_tile(Index n, F&& f) {
  const Index tile = tile_columns();
  const Index tiles = (n + tile - 1) / tile;
  const int threads = int(std::min<Index>(Index(num_threads()), tiles));
  auto run = [&](Index t) {
    const TileScope scope;
    const Index begin = t * tile;
    f(begin, std::min(tile, n - begin));
  };
  if (threads <= 1) {
    for (Index t = 0; t < tiles; ++t) run(t);
    return;
  }
  std::atomic<Index> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto worker = [&] {
    for (Index t = next.fetch_add(1); t < tiles; t = next.fetch_add(1)) {
      try {
        run(t);
      } catch (...) {
        const std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
        next.store(tiles);  // stop handing out tiles
      }
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(std::size_t(threads - 1));
  try {
    for (int i = 1; i < threads; ++i) pool.emplace_back(worker);
  } catch (...) {
    // Could not start a thread: the threads already started and this one do the work.
  }
  worker();
  for (std::thread& t : pool) t.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace detail
}  // namespace nflow
