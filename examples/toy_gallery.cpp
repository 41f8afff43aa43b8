// Fits the Real NVP of the demo (8 affine couplings, MLP 2 × 64) to each of nflow's eight toy
// densities and draws one row per data set: learned density | samples from the flow | data.
// Prints each test log-likelihood (20,000 fresh samples). The picture in docs/images/ was made by
//
//   toy_gallery 3000 docs/images/toy_gallery.png
//
//   toy_gallery [steps (default 3000)] [output.png]
#include <cmath>
#include <cstdio>
#include <nflow/nflow.hpp>
#include <string>

#include "support/panels.hpp"
#include "support/real_nvp.hpp"

int main(int argc, char** argv) {
  using namespace nflow;
  const long steps = argc > 1 ? std::stol(argv[1]) : 3000;
  const std::string out = argc > 2 ? argv[2] : "toy_gallery.png";
  const int panel = 200, gap = 4;
  const auto& toys = datasets::all_toys;
  nflow_examples::Image gallery(3 * panel + 2 * gap, int(toys.size()) * (panel + gap) - gap);
  bool all_finite = true;
  for (std::size_t row = 0; row < toys.size(); ++row) {
    const auto toy = toys[row];
    const auto train_data = datasets::toy(toy, 20000, 1);
    const auto valid_data = datasets::toy(toy, 2000, 2);
    const auto test_data = datasets::toy(toy, 20000, 3);
    auto density = nflow_examples::make_real_nvp_2d();
    const auto result =
        train::fit(density, train_data, nflow_examples::fit_options(steps), valid_data);
    const double test_ll = density.log_prob(test_data).mean();
    all_finite = all_finite && std::isfinite(test_ll);
    std::printf("%-14s %5ld steps  test log-likelihood %.4f nats\n",
                std::string(datasets::name(toy)).c_str(), long(result.steps), test_ll);
    std::fflush(stdout);

    nflow_examples::Panels panels(3, panel);
    panels.density(0, [&](const Eigen::Matrix<double, 2, Eigen::Dynamic>& g) -> Eigen::RowVectorXd {
      return density.log_prob(g);
    });
    std::mt19937_64 rng(11);
    panels.scatter(1, density.sample(20000, rng));
    panels.scatter(2, test_data);
    for (int y = 0; y < panels.image.height; ++y)
      for (int x = 0; x < panels.image.width; ++x)
        gallery.set(x, int(row) * (panel + gap) + y, panels.image.get(x, y));
  }
  nflow_examples::write_png(out, gallery);
  std::printf("wrote %s: one row per data set: learned density | samples from the flow | data\n",
              out.c_str());
  return all_finite ? 0 : 1;
}
