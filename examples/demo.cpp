// nflow's demo: fit a Real NVP density to a built-in 2-D data set (two moons) in C++, report its
// log-likelihood on fresh test data, and draw the learned density beside samples from the flow
// and the data (nflow_demo.png).
//
//   ./scripts/demo [data set] [output.png] [steps]     data sets: two_moons (default), 8gaussians,
//                                              checkerboard, pinwheel, rings, 2spirals, circles, swissroll
#include <cstdio>
#include <nflow/nflow.hpp>
#include <string>

#include "support/panels.hpp"
#include "support/protocol.hpp"

int main(int argc, char** argv) {
  using namespace nflow;
  const std::string which = argc > 1 ? argv[1] : "two_moons";
  const std::string out = argc > 2 ? argv[2] : "nflow_demo.png";
  const long steps = argc > 3 ? std::stol(argv[3]) : 3000;
  const auto toy = datasets::toy_from_name(which);
  const auto train_data = datasets::toy(toy, 20000, 1);
  const auto valid_data = datasets::toy(toy, 2000, 2);
  const auto test_data = datasets::toy(toy, 20000, 3);

  // Real NVP: 8 affine couplings (MLP 2 x 64, ReLU), the features swapped between them.
  auto density = flows::real_nvp<double, 2, 64>({.transforms = 8});

  // Adam at 1e-3 decayed by a cosine to 5 %, batches of 256 (support/protocol.hpp).
  train::FitOptions options = nflow_examples::fit_options(steps);
  options.report_every_steps = steps >= 500 ? 500 : steps;
  options.callback = [](const train::Progress& p) {
    std::printf("step %5ld  train NLL %.4f  validation NLL %.4f  (%.1f s)\n", long(p.step),
                p.train_loss, p.validation_loss, p.seconds);
    std::fflush(stdout);
  };
  std::printf("nflow demo: Real NVP (8 affine couplings, MLP 2x64) on %s, %ld parameters\n",
              which.c_str(), long(density.parameter_count()));
  const auto result =
      train::fit(density, {.samples = train_data}, options, {.samples = valid_data});

  const double test_ll = density.log_prob(test_data).mean();
  std::printf(
      "trained %ld steps; test log-likelihood: %.4f nats per sample (20000 fresh samples)\n",
      long(result.steps), test_ll);

  nflow_examples::Panels panels(3);
  panels.density(0, [&](const Eigen::Matrix<double, 2, Eigen::Dynamic>& g) -> Eigen::RowVectorXd {
    return density.log_prob(g);
  });
  std::mt19937_64 rng(11);
  panels.scatter(1, density.sample(20000, rng));
  panels.scatter(2, test_data);
  nflow_examples::write_png(out, panels.image);
  std::printf("wrote %s: learned density | samples from the flow | data\n", out.c_str());
  return std::isfinite(test_ll) ? 0 : 1;
}
