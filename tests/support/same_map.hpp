#pragma once
// Two bijectors compute the same map: every deduced call (fused, one point, both vjps, the
// recorded pass and its vjp) gives the same numbers. Used to check a run-time composition
// (DynamicFlow, Stack) against the compile-time Flow of the same steps, the independent truth.
#include <catch2/catch.hpp>
#include <cmath>
#include <nflow/nflow.hpp>
#include <random>

namespace nflow::test {

inline double max_diff(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b) {
  REQUIRE(a.rows() == b.rows());
  REQUIRE(a.cols() == b.cols());
  return a.size() == 0 ? 0.0 : (a - b).cwiseAbs().maxCoeff();
}

/// Every deduced call of `a` and `b` (with or without a context) gives the same numbers.
template <typename A, typename B, typename... C>
void check_same_map(const A& a, const B& b, const Eigen::MatrixXd& x, const C&... ctx) {
  const double tol = 1e-12;
  const auto fa = a.forward_and_log_det(x, ctx...);
  const auto fb = b.forward_and_log_det(x, ctx...);
  CHECK(max_diff(fa.value, fb.value) < tol);
  CHECK(max_diff(fa.log_det, fb.log_det) < tol);
  const auto ia = a.inverse_and_log_det(x, ctx...);
  const auto ib = b.inverse_and_log_det(x, ctx...);
  CHECK(max_diff(ia.value, ib.value) < tol);
  CHECK(max_diff(ia.log_det, ib.log_det) < tol);
  // One point alone (a fixed column count at compile time).
  const Eigen::VectorXd x0 = x.col(0);
  const auto pa = a.forward_and_log_det(x0, Eigen::MatrixXd(ctx.col(0))...);
  CHECK(max_diff(pa.value, fb.value.col(0)) < tol);
  CHECK(std::abs(pa.log_det(0) - fb.log_det(0)) < tol);

  std::mt19937_64 gen(11);
  const Eigen::MatrixXd gv = standard_normal_matrix<double>(x.rows(), x.cols(), gen);
  const Eigen::RowVectorXd gl = standard_normal_matrix<double>(1, x.cols(), gen);
  {
    Eigen::VectorXd gpa = Eigen::VectorXd::Zero(a.parameter_count());
    Eigen::VectorXd gpb = Eigen::VectorXd::Zero(b.parameter_count());
    CHECK(max_diff(a.forward_vjp(x, gv, gl, gpa, ctx...), b.forward_vjp(x, gv, gl, gpb, ctx...)) <
          tol);
    CHECK(max_diff(gpa, gpb) < tol);
    CHECK(gpa.norm() > 0);
  }
  Eigen::VectorXd gpi = Eigen::VectorXd::Zero(a.parameter_count());
  if constexpr (InverseDifferentiable<B>) {
    Eigen::VectorXd gpb = Eigen::VectorXd::Zero(b.parameter_count());
    CHECK(max_diff(a.inverse_vjp(x, gv, gl, gpi, ctx...), b.inverse_vjp(x, gv, gl, gpb, ctx...)) <
          tol);
    CHECK(max_diff(gpi, gpb) < tol);
  } else {
    // MAF has no inverse vjp (its inverse takes Dim passes): the type-erased flow says so.
    if constexpr (requires { a.has_inverse_vjp(); }) CHECK_FALSE(a.has_inverse_vjp());
    CHECK_THROWS_AS(a.inverse_vjp(x, gv, gl, gpi, ctx...), UnsupportedError);
  }
  // The recorded pass and its vjp.
  tape_t<A> ta;
  tape_t<B> tb;
  const auto ra = a.forward_recorded(x, ta, ctx...);
  const auto rb = b.forward_recorded(x, tb, ctx...);
  CHECK(max_diff(ra.value, rb.value) < tol);
  CHECK(ta.cols() == x.cols());
  Eigen::VectorXd gpa = Eigen::VectorXd::Zero(a.parameter_count());
  Eigen::VectorXd gpb = Eigen::VectorXd::Zero(b.parameter_count());
  CHECK(max_diff(a.forward_vjp_recorded(ta, gv, gl, gpa, ctx...),
                 b.forward_vjp_recorded(tb, gv, gl, gpb, ctx...)) < tol);
  CHECK(max_diff(gpa, gpb) < tol);
}

}  // namespace nflow::test
