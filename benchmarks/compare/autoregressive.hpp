#pragma once
// The autoregressive families of the side-by-side benchmarks (maf.cpp: MAF, nsf_ar.cpp: NSF-AR),
// built as ../shared/bench/flows.py builds MAF: 5 layers, each a MADE (2 × H, ReLU, sequential
// hidden degrees) over the natural order (even layers) or the reversed one (odd layers: the same
// map as flows.py's feature flips between layers). Only the transformer differs.
#include <nflow/bijectors/masked_autoregressive.hpp>
#include <nflow/core/flow.hpp>
#include <nflow/distributions/density.hpp>
#include <nflow/distributions/standard_normal.hpp>
#include <string>

#include "compare.hpp"

namespace nflow::bench {

/// The 5-layer flow of autoregressive layers M (a MaskedAutoregressive<Transformer, D, H>) with
/// a standard normal base, every parameter then drawn by randomize().
template <typename S, int D, typename M>
auto autoregressive_density(Index d) {
  const Index h = hidden_for(d);
  auto m = [&](int k) {
    return M(d, {.hidden_width = h,
                 .hidden_layers = 2,
                 .seed = std::uint64_t(k + 1),
                 .order = k % 2 == 0 ? nn::InputOrder::Natural : nn::InputOrder::Reversed});
  };
  auto density =
      Density(StandardNormal<S, D>(d), Flow<M, M, M, M, M>(m(0), m(1), m(2), m(3), m(4)));
  randomize(density, 7);
  return density;
}

/// The dense products of one sample, counted as PyTorch runs them (weight ⊙ mask, full size):
/// every MADE once for log_prob, d times for sampling (d passes per layer); `params_per_dim`
/// outputs per feature.
inline Shapes autoregressive_shapes(const std::string& op, Index d, Index params_per_dim) {
  const Index passes = op == "sample" ? d : 1;
  Shapes s;
  for (Index k = 0; k < 5 * passes; ++k) add_mlp(s, d, hidden_for(d), params_per_dim * d);
  return s;
}

}  // namespace nflow::bench
