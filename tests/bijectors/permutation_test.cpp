// Tests of nflow/bijectors/permutation.hpp: index validation and seeded random permutations.
// Its laws, over float and double, fixed and dynamic sizes, run in the conformance list
// (tests/conformance/conformance.hpp).
#include <Eigen/Core>
#include <catch2/catch.hpp>
#include <nflow/bijectors/permutation.hpp>

using namespace nflow;

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
