// Tests of nflow/bijectors/conv1x1.hpp: the bijector laws over float and double, fixed and
// dynamic channels; equality with LULinear applied pixel by pixel (values, log-dets and
// gradients); inputs that are not contiguous; validation and shapes.

// See lu_linear_test.cpp: defined in every source of this executable.
#define EIGEN_RUNTIME_NO_MALLOC

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <nflow/bijectors/act_norm.hpp>
#include <nflow/bijectors/conv1x1.hpp>
#include <nflow/bijectors/lu_linear.hpp>
#include <nflow/core/flow.hpp>
#include <nflow/core/parameters.hpp>
#include <nflow/core/random.hpp>
#include <nflow/testing/catch2.hpp>
#include <random>

#include "support/randomized.hpp"

using namespace nflow;

namespace {

using nflow::test::randomized;

/// A Conv1x1 and an LULinear with identical factors (same seed for P and sign, same parameters).
struct Pair {
  Conv1x1<double> conv;
  LULinear<double> lin;
};
Pair random_pair(Index c, Index h, Index w, std::uint64_t seed) {
  Pair p{Conv1x1<double>::random_orthogonal(c, h, w, seed),
         LULinear<double>::random_orthogonal(c, seed)};
  p.conv = randomized(p.conv, seed + 1, 0.4);
  p.lin.set_lower(p.conv.lower());
  p.lin.set_upper(p.conv.upper());
  p.lin.set_log_s(p.conv.log_s());
  return p;
}

/// Applies `f` (C × M → C × M) to every pixel of every sample of a D × N batch.
template <typename F>
Eigen::MatrixXd per_pixel(const Eigen::MatrixXd& x, Index c, F&& f) {
  const Index pixels = x.rows() / c;
  Eigen::MatrixXd out(x.rows(), x.cols());
  for (Index j = 0; j < x.cols(); ++j) {
    for (Index p = 0; p < pixels; ++p)
      out.col(j).segment(p * c, c) = f(Eigen::VectorXd(x.col(j).segment(p * c, c)));
  }
  return out;
}

}  // namespace

// The bijector laws of Conv1x1 and of a Glow step run in the conformance list (tests/conformance/).

TEST_CASE("Conv1x1 equals LULinear applied pixel by pixel", "[bijectors][conv1x1]") {
  const Index c = 3, h = 2, w = 4;
  const Pair pair = random_pair(c, h, w, 10);
  const auto& conv = pair.conv;
  const auto& lin = pair.lin;
  CHECK(conv.weight() == lin.weight());
  CHECK(conv.dim() == c * h * w);
  std::mt19937_64 gen(11);
  const Eigen::MatrixXd x = standard_normal_matrix<double>(conv.dim(), 5, gen);

  const auto r = conv.forward_and_log_det(x);
  const Eigen::MatrixXd expected =
      per_pixel(x, c, [&](const Eigen::VectorXd& v) { return lin.forward(v); });
  CHECK((r.value - expected).cwiseAbs().maxCoeff() <= 1e-13);
  CHECK(r.log_det(0) ==
        Approx(double(h * w) * lin.forward_log_det(x.col(0).head(c))(0)).epsilon(1e-14));
  CHECK(r.log_det(0) ==
        Approx(double(h * w) * std::log(std::abs(conv.weight().determinant()))).epsilon(1e-12));

  const auto s = conv.inverse_and_log_det(x);
  const Eigen::MatrixXd expected_inv =
      per_pixel(x, c, [&](const Eigen::VectorXd& v) { return lin.inverse(v); });
  CHECK((s.value - expected_inv).cwiseAbs().maxCoeff() <= 1e-13);
  CHECK(s.log_det(0) == Approx(-r.log_det(0)));
}

TEST_CASE("Conv1x1's gradients are LULinear's summed over pixels", "[bijectors][conv1x1]") {
  const Index c = 3, h = 3, w = 2;
  const Pair pair = random_pair(c, h, w, 20);
  const auto& conv = pair.conv;
  const auto& lin = pair.lin;
  std::mt19937_64 gen(21);
  const Index n = 4;
  const Eigen::MatrixXd x = standard_normal_matrix<double>(conv.dim(), n, gen);
  const Eigen::MatrixXd gv = standard_normal_matrix<double>(conv.dim(), n, gen);
  const Eigen::RowVectorXd gl = standard_normal_matrix<double>(1, n, gen);
  // As LULinear over the C × (H·W·N) pixel matrix: each pixel gets the log-det gradient of its sample.
  const Eigen::Map<const Eigen::MatrixXd> xp(x.data(), c, h * w * n);
  const Eigen::Map<const Eigen::MatrixXd> gvp(gv.data(), c, h * w * n);
  Eigen::RowVectorXd glp(h * w * n);
  for (Index j = 0; j < n; ++j) glp.segment(j * h * w, h * w).setConstant(gl(j));

  for (const bool inverse : {false, true}) {
    INFO((inverse ? "inverse" : "forward"));
    Vector<double> g_conv = Vector<double>::Zero(conv.parameter_count());
    Vector<double> g_lin = Vector<double>::Zero(lin.parameter_count());
    const Eigen::MatrixXd gx_conv =
        inverse ? conv.inverse_vjp(x, gv, gl, g_conv) : conv.forward_vjp(x, gv, gl, g_conv);
    const Eigen::MatrixXd gx_lin =
        inverse ? lin.inverse_vjp(xp, gvp, glp, g_lin) : lin.forward_vjp(xp, gvp, glp, g_lin);
    CHECK((gx_conv - Eigen::Map<const Eigen::MatrixXd>(gx_lin.data(), conv.dim(), n))
              .cwiseAbs()
              .maxCoeff() <= 1e-12);
    // Same tensors in the same order, LULinear's bias last.
    CHECK((g_conv - g_lin.head(conv.parameter_count())).cwiseAbs().maxCoeff() <= 1e-11);
  }
}

TEST_CASE("Conv1x1 accepts inputs that are not contiguous matrices", "[bijectors][conv1x1]") {
  const auto conv = randomized(Conv1x1<double, 3>(3, 2), 30);
  std::mt19937_64 gen(31);
  const Eigen::MatrixXd big = standard_normal_matrix<double>(conv.dim() + 3, 6, gen);
  const Eigen::MatrixXd x = big.topRows(conv.dim());
  const Eigen::MatrixXd z = conv.forward(x);
  CHECK(conv.forward(big.topRows(conv.dim())) == z);  // a block with outer stride ≠ rows
  CHECK(conv.forward(big.block(0, 2, conv.dim(), 3)) == z.middleCols(2, 3));
  CHECK((conv.forward(x * 2.0) - 2.0 * z).cwiseAbs().maxCoeff() <= 1e-12);  // an expression
  CHECK(conv.inverse(big.topRows(conv.dim())) == conv.inverse(x));
  const Eigen::VectorXd one = x.col(1);
  CHECK(conv.forward(one) == z.col(1));
  const Eigen::MatrixXd xr = x.transpose();
  CHECK(conv.forward(xr.transpose()) == z);  // a row-major view
}

TEST_CASE("Conv1x1 rejects invalid parameters and shapes", "[bijectors][conv1x1][errors]") {
  auto conv = randomized(Conv1x1<double>(2, 2, 2), 40);
  const Vector<double> before = get_parameters(conv);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_WITH(conv.set_log_s(Eigen::Vector2d(nan, 0.0)), Catch::Contains("'log_s'"));
  CHECK_THROWS_WITH(conv.set_lower(Eigen::Matrix2d{{0, 0}, {nan, 0}}), Catch::Contains("'lower'"));
  CHECK_THROWS_WITH(conv.set_upper(Eigen::Matrix2d{{0, nan}, {0, 0}}), Catch::Contains("'upper'"));
  Vector<double> theta = before;
  theta(8) = nan;  // "log_s"(0)
  CHECK_THROWS_WITH(set_parameters(conv, theta), Catch::Contains("'log_s'"));
  CHECK(get_parameters(conv) == before);
  CHECK_THROWS_AS(conv.set_log_s(Eigen::Vector3d::Zero()), ShapeError);
  CHECK_THROWS_AS(Conv1x1<double>(0, 2, 2), ParameterError);
  CHECK_THROWS_AS(Conv1x1<double>(2, 0, 2), ParameterError);
  CHECK_THROWS_AS((Conv1x1<double, 3>(2, 2, 2)), ParameterError);
  CHECK_THROWS_AS(Conv1x1<double>::from_weight(Eigen::Matrix2d::Zero(), 2, 2), ParameterError);
  CHECK_THROWS_AS(conv.forward(Eigen::VectorXd::Zero(7)), ShapeError);
  CHECK(parameter_names(conv) == std::vector<std::string>{"lower", "upper", "log_s"});
  CHECK(conv.parameter_count() == 10);
}

TEST_CASE("initialize_act_norms initialises the ActNorm of a Glow step (ActNorm then Conv1x1)",
          "[bijectors][conv1x1][act_norm]") {
  const Index c = 3, h = 2, w = 2;
  Flow<ActNorm<double>, Conv1x1<double>> step(
      ActNorm<double>(c * h * w),
      randomized(Conv1x1<double>::random_orthogonal(c, h, w, 50), 51, 0.3));
  std::mt19937_64 gen(52);
  const Eigen::MatrixXd data =
      (standard_normal_matrix<double>(c * h * w, 64, gen) * 3.0).array() + 1.0;
  (void)initialize_act_norms(step, data);
  CHECK(step.step<0>().is_initialized());
}
