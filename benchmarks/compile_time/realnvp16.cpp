// Compile-time probe (issue 8): one translation unit with a 16-layer Real NVP (affine couplings,
// MLP 2 × 128, features reversed between them) whose log_prob is evaluated on a batch, as a user
// would write it. benchmarks/compare.py times `g++ -O2 -c` of this file, once with the umbrella
// header and once (NFLOW_NARROW_INCLUDES) with only the headers the model needs, and once more
// with NFLOW_PROBE_FIT: the same model also trained by train::fit (issue 21's probe), and that one
// once more as a program linking nflow::instances compiles it (NFLOW_PRECOMPILED_INSTANCES: the
// coupling layers' code comes from the library).
#ifdef NFLOW_NARROW_INCLUDES
#include <nflow/bijectors/coupling.hpp>
#include <nflow/bijectors/reverse.hpp>
#include <nflow/core/flow.hpp>
#include <nflow/core/random.hpp>
#include <nflow/distributions/density.hpp>
#include <nflow/distributions/standard_normal.hpp>
#ifdef NFLOW_PROBE_FIT
#include <nflow/train/fit.hpp>
#endif
#else
#include <nflow/nflow.hpp>
#endif

#include <cstdint>
#include <cstdio>
#include <random>

int main() {
  using namespace nflow;
  using S = float;
  using C = AffineCoupling<S>;
  using R = Reverse<S>;
  using F = Flow<C, R, C, R, C, R, C, R, C, R, C, R, C, R, C, R, C, R, C, R, C, R, C, R, C, R, C, R,
                 C, R, C>;
  const Index d = 16;
  auto c = [&](int k) {
    return C(CouplingMask::half(d),
             CouplingOptions{.hidden_width = 128, .hidden_layers = 2, .seed = std::uint64_t(k)});
  };
  const R r(d);
  Density density(StandardNormal<S>(d),
                  F(c(0), r, c(1), r, c(2), r, c(3), r, c(4), r, c(5), r, c(6), r, c(7), r, c(8), r,
                    c(9), r, c(10), r, c(11), r, c(12), r, c(13), r, c(14), r, c(15)));
  std::mt19937_64 gen(1);
  const Eigen::MatrixXf x = standard_normal_matrix<S>(d, 256, gen);
#ifdef NFLOW_PROBE_FIT
  const auto fitted = train::fit(density, {.samples = x}, {.epochs = 1});
  std::printf("epochs %d\n", int(fitted.epochs));
#endif
  const Eigen::RowVectorXf lp = density.log_prob(x);
  std::printf("mean log p = %g\n", double(lp.mean()));
  return 0;
}
