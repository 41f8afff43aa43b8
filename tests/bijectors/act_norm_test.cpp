// Tests of nflow/bijectors/act_norm.hpp (its laws run in the conformance list,
// tests/conformance/conformance.hpp): the documented formula; data-dependent initialisation (mean 0, variance 1,
// constant features, the initialised flag, initialising every ActNorm of a flow); validation.

// See lu_linear_test.cpp: defined in every source of this executable.
#define EIGEN_RUNTIME_NO_MALLOC

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <nflow/bijectors/act_norm.hpp>
#include <nflow/bijectors/elementwise_affine.hpp>
#include <nflow/bijectors/lu_linear.hpp>
#include <nflow/core/flow.hpp>
#include <nflow/core/parameters.hpp>
#include <nflow/core/random.hpp>
#include <random>

#include "support/randomized.hpp"

using namespace nflow;

namespace {

using test::shifted_batch;

}  // namespace

TEST_CASE("ActNorm shifts then scales, as documented", "[bijectors][act_norm]") {
  ActNorm<double, 2> b;
  b.set_bias(Eigen::Vector2d(1.0, -2.0));
  b.set_log_scale(Eigen::Vector2d(std::log(3.0), std::log(0.5)));
  const auto r = b.forward_and_log_det(Eigen::Vector2d(2.0, 4.0));
  CHECK(r.value(0) == Approx(9.0));  // (2 + 1) · 3
  CHECK(r.value(1) == Approx(1.0));  // (4 − 2) · 0.5
  CHECK(r.log_det(0) == Approx(std::log(1.5)));
  const auto s = b.inverse_and_log_det(r.value);
  CHECK(s.value(0) == Approx(2.0));
  CHECK(s.value(1) == Approx(4.0));
  CHECK(s.log_det(0) == Approx(-std::log(1.5)));
  CHECK(parameter_names(b) == std::vector<std::string>{"bias", "log_scale"});
}

TEST_CASE("ActNorm's data-dependent initialisation standardises its first batch",
          "[bijectors][act_norm]") {
  const Index d = 5;
  const Index n = 1000;
  const auto x = shifted_batch<double>(d, n, 7);
  ActNorm<double> b(d);
  CHECK_FALSE(b.is_initialized());
  CHECK(b.forward(x) == x);  // the identity until initialised
  b.initialize(x);
  CHECK(b.is_initialized());
  const Eigen::MatrixXd z = b.forward(x);
  const Eigen::VectorXd mean = z.rowwise().mean();
  const Eigen::VectorXd var = (z.colwise() - mean).array().square().rowwise().sum() / double(n);
  CHECK(mean.cwiseAbs().maxCoeff() <= 1e-10);
  CHECK((var.array() - 1.0).abs().maxCoeff() <= 1e-10);
  // The log-det is that of the standardisation: −½ Σ log var(x).
  const Eigen::VectorXd xmean = x.rowwise().mean();
  const Eigen::VectorXd xvar = (x.colwise() - xmean).array().square().rowwise().sum() / double(n);
  CHECK(b.forward_log_det(x)(0) == Approx(-0.5 * xvar.array().log().sum()).epsilon(1e-12));
  // A second batch is transformed, not re-fitted: initialisation happens only on request.
  const auto x2 = shifted_batch<double>(d, n, 8);
  const Eigen::VectorXd bias_before = b.bias();
  (void)b.forward(x2);
  CHECK(b.bias() == bias_before);
  b.set_initialized(false);
  CHECK_FALSE(b.is_initialized());
}

TEST_CASE("ActNorm's initialisation in float standardises to float precision",
          "[bijectors][act_norm]") {
  const auto x = shifted_batch<float>(3, 4096, 9);
  ActNorm<float, 3> b;
  b.initialize(x);
  const Eigen::MatrixXd z = b.forward(x).cast<double>();
  const Eigen::VectorXd mean = z.rowwise().mean();
  const Eigen::VectorXd var = (z.colwise() - mean).array().square().rowwise().mean();
  CHECK(mean.cwiseAbs().maxCoeff() <= 1e-5);
  CHECK((var.array() - 1.0).abs().maxCoeff() <= 1e-5);
}

TEMPLATE_TEST_CASE("ActNorm's initialisation keeps constant features finite",
                   "[bijectors][act_norm]", float, double) {
  using S = TestType;
  auto x = shifted_batch<S>(3, 16, 10);
  x.row(1).setConstant(S(0.1));  // constant, but not exactly representable
  x.row(2).setZero();
  ActNorm<S> b(3);
  b.initialize(x);
  CHECK(b.bias().allFinite());
  CHECK(b.log_scale().allFinite());
  const S floor_log_scale = S(-0.5 * std::log(double(ActNorm<S>::default_variance_floor)));
  CHECK(b.log_scale()(2) == Approx(floor_log_scale));
  CHECK(b.log_scale()(1) <= floor_log_scale);
  const auto r = b.forward_and_log_det(x);
  CHECK(r.value.allFinite());
  CHECK(r.log_det.allFinite());
  CHECK(b.inverse(r.value).allFinite());
  CHECK(r.value.row(2).isZero(0));
  // A larger floor caps the scale at 1/√floor.
  b.initialize(x, S(1e-2));
  CHECK(b.log_scale()(2) == Approx(std::log(10.0)));
}

TEST_CASE("ActNorm's initialisation rejects bad batches and floors",
          "[bijectors][act_norm][errors]") {
  ActNorm<double> b(2);
  Eigen::MatrixXd x = Eigen::MatrixXd::Random(2, 8);
  CHECK_THROWS_AS(b.initialize(Eigen::MatrixXd::Random(3, 8)), ShapeError);
  CHECK_THROWS_AS(b.initialize(Eigen::MatrixXd::Random(2, 1)), ShapeError);
  CHECK_THROWS_AS(b.initialize(x, 0.0), ParameterError);
  CHECK_THROWS_AS(b.initialize(x, -1.0), ParameterError);
  x(1, 5) = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_AS(b.initialize(x), ParameterError);
  CHECK_THROWS_WITH(b.initialize(x), Catch::Contains("column 5"));
  CHECK_FALSE(b.is_initialized());
  CHECK(b.bias().isZero(0));
}

TEST_CASE("ActNorm rejects invalid parameters by name and stays unchanged",
          "[bijectors][act_norm][errors]") {
  auto b = test::randomized(ActNorm<double>(3), 11);
  const Vector<double> before = get_parameters(b);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_WITH(b.set_log_scale(Eigen::Vector3d(0, nan, 0)), Catch::Contains("'log_scale'"));
  CHECK_THROWS_WITH(b.set_log_scale(Eigen::Vector3d(0, 1e4, 0)), Catch::Contains("'log_scale'"));
  CHECK_THROWS_WITH(b.set_bias(Eigen::Vector3d(0, 0, -std::numeric_limits<double>::infinity())),
                    Catch::Contains("'bias'"));
  Vector<double> theta = before;
  theta(4) = nan;
  CHECK_THROWS_WITH(set_parameters(b, theta), Catch::Contains("'log_scale'"));
  CHECK(get_parameters(b) == before);
  CHECK_THROWS_AS(b.set_bias(Eigen::Vector2d::Zero()), ShapeError);
  CHECK_THROWS_AS(ActNorm<double>(0), ParameterError);
  CHECK_THROWS_AS((ActNorm<double, 2>(3)), ParameterError);
  CHECK_THROWS_AS(b.forward(Eigen::Vector2d::Zero()), ShapeError);
}

TEST_CASE("initialize_act_norms initialises every ActNorm of a flow on the batch it sees",
          "[bijectors][act_norm]") {
  using S = double;
  auto lu = LULinear<S>::random_orthogonal(3, 1);
  lu.set_log_s(Eigen::Vector3d(0.5, -1.0, 2.0));
  Flow<ActNorm<S, 3>, LULinear<S>, Flow<ElementwiseAffine<S>, ActNorm<S>>> flow(
      ActNorm<S, 3>{}, lu,
      Flow<ElementwiseAffine<S>, ActNorm<S>>(ElementwiseAffine<S>(3), ActNorm<S>(3)));
  const auto x = shifted_batch<S>(3, 500, 12);
  const Eigen::MatrixXd out = initialize_act_norms(flow, x);
  CHECK(flow.step<0>().is_initialized());
  CHECK(flow.step<2>().step<1>().is_initialized());
  CHECK((out - flow.forward(x)).cwiseAbs().maxCoeff() <= 1e-12);
  // The flow's output is the last ActNorm's: standardised.
  const Eigen::VectorXd mean = out.rowwise().mean();
  const Eigen::VectorXd var = (out.colwise() - mean).array().square().rowwise().mean();
  CHECK(mean.cwiseAbs().maxCoeff() <= 1e-10);
  CHECK((var.array() - 1.0).abs().maxCoeff() <= 1e-10);
  // So is the first ActNorm's output.
  const Eigen::MatrixXd first = flow.step<0>().forward(x);
  CHECK(first.rowwise().mean().cwiseAbs().maxCoeff() <= 1e-10);
  CHECK_THROWS_AS(initialize_act_norms(flow, Eigen::MatrixXd::Zero(4, 10)), ShapeError);
}

TEST_CASE("ActNorm's single-point path allocates nothing with a fixed Dim",
          "[bijectors][act_norm]") {
  const auto b = test::randomized(ActNorm<double, 3>{}, 13);
  const Eigen::Vector3d x = Eigen::Vector3d::Random();
  Eigen::internal::set_is_malloc_allowed(false);
  const auto r = b.forward_and_log_det(x);
  const auto s = b.inverse_and_log_det(r.value);
  Eigen::internal::set_is_malloc_allowed(true);
  CHECK((s.value - x).cwiseAbs().maxCoeff() <= 1e-12);
}
