// The spline flow presets (nflow/flows/presets.hpp): identity when fresh, a valid
// density once trained-like parameters are drawn (round trip, change of variables against a
// finite-difference Jacobian, normalisation on a grid), context handling, seeds and errors.
#include <Eigen/LU>
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <nflow/flows/presets.hpp>
#include <random>

#include "support/randomized.hpp"

using namespace nflow;

namespace {

/// log|det| of the transform at x by central differences of forward().
template <typename T>
double fd_log_det(const T& transform, const Eigen::VectorXd& x, const Eigen::MatrixXd* context) {
  const Index d = x.size();
  Eigen::MatrixXd jac(d, d);
  const double h = 1e-5;
  for (Index j = 0; j < d; ++j) {
    Eigen::VectorXd up = x, down = x;
    up(j) += h;
    down(j) -= h;
    if (context != nullptr) {
      jac.col(j) = (transform.forward(Eigen::MatrixXd(up), *context) -
                    transform.forward(Eigen::MatrixXd(down), *context)) /
                   (2 * h);
    } else {
      jac.col(j) =
          (transform.forward(Eigen::MatrixXd(up)) - transform.forward(Eigen::MatrixXd(down))) /
          (2 * h);
    }
  }
  return std::log(std::abs(jac.determinant()));
}

}  // namespace

TEST_CASE("coupling_nsf: a fresh flow is the identity, drawn parameters give a density",
          "[flows][spline]") {
  auto nsf = flows::coupling_nsf<double, 2>({.transforms = 4, .hidden_features = 16, .seed = 3});
  std::mt19937_64 rng(1);
  const Eigen::MatrixXd x = standard_normal_matrix<double>(2, 50, rng) * 2.0;
  // Fresh: every coupling is the identity, exactly: the flow only permutes (3 reversals of R²).
  const auto fresh = nsf.transform().forward_and_log_det(x);
  CHECK((fresh.value - x.colwise().reverse()).cwiseAbs().maxCoeff() == 0.0);
  CHECK(fresh.log_det.cwiseAbs().maxCoeff() == 0.0);

  // Mild parameters: the round trip's error is ulp(z)/τ′(x), which a nearly flat bin makes large.
  nsf.transform() = test::randomized(nsf.transform(), 5, 0.2);
  const auto r = nsf.transform().forward_and_log_det(x);
  CHECK((r.value - x).cwiseAbs().maxCoeff() > 1e-3);  // no longer the identity
  CHECK((nsf.transform().inverse(r.value) - x).cwiseAbs().maxCoeff() < 1e-10);
  for (Index j = 0; j < 5; ++j)
    CHECK(r.log_det(j) == Approx(fd_log_det(nsf.transform(), x.col(j), nullptr)).margin(1e-6));
  // exp(log p) integrates to 1 over a grid covering the mass (base N(0, I), mild transform).
  const int n = 240;
  const double lo = -8, hi = 8, step = (hi - lo) / n;
  Eigen::MatrixXd grid(2, n * n);
  for (int i = 0; i < n; ++i)
    for (int k = 0; k < n; ++k) grid.col(i * n + k) << lo + (i + 0.5) * step, lo + (k + 0.5) * step;
  CHECK(nsf.log_prob(grid).array().exp().sum() * step * step == Approx(1.0).epsilon(2e-3));
  // Sampling inverts the transform: the samples' log_prob equals the one sampled with them.
  const auto s = nsf.sample_and_log_prob(200, rng);
  CHECK((nsf.log_prob(s.samples) - s.log_prob).cwiseAbs().maxCoeff() < 1e-9);
}

TEST_CASE("autoregressive_nsf: conditional, identity when fresh, change of variables",
          "[flows][spline]") {
  auto nsf = flows::autoregressive_nsf<double>(3, {.transforms = 3,
                                                   .hidden_features = 12,
                                                   .context = 2,
                                                   .permutation = flows::Permutations::Random,
                                                   .seed = 4});
  std::mt19937_64 rng(2);
  const Eigen::MatrixXd x = standard_normal_matrix<double>(3, 20, rng);
  const Eigen::MatrixXd c = standard_normal_matrix<double>(2, 20, rng);
  const auto fresh = nsf.transform().forward_and_log_det(x, c);
  CHECK(fresh.log_det.cwiseAbs().maxCoeff() == 0.0);
  CHECK((nsf.transform().inverse(fresh.value, c) - x).cwiseAbs().maxCoeff() == 0.0);
  nsf.transform() = test::randomized(nsf.transform(), 6, 0.2);
  const auto r = nsf.transform().forward_and_log_det(x, c);
  CHECK((nsf.transform().inverse(r.value, c) - x).cwiseAbs().maxCoeff() < 1e-10);
  for (Index j = 0; j < 4; ++j) {
    const Eigen::MatrixXd cj = c.col(j);
    CHECK(r.log_det(j) == Approx(fd_log_det(nsf.transform(), x.col(j), &cj)).margin(1e-6));
  }
  // The context matters, and a missing one is an error, not a guess.
  const Eigen::MatrixXd other = standard_normal_matrix<double>(2, 20, rng);
  CHECK((nsf.transform().forward(x, other) - r.value).cwiseAbs().maxCoeff() > 1e-4);
  CHECK_THROWS_AS(nsf.log_prob(x, Eigen::MatrixXd(3, 20)), ShapeError);
}

TEST_CASE("spline flow presets: distinct layers, reproducible seeds, float, errors",
          "[flows][spline]") {
  auto a = flows::coupling_nsf<float, 4, 8>({.transforms = 3, .seed = 9});
  auto b = flows::coupling_nsf<float, 4, 8>({.transforms = 3, .seed = 9});
  auto c = flows::coupling_nsf<float, 4, 8>({.transforms = 3, .seed = 10});
  CHECK(get_parameters(a.transform()) == get_parameters(b.transform()));
  CHECK(get_parameters(a.transform()) != get_parameters(c.transform()));
  // No two layers start alike (first-layer weights differ).
  CHECK(a.transform().step(0).step<0>().conditioner().weight(0) !=
        a.transform().step(1).step<0>().conditioner().weight(0));
  CHECK_THROWS_AS((flows::coupling_nsf<double>(1, {.transforms = 2})), ParameterError);
  CHECK_THROWS_AS((flows::autoregressive_nsf<double, 3>(4, {.transforms = 2})), ParameterError);
  CHECK_THROWS_AS(
      (flows::coupling_nsf<double, 2>({.transforms = 2, .spline = {.lower = 1, .upper = -1}})),
      ParameterError);
}

TEST_CASE("coupling_nsf on a bounded domain: a density on the unit square",
          "[flows][spline][bounded]") {
  auto box =
      flows::coupling_nsf<double, 2, 16, 6, SplineDomain::Bounded>({.transforms = 3, .seed = 2});
  box.transform() = test::randomized(box.transform(), 8, 0.3);
  // exp(log p) integrates to 1 over [0, 1]² (midpoint rule), and is 0 outside.
  const int n = 300;
  Eigen::MatrixXd grid(2, n * n);
  for (int i = 0; i < n; ++i)
    for (int k = 0; k < n; ++k) grid.col(i * n + k) << (i + 0.5) / n, (k + 0.5) / n;
  const Eigen::RowVectorXd log_p = box.log_prob(grid);
  CHECK(log_p.array().exp().sum() / (n * n) == Approx(1.0).epsilon(2e-3));
  CHECK(log_p.maxCoeff() - log_p.minCoeff() > 0.1);  // not the uniform density
  const Eigen::Vector2d outside(1.25, 0.5);
  CHECK(box.log_prob(Eigen::MatrixXd(outside))(0) == -std::numeric_limits<double>::infinity());
  // Samples stay in the box and their log_prob is the one sampled with them.
  std::mt19937_64 rng(3);
  const auto s = box.sample_and_log_prob(500, rng);
  CHECK(s.samples.minCoeff() >= 0.0);
  CHECK(s.samples.maxCoeff() <= 1.0);
  CHECK((box.log_prob(s.samples) - s.log_prob).cwiseAbs().maxCoeff() < 1e-9);
}
