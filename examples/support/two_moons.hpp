#pragma once
// The two-moons simulation-based-inference task (Greenberg, Nonnenmacher, Macke 2019; sbibm,
// Lueckmann et al. 2021) shared by simulation_inference.cpp and affine_forms.cpp: the simulator,
// its closed-form likelihood and posterior (derived at the top of simulation_inference.cpp),
// exact posterior samples, the grid KL(p || q) and a classifier two-sample test.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <nflow/nflow.hpp>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace nflow_examples::two_moons {

using nflow::Constants;
using nflow::Index;
using nflow::standard_normal_pair;
using nflow::uniform_open01;

using Matrix2X = Eigen::Matrix<double, 2, Eigen::Dynamic>;

constexpr double pi = Constants<double>::pi;
constexpr double radius_mean = 0.1, radius_sd = 0.01, offset = 0.25;

/// The shift of the moon for parameter θ: (−|θ₁ + θ₂|/√2, (−θ₁ + θ₂)/√2).
inline Eigen::Vector2d moon_shift(double t1, double t2) {
  return {-std::abs(t1 + t2) / std::sqrt(2.0), (-t1 + t2) / std::sqrt(2.0)};
}

/// `n` draws (θ, x) of the prior and the simulator, from `seed`.
inline void simulate(Index n, std::uint64_t seed, Matrix2X& theta, Matrix2X& x) {
  std::mt19937_64 gen(seed);
  theta.resize(2, n);
  x.resize(2, n);
  for (Index j = 0; j < n; ++j) {
    const double t1 = 2 * uniform_open01(gen) - 1, t2 = 2 * uniform_open01(gen) - 1;
    const double a = pi * (uniform_open01(gen) - 0.5);
    double e = 0, unused = 0;
    standard_normal_pair(gen, e, unused);
    const double r = radius_mean + radius_sd * e;
    theta.col(j) << t1, t2;
    x.col(j) = Eigen::Vector2d(r * std::cos(a) + offset, r * std::sin(a)) + moon_shift(t1, t2);
  }
}

/// log p(x | θ) of the simulator, exactly (see the top of the file).
inline double log_likelihood(const Eigen::Vector2d& x, double t1, double t2) {
  const Eigen::Vector2d q = x - moon_shift(t1, t2) - Eigen::Vector2d(offset, 0);
  const double rho = q.norm();
  if (!(rho > 0)) return -std::numeric_limits<double>::infinity();  // measure zero, mass ~1e-22
  const double signed_radius = q(0) > 0 ? rho : -rho;               // r of the draw that lands on q
  const double s = (signed_radius - radius_mean) / radius_sd;
  return -0.5 * s * s - 0.5 * std::log(2 * pi) - std::log(radius_sd * pi * rho);
}

/// log p(θ | x) up to its normalising constant: the log-likelihood on the prior's box, −∞ outside.
inline Eigen::RowVectorXd log_posterior(const Eigen::Vector2d& x, const Matrix2X& theta) {
  Eigen::RowVectorXd lp(theta.cols());
  for (Index j = 0; j < theta.cols(); ++j) {
    const double t1 = theta(0, j), t2 = theta(1, j);
    lp(j) = std::abs(t1) <= 1 && std::abs(t2) <= 1 ? log_likelihood(x, t1, t2)
                                                   : -std::numeric_limits<double>::infinity();
  }
  return lp;
}

/// The centres of the `side` × `side` cells of the prior's box [−1, 1]², row by row.
inline Matrix2X box_grid(Index side) {
  const double cell = 2.0 / double(side);
  Matrix2X points(2, side * side);
  for (Index i = 0; i < side; ++i)
    for (Index k = 0; k < side; ++k)
      points.col(i * side + k) << -1 + (double(k) + 0.5) * cell, -1 + (double(i) + 0.5) * cell;
  return points;
}

/// `n` exact draws from the posterior p(θ | x), by inverting the simulator: draw the noise (a, r)
/// from its prior, solve x = (r cos a + 0.25, r sin a) + (−|θ₁ + θ₂|/√2, (−θ₁ + θ₂)/√2) for θ on
/// a branch of |θ₁ + θ₂| chosen by a fair coin, and keep θ if it lies in the prior's box (a draw
/// with x₁ − 0.25 − r cos a > 0 has no solution and is dropped). Why this is exact: on each branch
/// the map θ ↦ q = r·(cos a, sin a) is an isometry and (r, a) ↦ q has Jacobian ρ = |q|, so a draw
/// lands at θ with density ½·p(a, r)/ρ, which is ½·p(x | θ) (the closed form above); restricted to
/// the box, that is ∝ p(x | θ)·prior(θ). The sbibm reference posterior is made this way.
/// @throws std::runtime_error if fewer than 1 draw in 1,000 is kept (x far outside the simulator's
///   range).
inline Matrix2X reference_posterior(const Eigen::Vector2d& x, Index n, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  Matrix2X theta(2, n);
  Index kept = 0, tried = 0;
  while (kept < n) {
    if (++tried > 1000 * (n + 1)) {
      throw std::runtime_error("reference_posterior: fewer than 1 draw in 1000 is kept; x = (" +
                               std::to_string(x(0)) + ", " + std::to_string(x(1)) +
                               ") is too unlikely under the simulator");
    }
    const double a = pi * (uniform_open01(gen) - 0.5);
    double e = 0, unused = 0;
    standard_normal_pair(gen, e, unused);
    const double r = radius_mean + radius_sd * e;
    const double branch = uniform_open01(gen) < 0.5 ? 1.0 : -1.0;
    // x − p = (−|s|/√2, d/√2) with s = θ₁ + θ₂, d = θ₂ − θ₁.
    const double u1 = x(0) - r * std::cos(a) - offset, u2 = x(1) - r * std::sin(a);
    if (u1 > 0) continue;
    const double s = branch * -std::sqrt(2.0) * u1, d = std::sqrt(2.0) * u2;
    const double t1 = 0.5 * (s - d), t2 = 0.5 * (s + d);
    if (std::abs(t1) > 1 || std::abs(t2) > 1) continue;
    theta.col(kept++) << t1, t2;
  }
  return theta;
}

/// The classifier two-sample test (C2ST; Lopez-Paz and Oquab 2017, arXiv:1610.06545): the
/// accuracy of a k-nearest-neighbour classifier (Euclidean, k = 25, majority vote) that tells the
/// columns of `a` from those of `b`, measured by 5-fold cross-validation: the pooled samples are
/// standardised (each coordinate to mean 0 and standard deviation 1), dealt into 5 folds by a
/// random permutation from `seed`, and every sample is classified by its 25 nearest neighbours
/// among the other 4 folds. 0.5 means the classifier cannot tell the two sets apart; 1 that it
/// separates them completely. With equal set sizes the best classifier reaches ½(1 + TV(p, q)).
inline double c2st(const Matrix2X& a, const Matrix2X& b, std::uint64_t seed) {
  constexpr int k = 25, folds = 5;
  const Index n = a.cols() + b.cols();
  Matrix2X z(2, n);
  z << a, b;
  const Eigen::Vector2d mean = z.rowwise().mean();
  z.colwise() -= mean;
  const Eigen::Vector2d sd = (z.array().square().rowwise().sum() / double(n - 1)).sqrt();
  z = sd.cwiseInverse().asDiagonal() * z;
  // A permutation from nflow's uniform draws (Fisher–Yates), the same with every standard library.
  std::mt19937_64 gen(seed);
  std::vector<Index> order(std::size_t(n), 0);
  for (Index i = 0; i < n; ++i) order[std::size_t(i)] = i;
  for (Index i = n - 1; i > 0; --i) {
    const Index j = std::min(i, Index(uniform_open01(gen) * double(i + 1)));
    std::swap(order[std::size_t(i)], order[std::size_t(j)]);
  }
  std::vector<int> fold(std::size_t(n), 0);
  for (Index i = 0; i < n; ++i) fold[std::size_t(order[std::size_t(i)])] = int(i % folds);
  Index correct = 0;
  std::vector<std::pair<double, bool>> d;  // (squared distance, neighbour is from b)
  d.reserve(std::size_t(n));
  for (Index i = 0; i < n; ++i) {
    d.clear();
    for (Index j = 0; j < n; ++j)
      if (fold[std::size_t(j)] != fold[std::size_t(i)])
        d.emplace_back((z.col(i) - z.col(j)).squaredNorm(), j >= a.cols());
    std::nth_element(d.begin(), d.begin() + (k - 1), d.end());
    int votes_b = 0;
    for (int m = 0; m < k; ++m) votes_b += d[std::size_t(m)].second ? 1 : 0;
    correct += (2 * votes_b > k) == (i >= a.cols()) ? 1 : 0;
  }
  return double(correct) / double(n);
}

/// KL(p || q) in nats at the observation x for the exact posterior p and a flow's log q(θ | x)
/// (`log_q(points, contexts)` → a row of log densities), by the midpoint rule on the centres of a
/// `side` × `side` grid of the prior's box (p normalised by the grid sum; q as the flow gives it,
/// so that q's mass outside the box counts against it).
template <typename LogQ>
double grid_kl(const Eigen::Vector2d& x, Index side, LogQ&& log_q) {
  const double cell = 2.0 / double(side);
  const Matrix2X points = box_grid(side);
  const Eigen::RowVectorXd log_p = log_posterior(x, points);
  const double top = log_p.maxCoeff();
  const double log_norm = top + std::log((log_p.array() - top).exp().sum() * cell * cell);
  const Eigen::RowVectorXd lq = log_q(points, Eigen::MatrixXd(x.replicate(1, points.cols())));
  double kl = 0;
  for (Index j = 0; j < points.cols(); ++j) {
    const double lp = log_p(j) - log_norm;
    if (std::isfinite(lp)) kl += std::exp(lp) * (lp - lq(j));
  }
  return kl * cell * cell;
}

}  // namespace nflow_examples::two_moons
