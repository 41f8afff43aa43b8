#pragma once
/// @file
/// @brief The exception types nflow throws, and the helpers that build their messages.
///
/// Every public entry point checks shapes before it touches data. A mismatch throws
/// nflow::ShapeError naming the call, the expected and the actual shape. Parameters that would
/// make a map invalid (a zero LU diagonal, a non-permutation) throw nflow::ParameterError naming
/// the parameter. A type-erased bijector (nflow::AnyBijector, nflow::DynamicFlow) asked for a
/// capability the bijector it holds lacks throws nflow::UnsupportedError. Non-finite *inputs* are not errors: they propagate to the outputs of their own
/// sample (column) only; nflow::non_finite_columns() reports which columns those are.

#include <Eigen/Core>
#include <stdexcept>
#include <string>
#include <vector>

namespace nflow {

/// @brief Thrown when an argument's shape does not match what the call expects
/// (rows of a batch against a bijector's dimension, columns of a context against the batch).
class ShapeError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

/// @brief Thrown when a parameter value would make the map invalid or ill-defined; the message
/// names the parameter.
class ParameterError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

/// @brief Thrown when a call asks for something the object cannot do: a vector-Jacobian product
/// of a type-erased bijector (nflow::AnyBijector, nflow::DynamicFlow) whose held bijector has
/// none (ask first with has_forward_vjp() / has_inverse_vjp()), or a call of a DynamicFlow with
/// no steps. The message names the step or the held bijector's description.
class UnsupportedError : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

namespace detail {

inline std::string shape_string(Eigen::Index rows, Eigen::Index cols) {
  return std::to_string(rows) + " x " + std::to_string(cols);
}

/// Throws ShapeError unless `actual_rows == expected_rows`.
inline void check_rows(const char* where, const char* what, Eigen::Index expected_rows,
                       Eigen::Index actual_rows, Eigen::Index actual_cols) {
  if (expected_rows != actual_rows) {
    throw ShapeError(std::string("nflow: ") + where + ": " + what + " must have " +
                     std::to_string(expected_rows) + " rows (one sample per column), got " +
                     shape_string(actual_rows, actual_cols));
  }
}

/// Throws ShapeError unless `actual_cols == expected_cols`.
inline void check_cols(const char* where, const char* what, Eigen::Index expected_cols,
                       Eigen::Index actual_rows, Eigen::Index actual_cols) {
  if (expected_cols != actual_cols) {
    throw ShapeError(std::string("nflow: ") + where + ": " + what + " must have " +
                     std::to_string(expected_cols) + " columns (one per sample), got " +
                     shape_string(actual_rows, actual_cols));
  }
}

/// Throws ShapeError unless a flat buffer has the expected length.
inline void check_size(const char* where, const char* what, Eigen::Index expected,
                       Eigen::Index actual) {
  if (expected != actual) {
    throw ShapeError(std::string("nflow: ") + where + ": " + what + " must have " +
                     std::to_string(expected) + " entries, got " + std::to_string(actual));
  }
}

}  // namespace detail

/// @brief Indices of the columns (samples) of `m` that hold a NaN or an infinity.
template <typename Derived>
std::vector<Eigen::Index> non_finite_columns(const Eigen::DenseBase<Derived>& m) {
  std::vector<Eigen::Index> out;
  for (Eigen::Index j = 0; j < m.cols(); ++j) {
    if (!m.col(j).allFinite()) out.push_back(j);
  }
  return out;
}

}  // namespace nflow
