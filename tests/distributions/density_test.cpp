// Base distributions and Density: normalisation, sampling moments, consistency of sample and
// log_prob, gradients and the score; sampling per context column.
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <nflow/nflow.hpp>
#include <random>
#include <vector>

#include "support/toy_bijectors.hpp"

using namespace nflow;

namespace {
using Flow2 = Flow<ElementwiseAffine<double, 2>, Sigmoid<double, 2>, Logit<double, 2>,
                   Reverse<double, 2>, ElementwiseAffine<double, 2>>;
Flow2 make_flow() {
  Flow2 f;
  std::mt19937_64 gen(17);
  set_parameters(f,
                 Vector<double>(standard_normal_matrix<double>(f.parameter_count(), 1, gen) * 0.5));
  return f;
}
}  // namespace

TEST_CASE("a density built from a 2-D flow integrates to 1 on a grid", "[density]") {
  // A logit-normal-like density on the unit square: x ∈ (0,1)² → logit → affine → swap → affine.
  using Square = Flow<Logit<double, 2>, ElementwiseAffine<double, 2>, Reverse<double, 2>,
                      ElementwiseAffine<double, 2>>;
  Square f;
  std::mt19937_64 gen(5);
  set_parameters(f,
                 Vector<double>(standard_normal_matrix<double>(f.parameter_count(), 1, gen) * 0.4));
  Density density(DiagonalNormal<double, 2>{}, f);
  density.base().set_loc(Eigen::Vector2d(0.3, -0.2));
  density.base().set_log_scale(Eigen::Vector2d(0.1, -0.3));
  // Midpoint rule on (0, 1)²; the density vanishes faster than any power at the edges.
  const int m = 600;
  const double h = 1.0 / m;
  Eigen::Matrix<double, 2, Eigen::Dynamic> grid(2, m * m);
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < m; ++j) grid.col(i * m + j) << (i + 0.5) * h, (j + 0.5) * h;
  const double mass = density.log_prob(grid).array().exp().sum() * h * h;
  CHECK(std::abs(mass - 1.0) < 1e-3);
}

TEST_CASE("samples have the moments the density implies", "[density]") {
  // x = affine⁻¹(z) with z ~ N(0, I): mean −shift·e^{−s}, std e^{−s}.
  ElementwiseAffine<double, 2> a;
  a.set_shift(Eigen::Vector2d(1.0, -2.0));
  a.set_log_scale(Eigen::Vector2d(std::log(2.0), std::log(0.5)));
  Density density(StandardNormal<double, 2>{}, Flow<ElementwiseAffine<double, 2>>(a));
  std::mt19937_64 gen(11);
  const Index n = 100000;
  const auto x = density.sample(n, gen);
  const Eigen::Vector2d mean = x.rowwise().mean();
  const Eigen::Vector2d sd =
      ((x.colwise() - mean).array().square().rowwise().sum() / double(n - 1)).sqrt();
  CHECK(mean(0) == Approx(-0.5).margin(5 * 0.5 / std::sqrt(double(n))));
  CHECK(mean(1) == Approx(4.0).margin(5 * 2.0 / std::sqrt(double(n))));
  CHECK(sd(0) == Approx(0.5).epsilon(0.01));
  CHECK(sd(1) == Approx(2.0).epsilon(0.01));
}

TEST_CASE("sample_and_log_prob agrees with log_prob, and sampling is reproducible", "[density]") {
  Density density(StandardNormal<double, 2>{}, make_flow());
  std::mt19937_64 g1(3), g2(3);
  const auto s = density.sample_and_log_prob(200, g1);
  CHECK((density.log_prob(s.samples) - s.log_prob).cwiseAbs().maxCoeff() < 1e-10);
  CHECK(density.sample(200, g2) == s.samples);
  // One point gives a Scalar equal to the batch's column.
  const Eigen::Vector2d p = s.samples.col(5);
  const double lp = density.log_prob(p);
  CHECK(lp == Approx(s.log_prob(5)).epsilon(1e-12));
}

TEST_CASE("the base log-densities are exact", "[density]") {
  const Eigen::Vector3d z(0.5, -1.0, 2.0);
  const double expected = -0.5 * z.squaredNorm() - 1.5 * std::log(2 * 3.141592653589793);
  CHECK(StandardNormal<double, 3>{}.log_prob(z)(0) == Approx(expected).epsilon(1e-14));
  DiagonalNormal<double> dn(3);
  dn.set_loc(Eigen::Vector3d(1, 0, -1));
  dn.set_log_scale(Eigen::Vector3d(0.5, -0.2, 0.0));
  double manual = 0;
  for (int i = 0; i < 3; ++i) {
    const double sd = std::exp(dn.log_scale()(i));
    const double u = (z(i) - dn.loc()(i)) / sd;
    manual += -0.5 * u * u - std::log(sd) - 0.5 * std::log(2 * 3.141592653589793);
  }
  CHECK(dn.log_prob(z)(0) == Approx(manual).epsilon(1e-14));
  CHECK_THROWS_AS(dn.set_log_scale(Eigen::Vector3d(0, INFINITY, 0)), ParameterError);
  CHECK_THROWS_AS(dn.log_prob(Eigen::Vector2d::Zero()), ShapeError);
}

TEST_CASE("the score and the parameter gradient of log_prob match finite differences",
          "[density][gradients]") {
  Density density(DiagonalNormal<double, 2>{}, make_flow());
  density.base().set_loc(Eigen::Vector2d(0.2, 0.1));
  std::mt19937_64 gen(23);
  const Eigen::MatrixXd x = standard_normal_matrix<double>(2, 4, gen);
  const Eigen::MatrixXd score = density.score(x);
  const double h = 1e-4;
  for (Index i = 0; i < x.size(); ++i) {
    Eigen::MatrixXd xp = x, xm = x;
    xp(i) += h;
    xm(i) -= h;
    const double fd = (density.log_prob(xp) - density.log_prob(xm)).sum() / (2 * h);
    CHECK(score(i) == Approx(fd).epsilon(1e-6).margin(1e-8));
  }
  Vector<double> gp = Vector<double>::Zero(density.parameter_count());
  const Eigen::RowVectorXd w = Eigen::RowVectorXd::LinSpaced(4, 0.5, 2.0);
  density.log_prob_vjp(x, w, gp);
  Vector<double> theta = get_parameters(density);
  for (Index i = 0; i < theta.size(); ++i) {
    Vector<double> tp = theta, tm = theta;
    tp(i) += h;
    tm(i) -= h;
    set_parameters(density, tp);
    const double up = (density.log_prob(x).array() * w.array()).sum();
    set_parameters(density, tm);
    const double down = (density.log_prob(x).array() * w.array()).sum();
    CHECK(gp(i) == Approx((up - down) / (2 * h)).epsilon(1e-6).margin(1e-8));
  }
  set_parameters(density, theta);
  CHECK(parameter_names(density).front() == "base.loc");
  CHECK(parameter_names(density).back() == "transform.4.log_scale");
}

TEST_CASE("a conditional density takes one context per sample or one shared",
          "[density][context]") {
  using CA = test::ContextAffine<double, 2, 1>;
  Density density(StandardNormal<double, 2>{},
                  Flow<CA, Reverse<double, 2>>(CA(2, 1, 3), Reverse<double, 2>{}));
  std::mt19937_64 gen(1);
  const Eigen::Matrix<double, 1, 1> c(0.7);
  const auto s = density.sample_and_log_prob(500, gen, c);
  const Eigen::RowVectorXd shared = Eigen::RowVectorXd::Constant(500, 0.7);
  CHECK((density.log_prob(s.samples, shared) - s.log_prob).cwiseAbs().maxCoeff() < 1e-10);
  CHECK_THROWS_AS(density.log_prob(s.samples), ShapeError);
  CHECK_THROWS_AS(density.sample(10, gen, Eigen::RowVectorXd::Zero(3)), ShapeError);
}

TEST_CASE("sampling one sample per context column equals sampling each context alone",
          "[density][context]") {
  using CA = test::ContextAffine<double, 2, 1>;
  Density density(StandardNormal<double, 2>{},
                  Flow<CA, Reverse<double, 2>>(CA(2, 1, 3), Reverse<double, 2>{}));
  const Eigen::RowVectorXd c = Eigen::RowVectorXd::LinSpaced(6, -2.0, 3.0);
  std::mt19937_64 g1(8), g2(8), g3(8);
  const auto s = density.sample_and_log_prob(g1, c);  // n = c.cols()
  REQUIRE(s.samples.cols() == 6);
  CHECK(density.sample(g2, c) == s.samples);
  // Sample j is the inverse of the j-th base draw given context j alone.
  const Eigen::Matrix<double, 2, Eigen::Dynamic> z = density.base().sample(6, g3);
  for (Index j = 0; j < 6; ++j) {
    const Eigen::Matrix<double, 1, 1> cj(c(j));
    const Eigen::Vector2d xj = density.transform().inverse(Eigen::Vector2d(z.col(j)), cj);
    CHECK((xj - s.samples.col(j)).cwiseAbs().maxCoeff() < 1e-12);
    CHECK(s.log_prob(j) == Approx(density.log_prob(xj, cj)).epsilon(1e-12));
  }
}

TEST_CASE("a context of neither 1 nor n columns is an error naming both, NaN stays in its column",
          "[density][context]") {
  using CA = test::ContextAffine<double, 2, 1>;
  Density density(StandardNormal<double, 2>{},
                  Flow<CA, Reverse<double, 2>>(CA(2, 1, 3), Reverse<double, 2>{}));
  std::mt19937_64 gen(4), fresh(4);
  const Eigen::RowVectorXd c3 = Eigen::RowVectorXd::Zero(3);
  CHECK_THROWS_AS(density.sample(5, gen, c3), ShapeError);
  CHECK_THROWS_WITH(density.sample_and_log_prob(5, gen, c3), Catch::Contains("1 column") &&
                                                                 Catch::Contains("5 columns") &&
                                                                 Catch::Contains("1 x 3"));
  CHECK(gen() == fresh());  // the failed calls drew nothing
  // NaN in one context column: that sample and its log-density are NaN, the others unchanged.
  Eigen::RowVectorXd c = Eigen::RowVectorXd::LinSpaced(4, -1.0, 1.0);
  std::mt19937_64 g1(6), g2(6);
  const auto finite = density.sample_and_log_prob(g1, c);
  c(2) = std::numeric_limits<double>::quiet_NaN();
  const auto s = density.sample_and_log_prob(g2, c);
  CHECK(non_finite_columns(s.samples) == std::vector<Index>{2});
  CHECK(std::isnan(s.log_prob(2)));
  for (Index j : {0, 1, 3}) {
    CHECK(s.samples.col(j) == finite.samples.col(j));
    CHECK(s.log_prob(j) == finite.log_prob(j));
  }
}
