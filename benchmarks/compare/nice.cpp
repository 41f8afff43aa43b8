// NICE as ../shared/bench/flows.py builds it: 4 additive couplings with alternating halves
// (MLP d/2 → H → H → d/2, ReLU), then a diagonal scaling (nflow's ElementwiseAffine, which also
// has a shift: d more additions). See compare.hpp for the names and the roofline.
#include <nflow/bijectors/coupling.hpp>
#include <nflow/bijectors/elementwise_affine.hpp>
#include <nflow/core/flow.hpp>
#include <nflow/distributions/density.hpp>
#include <nflow/distributions/standard_normal.hpp>

#include "compare.hpp"

namespace {

using namespace nflow;
using namespace nflow::bench;

struct Nice : FamilyDefaults<Nice> {
  template <typename S, int D, int H>
  static auto make(Index d) {
    using C = AdditiveCoupling<S, D, H>;
    const Index h = hidden_for(d);
    auto c = [&](int k) {
      return C(
          CouplingMask::half(d, k % 2 == 1),
          CouplingOptions{.hidden_width = h, .hidden_layers = 2, .seed = std::uint64_t(k + 1)});
    };
    auto density =
        Density(StandardNormal<S, D>(d), Flow<C, C, C, C, ElementwiseAffine<S, D>>(
                                             c(0), c(1), c(2), c(3), ElementwiseAffine<S, D>(d)));
    randomize(density, 7);
    return density;
  }

  Shapes shapes(const std::string&, Index d) const {
    const Index h = hidden_for(d), d1 = d / 2, d2 = d - d1;
    Shapes s;
    for (int k = 0; k < 4; ++k) add_mlp(s, k % 2 == 0 ? d1 : d2, h, k % 2 == 0 ? d2 : d1);
    return s;
  }
};

}  // namespace

int main(int argc, char** argv) { return compare_main(argc, argv, "NICE", Nice{}); }
