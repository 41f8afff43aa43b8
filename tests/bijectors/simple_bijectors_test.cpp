// Laws for the simple bijectors, over float and double, fixed and dynamic sizes.
#include <catch2/catch.hpp>
#include <nflow/nflow.hpp>
#include <nflow/testing/catch2.hpp>

#include <random>

using namespace nflow;

namespace {

template <typename B>
B with_random_affine(B b, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  Vector<typename B::Scalar> theta = standard_normal_matrix<typename B::Scalar>(b.parameter_count(), 1, gen);
  set_parameters(b, theta * typename B::Scalar(0.5));
  return b;
}

}  // namespace

TEMPLATE_TEST_CASE("ElementwiseAffine obeys the bijector laws", "[bijectors][laws]", float, double) {
  NFLOW_CHECK_LAWS(with_random_affine(ElementwiseAffine<TestType, 3>{}, 1));
  NFLOW_CHECK_LAWS(with_random_affine(ElementwiseAffine<TestType>(5), 2));
}

TEMPLATE_TEST_CASE("Reverse obeys the bijector laws", "[bijectors][laws]", float, double) {
  NFLOW_CHECK_LAWS(Reverse<TestType, 4>{});
  NFLOW_CHECK_LAWS(Reverse<TestType>(3));
}

TEMPLATE_TEST_CASE("Permutation obeys the bijector laws", "[bijectors][laws]", float, double) {
  NFLOW_CHECK_LAWS(Permutation<TestType, 5>::random(5, 7));
  NFLOW_CHECK_LAWS(Permutation<TestType>::random(6, 8));
}

TEMPLATE_TEST_CASE("Sigmoid obeys the bijector laws", "[bijectors][laws]", float, double) {
  testing::LawOptions opt;
  opt.inverse_domain = testing::Domain::UnitInterval;
  NFLOW_CHECK_LAWS(Sigmoid<TestType, 2>{}, opt);
  NFLOW_CHECK_LAWS(Sigmoid<TestType>(4), opt);
}

TEMPLATE_TEST_CASE("Logit obeys the bijector laws", "[bijectors][laws]", float, double) {
  testing::LawOptions opt;
  opt.forward_domain = testing::Domain::UnitInterval;
  NFLOW_CHECK_LAWS(Logit<TestType, 2>{}, opt);
  NFLOW_CHECK_LAWS(Logit<TestType>(3, TestType(0.05)), opt);
}

TEST_CASE("ElementwiseAffine computes the affine map it documents", "[bijectors]") {
  ElementwiseAffine<double, 2> b;
  b.set_shift(Eigen::Vector2d(1.0, -2.0));
  b.set_log_scale(Eigen::Vector2d(std::log(3.0), std::log(0.5)));
  const auto r = b.forward_and_log_det(Eigen::Vector2d(2.0, 4.0));
  CHECK(r.value(0) == Approx(7.0));
  CHECK(r.value(1) == Approx(0.0).margin(1e-15));
  CHECK(r.log_det(0) == Approx(std::log(1.5)));
}

TEST_CASE("Permutation rejects indices that are not a permutation", "[bijectors][errors]") {
  CHECK_THROWS_AS(Permutation<double>(Eigen::Vector3i(0, 0, 1)), ParameterError);
  CHECK_THROWS_AS(Permutation<double>(Eigen::Vector3i(0, 3, 1)), ParameterError);
  CHECK_THROWS_WITH(Permutation<double>(Eigen::Vector3i(0, -1, 1)), Catch::Contains("permutation"));
  CHECK_THROWS_AS((Permutation<double, 2>(Eigen::Vector3i(0, 1, 2))), ParameterError);
}

TEST_CASE("Permutation::random is reproducible and depends on the seed", "[bijectors][random]") {
  const auto a = Permutation<double>::random(10, 3).indices();
  const auto b = Permutation<double>::random(10, 3).indices();
  const auto c = Permutation<double>::random(10, 4).indices();
  CHECK(a == b);
  CHECK(a != c);
}

TEST_CASE("ElementwiseAffine rejects non-finite parameters by name", "[bijectors][errors]") {
  ElementwiseAffine<double> b(2);
  CHECK_THROWS_WITH(b.set_log_scale(Eigen::Vector2d(0.0, std::nan(""))), Catch::Contains("log_scale"));
  CHECK_THROWS_AS(b.set_shift(Eigen::Vector3d::Zero()), ShapeError);
  CHECK_THROWS_AS(Logit<double>(2, 0.5), ParameterError);
}

TEST_CASE("Logit maps out-of-domain inputs to non-finite values in that column only", "[bijectors][errors]") {
  Logit<double> b(1);
  Eigen::RowVector3d x(0.5, 1.5, 0.25);
  const auto r = b.forward_and_log_det(x);
  CHECK(std::isfinite(r.value(0)));
  CHECK_FALSE(std::isfinite(r.value(1)));
  CHECK(std::isfinite(r.value(2)));
  CHECK(non_finite_columns(r.value) == std::vector<Index>{1});
}
