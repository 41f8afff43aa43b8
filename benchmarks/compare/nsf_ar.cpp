// The autoregressive neural spline flow as benchmarks/torch_nsf.py builds it ("NSF-AR"): 5
// autoregressive rational-quadratic spline layers (K = 8 bins on [−5, 5], the identity outside),
// built as the MAF comparison's (autoregressive.hpp: MADEs of 2 × H, ReLU, orders alternating).
// PyTorch orders the MADE's outputs feature-major, nflow blocked: the same network up to a
// permutation of output units. Sampling is Dim passes per layer; the roofline counts the dense
// products as PyTorch runs them (weight ⊙ mask, full size, every pass) and compare.py adds its
// estimate of the spline's arithmetic. Large batches follow torch_nsf.py's (smaller where a call
// would take seconds).
#include <nflow/bijectors/transformers/rational_quadratic.hpp>

#include "autoregressive.hpp"

namespace {

using namespace nflow;
using namespace nflow::bench;

struct NsfAutoregressive : FamilyDefaults<NsfAutoregressive> {
  template <typename S, int D, int H>
  static auto make(Index d) {
    return autoregressive_density<S, D, SplineAutoregressive<S, D, H>>(d);
  }

  std::vector<Index> log_prob_batches(Index d) const { return {256, d <= 16 ? 65536 : 16384}; }
  Index sample_batch(Index d) const { return d <= 2 ? 65536 : (d <= 16 ? 4096 : 512); }

  Shapes shapes(const std::string& op, Index d) const {
    // Unbounded spline, K = 8: 3K − 1 raw parameters per feature.
    return autoregressive_shapes(op, d, RationalQuadraticSpline<float>::ParamsPerDim);
  }
};

}  // namespace

int main(int argc, char** argv) { return compare_main(argc, argv, "NSF-AR", NsfAutoregressive{}); }
