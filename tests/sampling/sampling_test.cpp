// nflow/sampling/: importance-sampling estimators and flow MCMC against closed forms. Targets are
// Gaussians written as log-density functors, proposals nflow's DiagonalNormal (and, for the flow
// path, a Density over an elementwise affine flow): log Z, the weights' moments (hence ESS), the
// KLs and the tail index of the weights are then known exactly.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <functional>
#include <limits>
#include <nflow/bijectors/elementwise_affine.hpp>
#include <nflow/core/flow.hpp>
#include <nflow/distributions/density.hpp>
#include <nflow/distributions/diagonal_normal.hpp>
#include <nflow/distributions/standard_normal.hpp>
#include <nflow/sampling/importance.hpp>
#include <nflow/sampling/mcmc.hpp>
#include <numbers>
#include <random>
#include <span>
#include <stdexcept>
#include <vector>

using namespace nflow;
using namespace nflow::sampling;

namespace {

using Points = Eigen::Matrix<double, 2, Eigen::Dynamic>;
constexpr double kInf = std::numeric_limits<double>::infinity();

// log p̃(x) = log Z + log N(x; mu, diag(sigma²)), per column.
struct GaussianTarget {
  Eigen::Vector2d mu;
  Eigen::Vector2d sigma;
  double log_z = 0.0;
  Eigen::RowVectorXd operator()(const Points& x) const {
    const Eigen::ArrayXXd u = (x.colwise() - mu).array().colwise() / sigma.array();
    return (-0.5 * u.square().colwise().sum() - sigma.array().log().sum() -
            std::log(2.0 * std::numbers::pi) + log_z)
        .matrix();
  }
};

DiagonalNormal<double, 2> normal(const Eigen::Vector2d& mu, const Eigen::Vector2d& sigma) {
  DiagonalNormal<double, 2> q;
  q.set_loc(mu);
  q.set_log_scale(sigma.array().log().matrix());
  return q;
}

// E_q[(w/Z)^r] for p = N(mp, sp²), q = N(mq, sq²) per dimension: ∫ p^r q^(1−r) dx
// = sp^−r sq^(r−1) τ^−½ exp(−½ r(1−r)Δ² / (r sq² + (1−r) sp²)), τ = r/sp² + (1−r)/sq².
double weight_moment(const GaussianTarget& p, const Eigen::Vector2d& mq, const Eigen::Vector2d& sq,
                     double r) {
  double m = 1.0;
  for (int i = 0; i < 2; ++i) {
    const double sp2 = p.sigma(i) * p.sigma(i), sq2 = sq(i) * sq(i), d = p.mu(i) - mq(i);
    const double tau = r / sp2 + (1 - r) / sq2;
    m *= std::pow(p.sigma(i), -r) * std::pow(sq(i), r - 1) / std::sqrt(tau) *
         std::exp(-0.5 * r * (1 - r) * d * d / (r * sq2 + (1 - r) * sp2));
  }
  return m;
}

// KL(a‖b) between diagonal Gaussians.
double kl_gauss(const Eigen::Vector2d& ma, const Eigen::Vector2d& sa, const Eigen::Vector2d& mb,
                const Eigen::Vector2d& sb) {
  double kl = 0.0;
  for (int i = 0; i < 2; ++i) {
    const double d = ma(i) - mb(i);
    kl += std::log(sb(i) / sa(i)) + (sa(i) * sa(i) + d * d) / (2 * sb(i) * sb(i)) - 0.5;
  }
  return kl;
}

// The light-tailed pair: q wider than p in both dimensions, shifted (weights bounded).
const GaussianTarget kTarget{Eigen::Vector2d(0.5, -0.3), Eigen::Vector2d(1.0, 0.7), 3.7};
const Eigen::Vector2d kMuQ(0.3, 0.0);
const Eigen::Vector2d kSigmaQ(1.3, 0.9);

}  // namespace

TEST_CASE("log Z, ESS, the KLs and weighted means of a Gaussian target meet their closed forms",
          "[sampling][importance]") {
  const auto q = normal(kMuQ, kSigmaQ);
  const Index n = 200000;
  std::mt19937_64 gen(2024);
  const Points x = q.sample(n, gen);
  const Eigen::RowVectorXd lw = kTarget(x) - q.log_prob(x);
  ImportanceAccumulator acc(2);
  acc.add(lw, x);
  REQUIRE(acc.count() == n);

  const double m2 = weight_moment(kTarget, kMuQ, kSigmaQ, 2);
  const double m3 = weight_moment(kTarget, kMuQ, kSigmaQ, 3);
  const double m4 = weight_moment(kTarget, kMuQ, kSigmaQ, 4);
  // log Ẑ within 4 of its exact standard errors √(Var(w/Z)/N), and the estimated error close.
  const double se_log_z = std::sqrt((m2 - 1) / double(n));
  CHECK(std::abs(acc.log_z() - kTarget.log_z) < 4 * se_log_z);
  CHECK(acc.log_z_standard_error() == Approx(se_log_z).epsilon(0.1));
  // ESS/N → 1/E[(w/Z)²]; its delta-method error from the third and fourth moments.
  const double ess_rate = 1 / m2;
  const double var_ess_rate = (4 / (m2 * m2) * (m2 - 1) - 4 / (m2 * m2 * m2) * (m3 - m2) +
                               (m4 - m2 * m2) / (m2 * m2 * m2 * m2)) /
                              double(n);
  CHECK(std::abs(acc.ess_per_sample() - ess_rate) < 4 * std::sqrt(var_ess_rate));
  CHECK(acc.ess() == Approx(acc.ess_per_sample() * double(n)).epsilon(1e-12));

  // The KLs, with error bars from the stored weights (computed here, independently).
  const Eigen::ArrayXd w = (lw.array() - lw.maxCoeff()).exp().transpose();
  const Eigen::ArrayXd wn = w / w.sum();
  const double mean_lw = lw.mean();
  const double sd_lw = std::sqrt((lw.array() - mean_lw).square().mean());
  const double eubo = (wn * lw.transpose().array()).sum();
  const double se_eubo = std::sqrt((wn.square() * (lw.transpose().array() - eubo).square()).sum());
  const double kl_rev = kl_gauss(kMuQ, kSigmaQ, kTarget.mu, kTarget.sigma);
  const double kl_fwd = kl_gauss(kTarget.mu, kTarget.sigma, kMuQ, kSigmaQ);
  CHECK(std::abs(acc.reverse_kl() - kl_rev) < 4 * (sd_lw / std::sqrt(double(n)) + se_log_z));
  CHECK(std::abs(acc.forward_kl() - kl_fwd) < 4 * (se_eubo + se_log_z));
  CHECK(acc.elbo() == Approx(mean_lw).epsilon(1e-12));
  CHECK(acc.eubo() == Approx(eubo).epsilon(1e-12));
  CHECK(acc.elbo() < kTarget.log_z);  // the bounds: ELBO ≤ log Z ≤ EUBO
  CHECK(acc.eubo() > kTarget.log_z);

  // E_p[x] = mu within its error bars; the streamed error bars equal the two-pass formula.
  const Eigen::Vector2d mean = acc.mean();
  const Eigen::Vector2d se = acc.mean_standard_error();
  for (int i = 0; i < 2; ++i) {
    const double m = (wn * x.row(i).transpose().array()).sum();
    const double s = std::sqrt((wn.square() * (x.row(i).transpose().array() - m).square()).sum());
    CHECK(mean(i) == Approx(m).epsilon(1e-10));
    CHECK(se(i) == Approx(s).epsilon(1e-8));
    CHECK(std::abs(mean(i) - kTarget.mu(i)) < 4 * se(i));
    CHECK(se(i) < 0.01);
  }

  // importance_sample draws the same points from the same seed, in batches (the first n2
  // columns of x: the normals are drawn in storage order).
  const Index n2 = 20000;
  ImportanceAccumulator head(2);
  head.add(lw.head(n2), x.leftCols(n2));
  std::mt19937_64 gen2(2024);
  const ImportanceAccumulator batched =
      importance_sample(q, kTarget, n2, gen2, 4096, [](const Points& xs) { return xs; });
  CHECK(batched.count() == n2);
  CHECK(batched.log_z() == Approx(head.log_z()).epsilon(1e-12));
  CHECK(batched.ess() == Approx(head.ess()).epsilon(1e-10));
  CHECK((batched.mean() - head.mean()).norm() < 1e-10);
}

TEST_CASE("Pareto k-hat: small for bounded weights, the exact tail index for Pareto weights",
          "[sampling][importance][psis]") {
  const Index n = 400000;
  // Light tail: q wider than p, weights bounded (k ≤ 0).
  {
    std::mt19937_64 gen(5);
    const auto q = normal(kMuQ, kSigmaQ);
    const ImportanceAccumulator acc = importance_sample(q, kTarget, n / 4, gen);
    CHECK(acc.tail_size() == Index(std::ceil(3 * std::sqrt(double(n / 4)))));
    CHECK(acc.pareto_k() < 0.3);
  }
  // Heavy tail: p = N(0, I₂), q = N(0, s²I₂) narrower. w ∝ exp(r²(1/s² − 1)/2) with r²/s² ~ χ²₂
  // (exponential): the weights are exactly Pareto with tail index k = 1 − s².
  {
    const double s = 0.35;
    const double k_true = 1 - s * s;
    std::mt19937_64 gen(6);
    const auto q = normal(Eigen::Vector2d::Zero(), Eigen::Vector2d::Constant(s));
    const GaussianTarget p{Eigen::Vector2d::Zero(), Eigen::Vector2d::Ones(), 0.0};
    const ImportanceAccumulator acc = importance_sample(q, p, n, gen);
    const double k = acc.pareto_k();
    CHECK(k > 0.7);
    // The maximum-likelihood spread of a GPD shape from M points, (1 + k)/√M.
    CHECK(std::abs(k - k_true) < 4 * (1 + k_true) / std::sqrt(double(acc.tail_size())));
  }
  // The fit alone, on exact generalised Pareto draws (inverse CDF).
  {
    std::mt19937_64 gen(7);
    const double k = 0.5, sigma = 2.0;
    const std::size_t m = 4000;
    std::vector<double> x(m);
    for (auto& v : x) v = sigma * (std::pow(uniform_open01(gen), -k) - 1) / k;
    const ParetoFit fit = fit_generalized_pareto(x);
    CHECK(std::abs(fit.k - k) < 4 * (1 + k) / std::sqrt(double(m)));
    CHECK(std::abs(fit.sigma / sigma - 1) < 4 * std::sqrt(2 * (1 + k) / double(m)));
  }
}

TEST_CASE("streaming in batches of 7 equals one batch, merging equals one sequential pass",
          "[sampling][importance]") {
  std::mt19937_64 gen(11);
  const auto q = normal(Eigen::Vector2d::Zero(), Eigen::Vector2d::Constant(0.6));
  const GaussianTarget p{Eigen::Vector2d(0.2, 0.1), Eigen::Vector2d::Ones(), 1e4};  // w ~ e^10⁴
  const Index n = 1000;
  const Points x = q.sample(n, gen);
  const Eigen::RowVectorXd lw = p(x) - q.log_prob(x);
  ImportanceAccumulator one(2), sevens(2), first(2), second(2), empty(2);
  one.add(lw, x);
  for (Index i = 0; i < n; i += 7) {
    const Index b = std::min<Index>(7, n - i);
    sevens.add(lw.segment(i, b), x.middleCols(i, b));
  }
  first.add(lw.head(400), x.leftCols(400));
  second.add(lw.tail(n - 400), x.rightCols(n - 400));
  first.merge(second);
  empty.merge(first);                     // into an empty accumulator
  first.merge(ImportanceAccumulator(2));  // an empty one changes nothing
  // Its state, as another process would receive it, rebuilds it (what nflow::mpi merges).
  const std::vector<double> state = one.state();
  ImportanceAccumulator rebuilt = ImportanceAccumulator::from_state(state);
  CHECK(rebuilt.state() == state);
  CHECK_THROWS_AS(ImportanceAccumulator::from_state(std::span(state).first(state.size() - 1)),
                  std::invalid_argument);
  for (const ImportanceAccumulator* a : {&sevens, &first, &empty, &rebuilt}) {
    CHECK(a->count() == n);
    CHECK(a->log_z() == Approx(one.log_z()).epsilon(1e-13));
    CHECK(a->log_z_standard_error() == Approx(one.log_z_standard_error()).epsilon(1e-10));
    CHECK(a->ess() == Approx(one.ess()).epsilon(1e-10));
    CHECK(a->elbo() == Approx(one.elbo()).epsilon(1e-13));
    CHECK(a->eubo() == Approx(one.eubo()).epsilon(1e-13));
    CHECK(a->reverse_kl() == Approx(one.reverse_kl()).epsilon(1e-8));
    CHECK(a->forward_kl() == Approx(one.forward_kl()).epsilon(1e-8));
    CHECK((a->mean() - one.mean()).norm() < 1e-12);
    CHECK((a->mean_standard_error() - one.mean_standard_error()).norm() < 1e-12);
    CHECK(a->pareto_k() == one.pareto_k());  // the same tail, fitted the same way
  }
  // Weights of size e^10⁴ neither overflow nor lose ESS: shifting log w shifts only log Ẑ.
  ImportanceAccumulator shifted(2);
  shifted.add((lw.array() - 1e4).matrix(), x);
  CHECK(std::isfinite(one.log_z()));
  CHECK(one.log_z() - shifted.log_z() == Approx(1e4).epsilon(1e-14));
  CHECK(shifted.ess() == Approx(one.ess()).epsilon(1e-10));
  // k̂ is the fit to the M largest weights over the (M+1)-th, computed here from the sorted
  // log-weights: M = ⌈min(N/5, 3√N)⌉ = 95, and with a heap of capacity 50, M = 49.
  std::vector<double> sorted(lw.data(), lw.data() + n);
  std::sort(sorted.begin(), sorted.end(), std::greater<double>());
  const auto psis_k = [&](std::size_t m) {
    std::vector<double> exceed;
    for (std::size_t i = 0; i < m; ++i)
      exceed.push_back(std::exp(sorted[i] - sorted[0]) - std::exp(sorted[m] - sorted[0]));
    return fit_generalized_pareto(exceed).k;
  };
  CHECK(one.tail_size() == 95);
  CHECK(one.pareto_k() == Approx(psis_k(95)).epsilon(1e-12));
  ImportanceAccumulator small(0, 50);
  for (Index i = 0; i < n; i += 100) small.add(lw.segment(i, 100));
  CHECK(small.tail_size() == 49);
  CHECK(small.pareto_k() == Approx(psis_k(49)).epsilon(1e-12));
}

TEST_CASE("bad input to the accumulator gives clear errors", "[sampling][importance][errors]") {
  ImportanceAccumulator acc;
  // Empty: every statistic throws std::domain_error.
  CHECK_THROWS_AS(acc.log_z(), std::domain_error);
  CHECK_THROWS_AS(acc.ess(), std::domain_error);
  CHECK_THROWS_AS(acc.elbo(), std::domain_error);
  CHECK_THROWS_AS(acc.pareto_k(), std::domain_error);
  CHECK_THROWS_AS(acc.mean(), std::domain_error);  // and no observables
  // NaN and +inf throw std::invalid_argument and leave the accumulator as it was.
  acc.add(Eigen::RowVector3d(0.1, 0.2, 0.3));
  const double before = acc.log_z();
  CHECK_THROWS_WITH(acc.add(Eigen::RowVector2d(0.0, std::nan(""))),
                    Catch::Contains("log-weight 1 of the batch is NaN"));
  CHECK_THROWS_AS(acc.add(Eigen::RowVector2d(kInf, 0.0)), std::invalid_argument);
  CHECK(acc.count() == 3);
  CHECK(acc.log_z() == before);
  // Float log-weights and column vectors are accepted: (1 + 3)/2 = 2, ESS = 16/10.
  ImportanceAccumulator fl;
  fl.add(Eigen::RowVector2f(0.f, std::log(3.f)));
  CHECK(fl.log_z() == Approx(std::log(2.0)).epsilon(1e-6));
  fl.add(Eigen::Vector2d(0.0, std::log(3.0)));
  CHECK(fl.ess() == Approx(2 * 1.6).epsilon(1e-6));
  // −inf is a zero weight: allowed; the reverse KL is then infinite.
  ImportanceAccumulator z;
  z.add(Eigen::RowVector2d(0.0, -kInf));
  CHECK(z.log_z() == Approx(std::log(0.5)));
  CHECK(z.reverse_kl() == kInf);
  ImportanceAccumulator zeros;
  zeros.add(Eigen::RowVector2d(-kInf, -kInf));
  CHECK(zeros.log_z() == -kInf);
  CHECK_THROWS_AS(zeros.ess(), std::domain_error);
  ImportanceAccumulator single;
  single.add(Eigen::Matrix<double, 1, 1>(0.5));
  CHECK_THROWS_AS(single.log_z_standard_error(), std::domain_error);
  // Equal weights: no tail to fit.
  ImportanceAccumulator equal;
  equal.add(Eigen::RowVectorXd::Zero(100));
  CHECK(equal.pareto_k() == -kInf);
  CHECK(equal.ess_per_sample() == Approx(1.0));
  // Shapes: nflow::ShapeError.
  ImportanceAccumulator two(2);
  CHECK_THROWS_AS(two.add(Eigen::RowVector3d::Zero()), ShapeError);
  CHECK_THROWS_AS(two.add(Eigen::RowVector3d::Zero(), Eigen::Matrix3d::Zero()), ShapeError);
  CHECK_THROWS_AS(two.add(Eigen::RowVector3d::Zero(), Eigen::Matrix2d::Zero()), ShapeError);
  CHECK_THROWS_AS(acc.add(Eigen::Matrix2d::Zero()), ShapeError);
  CHECK_THROWS_AS(acc.merge(two), ShapeError);
  Eigen::Matrix<double, 2, 3> f = Eigen::Matrix<double, 2, 3>::Zero();
  f(1, 2) = std::nan("");
  CHECK_THROWS_WITH(two.add(Eigen::RowVector3d::Zero(), f), Catch::Contains("observable column 2"));
  CHECK(two.count() == 0);
  CHECK_THROWS_AS(fit_generalized_pareto({1.0, 2.0, 3.0}), std::invalid_argument);
  // importance_sample: its arguments and the target's result.
  const auto q = normal(Eigen::Vector2d::Zero(), Eigen::Vector2d::Ones());
  std::mt19937_64 gen(1);
  CHECK_THROWS_AS(importance_sample(q, kTarget, -1, gen), std::invalid_argument);
  CHECK_THROWS_AS(importance_sample(q, kTarget, 10, gen, 0), std::invalid_argument);
  CHECK_THROWS_AS(
      importance_sample(
          q, [](const Points& x) { return Eigen::RowVectorXd::Zero(x.cols() + 1); }, 10, gen),
      ShapeError);
}

TEST_CASE("independence Metropolis with q = target accepts every proposal, draws are per chain",
          "[sampling][mcmc]") {
  // A flow proposal: x = affine⁻¹(z), z ~ N(0, I), through a Density (one batched inverse).
  ElementwiseAffine<double, 2> a;
  a.set_shift(Eigen::Vector2d(0.3, -1.0));
  a.set_log_scale(Eigen::Vector2d(0.2, -0.4));
  const Density density(StandardNormal<double, 2>{}, Flow<ElementwiseAffine<double, 2>>(a));
  const auto target = [&density](const Points& x) { return density.log_prob(x); };
  IndependenceMetropolis imh(density, target, 8, 42);
  for (int i = 0; i < 50; ++i) imh.step();
  CHECK(imh.flow_steps() == 50);
  CHECK(imh.acceptance_rate() == 1.0);
  CHECK((imh.log_target() - imh.log_proposal()).cwiseAbs().maxCoeff() < 1e-12);
  // The batched per-chain draw is, column by column, the Density's own draw from that stream.
  auto gens = chain_generators(9, 3);
  auto copies = gens;
  const auto batch = nflow::sampling::detail::draw_per_stream(density, gens);
  for (Index c = 0; c < 3; ++c) {
    const auto one = density.sample_and_log_prob(1, copies[std::size_t(c)]);
    CHECK((batch.samples.col(c) - one.samples).norm() < 1e-14);
    CHECK(batch.log_prob(c) == Approx(one.log_prob(0)).epsilon(1e-14));
  }
}

TEST_CASE("chain c depends only on the seed and c", "[sampling][mcmc]") {
  const auto q = normal(kMuQ, kSigmaQ);
  IndependenceMetropolis four(q, kTarget, 4, 7);
  IndependenceMetropolis eight(q, kTarget, 8, 7);
  IndependenceMetropolis other(q, kTarget, 4, 8);
  for (int i = 0; i < 30; ++i) {
    four.step();
    eight.step();
    other.step();
  }
  CHECK(four.state() == eight.state().leftCols(4));
  CHECK(four.acceptance_rates() == eight.acceptance_rates().head(4));
  CHECK(four.state() != other.state());
  // Split runs: the generators of chains 4..7 alone reproduce those chains' first draws.
  auto tail = chain_generators(7, 4, 4);
  auto all = chain_generators(7, 8);
  for (std::size_t c = 0; c < 4; ++c) CHECK(tail[c]() == all[c + 4]());
}

namespace {
// T × C series of observables of an IMH run (after `burn` steps), optionally with a local step.
struct Traces {
  Eigen::MatrixXd x0, sq0;
  double acceptance;
};
template <typename Sampler, typename Step>
Traces run(Sampler& s, Index steps, Index burn, Step&& step) {
  for (Index i = 0; i < burn; ++i) step(s);
  Traces t{Eigen::MatrixXd(steps, s.chains()), Eigen::MatrixXd(steps, s.chains()), 0.0};
  for (Index i = 0; i < steps; ++i) {
    step(s);
    t.x0.row(i) = s.state().row(0);
    t.sq0.row(i) = (s.state().row(0).array() - kTarget.mu(0)).square().matrix();
  }
  t.acceptance = s.acceptance_rate();
  return t;
}
}  // namespace

TEST_CASE("independence Metropolis and the mixed kernel recover a Gaussian's mean and variance",
          "[sampling][mcmc]") {
  const double var0 = kTarget.sigma(0) * kTarget.sigma(0);
  SECTION("flow steps only") {
    const auto q = normal(kMuQ, kSigmaQ);
    IndependenceMetropolis imh(q, kTarget, 32, 1);
    const Traces t = run(imh, 2000, 50, [](auto& s) { s.step(); });
    const ChainMean m = chain_mean(t.x0), v = chain_mean(t.sq0);
    CHECK(t.acceptance > 0.5);
    CHECK(t.acceptance < 0.99);
    CHECK(m.autocorrelation.tau > 1.1);  // the chains are correlated, and it is counted
    CHECK(std::abs(m.mean - kTarget.mu(0)) < 4 * m.standard_error);
    CHECK(std::abs(v.mean - var0) < 4 * v.standard_error);
    CHECK(m.standard_error < 0.02);
  }
  SECTION("flow steps alternating with a random-walk Metropolis step") {
    // A poor flow (too narrow) repaired by a local kernel that uses each chain's generator.
    const auto q = normal(kTarget.mu, 0.5 * kTarget.sigma);
    IndependenceMetropolis imh(q, kTarget, 32, 2);
    Index local_calls = 0;
    const auto local = [&](Points& x, const Eigen::RowVectorXd& lp,
                           std::vector<ChainGenerator>& gens) {
      ++local_calls;
      Points y = x;
      for (Index c = 0; c < x.cols(); ++c) {
        double u = 0, v = 0;
        standard_normal_pair(gens[std::size_t(c)], u, v);
        y.col(c) += 0.8 * kTarget.sigma.cwiseProduct(Eigen::Vector2d(u, v));
      }
      const Eigen::RowVectorXd lpy = kTarget(y);
      for (Index c = 0; c < x.cols(); ++c) {
        if (std::log(uniform_open01(gens[std::size_t(c)])) < lpy(c) - lp(c)) x.col(c) = y.col(c);
      }
    };
    const Traces t = run(imh, 2000, 50, [&](auto& s) { s.mixed_step(local, 2); });
    CHECK(local_calls == 2 * 2050);
    // After a local step the sampler holds log p̃ and log q of the new states.
    CHECK((imh.log_target() - kTarget(imh.state())).cwiseAbs().maxCoeff() < 1e-12);
    CHECK((imh.log_proposal() - q.log_prob(imh.state())).cwiseAbs().maxCoeff() < 1e-12);
    const ChainMean m = chain_mean(t.x0), v = chain_mean(t.sq0);
    CHECK(std::abs(m.mean - kTarget.mu(0)) < 4 * m.standard_error);
    CHECK(std::abs(v.mean - var0) < 4 * v.standard_error);
    CHECK(m.standard_error < 0.02);
  }
}

TEST_CASE("bad input to the sampler gives clear errors", "[sampling][mcmc][errors]") {
  const auto q = normal(Eigen::Vector2d::Zero(), Eigen::Vector2d::Ones());
  const auto nan_target = [](const Points& x) {
    Eigen::RowVectorXd lp = Eigen::RowVectorXd::Zero(x.cols());
    lp(x.cols() - 1) = std::nan("");
    return lp;
  };
  CHECK_THROWS_WITH(IndependenceMetropolis(q, nan_target, 3, 1),
                    Catch::Contains("log_target is NaN at chain 2"));
  const auto short_target = [](const Points& x) { return Eigen::RowVectorXd::Zero(x.cols() - 1); };
  CHECK_THROWS_AS(IndependenceMetropolis(q, short_target, 3, 1), ShapeError);
  CHECK_THROWS_AS(IndependenceMetropolis(q, kTarget, 0, 1), std::invalid_argument);
  IndependenceMetropolis imh(q, kTarget, 3, 1);
  CHECK_THROWS_AS(imh.acceptance_rate(), std::domain_error);
  CHECK_THROWS_AS(imh.set_state(Eigen::MatrixXd::Zero(2, 4)), ShapeError);
  CHECK_THROWS_AS(imh.set_state(Eigen::MatrixXd::Zero(3, 3)), ShapeError);
  const auto grow = [](Points& x, const Eigen::RowVectorXd&, std::vector<ChainGenerator>&) {
    x.conservativeResize(2, x.cols() + 1);
  };
  CHECK_THROWS_AS(imh.local_step(grow), ShapeError);
  // A chain at a zero of the target (log p̃ = −inf) moves at its first flow step, even to
  // another zero (half of the proposals land where the target below vanishes).
  const auto cut = [](const Points& x) {
    Eigen::RowVectorXd lp = kTarget(x);
    for (Index c = 0; c < x.cols(); ++c)
      if (x(0, c) > 50 || x(1, c) > 0) lp(c) = -kInf;
    return lp;
  };
  IndependenceMetropolis cut_imh(q, cut, 16, 1);
  cut_imh.set_state(Points::Constant(2, 16, 100.0));
  CHECK(cut_imh.log_target()(0) == -kInf);
  cut_imh.step();
  CHECK(cut_imh.acceptance_rate() == 1.0);
  CHECK((cut_imh.state().row(0).array() < 50).all());
  // Proposals at a zero are never accepted from a point where the target is positive.
  cut_imh.set_state(Points::Constant(2, 16, -0.5));
  for (int i = 0; i < 20; ++i) cut_imh.step();
  CHECK((cut_imh.state().row(1).array() <= 0).all());
}

TEST_CASE("the integrated autocorrelation time of AR(1) is (1 + rho)/(1 - rho)",
          "[sampling][autocorrelation]") {
  const double rho = 0.8;
  const double tau_exact = (1 + rho) / (1 - rho);  // 9
  const Index t_len = 50000, chains = 4;
  auto gens = chain_generators(3, chains);
  Eigen::MatrixXd s(t_len, chains);
  for (Index c = 0; c < chains; ++c) {
    double x = 0, a = 0, b = 0;
    standard_normal_pair(gens[std::size_t(c)], x, b);  // stationary start N(0, 1)
    for (Index t = 0; t < t_len; ++t) {
      s(t, c) = x;
      standard_normal_pair(gens[std::size_t(c)], a, b);
      x = rho * x + std::sqrt(1 - rho * rho) * a;
    }
  }
  const AutocorrelationTime iat = integrated_autocorrelation_time(s);
  // Sokal's estimate of the statistical error of τ: τ·√(2(2W + 1)/N).
  const double sd = tau_exact * std::sqrt(2.0 * (2.0 * double(iat.window) + 1) / double(s.size()));
  CHECK(std::abs(iat.tau - tau_exact) < 4 * sd);
  CHECK(iat.reliable);
  CHECK(double(iat.window) >= 5 * iat.tau);
  // The error bar of the mean: √(τ/(T·C)) for unit variance.
  const ChainMean m = chain_mean(s);
  const double se_exact = std::sqrt(tau_exact / double(s.size()));
  CHECK(m.standard_error == Approx(se_exact).epsilon(0.1));
  CHECK(std::abs(m.mean) < 4 * se_exact);
  // White noise: τ = 1.
  const Eigen::MatrixXd noise = standard_normal_matrix<double>(20000, 1, gens[0]);
  CHECK(integrated_autocorrelation_time(noise).tau == Approx(1.0).margin(0.1));
  // Bad input.
  CHECK_THROWS_AS(integrated_autocorrelation_time(Eigen::MatrixXd::Zero(1, 3)),
                  std::invalid_argument);
  CHECK_THROWS_AS(integrated_autocorrelation_time(Eigen::MatrixXd::Ones(10, 2)), std::domain_error);
  Eigen::MatrixXd with_nan = s.topRows(100);
  with_nan(5, 1) = std::nan("");
  CHECK_THROWS_AS(integrated_autocorrelation_time(with_nan), std::invalid_argument);
}
