// A Boltzmann generator (Noé, Olsson, Köhler, Wu, Science 2019) for the 2-D double well
//
//     E(x) = x₁⁴ − 6x₁² + x₁ + ½x₂²,   p(x) = exp(−E(x)/kT) / Z,  kT = 1.
//
// The flow (Real NVP, 8 affine couplings, MLP 2 × 64) is first fitted by maximum likelihood to a
// few samples (1,000) from the LEFT well only (a quarter of the steps), then trained on a weighted
// sum of that likelihood (0.1) and the reverse KL (1) to exp(−E/kT), annealed from kT = 10 down to
// kT = 1.5 (at 1 the reverse KL drops the right well again; see main()), which puts mass into
// the right well that the data never showed. The free-energy difference between the wells,
//
//     ΔF = F_right − F_left = −kT log(Z_right / Z_left),   Z_well = ∫_well exp(−E(x)/kT) dx,
//
// is then estimated by importance reweighting of the flow's own samples (log w = −E(x)/kT −
// log q(x)) with nflow::sampling::ImportanceAccumulator: log Ẑ of each well with its standard
// error, Kish's effective sample size (overall and per well), PSIS's k̂, and ΔF = −logit(P̂_right)
// with the delta-method error of the self-normalised P̂_right = Σ_right w / Σ w. The exact values
// come from quadrature in the same program (x₂ integrates to √(2π); the x₁ integral by the
// trapezoid rule on 200,001 points of [−4, 4]).
//
// The program exits with 1 (after the picture) when a check fails: ΔF or a well's log Ẑ more than
// 4 standard errors + SE² from quadrature (SE²: the second-order bias of a logarithm of an
// average, E[log Ẑ] ≈ log Z − SE²/2, so an allowance that vanishes as N grows), an effective
// sample size below 10 % of N overall or below 100 in either well, or k̂ ≥ 0.7 (the error bars are
// then not to be trusted). Writes boltzmann.png: exp(−E) | the flow's density | samples from the
// flow | the free-energy profile F(x₁) = −log p(x₁) (black: quadrature; red: the flow's samples;
// blue: reweighted). The picture in docs/images/ was made by
//
//   boltzmann 2000 docs/images/boltzmann.png
//
//   boltzmann [steps (2000)] [output.png] [training samples (1000)] [reweighting samples (200000)]
//             [final training temperature (1.5)]
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <nflow/nflow.hpp>
#include <random>
#include <string>
#include <vector>

#include "support/panels.hpp"

namespace {

using Points = Eigen::Matrix<double, 2, Eigen::Dynamic>;

double energy(double x1, double x2) { return x1 * x1 * x1 * x1 - 6 * x1 * x1 + x1 + 0.5 * x2 * x2; }

/// log p̃ = −E(x)/kT and its gradient.
Eigen::RowVectorXd log_target(const Points& x, double kT = 1.0) {
  Eigen::RowVectorXd out(x.cols());
  for (Eigen::Index j = 0; j < x.cols(); ++j) out(j) = -energy(x(0, j), x(1, j)) / kT;
  return out;
}
Points grad_log_target(const Points& x, double kT = 1.0) {
  Points g(2, x.cols());
  for (Eigen::Index j = 0; j < x.cols(); ++j) {
    const double a = x(0, j);
    g(0, j) = -(4 * a * a * a - 12 * a + 1) / kT;
    g(1, j) = -x(1, j) / kT;
  }
  return g;
}

/// The x₁ marginal ∝ exp(−(x₁⁴ − 6x₁² + x₁)) on a fine grid over [−4, 4] (x₂ is an independent
/// standard normal: its integral √(2π) multiplies each well's Z). The trapezoid rule's error is
/// ~h² f'' ≈ 10⁻⁸ relative, and the mass beyond ±4 is below e⁻¹⁵⁰.
struct Marginal {
  static constexpr int n = 200001;
  static constexpr double lo = -4, hi = 4, h = (hi - lo) / (n - 1);
  std::vector<double> cdf;  // cumulative trapezoid integral from lo
  Marginal() : cdf(n, 0.0) {
    auto f = [](double a) { return std::exp(-(a * a * a * a - 6 * a * a + a)); };
    for (int i = 1; i < n; ++i)
      cdf[i] = cdf[i - 1] + 0.5 * h * (f(lo + (i - 1) * h) + f(lo + i * h));
  }
  double integral_below(double a) const { return cdf[std::size_t((a - lo) / h + 0.5)]; }
  /// x₁ drawn from the marginal restricted to x₁ < 0 (inverse CDF, linear within a grid cell).
  double sample_left(double u) const {
    const double target = u * integral_below(0.0);
    std::size_t i = std::size_t(std::lower_bound(cdf.begin(), cdf.end(), target) - cdf.begin());
    if (i == 0) return lo;
    const double t = (target - cdf[i - 1]) / (cdf[i] - cdf[i - 1]);
    return lo + (double(i - 1) + t) * h;
  }
};

}  // namespace

int main(int argc, char** argv) {
  using namespace nflow;
  const long steps = argc > 1 ? std::stol(argv[1]) : 2000;
  const std::string out = argc > 2 ? argv[2] : "boltzmann.png";
  const Index n_data = argc > 3 ? std::stol(argv[3]) : 1000;
  const Index n_reweight = argc > 4 ? std::stol(argv[4]) : 200000;
  // The reverse KL's final temperature: a proposal for kT = 1 trained at kT = 1 drops the right well
  // (see below), so it is trained against exp(−E/1.5) and reweighted to kT = 1.
  const double kT_final = argc > 5 ? std::stod(argv[5]) : 1.5;
  if (steps < 4 || n_data < 1 || n_reweight < 100 || !(kT_final > 0)) {
    std::fprintf(stderr,
                 "boltzmann: need steps >= 4, training samples >= 1, reweighting "
                 "samples >= 100 and a positive temperature\n");
    return 2;
  }

  // Exact reference by quadrature: Z_well = √(2π) ∫_well exp(−(x₁⁴ − 6x₁² + x₁)) dx₁.
  const Marginal marginal;
  const double log_sqrt_2pi = 0.5 * std::log(2 * Constants<double>::pi);
  const double z_left = marginal.integral_below(0.0);
  const double z_right = marginal.cdf.back() - z_left;
  const double exact_log_z_left = std::log(z_left) + log_sqrt_2pi;
  const double exact_log_z_right = std::log(z_right) + log_sqrt_2pi;
  const double exact_delta_f = -(exact_log_z_right - exact_log_z_left);
  std::printf("quadrature: log Z_left %.5f  log Z_right %.5f  dF = %+.5f kT  P(right) = %.5f\n",
              exact_log_z_left, exact_log_z_right, exact_delta_f, z_right / (z_left + z_right));

  // Training data: a few exact samples from the left well.
  std::mt19937_64 gen(1);
  Points data(2, n_data);
  for (Index j = 0; j < data.cols(); ++j) data(0, j) = marginal.sample_left(uniform_open01(gen));
  data.row(1) = standard_normal_matrix<double>(1, data.cols(), gen);

  auto density = flows::real_nvp<double, 2, 64>({.transforms = 8});
  // The reverse KL is mode-seeking: a flow that has only seen the left well never proposes the
  // right one, 11 kT above the barrier, and one trained down to kT = 1 drops it again (losing a
  // mode of mass 3.3 % costs only −log(1 − 0.033) = 0.034 nats of KL, less than the bridge of
  // mass across the barrier that keeping it needs; measured: 0.00 % of the samples in the right
  // well when the KL stage starts at kT = 4 and ends at 1, 0.2 % from kT = 10 without the
  // likelihood term). So its target starts hot (kT = 10: the barrier is about 1 kT) and is cooled
  // geometrically to kT_final = 1.5 over the first 60 % of the KL stage; the reweighting then
  // corrects from 1.5 to 1.
  const double kT_start = 10.0;
  double kT = 1.0;
  const auto target = train::make_target([&](const Points& x) { return log_target(x, kT); },
                                         [&](const Points& x) { return grad_log_target(x, kT); });

  // Importance reweighting with the flow as proposal, in batches: log w = −E(x) − log q(x) into
  // one accumulator for the whole space (observable 1{x₁ > 0}) and one per well (the weights of
  // the other well set to 0, log w = −∞).
  struct Reweighting {
    sampling::ImportanceAccumulator all{1}, left, right;
    Index in_right = 0;
  };
  auto reweight = [&](Index n, std::uint64_t seed) {
    Reweighting r;
    std::mt19937_64 g(seed);
    for (Index done = 0; done < n;) {
      const Index b = std::min<Index>(8192, n - done);
      const auto s = density.sample_and_log_prob(b, g);
      const Eigen::RowVectorXd log_w = log_target(s.samples) - s.log_prob;
      const Eigen::RowVectorXd right = (s.samples.row(0).array() > 0).cast<double>();
      Eigen::RowVectorXd log_w_left = log_w, log_w_right = log_w;
      for (Index j = 0; j < b; ++j)
        (right(j) > 0 ? log_w_left : log_w_right)(j) = -std::numeric_limits<double>::infinity();
      r.all.add(log_w, right);
      r.left.add(log_w_left);
      r.right.add(log_w_right);
      r.in_right += Index(right.sum());
      done += b;
    }
    return r;
  };
  auto print_well = [](const char* name, const sampling::ImportanceAccumulator& a, Index in_well,
                       double exact) {
    if (in_well < 2) {
      std::printf("  %-5s well: %ld flow samples, no estimate\n", name, long(in_well));
      return;
    }
    const double se = a.log_z_standard_error();
    std::printf(
        "  %-5s well: %7ld flow samples  ESS %9.1f  log Z = %.4f +- %.4f  (quadrature "
        "%.4f, %+.1f s.e.)\n",
        name, long(in_well), a.ess(), a.log_z(), se, exact, (a.log_z() - exact) / se);
  };
  auto report = [&](const char* stage) {
    const Reweighting r = reweight(n_reweight, 123);
    const Index n = r.all.count(), in_left = n - r.in_right;
    std::printf("%s %ld flow samples, %.2f %% in the right well; ESS/N %.3f, k-hat %.2f\n", stage,
                long(n), 100.0 * double(r.in_right) / double(n), r.all.ess_per_sample(),
                r.all.pareto_k());
    print_well("left", r.left, in_left, exact_log_z_left);
    print_well("right", r.right, r.in_right, exact_log_z_right);
    return r;
  };

  // Stage 1 (a quarter of the steps): maximum likelihood on the left well only.
  train::FitOptions ml;
  ml.batch_size = 256;
  ml.max_steps = steps / 4;
  ml.adam.learning_rate = 1e-3;
  ml.seed = 2;
  if (ml.max_steps > 0) {
    train::fit(density, {.samples = data}, ml);
    report("after likelihood only:");
  }

  // Stage 2: likelihood + reverse KL (weights 0.1 and 1), cosine-decayed learning rate.
  const double w_ml = 0.1, w_kl = 1.0;
  const long kl_steps = steps - ml.max_steps;
  train::Adam<double> adam(density.parameter_count(), {.learning_rate = 5e-4, .clip_norm = 100.0});
  const auto schedule = train::Schedule::cosine(0.05);
  std::mt19937_64 batch_gen(3);
  Vector<double> grad(density.parameter_count()), grad_kl(density.parameter_count());
  Points batch(2, 256);
  // Reused by every step (their buffers are allocated once; docs/training.md). The workspace also
  // keeps the step's samples and their log-weights against the current target exp(−E/kT): their
  // ESS ("batch ESS/N") is printed below without sampling again.
  train::NllTape<decltype(density)> tape;
  train::ReverseKlWorkspace<decltype(density)> workspace;
  for (long step = 0; step < kl_steps; ++step) {
    for (Index j = 0; j < batch.cols(); ++j)
      batch.col(j) =
          data.col(std::min<Index>(n_data - 1, Index(uniform_open01(batch_gen) * double(n_data))));
    const double progress = std::min(1.0, double(step) / (0.6 * double(kl_steps)));
    kT = kT_start * std::pow(kT_final / kT_start, progress);
    grad.setZero();
    grad_kl.setZero();
    const double nll = train::nll(density, batch, grad, NoContext{}, tape);
    const double kl = train::reverse_kl(density, target, 256, batch_gen, grad_kl, workspace);
    grad = w_ml * grad + w_kl * grad_kl;
    adam.step_model(density, grad, schedule.rate(5e-4, step, kl_steps));
    if ((step + 1) % 250 == 0 || step + 1 == kl_steps) {
      std::mt19937_64 g(99);
      const Points probe = density.sample(4000, g);
      std::printf(
          "step %5ld  kT %.2f  NLL(left well) %.4f  reverse KL (up to log Z) %.4f  "
          "batch ESS/N %.3f  right %.2f %%\n",
          step + 1, kT, nll, kl, workspace.ess() / double(workspace.size()),
          100.0 * (probe.row(0).array() > 0).cast<double>().mean());
      std::fflush(stdout);
    }
  }
  const Reweighting r = report("after likelihood + KL:");

  // ---- the checks ------------------------------------------------------------------------------
  bool ok = true;
  auto check = [&ok](bool pass, const std::string& what) {
    std::printf("  [%s] %s\n", pass ? "ok" : "FAILED", what.c_str());
    ok = ok && pass;
  };
  auto within = [](double estimate, double se, double exact) {
    return std::isfinite(estimate) && std::isfinite(se) &&
           std::abs(estimate - exact) <= 4 * se + se * se;
  };
  const Index n = r.all.count();
  const bool both_wells = r.in_right >= 2 && n - r.in_right >= 2;
  double delta_f = NAN, delta_f_se = NAN;
  if (both_wells) {
    // ΔF = −log(P/(1 − P)) with P the self-normalised weight of the right well; d logit P / dP =
    // 1/(P(1 − P)) carries its standard error over (the same as from the two wells' sums, with
    // their correlation).
    const double p_right = r.all.mean()(0), p_se = r.all.mean_standard_error()(0);
    delta_f = -std::log(p_right / (1 - p_right));
    delta_f_se = p_se / (p_right * (1 - p_right));
  }
  std::printf(
      "dF = F_right - F_left = %+.4f +- %.4f kT by reweighting, %+.4f kT by quadrature "
      "(%+.1f s.e.)\n",
      delta_f, delta_f_se, exact_delta_f, (delta_f - exact_delta_f) / delta_f_se);
  check(both_wells, "the flow's samples reach both wells");
  if (both_wells) {
    check(within(delta_f, delta_f_se, exact_delta_f), "dF within 4 s.e. + s.e.^2 of quadrature");
    check(within(r.left.log_z(), r.left.log_z_standard_error(), exact_log_z_left),
          "log Z_left within 4 s.e. + s.e.^2 of quadrature");
    check(within(r.right.log_z(), r.right.log_z_standard_error(), exact_log_z_right),
          "log Z_right within 4 s.e. + s.e.^2 of quadrature");
    check(r.all.ess_per_sample() >= 0.1, "ESS/N >= 0.1");
    check(r.left.ess() >= 100 && r.right.ess() >= 100, "ESS >= 100 in each well");
    check(r.all.pareto_k() < 0.7, "k-hat < 0.7");
  }

  // ---- the picture -------------------------------------------------------------------------------
  nflow_examples::Panels panels(4, 320, -3.5, 3.5);
  panels.density(0, [](const Points& g) -> Eigen::RowVectorXd { return log_target(g, 1.0); });
  panels.density(1, [&](const Points& g) -> Eigen::RowVectorXd { return density.log_prob(g); });
  std::mt19937_64 rng(11);
  const auto s = density.sample_and_log_prob(n_reweight, rng);
  panels.scatter(2, s.samples.leftCols(std::min<Index>(20000, n_reweight)));
  // The free-energy profile F(x₁) = −log p(x₁) on [−3.5, 3.5], shifted to 0 at its minimum and
  // drawn at half scale (0 at the panel's bottom edge, 14 kT at the top): quadrature, and the
  // histograms (70 bins) of the flow's samples, raw and reweighted.
  const int bins = 70;
  const double bin = 7.0 / bins;
  Eigen::ArrayXd raw = Eigen::ArrayXd::Zero(bins), weighted = Eigen::ArrayXd::Zero(bins);
  const Eigen::ArrayXd log_w = (log_target(s.samples) - s.log_prob).transpose().array();
  const Eigen::ArrayXd w = (log_w - log_w.maxCoeff()).exp();
  for (Index j = 0; j < s.samples.cols(); ++j) {
    const int k = int(std::floor((s.samples(0, j) + 3.5) / bin));
    if (k < 0 || k >= bins) continue;
    raw(k) += 1;
    weighted(k) += w(j);
  }
  auto profile = [&](const Eigen::ArrayXd& density_x1) {
    Points path(2, bins);
    const double top = density_x1.maxCoeff();
    for (int k = 0; k < bins; ++k) {
      path(0, k) = -3.5 + (k + 0.5) * bin;
      path(1, k) = density_x1(k) > 0 ? -3.5 + 0.5 * std::log(top / density_x1(k))
                                     : std::numeric_limits<double>::infinity();
    }
    return path;
  };
  Eigen::ArrayXd exact(bins);
  for (int k = 0; k < bins; ++k) {
    const double a = -3.5 + (k + 0.5) * bin;
    exact(k) = std::exp(-(a * a * a * a - 6 * a * a + a));
  }
  panels.fill(3, {255, 255, 255});
  using Colour = std::array<std::uint8_t, 3>;
  panels.polyline(3, profile(raw), [](double) { return Colour{220, 50, 32}; });
  panels.polyline(3, profile(weighted), [](double) { return Colour{0, 90, 181}; });
  panels.polyline(3, profile(exact), [](double) { return Colour{0, 0, 0}; });
  nflow_examples::write_png(out, panels.image);
  std::printf(
      "wrote %s: exp(-E) | flow density | flow samples | F(x1): quadrature (black), flow "
      "samples (red), reweighted (blue)\n",
      out.c_str());
  if (!ok) std::printf("a check FAILED\n");
  return ok ? 0 : 1;
}
