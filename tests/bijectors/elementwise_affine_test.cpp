// Tests of nflow/bijectors/elementwise_affine.hpp: the documented map and parameter validation.
// Its laws, over float and double, fixed and dynamic sizes, run in the conformance list
// (tests/conformance/conformance.hpp).
#include <Eigen/Core>
#include <catch2/catch.hpp>
#include <cmath>
#include <nflow/bijectors/elementwise_affine.hpp>

using namespace nflow;

TEST_CASE("ElementwiseAffine computes the affine map it documents", "[bijectors]") {
  ElementwiseAffine<double, 2> b;
  b.set_shift(Eigen::Vector2d(1.0, -2.0));
  b.set_log_scale(Eigen::Vector2d(std::log(3.0), std::log(0.5)));
  const auto r = b.forward_and_log_det(Eigen::Vector2d(2.0, 4.0));
  CHECK(r.value(0) == Approx(7.0));
  CHECK(r.value(1) == Approx(0.0).margin(1e-15));
  CHECK(r.log_det(0) == Approx(std::log(1.5)));
}

TEST_CASE("ElementwiseAffine rejects non-finite parameters by name", "[bijectors][errors]") {
  ElementwiseAffine<double> b(2);
  CHECK_THROWS_WITH(b.set_log_scale(Eigen::Vector2d(0.0, std::nan(""))),
                    Catch::Contains("log_scale"));
  CHECK_THROWS_AS(b.set_shift(Eigen::Vector3d::Zero()), ShapeError);
}
