#pragma once
/// @file
/// @brief train::Data: a data set (samples and, for a conditional model, their contexts) as the
/// fit loops take it, and the check that it fits a model.

#include <Eigen/Core>
#include <string>

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
                       context + " is " + shape_string(data.context.rows(), data.context.cols()));
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
