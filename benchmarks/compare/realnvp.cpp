// Real NVP as ../shared/bench/flows.py builds it: 8 affine couplings, each transforming the
// second half given the first (MLP d1 → H → H → 2·d2, ReLU), log-scale tanh(raw) (nflow's
// AffineTransformer with bound B = 1: B·tanh(raw/B)), features reversed between couplings.
// (nflow's affine map is z = (x − μ)·e^{−α}, flows.py's x·e^{α} + t: the same work.)
#include <nflow/bijectors/coupling.hpp>
#include <nflow/bijectors/reverse.hpp>
#include <nflow/core/flow.hpp>
#include <nflow/distributions/density.hpp>
#include <nflow/distributions/standard_normal.hpp>

#include "compare.hpp"

namespace {

using namespace nflow;
using namespace nflow::bench;

struct RealNVP : FamilyDefaults<RealNVP> {
  template <typename S, int D, int H>
  static auto make(Index d) {
    using C = AffineCoupling<S, D, H>;
    using R = Reverse<S, D>;
    const Index h = hidden_for(d);
    auto c = [&](int k) {
      return C(CouplingMask::half(d),
               CouplingOptions{.hidden_width = h, .hidden_layers = 2, .seed = std::uint64_t(k + 1)},
               AffineTransformer<S>(S(1)));
    };
    const R r(d);
    auto density =
        Density(StandardNormal<S, D>(d),
                Flow<C, R, C, R, C, R, C, R, C, R, C, R, C, R, C>(
                    c(0), r, c(1), r, c(2), r, c(3), r, c(4), r, c(5), r, c(6), r, c(7)));
    randomize(density, 7);
    return density;
  }

  Shapes shapes(const std::string&, Index d) const {
    const Index d1 = d / 2, d2 = d - d1;
    Shapes s;
    for (int k = 0; k < 8; ++k) add_mlp(s, d1, hidden_for(d), 2 * d2);
    return s;
  }
};

}  // namespace

int main(int argc, char** argv) { return compare_main(argc, argv, "RealNVP", RealNVP{}); }
