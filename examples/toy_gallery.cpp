// Fits the Real NVP of the demo (8 affine couplings, MLP 2 × 64) and, on request, the coupling
// neural spline flow of the same size (8 rational-quadratic spline couplings, K = 8, MLP 2 × 64)
// to each of nflow's eight toy densities, with the same protocol (steps, batch, schedule, seeds,
// data), and draws one row per data set: learned density | samples from the flow | data.
// Prints each test log-likelihood (20,000 fresh samples); with `both`, one table row per toy:
// Real NVP and NSF test NLL, their difference and the training times. The pictures in
// docs/images/ were made by
//
//   toy_gallery 3000 docs/images/toy_gallery.png both
//
// which writes docs/images/toy_gallery.png (Real NVP) and docs/images/toy_gallery_spline.png.
//
//   toy_gallery [steps (default 3000)] [output.png] [real_nvp (default) | spline | both]
#include <chrono>
#include <cmath>
#include <cstdio>
#include <nflow/nflow.hpp>
#include <string>
#include <vector>

#include "support/panels.hpp"
#include "support/protocol.hpp"

namespace {

using namespace nflow;

struct Fitted {
  Eigen::RowVectorXd test_lls;  // per test sample
  double test_ll = 0;           // their mean
  long steps = 0;
  double seconds = 0;
};

/// Fits a fresh `make()` to `toy`, prints its test log-likelihood and draws row `row` of
/// `gallery`.
template <typename Make>
Fitted fit_toy(const char* model, Make make, datasets::Toy toy, long steps,
               nflow_examples::Image& gallery, int row) {
  const int panel = 200, gap = 4;
  const auto train_data = datasets::toy(toy, 20000, 1);
  const auto valid_data = datasets::toy(toy, 2000, 2);
  const auto test_data = datasets::toy(toy, 20000, 3);
  auto density = make();
  const auto start = std::chrono::steady_clock::now();
  const auto result = train::fit(density, {.samples = train_data},
                                 nflow_examples::fit_options(steps), {.samples = valid_data});
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const Eigen::RowVectorXd test_lls = density.log_prob(test_data);
  const double test_ll = test_lls.mean();
  std::printf("%-9s %-14s %5ld steps  test log-likelihood %.4f nats  (%.0f s)\n", model,
              std::string(datasets::name(toy)).c_str(), long(result.steps), test_ll, seconds);
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
      gallery.set(x, row * (panel + gap) + y, panels.image.get(x, y));
  return {test_lls, test_ll, long(result.steps), seconds};
}

/// `out` with "_spline" before its extension: the NSF's picture beside the Real NVP's.
std::string spline_name(const std::string& out) {
  const auto dot = out.rfind('.');
  return dot == std::string::npos ? out + "_spline"
                                  : out.substr(0, dot) + "_spline" + out.substr(dot);
}

}  // namespace

int main(int argc, char** argv) {
  const long steps = argc > 1 ? std::stol(argv[1]) : 3000;
  const std::string out = argc > 2 ? argv[2] : "toy_gallery.png";
  const std::string model = argc > 3 ? argv[3] : "real_nvp";
  if (model != "real_nvp" && model != "spline" && model != "both") {
    std::fprintf(stderr, "toy_gallery: model must be real_nvp, spline or both, got '%s'\n",
                 model.c_str());
    return 2;
  }
  const int panel = 200, gap = 4;
  const int rows = int(datasets::all_toys.size());
  auto image = [&] {
    return nflow_examples::Image(3 * panel + 2 * gap, rows * (panel + gap) - gap);
  };
  const bool fit_real_nvp = model != "spline", fit_spline = model != "real_nvp";
  auto real_nvp_gallery = image(), spline_gallery = image();
  std::vector<Fitted> real_nvp(datasets::all_toys.size()), spline(datasets::all_toys.size());
  bool all_finite = true;
  for (int row = 0; row < rows; ++row) {  // both models on a toy before the next toy
    const auto toy = datasets::all_toys[std::size_t(row)];
    if (fit_real_nvp) {
      real_nvp[std::size_t(row)] = fit_toy(
          "real_nvp", [] { return flows::real_nvp<double, 2, 64>({.transforms = 8}); }, toy, steps,
          real_nvp_gallery, row);
      all_finite = all_finite && std::isfinite(real_nvp[std::size_t(row)].test_ll);
    }
    if (fit_spline) {
      spline[std::size_t(row)] = fit_toy(
          "spline", [] { return flows::coupling_nsf<double, 2, 64>({.transforms = 8}); }, toy,
          steps, spline_gallery, row);
      all_finite = all_finite && std::isfinite(spline[std::size_t(row)].test_ll);
    }
  }
  if (fit_real_nvp) {
    nflow_examples::write_png(out, real_nvp_gallery);
    std::printf("wrote %s (Real NVP)\n", out.c_str());
  }
  if (fit_spline) {
    const std::string name = fit_real_nvp ? spline_name(out) : out;
    nflow_examples::write_png(name, spline_gallery);
    std::printf("wrote %s (neural spline flow)\n", name.c_str());
  }
  std::printf("one row per data set: learned density | samples from the flow | data\n");
  if (model == "both") {
    // The difference is paired (the same test samples): its standard error is that of the
    // per-sample differences of the log-likelihoods.
    std::printf(
        "\n| toy | Real NVP test NLL | NSF test NLL | NSF − Real NVP (± s.e.) | time Real NVP / "
        "NSF "
        "|\n");
    std::printf("|---|---|---|---|---|\n");
    for (int row = 0; row < rows; ++row) {
      const auto& a = real_nvp[std::size_t(row)];
      const auto& b = spline[std::size_t(row)];
      const Eigen::ArrayXd d = (a.test_lls - b.test_lls).transpose().array();
      const double se =
          std::sqrt((d - d.mean()).square().sum() / double(d.size() - 1) / double(d.size()));
      std::printf("| %s | %.3f | %.3f | %+.3f ± %.3f | %.0f s / %.0f s |\n",
                  std::string(datasets::name(datasets::all_toys[std::size_t(row)])).c_str(),
                  -a.test_ll, -b.test_ll, a.test_ll - b.test_ll, se, a.seconds, b.seconds);
    }
  }
  return all_finite ? 0 : 1;
}
