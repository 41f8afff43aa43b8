#pragma once
// The coupling neural spline flow that the 2-D examples train beside the Real NVP of
// real_nvp.hpp: the same size (8 couplings, MLP 2 × 64, ReLU, the two features swapped between
// them, a standard normal base), with a rational-quadratic spline of 8 bins as the transformer.
//
// The interval is [−5, 5], the identity outside. The toy data are not standardised (toy.hpp):
// over the 20,000 training samples of each toy the largest |coordinate| is 4.17 (pinwheel; 8
// gaussians 4.11, checkerboard 4.00, the others below 3.8), and a standard normal latent lies in
// [−5, 5] with probability 1 − 6·10⁻⁷. So the data at the first layer and the latents at the last
// are inside the bins, with a margin of about one unit that keeps the densest points off the
// boundary (where the spline's slope is tied to 1 and the map is rigid).
#include <cstdint>
#include <nflow/nflow.hpp>

namespace nflow_examples {

inline constexpr double spline_bound_2d = 5.0;

using Spline8 = nflow::RationalQuadraticSpline<double, 8>;
using SplineCoupling2 = nflow::SplineCoupling<double, 2, 64, 8>;
using SplineSwap2 = nflow::Reverse<double, 2>;
using SplineFlow2 =
    nflow::Flow<SplineCoupling2, SplineSwap2, SplineCoupling2, SplineSwap2, SplineCoupling2,
                SplineSwap2, SplineCoupling2, SplineSwap2, SplineCoupling2, SplineSwap2,
                SplineCoupling2, SplineSwap2, SplineCoupling2, SplineSwap2, SplineCoupling2>;
using SplineDensity2 = nflow::Density<nflow::StandardNormal<double, 2>, SplineFlow2>;

/// A fresh model (every coupling the identity); layer i's conditioner is seeded with
/// seed · 16 + i (as make_real_nvp_2d), `context_dim` rows of context go into every conditioner.
inline SplineDensity2 make_spline_flow_2d(std::uint64_t seed = 0, nflow::Index context_dim = 0,
                                          double bound = spline_bound_2d) {
  auto c = [=](std::uint64_t i) {
    return SplineCoupling2(nflow::CouplingMask::half(2),
                           nflow::CouplingOptions{64, 2, context_dim, seed * 16 + i},
                           Spline8({.lower = -bound, .upper = bound}));
  };
  const SplineSwap2 r{};
  return SplineDensity2(
      nflow::StandardNormal<double, 2>{},
      SplineFlow2(c(1), r, c(2), r, c(3), r, c(4), r, c(5), r, c(6), r, c(7), r, c(8)));
}

}  // namespace nflow_examples
