// A Boltzmann generator (Noé et al. 2019) for the 2-D double well
//
//     E(x) = x₁⁴ − 6x₁² + x₁ + ½x₂²,   p(x) ∝ exp(−E(x)/kT),  kT = 1.
//
// The flow (Real NVP, 8 affine couplings) is first fitted by maximum likelihood to samples from
// the LEFT well only, then trained on a weighted sum of that likelihood and the reverse KL to
// exp(−E/kT), annealed from kT = 4 down to 1, which puts mass into the right well that the data
// never showed. The free-energy
// difference between the wells, ΔF = F_right − F_left = −kT log(Z_right / Z_left), is then
// estimated by importance reweighting of the flow's own samples (w = exp(−E(x)) / q(x)) and
// compared with the exact value from quadrature; the effective sample size says how good the
// proposal is. Writes boltzmann.png: exp(−E) | the flow's density | samples from the flow.
//
//   boltzmann [steps (default 2000)] [output.png]
#include <algorithm>
#include <cmath>
#include <cstdio>
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
/// standard normal, whose normaliser cancels in every ratio below).
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

  // Exact reference: ΔF = −log(Z_right / Z_left) from the 1-D marginal.
  const Marginal marginal;
  const double z_left = marginal.integral_below(0.0);
  const double z_right = marginal.cdf.back() - z_left;
  const double exact_delta_f = -std::log(z_right / z_left);

  // Training data: 10,000 exact samples from the left well.
  std::mt19937_64 gen(1);
  Points data(2, 10000);
  for (Eigen::Index j = 0; j < data.cols(); ++j) {
    data(0, j) = marginal.sample_left(uniform_open01(gen));
  }
  data.row(1) = standard_normal_matrix<double>(1, data.cols(), gen);

  auto density = flows::real_nvp<double, 2, 64>({.transforms = 8});
  // The reverse KL is mode-seeking: a flow that has only seen the left well never proposes the
  // right one, 11 kT above the barrier. So its target starts hot (kT = 4 flattens the barrier to
  // under 3 kT) and is cooled geometrically to kT = 1 over the first 60 % of the KL stage.
  double kT = 1.0;
  const auto target = train::make_target([&](const Points& x) { return log_target(x, kT); },
                                         [&](const Points& x) { return grad_log_target(x, kT); });

  // Importance reweighting with the flow as proposal: ΔF estimate, ESS, mass in the right well.
  auto report = [&](const char* stage) {
    std::mt19937_64 g(123);
    const auto s = density.sample_and_log_prob(100000, g);
    const Eigen::ArrayXd log_w = (log_target(s.samples, 1.0) - s.log_prob).transpose().array();
    const double m = log_w.maxCoeff();
    const Eigen::ArrayXd w = (log_w - m).exp();
    double w_left = 0, w_right = 0;
    long right = 0;
    for (Eigen::Index j = 0; j < s.samples.cols(); ++j) {
      (s.samples(0, j) > 0 ? w_right : w_left) += w(j);
      right += s.samples(0, j) > 0;
    }
    const double ess = w.sum() * w.sum() / (w.square().sum() * double(w.size()));
    const double delta_f = (w_right > 0 && w_left > 0) ? -std::log(w_right / w_left) : NAN;
    std::printf(
        "%-28s samples in the right well %5.1f%%  ESS %5.1f%%  dF = %+.3f kT  (exact %+.3f kT)\n",
        stage, 100.0 * double(right) / double(s.samples.cols()), 100.0 * ess, delta_f,
        exact_delta_f);
    return delta_f;
  };

  // Stage 1: maximum likelihood on the left well only.
  train::FitOptions ml;
  ml.batch_size = 256;
  ml.max_steps = steps / 2;
  ml.adam.learning_rate = 1e-3;
  ml.seed = 2;
  train::fit(density, {.samples = data}, ml);
  report("after likelihood only:");

  // Stage 2: likelihood + reverse KL (weights 0.1 and 1), cosine-decayed learning rate.
  const double w_ml = 0.1, w_kl = 1.0;
  const long kl_steps = steps - steps / 2;
  train::Adam<double> adam(density.parameter_count(), {.learning_rate = 5e-4, .clip_norm = 100.0});
  const auto schedule = train::Schedule::cosine(0.05);
  std::mt19937_64 batch_gen(3);
  Vector<double> grad(density.parameter_count()), grad_kl(density.parameter_count());
  Points batch(2, 256);
  for (long step = 0; step < kl_steps; ++step) {
    for (Eigen::Index j = 0; j < batch.cols(); ++j)
      batch.col(j) =
          data.col(std::min<Eigen::Index>(9999, Eigen::Index(uniform_open01(batch_gen) * 10000)));
    const double progress = std::min(1.0, double(step) / (0.6 * double(kl_steps)));
    kT = std::pow(4.0, 1.0 - progress);
    grad.setZero();
    grad_kl.setZero();
    const double nll = train::nll(density, batch, grad);
    const double kl = train::reverse_kl(density, target, 256, batch_gen, grad_kl);
    grad = w_ml * grad + w_kl * grad_kl;
    adam.step_model(density, grad, schedule.rate(5e-4, step, kl_steps));
    if ((step + 1) % 250 == 0 || step + 1 == kl_steps) {
      std::printf("step %5ld  kT %.2f  NLL(left well) %.4f  reverse KL (up to log Z) %.4f\n",
                  step + 1, kT, nll, kl);
      std::fflush(stdout);
    }
  }
  const double delta_f = report("after likelihood + KL:");

  nflow_examples::Panels panels(3, 320, -3.5, 3.5);
  panels.density(0, [](const Points& g) -> Eigen::RowVectorXd { return log_target(g, 1.0); });
  panels.density(1, [&](const Points& g) -> Eigen::RowVectorXd { return density.log_prob(g); });
  std::mt19937_64 rng(11);
  panels.scatter(2, density.sample(20000, rng));
  nflow_examples::write_png(out, panels.image);
  std::printf("wrote %s: exp(-E) | flow density | flow samples\n", out.c_str());
  return std::isfinite(delta_f) ? 0 : 1;
}
