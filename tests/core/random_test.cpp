// nflow's own random draws: reproducible, correct moments, any URBG.
#include <catch2/catch.hpp>
#include <cmath>
#include <nflow/nflow.hpp>
#include <random>

using namespace nflow;

TEST_CASE("standard normal draws are reproducible from a seed", "[random]") {
  std::mt19937_64 a(123), b(123), c(124);
  const Eigen::MatrixXd x = standard_normal_matrix<double>(3, 50, a);
  const Eigen::MatrixXd y = standard_normal_matrix<double>(3, 50, b);
  const Eigen::MatrixXd z = standard_normal_matrix<double>(3, 50, c);
  CHECK(x == y);
  CHECK(x != z);
  // The float version is the double sequence rounded.
  std::mt19937_64 d(123);
  const Eigen::MatrixXf xf = standard_normal_matrix<float>(3, 50, d);
  CHECK(xf == x.cast<float>());
}

TEST_CASE("standard normal draws have the moments of N(0, 1)", "[random]") {
  std::mt19937_64 gen(7);
  const Index n = 200000;
  const Eigen::VectorXd x = standard_normal_matrix<double>(n, 1, gen);
  const double mean = x.mean();
  const double var = (x.array() - mean).square().sum() / double(n - 1);
  const double kurt = (x.array() - mean).pow(4).mean() / (var * var);
  // Standard errors: mean 1/sqrt(n) ≈ 0.0022, variance sqrt(2/n) ≈ 0.0032, kurtosis sqrt(24/n) ≈ 0.011.
  CHECK(std::abs(mean) < 5 * 0.0023);
  CHECK(std::abs(var - 1.0) < 5 * 0.0032);
  CHECK(std::abs(kurt - 3.0) < 5 * 0.011);
  // Tail frequency: P(|x| > 2) = 0.0455.
  const double tail = double((x.array().abs() > 2.0).count()) / double(n);
  CHECK(std::abs(tail - 0.0455) < 5 * std::sqrt(0.0455 * 0.9545 / double(n)));
}

TEST_CASE("random bits work over generators of any range", "[random]") {
  std::minstd_rand small(1);  // range [1, 2^31 - 2]: not a power of two, used by rejection
  std::mt19937 mid(1);
  Eigen::VectorXd u(20000);
  for (Index i = 0; i < u.size(); ++i) u(i) = uniform_open01(small);
  CHECK(u.minCoeff() > 0.0);
  CHECK(u.maxCoeff() < 1.0);
  CHECK(std::abs(u.mean() - 0.5) < 5 * std::sqrt(1.0 / 12.0 / 20000.0));
  for (Index i = 0; i < u.size(); ++i) u(i) = uniform_open01(mid);
  CHECK(std::abs(u.mean() - 0.5) < 5 * std::sqrt(1.0 / 12.0 / 20000.0));
  // Distinct high and low halves: the 64 bits are not one 32-bit draw repeated.
  std::mt19937 g(5);
  const std::uint64_t bits = random_bits64(g);
  CHECK((bits >> 32) != (bits & 0xffffffffu));
}

TEST_CASE("random permutations are uniform", "[random]") {
  std::mt19937_64 gen(3);
  // Over 3 elements each of the 6 permutations should appear about 1/6 of the time.
  std::array<int, 6> counts{};
  const int trials = 60000;
  for (int t = 0; t < trials; ++t) {
    const Eigen::VectorXi p = random_permutation(3, gen);
    counts[std::size_t(p(0) * 2 + (p(1) > p(2) ? 1 : 0))]++;
  }
  const double expected = trials / 6.0;
  double chi2 = 0;
  for (int c : counts) chi2 += (c - expected) * (c - expected) / expected;
  CHECK(chi2 < 20.5);  // chi-square with 5 dof: p ≈ 0.001
}
