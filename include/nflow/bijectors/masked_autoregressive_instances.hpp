#pragma once
/// @file
/// @brief The compiled instances of the common autoregressive layers (the library
/// nflow::instances; see nflow/bijectors/coupling_instances.hpp for what they are and buy).
///
/// The layers: the presets' (nflow/flows/presets.hpp) MAF and spline autoregressive layers,
/// MaskedAutoregressive<AffineTransformer<S>, Dynamic, Dynamic, nn::ReLU, Dynamic> (MAF<S, Dynamic,
/// Dynamic, nn::ReLU, Dynamic>) and MaskedAutoregressive<RationalQuadraticSpline<S, 8>, Dynamic,
/// Dynamic, nn::ReLU, Dynamic>, for S = float and double: run-time sizes and context, the default
/// MADE. Their hooks for the call types of nflow/core/instances.hpp: the passes, the recorded pass
/// and its vjp, and the forward vjp (which an IAF's inverse vjp calls).

#include "nflow/bijectors/masked_autoregressive.hpp"
#include "nflow/core/instances.hpp"

namespace nflow::instances_detail {
template <typename S>
using Maf = MaskedAutoregressive<AffineTransformer<S>, Dynamic, Dynamic, nn::ReLU, Dynamic>;
template <typename S>
using SplineMaf =
    MaskedAutoregressive<RationalQuadraticSpline<S, 8>, Dynamic, Dynamic, nn::ReLU, Dynamic>;
}  // namespace nflow::instances_detail

/// The forward vjp of layer L for context type C, after the recorded pass and its vjp.
#define NFLOW_DETAIL_AUTOREGRESSIVE_GRADIENTS(EXT, L, S, C)                                        \
  NFLOW_DETAIL_INSTANCE_TAPE(EXT, L, S, C)                                                         \
  EXT template detail::BatchFor<S, Dynamic, instances_detail::Matrix<S>>                           \
  L::forward_vjp_impl<instances_detail::Matrix<S>, instances_detail::Matrix<S>,                    \
                      instances_detail::RowVector<S>, C>(                                          \
      const instances_detail::Matrix<S>&, const instances_detail::Matrix<S>&,                      \
      const instances_detail::RowVector<S>&, Eigen::Ref<Vector<S>>, const C&, ContextGradient<S>*) \
      const;

/// Every instance nflow::instances holds of autoregressive layer L (scalar S): EXT is `extern`
/// for the declarations, empty for the definitions (src/instances/).
#define NFLOW_AUTOREGRESSIVE_INSTANCES(EXT, L, S) \
  NFLOW_DETAIL_INSTANCE_PASSES(EXT, L, S)         \
  NFLOW_DETAIL_INSTANCE_CONTEXTS(NFLOW_DETAIL_AUTOREGRESSIVE_GRADIENTS, EXT, L, S)

#ifdef NFLOW_PRECOMPILED_INSTANCES
namespace nflow {
NFLOW_AUTOREGRESSIVE_INSTANCES(extern, instances_detail::Maf<float>, float)
NFLOW_AUTOREGRESSIVE_INSTANCES(extern, instances_detail::Maf<double>, double)
NFLOW_AUTOREGRESSIVE_INSTANCES(extern, instances_detail::SplineMaf<float>, float)
NFLOW_AUTOREGRESSIVE_INSTANCES(extern, instances_detail::SplineMaf<double>, double)
}  // namespace nflow
#endif
