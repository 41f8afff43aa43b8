#pragma once
/// @file
/// @brief Connectivity of masked networks: the composed dependency of a MADE's outputs on its
/// inputs, the check that it is autoregressive in a stated order, and the number of inverse
/// passes it needs.

#include <Eigen/Core>
#include <algorithm>
#include <numeric>
#include <string>
#include <vector>

#include "nflow/core/errors.hpp"
#include "nflow/core/types.hpp"

namespace nflow::interop::detail {

/// Boolean product: (A B)(i, j) = 1 iff some k has A(i, k) = B(k, j) = 1 (0/1 matrices).
inline Eigen::MatrixXd bool_product(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b) {
  return ((a * b).array() > 0.0).cast<double>().matrix();
}

/// Reduces an output connectivity of `per_feature · D` rows (outputs of feature i are rows
/// per_feature·i … per_feature·i + per_feature − 1: the libraries' interleaved [D, k] view) to the
/// D × D dependency of feature i on input j.
inline Eigen::MatrixXd feature_dependency(const Eigen::MatrixXd& out_connectivity, Index dim,
                                          Index per_feature) {
  Eigen::MatrixXd dep = Eigen::MatrixXd::Zero(dim, dim);
  for (Index i = 0; i < dim; ++i) {
    for (Index k = 0; k < per_feature; ++k)
      dep.row(i) = dep.row(i).cwiseMax(out_connectivity.row(per_feature * i + k).leftCols(dim));
  }
  return dep;
}

/// Checks that feature i depends on input j only if rank(j) < rank(i) (the Jacobian is strictly
/// triangular in the order given by `rank`), and returns the length of the longest dependency
/// chain (≥ 1): the number of inverse passes after which the fixed-point iteration is exact.
/// Throws ParameterError naming `where` and the first offending pair otherwise.
inline Index check_autoregressive(const Eigen::MatrixXd& dep, const Eigen::VectorXi& rank,
                                  const std::string& where, const std::string& order_name) {
  const Index d = dep.rows();
  for (Index i = 0; i < d; ++i) {
    for (Index j = 0; j < d; ++j) {
      if (dep(i, j) != 0.0 && !(rank(j) < rank(i))) {
        throw ParameterError(
            "nflow::interop: the masks of " + where + " are not autoregressive in " + order_name +
            ": output " + std::to_string(i) + " depends on input " + std::to_string(j) +
            " (the composed mask product must be strictly triangular in that order)");
      }
    }
  }
  std::vector<Index> by_rank(static_cast<std::size_t>(d));
  std::iota(by_rank.begin(), by_rank.end(), Index(0));
  std::stable_sort(by_rank.begin(), by_rank.end(),
                   [&](Index a, Index b) { return rank(a) < rank(b); });
  std::vector<Index> level(static_cast<std::size_t>(d), 1);
  Index longest = 1;
  for (Index i : by_rank) {
    for (Index j = 0; j < d; ++j) {
      if (dep(i, j) != 0.0)
        level[std::size_t(i)] = std::max(level[std::size_t(i)], level[std::size_t(j)] + 1);
    }
    longest = std::max(longest, level[std::size_t(i)]);
  }
  return longest;
}

}  // namespace nflow::interop::detail
