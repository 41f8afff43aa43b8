// The coupling neural spline flow as benchmarks/torch_nsf.py builds it ("NSF"): 8 rational-
// quadratic spline couplings (Durkan et al. 2019; K = 8 bins on [−5, 5], the identity outside;
// conditioner MLP |A| → H → H → (3K − 1)·|B|, ReLU), the half mask flipped between layers
// (CouplingMask::half(d, k odd)). PyTorch orders the conditioner's outputs feature-major, nflow
// blocked: the same network up to a permutation of output units. The roofline counts the dense
// products here; compare.py adds its estimate of the spline's arithmetic. At d = 64 the large
// batches are 16,384 (as torch_nsf.py's).
#include <nflow/bijectors/coupling.hpp>
#include <nflow/bijectors/transformers/rational_quadratic.hpp>
#include <nflow/core/flow.hpp>
#include <nflow/distributions/density.hpp>
#include <nflow/distributions/standard_normal.hpp>

#include "compare.hpp"

namespace {

using namespace nflow;
using namespace nflow::bench;

struct Nsf : FamilyDefaults<Nsf> {
  template <typename S, int D, int H>
  static auto make(Index d) {
    using C = SplineCoupling<S, D, H>;
    const Index h = hidden_for(d);
    auto c = [&](int k) {
      return C(
          CouplingMask::half(d, k % 2 == 1),
          CouplingOptions{.hidden_width = h, .hidden_layers = 2, .seed = std::uint64_t(k + 1)});
    };
    auto density =
        Density(StandardNormal<S, D>(d),
                Flow<C, C, C, C, C, C, C, C>(c(0), c(1), c(2), c(3), c(4), c(5), c(6), c(7)));
    randomize(density, 7);
    return density;
  }

  std::vector<Index> log_prob_batches(Index d) const { return {256, d <= 16 ? 65536 : 16384}; }
  Index sample_batch(Index d) const { return d <= 16 ? 65536 : 16384; }

  Shapes shapes(const std::string&, Index d) const {
    // Unbounded spline, K = 8: 3K − 1 raw parameters per transformed feature.
    constexpr Index params = RationalQuadraticSpline<float>::ParamsPerDim;
    Shapes s;
    for (int k = 0; k < 8; ++k) {
      const Index transformed = k % 2 == 0 ? d - d / 2 : d / 2;
      add_mlp(s, d - transformed, hidden_for(d), params * transformed);
    }
    return s;
  }
};

}  // namespace

int main(int argc, char** argv) { return compare_main(argc, argv, "NSF", Nsf{}); }
