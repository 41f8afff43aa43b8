#pragma once
/// @file
/// @brief train::Data: a data set (samples and, for a conditional model, their contexts) as the
/// fit loops take it, and the check that it fits a model; train::sampler, the other data source
/// (a callable that draws a fresh batch each step).

#include <Eigen/Core>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <utility>

#include "nflow/core/errors.hpp"
#include "nflow/core/types.hpp"

namespace nflow::train {

/// @brief A data set: samples, one per column (dim × N), and for a conditional model the context
/// of each sample, one column per sample (context_dim × N). Written with designated initialisers:
///
///     train::fit(density, {.samples = x}, options);                        // unconditional
///     train::fit(density, {.samples = x, .context = c}, options,           // conditional, with
///                {.samples = x_valid, .context = c_valid});                // validation
///
/// A Data is a view: it refers to the matrices it is built from, which must outlive it (build it
/// in the call, as above, or from named matrices). A matrix, a Map or a block of whole columns
/// (`x.leftCols(n)`, `x.middleCols(a, n)`) is referred to without a copy; any other expression (a
/// product, a transpose, a row vector) is evaluated into the Data itself, and such a Data must not
/// be copied (Eigen::Ref's copy refers to the original's storage). An empty `context` (the
/// default) means "no context"; an empty `samples` means "no data set" (no validation).
/// @tparam Scalar the model's scalar type (float or double).
template <typename Scalar>
struct Data {
  /// What each member is: a read-only, column-major view of a matrix.
  using View = Eigen::Ref<const Eigen::Matrix<Scalar, Dynamic, Dynamic>>;

  View samples = Eigen::Map<const Eigen::Matrix<Scalar, Dynamic, Dynamic>>(nullptr, 0, 0);
  View context = Eigen::Map<const Eigen::Matrix<Scalar, Dynamic, Dynamic>>(nullptr, 0, 0);

  /// Whether the data set holds anything (samples or a context).
  bool empty() const { return samples.size() == 0 && context.size() == 0; }
};

/// @brief A batch source for train::fit: a callable that fills a batch of samples (and, for a
/// conditional model, their contexts) each step. Build it with train::sampler(f); see fit's
/// sampler overload.
template <typename F>
struct Sampler {
  F fill;
};

/// @brief Wraps a callable as the data source of train::fit or train::fit_flow_matching. The
/// callable is invoked once per optimiser step as `f(x, c, gen)` or `f(x, c, step, gen)`:
///   - `x`: the samples' buffer, dim × batch_size on entry (for train::fit a
///     `Batch<Scalar, D::Dim, Dynamic>`, for flow matching an `Eigen::Matrix<Scalar, Dynamic,
///     Dynamic>`: write `auto& x`), to overwrite column by column; it keeps its storage from step
///     to step, so a sampler that writes into it allocates nothing;
///   - `c`: the contexts' buffer, context_dim × batch_size on entry (0 × 0 for an unconditional
///     model: leave it alone), one column per sample;
///   both hold NaN on entry: an entry the sampler does not write is caught (an error naming the
///   sampler), never trained on;
///   - `step`: the 0-based index of the step the batch is for (an nflow::Index);
///   - `gen`: the loop's `std::mt19937_64`, seeded with `options.seed` (draw with nflow's own
///     core/random.hpp functions and the run is reproducible on every compiler).
/// It may resize `x` (any positive number of columns) as long as `c` has as many columns.
template <typename F>
Sampler<std::decay_t<F>> sampler(F&& f) {
  return {std::forward<F>(f)};
}

namespace internal {

/// Calls a user's sampler with or without the step index.
template <typename F, typename X, typename C>
void call_sampler(F& f, X& x, C& c, Index step, std::mt19937_64& gen) {
  if constexpr (std::is_invocable_v<F&, X&, C&, Index, std::mt19937_64&>) {
    f(x, c, step, gen);
  } else {
    static_assert(std::is_invocable_v<F&, X&, C&, std::mt19937_64&>,
                  "nflow::train::sampler: the callable must be invocable as f(x, c, gen) or "
                  "f(x, c, step, gen), with x and c the batch's sample and context matrices "
                  "(write auto& x, auto& c), step an nflow::Index and gen a std::mt19937_64&");
    f(x, c, gen);
  }
}

/// Fills a sampler's buffers with NaN before it is called: an entry it leaves unwritten is then
/// caught by check_sampled_batch, never trained on.
template <typename X, typename C>
void poison_batch(X& x, C& c) {
  x.setConstant(std::numeric_limits<typename X::Scalar>::quiet_NaN());
  c.setConstant(std::numeric_limits<typename C::Scalar>::quiet_NaN());
}

/// Throws ShapeError, naming the sampler, unless the batch it filled fits the model.
inline void check_sampled(const char* where, Index dim, Index context_dim, Index x_rows,
                          Index x_cols, Index c_rows, Index c_cols) {
  const std::string w = std::string("nflow: ") + where + ": the sampler ";
  if (x_cols == 0) {
    throw ShapeError(w + "returned an empty batch (its samples x must have at least one column)");
  }
  if (x_rows != dim) {
    throw ShapeError(w + "returned samples x of " + nflow::detail::shape_string(x_rows, x_cols) +
                     "; the model needs " + std::to_string(dim) + " rows (one sample per column)");
  }
  if (context_dim == 0) {
    if (c_rows * c_cols > 0) {
      throw ShapeError(w + "returned a context c of " +
                       nflow::detail::shape_string(c_rows, c_cols) +
                       " for a model that takes no context");
    }
    return;
  }
  if (c_rows != context_dim || c_cols != x_cols) {
    throw ShapeError(w + "returned a context c of " + nflow::detail::shape_string(c_rows, c_cols) +
                     "; the model is conditional and needs " + std::to_string(context_dim) +
                     " rows and one column per sample (" + std::to_string(x_cols) + ")");
  }
}

/// The checks of a batch a sampler filled at `step`: its shapes (ShapeError, check_sampled),
/// then its entries. Returns the sentence for a NaN or an infinity (an entry left unwritten
/// stays NaN: poison_batch), empty when every entry is finite; the caller throws its loop's
/// error type with it.
template <typename X, typename C>
std::string check_sampled_batch(const char* where, Index dim, Index context_dim, const X& x,
                                const C& c, Index step) {
  check_sampled(where, dim, context_dim, x.rows(), x.cols(), c.rows(), c.cols());
  if (x.allFinite() && c.allFinite()) return {};
  return std::string("nflow::") + where + ": the sampler returned a NaN or an infinity in its " +
         (x.allFinite() ? "context c" : "samples x") + " at step " + std::to_string(step) +
         " (the buffers hold NaN on entry: write every entry)";
}

}  // namespace internal

}  // namespace nflow::train

namespace nflow::detail {

/// @brief Throws nflow::ShapeError, naming `where` and the argument (`name.samples`,
/// `name.context`), unless `data` fits a model of dimension `dim` and context dimension
/// `context_dim` (0: unconditional): samples dim × N with N > 0; a context context_dim × N when
/// context_dim > 0, none when it is 0.
template <typename Scalar>
void check_data(const char* where, const std::string& name, const train::Data<Scalar>& data,
                Index dim, Index context_dim) {
  const std::string samples = name + ".samples";
  const std::string context = name + ".context";
  if (data.samples.cols() == 0) {
    throw ShapeError(std::string("nflow: ") + where + ": " + samples +
                     " is empty (one sample per column is needed)");
  }
  check_rows(where, samples.c_str(), dim, data.samples.rows(), data.samples.cols());
  if (context_dim == 0) {
    if (data.context.size() > 0) {
      throw ShapeError(std::string("nflow: ") + where + ": the model takes no context, but " +
                       context + " is " +
                       nflow::detail::shape_string(data.context.rows(), data.context.cols()));
    }
    return;
  }
  if (data.context.size() == 0) {
    throw ShapeError(std::string("nflow: ") + where + ": the model is conditional (context " +
                     "dimension " + std::to_string(context_dim) + ") but " + context +
                     " is empty: give one context column per sample");
  }
  check_rows(where, context.c_str(), context_dim, data.context.rows(), data.context.cols());
  check_cols(where, context.c_str(), data.samples.cols(), data.context.rows(), data.context.cols());
}

}  // namespace nflow::detail
