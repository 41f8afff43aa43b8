// A continuous normalizing flow trained by flow matching on 8 gaussians. The vector field is an
// MLP 2 × 64 (tanh) of (z, t); training regresses it on the velocity of straight paths from noise
// to data, with no ODE solve (docs/continuous.md). Afterwards the flow is an ordinary nflow
// bijector: its exact log-likelihood on fresh test samples (20,000 by default; exact trace,
// Dormand–Prince at rtol = atol = 1e-5) is printed, and flow_matching.png shows four panels:
//
//   data | learned density (exact log-density on a grid) | samples from the flow |
//   trajectories of 100 latent points integrated from t = 1 (latent) to t = 0 (data)
//
// The picture in docs/images/ was made by
//
//   flow_matching 5000 docs/images/flow_matching.png
//
//   flow_matching [steps (default 5000)] [output.png] [test samples (default 20000)]
//
// (The test samples also set how many samples the third panel draws; ctest runs
// `flow_matching 200 flow_matching_test.png 2000`.)
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

using Points = Eigen::Matrix<double, 2, Eigen::Dynamic>;
using Cnf = nflow::ContinuousFlow<double, 2, 64, nflow::nn::Tanh>;

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

/// log p(x) per column, in chunks of 1,000 columns: each chunk is one ODE solve (with Dopri5, its
/// own step sizes), and small chunks stay in cache.
template <typename D>
Eigen::RowVectorXd log_prob_in_chunks(const D& density, const Points& x) {
  Eigen::RowVectorXd lp(x.cols());
  for (Eigen::Index j = 0; j < x.cols(); j += 1000) {
    const Eigen::Index m = std::min<Eigen::Index>(1000, x.cols() - j);
    lp.segment(j, m) = density.log_prob(x.middleCols(j, m));
  }
  return lp;
}

/// Integrates dz/dt = f(z, t) from t = 1 (latent) to t = 0 (data) with `steps` RK4 steps and
/// returns the points after each step (path[0] = z, path[steps] = the samples). Sampling needs no
/// log-det, so only the field is integrated (flow.inverse(z) would integrate the exact trace as
/// well, which costs more than the field itself).
std::vector<Points> integrate_to_data(const Cnf& flow, const Points& z, int steps) {
  const Eigen::MatrixXd no_context;
  auto rhs = [&](double t, const Eigen::MatrixXd& y, Eigen::MatrixXd& dy) {
    dy = flow.field().value(t, y, no_context);
  };
  std::vector<Points> path{z};
  Eigen::MatrixXd y = z;
  for (int s = 0; s < steps; ++s) {
    nflow::ode::rk4_integrate(rhs, 1.0 - double(s) / steps, 1.0 - double(s + 1) / steps, y, 1);
    path.emplace_back(y);
  }
  return path;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace nflow;
  const long steps = argc > 1 ? std::stol(argv[1]) : 5000;
  const std::string out = argc > 2 ? argv[2] : "flow_matching.png";
  const Index n_test = argc > 3 ? Index(std::stol(argv[3])) : 20000;
  const auto start = std::chrono::steady_clock::now();
  const auto toy = datasets::Toy::EightGaussians;
  const Points train_data = datasets::toy(toy, 20000, 1);
  const Points test_data = datasets::toy(toy, n_test, 3);

  // The field: an MLP 2 × 64 (tanh) on [z; t].
  Cnf flow(2, ContinuousFlowOptions{.hidden_width = 64, .hidden_layers = 2, .seed = 1});
  train::FlowMatchingOptions fm;
  fm.steps = steps;
  fm.batch_size = 256;
  fm.adam.learning_rate = 5e-3;
  fm.schedule = train::Schedule::cosine(0.05);
  fm.report_every = steps >= 5 ? steps / 5 : 1;
  fm.callback = [&](Index step, double loss) {
    std::printf("step %5ld  flow-matching loss %.4f  (%.1f s)\n", long(step), loss,
                seconds_since(start));
    std::fflush(stdout);
  };
  std::printf(
      "flow matching: continuous flow (MLP 2x64 tanh field, %ld parameters) on 8 gaussians\n",
      long(flow.parameter_count()));
  train::fit_flow_matching(flow, {.samples = train_data}, fm);

  // Exact log-likelihood: log p(x) = log N(z; 0, I) + ∫₀¹ tr ∂f/∂z dt, with the exact trace and
  // an adaptive solver at a tolerance far below the differences that matter.
  flow.set_trace(ode::TraceEstimator::Exact);
  flow.set_solver(OdeSolver::Dopri5, 20, ode::Dopri5Options{.rtol = 1e-5, .atol = 1e-5});
  const Density density(StandardNormal<double, 2>{}, flow);
  const double test_ll = log_prob_in_chunks(density, test_data).mean();
  std::printf(
      "test log-likelihood: %.4f nats per sample (%ld fresh samples; exact trace, Dopri5 1e-5)  "
      "(%.1f s)\n",
      test_ll, long(n_test), seconds_since(start));
  std::fflush(stdout);

  // The pictures. The heat map evaluates log p (exact trace) on every second pixel (101 × 101
  // points, interpolated in between) with RK4 at 8 steps: after the default 5000 steps, its
  // largest error in p on the grid is 0.6 % of the peak against Dopri5 at 1e-5 (4 steps: 5 %).
  const int panel = 200;
  nflow_examples::Panels panels(4, panel);
  panels.scatter(0, test_data);
  Cnf map_flow = flow;
  map_flow.set_solver(OdeSolver::RK4, 8);
  const Density map_density(StandardNormal<double, 2>{}, map_flow);
  panels.density(
      1, [&](const Points& g) -> Eigen::RowVectorXd { return log_prob_in_chunks(map_density, g); },
      /*stride*/ 2);
  std::mt19937_64 rng(11);
  const Points z = standard_normal_matrix<double, 2>(2, n_test, rng);
  const std::vector<Points> path = integrate_to_data(flow, z, 20);
  panels.scatter(2, path.back());
  // Trajectories of the first 100 points: blue at the latent end, yellow at the data end.
  panels.fill(3, nflow_examples::colormap(0.0));
  for (Index j = 0; j < std::min<Index>(100, n_test); ++j) {
    Points line(2, Index(path.size()));
    for (std::size_t s = 0; s < path.size(); ++s) line.col(Index(s)) = path[s].col(j);
    panels.polyline(3, line, [](double u) { return nflow_examples::colormap(0.25 + 0.75 * u); });
  }
  nflow_examples::write_png(out, panels.image);
  std::printf(
      "wrote %s: data | learned density | samples from the flow | trajectories latent -> data  "
      "(%.1f s)\n",
      out.c_str(), seconds_since(start));
  return std::isfinite(test_ll) ? 0 : 1;
}
