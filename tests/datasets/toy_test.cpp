// Toy data sets: reproducible, finite, with the moments their definitions imply.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <nflow/datasets/toy.hpp>
#include <vector>

using namespace nflow;

TEST_CASE("every toy data set is reproducible from its seed and finite", "[datasets]") {
  for (auto t : datasets::all_toys) {
    INFO(datasets::name(t));
    const auto a = datasets::toy(t, 500, 1);
    const auto b = datasets::toy(t, 500, 1);
    const auto c = datasets::toy(t, 500, 2);
    CHECK(a == b);
    CHECK(a != c);
    CHECK(a.allFinite());
    CHECK(datasets::toy_from_name(datasets::name(t)) == t);
  }
  CHECK_THROWS_AS(datasets::toy_from_name("nope"), ParameterError);
}

TEST_CASE("toy data sets have the geometry their definitions imply", "[datasets]") {
  const Index n = 40000;
  // Checkerboard: uniform on 8 squares of side 2 in [-4, 4]^2, mean 0, per-coordinate variance 16/3.
  const auto cb = datasets::toy(datasets::Toy::Checkerboard, n, 3);
  CHECK(cb.cwiseAbs().maxCoeff() <= 4.0);
  CHECK(std::abs(cb.row(0).mean()) < 0.05);
  CHECK((cb.row(0).array().square().mean()) == Approx(16.0 / 3.0).epsilon(0.02));
  // The squares alternate: floor(x/2) + floor(y/2) is always even or always odd per the pattern.
  Index odd = 0;
  for (Index j = 0; j < n; ++j)
    odd += (int(std::floor(cb(0, j) / 2)) + int(std::floor(cb(1, j) / 2))) & 1;
  CHECK((odd == 0 || odd == n));
  // Rings: radii 0.75, 1.5, 2.25, 3 (FFJORD's), radial noise ≈ N(0, 0.08²): about 95.4 % of the
  // points lie within 0.16 of their ring (2σ), and each ring holds a quarter of them.
  const auto rings = datasets::toy(datasets::Toy::Rings, n, 4);
  const Eigen::RowVectorXd r = rings.colwise().norm();
  Index near = 0;
  std::vector<Index> per_ring(5, 0);
  for (Index j = 0; j < n; ++j) {
    const double k = std::round(r(j) / 0.75);
    near += std::abs(r(j) - 0.75 * k) < 0.16 ? 1 : 0;
    per_ring[std::size_t(std::clamp(k, 0.0, 4.0))] += 1;
  }
  CHECK(double(near) / double(n) == Approx(0.954).margin(0.01));
  CHECK(per_ring[0] == 0);
  for (std::size_t k = 1; k <= 4; ++k)
    CHECK(double(per_ring[k]) / double(n) == Approx(0.25).margin(0.015));
  CHECK(r.mean() == Approx(1.875).epsilon(0.01));
  // Eight Gaussians: centres at radius 2√2; the points' radii average close to it.
  const auto g8 = datasets::toy(datasets::Toy::EightGaussians, n, 5);
  CHECK(g8.colwise().norm().mean() == Approx(4.0 / std::sqrt(2.0)).epsilon(0.02));
}

TEST_CASE("the standardizer maps training data to zero mean and unit variance, and back",
          "[datasets]") {
  const auto x = datasets::toy(datasets::Toy::TwoMoons, 1000, 1);
  const datasets::Standardizer<double> s(x);
  const auto y = s.apply(x);
  CHECK(y.rowwise().mean().norm() < 1e-12);
  CHECK(((y.array().square().rowwise().sum()) / 999.0 - 1.0).abs().maxCoeff() < 1e-12);
  CHECK((s.invert(y) - x).norm() < 1e-12);
  CHECK(s.log_abs_det() == Approx(-s.scale().array().log().sum()));
  CHECK_THROWS_AS(s.apply(Eigen::MatrixXd::Zero(3, 2)), ShapeError);
}
