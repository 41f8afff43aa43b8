// MAF as ../shared/bench/flows.py builds it: 5 MADE layers (2 × H, ReLU, sequential hidden
// degrees), the order reversed between layers (nflow: orders alternating natural / reversed,
// which is the same map; autoregressive.hpp). Differences, both cheaper in PyTorch: nflow bounds
// α by 3·tanh(α/3) (PyTorch leaves it unbounded), and the roofline counts the dense products as
// PyTorch runs them (weight ⊙ mask, full size). Sampling is Dim passes per layer; its batch
// follows bench_torch.py.
#include "autoregressive.hpp"

namespace {

using namespace nflow;
using namespace nflow::bench;

struct Maf : FamilyDefaults<Maf> {
  template <typename S, int D, int H>
  static auto make(Index d) {
    return autoregressive_density<S, D, MAF<S, D, H, nn::ReLU>>(d);
  }

  Index sample_batch(Index d) const { return d <= 2 ? 65536 : (d <= 16 ? 16384 : 2048); }

  Shapes shapes(const std::string& op, Index d) const { return autoregressive_shapes(op, d, 2); }
};

}  // namespace

int main(int argc, char** argv) { return compare_main(argc, argv, "MAF", Maf{}); }
