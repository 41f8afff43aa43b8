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
/// The library must be compiled with the program's vector instruction set (Eigen's alignment of
/// heap arrays depends on it: a matrix allocated by code built for AVX and freed by code built
/// for SSE corrupts the heap). Under NFLOW_PRECOMPILED_INSTANCES this header therefore refers to
/// a symbol whose name carries EIGEN_MAX_ALIGN_BYTES and whether NFLOW_USE_BLAS is set; a
/// program built with other settings than the library fails to link, naming
/// nflow::instances_detail::abi_align<N>_blas<B>, instead of failing at run time. In one CMake
/// build (add_subdirectory, or nflow's own) both use the same flags.

#include <Eigen/Core>

#include "nflow/bijectors/coupling.hpp"

namespace nflow::instances_detail {
template <typename S>
using Matrix = Eigen::Matrix<S, Dynamic, Dynamic>;
template <typename S>
using Point = Eigen::Matrix<S, Dynamic, 1>;
template <typename S>
using Tile = Eigen::Ref<const Eigen::Matrix<S, Dynamic, Dynamic>, 0, Eigen::OuterStride<>>;
template <typename S>
using RowVector = Eigen::Matrix<S, 1, Dynamic, Eigen::RowMajor>;
}  // namespace nflow::instances_detail

/// The ABI tag: EIGEN_MAX_ALIGN_BYTES and NFLOW_USE_BLAS in a name.
#ifdef NFLOW_USE_BLAS
#define NFLOW_DETAIL_INSTANCES_BLAS 1
#else
#define NFLOW_DETAIL_INSTANCES_BLAS 0
#endif
#define NFLOW_DETAIL_INSTANCES_TAG2(a, b) abi_align##a##_blas##b
#define NFLOW_DETAIL_INSTANCES_TAG1(a, b) NFLOW_DETAIL_INSTANCES_TAG2(a, b)
#define NFLOW_DETAIL_INSTANCES_TAG \
  NFLOW_DETAIL_INSTANCES_TAG1(EIGEN_MAX_ALIGN_BYTES, NFLOW_DETAIL_INSTANCES_BLAS)

/// forward_impl and inverse_impl of layer L (scalar S) for input type X and context type C.
#define NFLOW_DETAIL_COUPLING_PASSES(EXT, L, S, X, C)                                            \
  EXT template detail::ResultFor<S, Dynamic, X> L::forward_impl<X, C>(const X&, const C&) const; \
  EXT template detail::ResultFor<S, Dynamic, X> L::inverse_impl<X, C>(const X&, const C&) const;

/// The recorded forward pass, its vjp and the inverse vjp of layer L for context type C.
#define NFLOW_DETAIL_COUPLING_GRADIENTS(EXT, L, S, C)                                              \
  EXT template ValueAndLogDet<S, Dynamic, Dynamic> L::record_forward_impl<C>(                      \
      const Batch<S, Dynamic, Dynamic>&, const C&, L::Tape&) const;                                \
  EXT template Batch<S, Dynamic, Dynamic>                                                          \
  L::taped_vjp_impl<instances_detail::Matrix<S>, instances_detail::RowVector<S>, C>(               \
      const L::Tape&, const instances_detail::Matrix<S>&, const instances_detail::RowVector<S>&,   \
      Eigen::Ref<Vector<S>>, const C&, ContextGradient<S>*) const;                                 \
  EXT template detail::BatchFor<S, Dynamic, instances_detail::Matrix<S>>                           \
  L::inverse_vjp_impl<instances_detail::Matrix<S>, instances_detail::Matrix<S>,                    \
                      instances_detail::RowVector<S>, C>(                                          \
      const instances_detail::Matrix<S>&, const instances_detail::Matrix<S>&,                      \
      const instances_detail::RowVector<S>&, Eigen::Ref<Vector<S>>, const C&, ContextGradient<S>*) \
      const;

/// Every instance nflow::instances holds of layer L (scalar S): EXT is `extern` for the
/// declarations, empty for the definitions (src/instances/).
#define NFLOW_COUPLING_INSTANCES(EXT, L, S)                                                       \
  NFLOW_DETAIL_COUPLING_PASSES(EXT, L, S, instances_detail::Matrix<S>, NoContext)                 \
  NFLOW_DETAIL_COUPLING_PASSES(EXT, L, S, instances_detail::Matrix<S>,                            \
                               instances_detail::Matrix<S>)                                       \
  NFLOW_DETAIL_COUPLING_PASSES(EXT, L, S, instances_detail::Matrix<S>, instances_detail::Tile<S>) \
  NFLOW_DETAIL_COUPLING_PASSES(EXT, L, S, instances_detail::Tile<S>, NoContext)                   \
  NFLOW_DETAIL_COUPLING_PASSES(EXT, L, S, instances_detail::Tile<S>, instances_detail::Tile<S>)   \
  NFLOW_DETAIL_COUPLING_PASSES(EXT, L, S, instances_detail::Tile<S>, instances_detail::Matrix<S>) \
  NFLOW_DETAIL_COUPLING_PASSES(EXT, L, S, instances_detail::Point<S>, NoContext)                  \
  NFLOW_DETAIL_COUPLING_PASSES(EXT, L, S, instances_detail::Point<S>, instances_detail::Point<S>) \
  NFLOW_DETAIL_COUPLING_GRADIENTS(EXT, L, S, NoContext)                                           \
  NFLOW_DETAIL_COUPLING_GRADIENTS(EXT, L, S, instances_detail::Matrix<S>)                         \
  NFLOW_DETAIL_COUPLING_GRADIENTS(EXT, L, S, instances_detail::Tile<S>)

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

namespace instances_detail {
// Defined in nflow::instances for the settings it was compiled with: a program with other
// settings fails to link here (see the file's comment).
extern const int NFLOW_DETAIL_INSTANCES_TAG;
#if defined(__GNUC__)
[[gnu::used]] static const int* const abi_check = &NFLOW_DETAIL_INSTANCES_TAG;
#endif
}  // namespace instances_detail
}  // namespace nflow
#endif
