// Tests of nflow/bijectors/logit.hpp: alpha validation and out-of-domain inputs.
// Its laws, over float and double, fixed and dynamic sizes, run in the conformance list
// (tests/conformance/conformance.hpp).
#include <Eigen/Core>
#include <catch2/catch.hpp>
#include <cmath>
#include <nflow/bijectors/logit.hpp>
#include <nflow/core/errors.hpp>
#include <vector>

using namespace nflow;

TEST_CASE("Logit rejects an alpha outside [0, 0.5)", "[bijectors][errors]") {
  CHECK_THROWS_AS(Logit<double>(2, 0.5), ParameterError);
}

TEST_CASE("Logit maps out-of-domain inputs to non-finite values in that column only",
          "[bijectors][errors]") {
  Logit<double> b(1);
  Eigen::RowVector3d x(0.5, 1.5, 0.25);
  const auto r = b.forward_and_log_det(x);
  CHECK(std::isfinite(r.value(0)));
  CHECK_FALSE(std::isfinite(r.value(1)));
  CHECK(std::isfinite(r.value(2)));
  CHECK(non_finite_columns(r.value) == std::vector<Index>{1});
}
