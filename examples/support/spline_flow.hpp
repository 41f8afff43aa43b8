#pragma once
// The coupling neural spline flow that the 2-D examples train beside the Real NVP of
// real_nvp.hpp: the same size (8 couplings, MLP 2 × 64, ReLU, the two features swapped between
// them, a standard normal base), with a rational-quadratic spline of 8 bins as the transformer:
// the library's one-line preset, flows::coupling_nsf.
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

/// The ready-made coupling NSF (nflow::flows::coupling_nsf): 8 layers, K = 8, MLP 2 × 64.
using SplineDensity2 = nflow::flows::CouplingNSF<double, 2, 8, 64, 8>;

/// A fresh model (every coupling the identity; the layers' conditioners seeded distinctly from
/// `seed`); `context_dim` rows of context go into every conditioner.
inline SplineDensity2 make_spline_flow_2d(std::uint64_t seed = 0, nflow::Index context_dim = 0,
                                          double bound = spline_bound_2d) {
  return nflow::flows::coupling_nsf<double, 2, 8, 64, 8>(
      {.hidden_width = 64,
       .context_dim = context_dim,
       .spline = {.lower = -bound, .upper = bound},
       .seed = seed});
}

}  // namespace nflow_examples
