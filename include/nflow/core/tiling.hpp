#pragma once
/// @file
/// @brief The tiling policy of batch calls: when a bijector's batch call is split into tiles of
/// columns (evaluated one after another or on several threads, nflow/core/parallel.hpp), and how.
///
/// Policy, applied by nflow::BijectorBase to `forward_and_log_det` and `inverse_and_log_det` (and
/// so to everything derived from them):
/// - a batch whose column count is not fixed at compile time, of more than `tile_columns()`
///   columns, called from outside a tile, is split into tiles of `tile_columns()` columns;
/// - a bijector takes part unless its `splits_batches()` returns false (BijectorBase declares it,
///   returning true; a bijector whose columns are not independent for some settings hides it,
///   e.g. ContinuousFlow with the adaptive Dormand–Prince solver, whose step sizes depend on the
///   whole batch);
/// - each tile is copied to a plain `Dim × n` matrix (and its context to a plain matrix), so the
///   hooks see one type; results are written back in place; gradients are never split.
/// Tile boundaries do not depend on the thread count, so results are bit-identical for any
/// num_threads().

#include "nflow/core/parallel.hpp"
#include "nflow/core/types.hpp"

namespace nflow::detail {

/// Whether a batch call of a bijector that allows splitting (`splits_batches`) over `n` columns
/// is evaluated tile by tile.
inline bool tiles_batch(bool splits_batches, Index n) { return splits_batches && splits_batch(n); }

/// Evaluates `call(x_tile, context_tile)` (a `{value, log_det}` result) tile by tile into one
/// result `R` of x.cols() columns. `context` is NoContext or a matrix with x.cols() columns;
/// `placeholder(x_tile)` is what a call without a context passes instead.
template <typename R, typename S, int Dim, typename X, typename C, typename Call,
          typename Placeholder>
R evaluate_tiled(const Eigen::MatrixBase<X>& x, const C& context, Call&& call,
                 Placeholder&& placeholder) {
  R out;
  out.value.resize(x.rows(), x.cols());
  out.log_det.resize(1, x.cols());
  for_each_tile(x.cols(), [&](Index begin, Index n) {
    const Batch<S, Dim, Dynamic> xt = x.middleCols(begin, n);
    auto r = [&] {
      if constexpr (is_no_context_v<C>) {
        return call(xt, placeholder(xt));
      } else {
        const Eigen::Matrix<S, Dynamic, Dynamic> ct = context.middleCols(begin, n);
        return call(xt, ct);
      }
    }();
    out.value.middleCols(begin, n) = r.value;
    out.log_det.middleCols(begin, n) = r.log_det;
  });
  return out;
}

}  // namespace nflow::detail
