#pragma once
/// @file
/// @brief What the compiled instances of the common layers share (the library nflow::instances;
/// see nflow/bijectors/coupling_instances.hpp and masked_autoregressive_instances.hpp): the call
/// types they are compiled for, and the check that a program and the library were compiled with
/// the same settings.
///
/// The library must be compiled with the program's vector instruction set (Eigen's alignment of
/// heap arrays depends on it: a matrix allocated by code built for AVX and freed by code built
/// for SSE corrupts the heap). Under NFLOW_PRECOMPILED_INSTANCES this header therefore refers to
/// a symbol whose name carries EIGEN_MAX_ALIGN_BYTES and whether NFLOW_USE_BLAS is set; a
/// program built with other settings than the library fails to link, naming
/// nflow::instances_detail::abi_align<N>_blas<B>, instead of failing at run time. In one CMake
/// build (add_subdirectory, or nflow's own) both use the same flags.
///
/// The compiler may differ: the hooks' declared return types avoid alias templates (g++ and
/// clang++ mangle `std::remove_cvref_t` in a signature differently), so a library built by one
/// links with programs built by the other (the test command builds it with clang++ and links a
/// g++ program against it).

#include <Eigen/Core>

#include "nflow/core/types.hpp"

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
#define NFLOW_DETAIL_INSTANCE_PASS(EXT, L, S, X, C)                                              \
  EXT template detail::ResultFor<S, Dynamic, X> L::forward_impl<X, C>(const X&, const C&) const; \
  EXT template detail::ResultFor<S, Dynamic, X> L::inverse_impl<X, C>(const X&, const C&) const;

/// The passes for every input and context type nflow's entry points hand a layer: a batch, a
/// tile of one, one point; no context, or one of the same kind.
#define NFLOW_DETAIL_INSTANCE_PASSES(EXT, L, S)                                                   \
  NFLOW_DETAIL_INSTANCE_PASS(EXT, L, S, instances_detail::Matrix<S>, NoContext)                   \
  NFLOW_DETAIL_INSTANCE_PASS(EXT, L, S, instances_detail::Matrix<S>, instances_detail::Matrix<S>) \
  NFLOW_DETAIL_INSTANCE_PASS(EXT, L, S, instances_detail::Matrix<S>, instances_detail::Tile<S>)   \
  NFLOW_DETAIL_INSTANCE_PASS(EXT, L, S, instances_detail::Tile<S>, NoContext)                     \
  NFLOW_DETAIL_INSTANCE_PASS(EXT, L, S, instances_detail::Tile<S>, instances_detail::Tile<S>)     \
  NFLOW_DETAIL_INSTANCE_PASS(EXT, L, S, instances_detail::Tile<S>, instances_detail::Matrix<S>)   \
  NFLOW_DETAIL_INSTANCE_PASS(EXT, L, S, instances_detail::Point<S>, NoContext)                    \
  NFLOW_DETAIL_INSTANCE_PASS(EXT, L, S, instances_detail::Point<S>, instances_detail::Point<S>)

/// The recorded forward pass and its vjp of layer L for context type C (train::fit's calls).
#define NFLOW_DETAIL_INSTANCE_TAPE(EXT, L, S, C)                                                 \
  EXT template ValueAndLogDet<S, Dynamic, Dynamic> L::record_forward_impl<C>(                    \
      const Batch<S, Dynamic, Dynamic>&, const C&, L::Tape&) const;                              \
  EXT template Batch<S, Dynamic, Dynamic>                                                        \
  L::taped_vjp_impl<instances_detail::Matrix<S>, instances_detail::RowVector<S>, C>(             \
      const L::Tape&, const instances_detail::Matrix<S>&, const instances_detail::RowVector<S>&, \
      Eigen::Ref<Vector<S>>, const C&, ContextGradient<S>*) const;

/// GRADIENTS(EXT, L, S, C) for each context type: none, a batch, a tile.
#define NFLOW_DETAIL_INSTANCE_CONTEXTS(GRADIENTS, EXT, L, S) \
  GRADIENTS(EXT, L, S, NoContext)                            \
  GRADIENTS(EXT, L, S, instances_detail::Matrix<S>)          \
  GRADIENTS(EXT, L, S, instances_detail::Tile<S>)

/// The settings check, expanded in a namespace of each compiled library's headers (here for
/// nflow::instances, in nflow/io/model.hpp for nflow::runtime): it refers to a constant whose name
/// carries the settings, which only the library defines (NFLOW_DETAIL_SETTINGS_DEFINITION, in the
/// same namespace of one of its sources). A program with other settings fails to link, naming
/// <namespace>::abi_align<N>_blas<B>.
#if defined(__GNUC__)
#define NFLOW_DETAIL_SETTINGS_CHECK()          \
  extern const int NFLOW_DETAIL_INSTANCES_TAG; \
  [[gnu::used]] static const int* const abi_check = &NFLOW_DETAIL_INSTANCES_TAG;
#else
#define NFLOW_DETAIL_SETTINGS_CHECK() extern const int NFLOW_DETAIL_INSTANCES_TAG;
#endif
#define NFLOW_DETAIL_SETTINGS_DEFINITION()     \
  extern const int NFLOW_DETAIL_INSTANCES_TAG; \
  const int NFLOW_DETAIL_INSTANCES_TAG = 1;

#ifdef NFLOW_PRECOMPILED_INSTANCES
namespace nflow::instances_detail {
NFLOW_DETAIL_SETTINGS_CHECK()
}  // namespace nflow::instances_detail
#endif
