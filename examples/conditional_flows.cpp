// Flows in one line each (presets, docs/presets.md): a Real NVP and a conditional Glow
// (ActNorm → LULinear → AffineCoupling, repeated) whose density follows a context variable.
//
// The data: two moons rotated by an angle c ∈ [0, π); the flow learns p(x | c). After training it
// reports the conditional test NLL and the mean of samples drawn at two contexts.
#include <cmath>
#include <cstdio>
#include <nflow/nflow.hpp>
#include <random>

using namespace nflow;

int main(int argc, char** argv) {
  const long steps = argc > 1 ? std::stol(argv[1]) : 1500;

  // ---- a Real NVP: four affine couplings (MLP 2 x 32) with reversals between them ----------
  auto real_nvp = flows::real_nvp<double, 2, 32>({.transforms = 4, .seed = 1});
  std::printf("Real NVP: %ld parameters\n", long(real_nvp.parameter_count()));

  // ---- a conditional Glow: (ActNorm → LULinear → AffineCoupling) × 3, MLP 2 x 64, context 1 --
  auto density = flows::glow<double, 2, 64>({.transforms = 3, .context = 1, .seed = 1});
  std::printf("conditional Glow: %ld parameters, context dimension %ld\n",
              long(density.parameter_count()), long(density.transform().context_dim()));

  // ---- data: rotated two moons, context = the angle ------------------------------------------
  auto make = [](Index n, std::uint64_t seed, Eigen::MatrixXd& x, Eigen::MatrixXd& c) {
    x = datasets::toy(datasets::Toy::TwoMoons, n, seed);
    c.resize(1, n);
    std::mt19937_64 gen(seed + 100);
    for (Index j = 0; j < n; ++j) {
      const double angle = Constants<double>::pi * uniform_open01(gen);
      c(0, j) = angle;
      const Eigen::Vector2d p = x.col(j);
      x.col(j) << std::cos(angle) * p(0) - std::sin(angle) * p(1),
          std::sin(angle) * p(0) + std::cos(angle) * p(1);
    }
  };
  Eigen::MatrixXd x, c, x_test, c_test;
  make(20000, 1, x, c);
  make(5000, 2, x_test, c_test);

  // ActNorm's data-dependent initialisation on a first batch, then maximum likelihood.
  initialize_act_norms(density.transform(), x.leftCols(1024), c.leftCols(1024));
  train::FitOptions options;
  options.max_steps = steps;
  options.adam.learning_rate = 1e-3;
  options.report_every_steps = steps >= 500 ? 500 : steps;
  options.callback = [](const train::Progress& p) {
    std::printf("step %5ld  train NLL %.4f  (%.1f s)\n", long(p.step), p.train_loss, p.seconds);
  };
  train::fit(density, {.samples = x, .context = c}, options);
  const double nll = -density.log_prob(x_test, c_test).mean();
  std::printf("conditional test NLL: %.4f nats per sample\n", nll);

  // Samples follow the context: their mean rotates with c like the data's, R(c)·m.
  const Eigen::Vector2d m = datasets::toy(datasets::Toy::TwoMoons, 100000, 9).rowwise().mean();
  std::mt19937_64 rng(5);
  for (double angle : {0.0, Constants<double>::pi / 2}) {
    const Eigen::Matrix<double, 1, 1> ctx(angle);
    const auto s = density.sample(4000, rng, ctx);
    std::printf("context c = %.3f: sample mean (%.3f, %.3f), data mean (%.3f, %.3f)\n", angle,
                s.row(0).mean(), s.row(1).mean(), std::cos(angle) * m(0) - std::sin(angle) * m(1),
                std::sin(angle) * m(0) + std::cos(angle) * m(1));
  }
  return std::isfinite(nll) ? 0 : 1;
}
