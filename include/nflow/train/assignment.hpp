#pragma once
/// @file
/// @brief nflow::linear_assignment: the exact solution of the linear assignment problem (the
/// optimal transport between two equal-size sets of points with uniform weights), by the
/// Hungarian method with potentials and shortest augmenting paths.

#include <Eigen/Core>
#include <algorithm>
#include <limits>
#include <string>
#include <vector>

#include "nflow/core/errors.hpp"
#include "nflow/core/types.hpp"

namespace nflow {

/// @brief The permutation π minimising Σᵢ cost(i, π(i)) over all permutations of 0..n−1, for a
/// square n × n cost matrix: π(i) is the column assigned to row i (an Eigen::VectorXi).
///
/// Method: the Hungarian algorithm in the form of Jonker–Volgenant / Kuhn–Munkres with dual
/// potentials u, v (u_i + v_j ≤ cost(i, j)) and one Dijkstra-like shortest augmenting path per
/// row: O(n³) in the worst case, far less on random costs. The result is exact (an optimum of
/// the linear program; ties are broken by index). Costs are read in double.
/// References: Kuhn 1955; Munkres 1957; Jonker & Volgenant 1987.
/// @throws nflow::ShapeError if the matrix is not square; nflow::ParameterError if a cost is not
///   finite.
template <typename Derived>
Eigen::VectorXi linear_assignment(const Eigen::MatrixBase<Derived>& cost) {
  const Index n = cost.rows();
  if (cost.cols() != n) {
    throw ShapeError("nflow::linear_assignment: the cost matrix must be square, got " +
                     std::to_string(cost.rows()) + " x " + std::to_string(cost.cols()));
  }
  if (!cost.allFinite())
    throw ParameterError("nflow::linear_assignment: every cost must be finite");
  const double inf = std::numeric_limits<double>::infinity();
  // Row-major: the inner loop runs along a row.
  const Eigen::Matrix<double, Dynamic, Dynamic, Eigen::RowMajor> c = cost.template cast<double>();
  // 1-based arrays as in the classical statement; column 0 is the virtual start.
  std::vector<double> u(std::size_t(n + 1), 0.0), v(std::size_t(n + 1), 0.0);
  std::vector<Index> row_of(std::size_t(n + 1), 0), way(std::size_t(n + 1), 0);
  std::vector<double> min_to(std::size_t(n + 1));
  std::vector<char> used(std::size_t(n + 1));
  for (Index i = 1; i <= n; ++i) {
    row_of[0] = i;
    Index j0 = 0;
    std::fill(min_to.begin(), min_to.end(), inf);
    std::fill(used.begin(), used.end(), char(0));
    do {
      used[std::size_t(j0)] = 1;
      const Index i0 = row_of[std::size_t(j0)];
      double delta = inf;
      Index j1 = 0;
      for (Index j = 1; j <= n; ++j) {
        if (used[std::size_t(j)]) continue;
        const double reduced = c(i0 - 1, j - 1) - u[std::size_t(i0)] - v[std::size_t(j)];
        if (reduced < min_to[std::size_t(j)]) {
          min_to[std::size_t(j)] = reduced;
          way[std::size_t(j)] = j0;
        }
        if (min_to[std::size_t(j)] < delta) {
          delta = min_to[std::size_t(j)];
          j1 = j;
        }
      }
      for (Index j = 0; j <= n; ++j) {
        if (used[std::size_t(j)]) {
          u[std::size_t(row_of[std::size_t(j)])] += delta;
          v[std::size_t(j)] -= delta;
        } else {
          min_to[std::size_t(j)] -= delta;
        }
      }
      j0 = j1;
    } while (row_of[std::size_t(j0)] != 0);
    do {  // augment along the path
      const Index j1 = way[std::size_t(j0)];
      row_of[std::size_t(j0)] = row_of[std::size_t(j1)];
      j0 = j1;
    } while (j0 != 0);
  }
  Eigen::VectorXi assignment(n);
  for (Index j = 1; j <= n; ++j) assignment(row_of[std::size_t(j)] - 1) = int(j - 1);
  return assignment;
}

}  // namespace nflow
