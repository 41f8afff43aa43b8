// Glow (vector form) as ../shared/bench/flows.py builds it: 8 steps of ActNorm → LU linear
// (W = P·L·(U + diag(sign·e^s)), W and W⁻¹ cached) → affine coupling (as Real NVP, log-scale
// tanh(raw), no reversals).
#include <nflow/bijectors/act_norm.hpp>
#include <nflow/bijectors/coupling.hpp>
#include <nflow/bijectors/lu_linear.hpp>
#include <nflow/core/flow.hpp>
#include <nflow/distributions/density.hpp>
#include <nflow/distributions/standard_normal.hpp>

#include "compare.hpp"

namespace {

using namespace nflow;
using namespace nflow::bench;

struct Glow : FamilyDefaults<Glow> {
  template <typename S, int D, int H>
  static auto make(Index d) {
    using A = ActNorm<S, D>;
    using L = LULinear<S, D>;
    using C = AffineCoupling<S, D, H>;
    const Index h = hidden_for(d);
    auto a = [&] {
      A an(d);
      an.set_initialized();
      return an;
    };
    auto l = [&](int k) { return L::random_orthogonal(d, std::uint64_t(k + 11)); };
    auto c = [&](int k) {
      return C(CouplingMask::half(d),
               CouplingOptions{.hidden_width = h, .hidden_layers = 2, .seed = std::uint64_t(k + 1)},
               AffineTransformer<S>(S(1)));
    };
    auto density =
        Density(StandardNormal<S, D>(d),
                Flow<A, L, C, A, L, C, A, L, C, A, L, C, A, L, C, A, L, C, A, L, C, A, L, C>(
                    a(), l(0), c(0), a(), l(1), c(1), a(), l(2), c(2), a(), l(3), c(3), a(), l(4),
                    c(4), a(), l(5), c(5), a(), l(6), c(6), a(), l(7), c(7)));
    // Perturb every parameter (the LU factors stay well conditioned: 0.05 is small next to 1).
    Vector<S> theta = get_parameters(density);
    std::mt19937_64 gen(7);
    theta += standard_normal_matrix<S>(theta.size(), 1, gen) * S(0.05);
    set_parameters(density, theta);
    return density;
  }

  Shapes shapes(const std::string&, Index d) const {
    const Index d1 = d / 2, d2 = d - d1;
    Shapes s;
    for (int k = 0; k < 8; ++k) {
      s.push_back({d, d});
      add_mlp(s, d1, hidden_for(d), 2 * d2);
    }
    return s;
  }
};

}  // namespace

int main(int argc, char** argv) { return compare_main(argc, argv, "Glow", Glow{}); }
