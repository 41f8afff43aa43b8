// The continuous flow as ../shared/bench/flows.py builds it: dz/dt = MLP([z, t]) (d + 1 → H → H
// → d, tanh), 20 fixed RK4 steps (80 field evaluations), exact trace (nflow: the closed form,
// d₁ᵀ C d₀; one fixed-size point runs on fixed-size vectors without allocating). The PyTorch side has two exact traces: "CNF" (autograd,
// d vector-Jacobian products per evaluation) and "CNF-closed" (closed form); compare.py sets both
// next to this. The roofline counts the field's products plus the closed-form trace (an H × H
// product per evaluation), the least arithmetic an exact trace needs here. Batches follow
// bench_torch.py's (smaller large batches: a call would take seconds). No training step (the
// PyTorch reference times none for the CNF).
#include <nflow/bijectors/continuous.hpp>
#include <nflow/distributions/density.hpp>
#include <nflow/distributions/standard_normal.hpp>

#include "compare.hpp"

namespace {

using namespace nflow;
using namespace nflow::bench;

struct Cnf : FamilyDefaults<Cnf> {
  template <typename S, int D, int H>
  static auto make(Index d) {
    using F = ContinuousFlow<S, D, H, nn::Tanh>;
    F flow(d, {.hidden_width = hidden_for(d),
               .hidden_layers = 2,
               .seed = 1,
               .solver = OdeSolver::RK4,
               .rk4_steps = 20,
               .trace = ode::TraceEstimator::Exact});
    auto density = Density(StandardNormal<S, D>(d), std::move(flow));
    randomize(density, 7, 0.1);
    return density;
  }

  std::vector<Index> log_prob_batches(Index d) const {
    if (d <= 2) return {256, 8192};
    if (d <= 16) return {256, 1024};
    return {16};
  }
  Index sample_batch(Index d) const { return d <= 2 ? 16384 : (d <= 16 ? 8192 : 4096); }
  bool train(Index) const { return false; }

  Shapes shapes(const std::string& op, Index d) const {
    const Index h = hidden_for(d);
    Shapes s;
    for (int k = 0; k < 80; ++k) {
      add_mlp(s, d + 1, h, d);
      if (op == "log_prob") s.push_back({h, h});
    }
    return s;
  }
};

}  // namespace

int main(int argc, char** argv) { return compare_main(argc, argv, "CNF", Cnf{}); }
