// MAF as ../shared/bench/flows.py builds it: 5 MADE layers (2 × H, ReLU, sequential hidden
// degrees), the order reversed between layers (nflow: orders alternating natural / reversed,
// which is the same map). Differences, both cheaper in PyTorch: nflow bounds α by 3·tanh(α/3)
// (PyTorch leaves it unbounded), and the roofline counts the dense products as PyTorch runs them
// (weight ⊙ mask, full size). Sampling is Dim passes per layer; its batch follows bench_torch.py.
#include <nflow/bijectors/masked_autoregressive.hpp>
#include <nflow/core/flow.hpp>
#include <nflow/distributions/density.hpp>
#include <nflow/distributions/standard_normal.hpp>

#include "compare.hpp"

namespace {

using namespace nflow;
using namespace nflow::bench;

struct Maf : FamilyDefaults<Maf> {
  template <typename S, int D, int H>
  static auto make(Index d) {
    using M = MAF<S, D, H, nn::ReLU>;
    const Index h = hidden_for(d);
    auto m = [&](int k) {
      return M(d, {.hidden_width = h,
                   .hidden_layers = 2,
                   .order = k % 2 == 0 ? nn::InputOrder::Natural : nn::InputOrder::Reversed,
                   .seed = std::uint64_t(k + 1)});
    };
    auto density =
        Density(StandardNormal<S, D>(d), Flow<M, M, M, M, M>(m(0), m(1), m(2), m(3), m(4)));
    randomize(density, 7);
    return density;
  }

  Index sample_batch(Index d) const { return d <= 2 ? 65536 : (d <= 16 ? 16384 : 2048); }

  Shapes shapes(const std::string& op, Index d) const {
    const Index passes = op == "sample" ? d : 1;
    Shapes s;
    for (Index k = 0; k < 5 * passes; ++k) add_mlp(s, d, hidden_for(d), 2 * d);
    return s;
  }
};

}  // namespace

int main(int argc, char** argv) { return compare_main(argc, argv, "MAF", Maf{}); }
