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

TEST_CASE("Logit rejects an alpha outside 0 <= alpha < 0.5", "[bijectors][errors]") {
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

TEST_CASE("Logit's alpha can be set in every natural spelling", "[bijectors]") {
  // An integer argument is the dimension, a floating-point one alpha (none is ambiguous).
  CHECK(Logit<float, 2>(0.05).alpha() == 0.05f);  // a double literal for a float Logit
  CHECK(Logit<float, 2>(0.05f).alpha() == 0.05f);
  CHECK(Logit<double, 2>(1e-6).alpha() == 1e-6);
  CHECK(Logit<double, 2>().alpha() == 0.0);
  CHECK(Logit<double, 2>(2, 0.05).alpha() == 0.05);
  CHECK(Logit<double>(3, 0.05f).dim() == 3);
  CHECK(Logit<double>(Index(3)).alpha() == 0.0);
  // Logit<double, 2>(0) is the dimension 0: an error that says how to give alpha.
  CHECK_THROWS_WITH((Logit<double, 2>(0)),
                    Catch::Contains("'dim'") && Catch::Contains("floating-point"));
  CHECK_THROWS_WITH((Logit<float, 2>(0.5)), Catch::Contains("'alpha'"));
}
