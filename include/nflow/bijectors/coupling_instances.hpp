#pragma once
/// @file
/// @brief The compiled instances of the common coupling layers (the library nflow::instances).
///
/// Most of the time a translation unit that builds and trains a Real NVP spends compiling is the
/// coupling layer's own code: its forward and inverse passes, the recorded forward pass and its
/// vector-Jacobian product, and the conditioner network under them (docs/performance.md, "Compile
/// time"). For the layers below, with run-time sizes and the default MLP conditioner, the library
/// nflow::instances (src/instances/) holds these hooks compiled once, for the call types that
/// nflow's own calls pass: a batch (Eigen::Matrix<S, Dynamic, Dynamic>, or a tile of one:
/// Eigen::Ref<const Matrix, 0, OuterStride<>>), one point (Eigen::Matrix<S, Dynamic, 1>), and no
/// context or a context of the same kinds. A program that links nflow::instances sees
/// NFLOW_PRECOMPILED_INSTANCES, and this header then declares those instances `extern template`:
/// its translation units compile none of them. Any other layer or call type is compiled in the
/// program as before; what a layer computes is the same either way.
///
/// The layers: AffineCoupling<S>, ScaleShiftCoupling<S>, AdditiveCoupling<S> and
/// SplineCoupling<S> (8 bins on [−5, 5]), for S = float and double, Dim, Hidden and ContextDim
/// Dynamic, ReLU.
///
/// The library must be compiled with the program's vector instruction set: see
/// nflow/core/instances.hpp.

#include "nflow/bijectors/coupling.hpp"
#include "nflow/core/instances.hpp"

/// The inverse vjp of layer L for context type C, after the recorded pass and its vjp.
#define NFLOW_DETAIL_COUPLING_GRADIENTS(EXT, L, S, C)                                              \
  NFLOW_DETAIL_INSTANCE_TAPE(EXT, L, S, C)                                                         \
  EXT template detail::BatchFor<S, Dynamic, instances_detail::Matrix<S>>                           \
  L::inverse_vjp_impl<instances_detail::Matrix<S>, instances_detail::Matrix<S>,                    \
                      instances_detail::RowVector<S>, C>(                                          \
      const instances_detail::Matrix<S>&, const instances_detail::Matrix<S>&,                      \
      const instances_detail::RowVector<S>&, Eigen::Ref<Vector<S>>, const C&, ContextGradient<S>*) \
      const;

/// Every instance nflow::instances holds of coupling layer L (scalar S): EXT is `extern` for the
/// declarations, empty for the definitions (src/instances/).
#define NFLOW_COUPLING_INSTANCES(EXT, L, S) \
  NFLOW_DETAIL_INSTANCE_PASSES(EXT, L, S)   \
  NFLOW_DETAIL_INSTANCE_CONTEXTS(NFLOW_DETAIL_COUPLING_GRADIENTS, EXT, L, S)

/// The layers nflow::instances holds, for scalar S.
#define NFLOW_COUPLING_INSTANCE_LAYERS(EXT, S)            \
  NFLOW_COUPLING_INSTANCES(EXT, AffineCoupling<S>, S)     \
  NFLOW_COUPLING_INSTANCES(EXT, ScaleShiftCoupling<S>, S) \
  NFLOW_COUPLING_INSTANCES(EXT, AdditiveCoupling<S>, S)   \
  NFLOW_COUPLING_INSTANCES(EXT, SplineCoupling<S>, S)

#ifdef NFLOW_PRECOMPILED_INSTANCES
namespace nflow {
NFLOW_COUPLING_INSTANCE_LAYERS(extern, float)
NFLOW_COUPLING_INSTANCE_LAYERS(extern, double)
}  // namespace nflow
#endif
