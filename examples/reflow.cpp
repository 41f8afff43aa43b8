// Rectified flow on 8 gaussians and two moons: a continuous flow trained by flow matching, then
// reflowed twice (nflow/train/reflow.hpp). Before and after each reflow it prints the
// straightness of the learned paths and the energy distance between fresh data and samples drawn
// with 1, 2, 4, 8 and 20 Euler steps (docs/continuous.md, "Reflow and few-step sampling", gives
// the protocol and the table this program printed). The requirement is checked at the
// end: after one reflow, the 2-step sampler is at least as good as the 8-step sampler before it.
//
//   reflow [fit steps (default 4000)] [reflow steps (default 3000)] [pairs (default 20000)]
//          [check (default 1; 0: print only)] [ot | output.png]
//
// With a file name as the fifth argument it draws six panels for 8 gaussians: samples with 1 and
// 2 Euler steps and the paths of 100 points, before reflow, then after one reflow (the picture in
// docs/images/reflow.png: `reflow 4000 3000 20000 1 docs/images/reflow.png`).
// With `ot` as the fifth argument it compares instead flow matching with independent pairs and
// with minibatch optimal-transport pairs (FlowMatchingCoupling::MinibatchOT), same settings. Each
// row also has the test NLL (3,000 fresh points; exact trace, RK4 at 20 steps).
//
// ctest runs `reflow 100 100 1000 0` (a smoke run with 1,000 evaluation points: too short to meet
// the requirement).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <nflow/nflow.hpp>
#include <random>
#include <string>
#include <vector>

#include "support/panels.hpp"

namespace {

using Matrix = Eigen::MatrixXd;
using Cnf = nflow::ContinuousFlow<double, 2, 64, nflow::nn::Tanh>;

/// Mean Euclidean distance between the columns of a and those of b; with `same` (a and b the same
/// set) the n(n − 1) pairs i ≠ j only.
double mean_distance(const Matrix& a, const Matrix& b, bool same) {
  double sum = 0;
  for (Eigen::Index i = 0; i < a.cols(); ++i) {
    for (Eigen::Index j = 0; j < b.cols(); ++j) {
      const double dx = a(0, i) - b(0, j);
      const double dy = a(1, i) - b(1, j);
      sum += std::sqrt(dx * dx + dy * dy);
    }
  }
  const double pairs = same ? double(a.cols()) * double(a.cols() - 1) : double(a.cols() * b.cols());
  return sum / pairs;
}

/// The squared energy distance (Székely & Rizzo 2013), unbiased (U-statistics within each set):
/// D² = 2 E‖X − Y‖ − E‖X − X′‖ − E‖Y − Y′‖, 0 iff the laws are equal.
double energy_distance(const Matrix& x, const Matrix& y, double yy) {
  return 2 * mean_distance(x, y, false) - mean_distance(x, x, true) - yy;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

struct Row {
  double straightness = 0, straightness_se = 0;
  double nll = 0;
  std::vector<double> energy;  // per step count
};

/// Draws three panels from k: samples with 1 and with 2 Euler steps, and the paths (RK4, 20
/// sub-steps) of 100 latent points, blue at the noise end (t = 1), yellow at the data end.
void draw(nflow_examples::Panels& panels, int k, Cnf flow, const Matrix& z) {
  using namespace nflow;
  flow.set_solver(OdeSolver::Euler, 1);
  panels.scatter(k, flow.inverse(z));
  flow.set_solver(OdeSolver::Euler, 2);
  panels.scatter(k + 1, flow.inverse(z));
  panels.fill(k + 2, nflow_examples::colormap(0.0));
  const Matrix no_context;
  auto rhs = [&](double t, const Matrix& y, Matrix& dy) {
    dy = flow.field().value(t, y, no_context);
  };
  const int steps = 20;
  std::vector<Matrix> path{z.leftCols(100)};
  for (int s = 0; s < steps; ++s) {
    Matrix y = path.back();
    ode::rk4_integrate(rhs, 1.0 - double(s) / steps, 1.0 - double(s + 1) / steps, y, 1);
    path.push_back(y);
  }
  for (Index j = 0; j < 100; ++j) {
    Eigen::Matrix<double, 2, Eigen::Dynamic> line(2, steps + 1);
    for (int s = 0; s <= steps; ++s) line.col(s) = path[std::size_t(s)].col(j);
    panels.polyline(k + 2, line,
                    [](double u) { return nflow_examples::colormap(0.25 + 0.75 * u); });
  }
}

/// Straightness (RK4, 20 steps), the energy distance for each number of Euler steps, and the test
/// NLL (exact trace, RK4 at 20 steps) of a flow; leaves its solver at RK4, 20 steps.
Row evaluate(Cnf& flow, const Matrix& z, const Matrix& test_data, double yy,
             const std::vector<nflow::Index>& euler_steps) {
  using namespace nflow;
  Row r;
  flow.set_solver(OdeSolver::RK4, 20);
  const auto s = train::straightness(flow, z.cols(), 7);
  r.straightness = s.value;
  r.straightness_se = s.standard_error;
  const Density density(StandardNormal<double, 2>{}, flow);
  r.nll = -density.log_prob(test_data).mean();
  for (Index k : euler_steps) {
    flow.set_solver(OdeSolver::Euler, k);
    r.energy.push_back(energy_distance(flow.inverse(z), test_data, yy));
  }
  flow.set_solver(OdeSolver::RK4, 20);
  return r;
}

void print_table(const char* name, double floor, const std::vector<const char*>& labels,
                 const std::vector<Row>& rows) {
  std::printf("\n%s (energy distance floor, fresh data against fresh data: %.5f)\n", name, floor);
  std::printf(
      "| model | straightness | test NLL | D² 1 step | 2 steps | 4 steps | 8 steps | 20 steps "
      "|\n");
  std::printf("|---|---|---|---|---|---|---|---|\n");
  for (std::size_t i = 0; i < rows.size(); ++i) {
    std::printf("| %s | %.4f ± %.4f | %.4f |", labels[i], rows[i].straightness,
                rows[i].straightness_se, rows[i].nll);
    for (double e : rows[i].energy) std::printf(" %.4f |", e);
    std::printf("\n");
  }
}

}  // namespace

int main(int argc, char** argv) {
  using namespace nflow;
  const Index fit_steps = argc > 1 ? Index(std::stol(argv[1])) : 4000;
  const Index reflow_steps = argc > 2 ? Index(std::stol(argv[2])) : 3000;
  const Index n_pairs = argc > 3 ? Index(std::stol(argv[3])) : 20000;
  const bool check = argc > 4 ? std::stol(argv[4]) != 0 : true;
  const bool ot = argc > 5 && std::string(argv[5]) == "ot";
  const std::string png = argc > 5 && !ot ? argv[5] : "";
  // Model samples and fresh data points per energy distance (and draws for the straightness and
  // test points for the NLL): 3,000, fewer in a short run with fewer pairs.
  const Index n_eval = std::min<Index>(3000, n_pairs);
  const std::vector<Index> euler_steps{1, 2, 4, 8, 20};
  const auto start = std::chrono::steady_clock::now();
  bool ok = true;

  for (auto toy : {datasets::Toy::EightGaussians, datasets::Toy::TwoMoons}) {
    const char* name = toy == datasets::Toy::EightGaussians ? "8 gaussians" : "two moons";
    const Matrix train_data = datasets::toy(toy, 20000, 1);
    const Matrix test_data = datasets::toy(toy, n_eval, 3);
    const double yy = mean_distance(test_data, test_data, true);
    // The noise floor: the energy distance between two fresh data sets of the same size.
    const double floor = energy_distance(Matrix(datasets::toy(toy, n_eval, 4)), test_data, yy);
    std::mt19937_64 gen(5);
    const Matrix z = standard_normal_matrix<double>(2, n_eval, gen);  // one z for every sampler

    Cnf flow(2, {.hidden_width = 64, .hidden_layers = 2, .seed = 1});
    train::FlowMatchingOptions fit{.steps = fit_steps,
                                   .adam = {.learning_rate = 5e-3},
                                   .schedule = train::Schedule::cosine(0.05)};
    train::fit_flow_matching(flow, {.samples = train_data}, fit);
    std::vector<Row> rows{evaluate(flow, z, test_data, yy, euler_steps)};

    if (ot) {  // the same fit with minibatch optimal-transport pairs
      Cnf ot_flow(2, {.hidden_width = 64, .hidden_layers = 2, .seed = 1});
      fit.coupling = train::FlowMatchingCoupling::MinibatchOT;
      train::fit_flow_matching(ot_flow, {.samples = train_data}, fit);
      rows.push_back(evaluate(ot_flow, z, test_data, yy, euler_steps));
      print_table(name, floor, {"flow matching", "minibatch OT flow matching"}, rows);
    } else {
      const train::FlowMatchingOptions refit{.steps = reflow_steps,
                                             .seed = 2,
                                             .adam = {.learning_rate = 2e-3},
                                             .schedule = train::Schedule::cosine(0.05)};
      nflow_examples::Panels panels(6, 200);
      const bool picture = !png.empty() && toy == datasets::Toy::EightGaussians;
      if (picture) draw(panels, 0, flow, z);
      for (int round = 0; round < 2; ++round) {
        const auto pairs = train::reflow_pairs(flow, n_pairs, 100 + std::uint64_t(round));
        train::fit_flow_matching(flow, pairs, refit);
        rows.push_back(evaluate(flow, z, test_data, yy, euler_steps));
        if (picture && round == 0) {
          draw(panels, 3, flow, z);
          nflow_examples::write_png(png, panels.image);
          std::printf("wrote %s\n", png.c_str());
        }
      }
      print_table(name, floor, {"flow matching", "after 1 reflow", "after 2 reflows"}, rows);
      const double two_after = rows[1].energy[1];
      const double eight_before = rows[0].energy[3];
      const bool met = two_after <= eight_before;
      std::printf("2 Euler steps after one reflow: %.5f; 8 Euler steps before: %.5f: %s\n",
                  two_after, eight_before, met ? "as good or better" : "WORSE");
      ok = ok && met;
    }
    std::printf("(%.1f s)\n", seconds_since(start));
    std::fflush(stdout);
  }
  return (ok || !check) ? 0 : 1;
}
