#pragma once
// The Real NVP that the 2-D examples train: 8 affine couplings (MLP 2 × 64, ReLU), the two
// features swapped between them, on a standard normal base.
#include <cstdint>
#include <nflow/nflow.hpp>

namespace nflow_examples {

using Coupling2 = nflow::AffineCoupling<double, 2, 64>;
using Swap2 = nflow::Reverse<double, 2>;
using RealNVP2 = nflow::Flow<Coupling2, Swap2, Coupling2, Swap2, Coupling2, Swap2, Coupling2, Swap2,
                             Coupling2, Swap2, Coupling2, Swap2, Coupling2, Swap2, Coupling2>;
using RealNVPDensity2 = nflow::Density<nflow::StandardNormal<double, 2>, RealNVP2>;

/// A fresh model (every coupling the identity); `seed` seeds the conditioners' first layers.
inline RealNVPDensity2 make_real_nvp_2d(std::uint64_t seed = 0) {
  auto c = [seed](std::uint64_t i) {
    return Coupling2(
        nflow::CouplingMask::half(2),
        nflow::CouplingOptions{.hidden_width = 64, .hidden_layers = 2, .seed = seed * 16 + i});
  };
  const Swap2 r{};
  return RealNVPDensity2(
      nflow::StandardNormal<double, 2>{},
      RealNVP2(c(1), r, c(2), r, c(3), r, c(4), r, c(5), r, c(6), r, c(7), r, c(8)));
}

/// The examples' training recipe: batch 256, Adam 1e-3 decayed by a cosine to 5 %, seed 7.
inline nflow::train::FitOptions fit_options(long steps) {
  nflow::train::FitOptions options;
  options.batch_size = 256;
  options.max_steps = steps;
  options.adam.learning_rate = 1e-3;
  options.schedule = nflow::train::Schedule::cosine(0.05);
  options.seed = 7;
  return options;
}

}  // namespace nflow_examples
