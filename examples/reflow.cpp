// Rectified flow on 8 gaussians and two moons: a continuous flow trained by flow matching, then
// reflowed twice (nflow/train/reflow.hpp). Before and after each reflow it prints the
// straightness of the learned paths and the energy distance between fresh data and samples drawn
// with 1, 2, 4, 8 and 20 Euler steps (docs/continuous.md, "Reflow and few-step sampling", gives
// the protocol and the table this program printed). The requirement is checked at the
// end: after one reflow, the 2-step sampler is at least as good as the 8-step sampler before it.
//
//   reflow [fit steps (default 4000)] [reflow steps (default 3000)] [pairs (default 20000)]
//          [check (default 1; 0: print only)]
//
// ctest runs `reflow 100 100 1000 0` (a smoke run: too short to meet the requirement).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <nflow/nflow.hpp>
#include <random>
#include <string>
#include <vector>

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
  std::vector<double> energy;  // per step count
};

}  // namespace

int main(int argc, char** argv) {
  using namespace nflow;
  const Index fit_steps = argc > 1 ? Index(std::stol(argv[1])) : 4000;
  const Index reflow_steps = argc > 2 ? Index(std::stol(argv[2])) : 3000;
  const Index n_pairs = argc > 3 ? Index(std::stol(argv[3])) : 20000;
  const bool check = argc > 4 ? std::stol(argv[4]) != 0 : true;
  const Index n_eval = 3000;  // model samples and fresh data points per energy distance
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
    const train::FlowMatchingOptions fit{.steps = fit_steps,
                                         .adam = {.learning_rate = 5e-3},
                                         .schedule = train::Schedule::cosine(0.05)};
    train::fit_flow_matching(flow, {.samples = train_data}, fit);

    std::vector<Row> rows;
    auto measure = [&] {
      Row r;
      flow.set_solver(OdeSolver::RK4, 20);  // the straightness and the pairs: accurate paths
      const auto s = train::straightness(flow, n_eval, 7);
      r.straightness = s.value;
      r.straightness_se = s.standard_error;
      for (Index k : euler_steps) {
        flow.set_solver(OdeSolver::Euler, k);
        r.energy.push_back(energy_distance(flow.inverse(z), test_data, yy));
      }
      flow.set_solver(OdeSolver::RK4, 20);
      rows.push_back(r);
    };
    measure();
    const train::FlowMatchingOptions refit{.steps = reflow_steps,
                                           .seed = 2,
                                           .adam = {.learning_rate = 2e-3},
                                           .schedule = train::Schedule::cosine(0.05)};
    for (int round = 0; round < 2; ++round) {
      const auto pairs = train::reflow_pairs(flow, n_pairs, 100 + std::uint64_t(round));
      train::fit_flow_matching(flow, pairs, refit);
      measure();
    }

    std::printf("\n%s (energy distance floor, fresh data against fresh data: %.5f)\n", name, floor);
    std::printf(
        "| model | straightness | ED 1 step | ED 2 steps | ED 4 steps | ED 8 steps | ED 20 steps "
        "|\n");
    std::printf("|---|---|---|---|---|---|---|\n");
    const char* labels[] = {"flow matching", "after 1 reflow", "after 2 reflows"};
    for (std::size_t i = 0; i < rows.size(); ++i) {
      std::printf("| %s | %.4f ± %.4f |", labels[i], rows[i].straightness, rows[i].straightness_se);
      for (double e : rows[i].energy) std::printf(" %.5f |", e);
      std::printf("\n");
    }
    const double two_after = rows[1].energy[1];
    const double eight_before = rows[0].energy[3];
    const bool met = two_after <= eight_before;
    std::printf("2 Euler steps after one reflow: %.5f; 8 Euler steps before: %.5f: %s\n", two_after,
                eight_before, met ? "as good or better" : "WORSE");
    ok = ok && met;
    std::printf("(%.1f s)\n", seconds_since(start));
    std::fflush(stdout);
  }
  return (ok || !check) ? 0 : 1;
}
