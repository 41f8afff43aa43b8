#pragma once
/// @file
/// @brief Vocabulary types shared by every bijector: batches, per-sample log-dets, the
/// `{value, log_det}` result, the empty context tag and the cost traits.
///
/// Layout: a batch is `Dim × N`, one sample per column (Eigen is column-major, so a sample is
/// contiguous). A single point is `Dim × 1`. Log-dets and log-probs are `1 × N`, one per column.

#include <Eigen/Core>
#include <type_traits>

namespace nflow {

using Index = Eigen::Index;
inline constexpr int Dynamic = Eigen::Dynamic;

/// A batch of `Cols` samples of dimension `Dim` (either may be Eigen::Dynamic).
template <typename Scalar, int Dim, int Cols = Dynamic>
using Batch = Eigen::Matrix<Scalar, Dim, Cols>;

/// One value per sample (a row vector; 1 × 1 for a single point).
template <typename Scalar, int Cols = Dynamic>
using PerSample = Eigen::Matrix<Scalar, 1, Cols>;

/// A flat vector, as used for all of a model's parameters or their gradients.
template <typename Scalar>
using Vector = Eigen::Matrix<Scalar, Dynamic, 1>;

/// The dense matrix type every parameter is seen as when visited by name.
template <typename Scalar>
using ParameterMatrix = Eigen::Matrix<Scalar, Dynamic, Dynamic>;

/// @brief Where a vector-Jacobian product adds ∂L/∂c, the gradient with respect to the context
/// (context_dim × N, one column per sample): the optional trailing `grad_context` pointer of the
/// vjps (nullptr: not wanted). Sized by the caller; the call adds into it (docs/gradients.md).
template <typename Scalar>
using ContextGradient = Eigen::Matrix<Scalar, Dynamic, Dynamic>;

/// @brief What a fused call returns: the transformed batch and one log|det J| per sample.
///
/// `log_det(j)` is the natural log of the absolute Jacobian determinant of the map that was
/// applied, at sample `j`.
template <typename Scalar, int Dim, int Cols>
struct ValueAndLogDet {
  Batch<Scalar, Dim, Cols> value;
  PerSample<Scalar, Cols> log_det;
};

/// @brief Tag for "no context": unconditional calls pass this instead of a context batch.
struct NoContext {};
inline constexpr NoContext no_context{};

template <typename T>
inline constexpr bool is_no_context_v = std::is_same_v<std::remove_cvref_t<T>, NoContext>;

/// @brief How many sequential passes a direction of a bijector takes.
enum class Cost {
  OnePass,    ///< one pass over the batch (coupling layers, MAF's forward, IAF's inverse)
  DimPasses,  ///< `Dim` sequential passes (MAF's inverse, IAF's forward)
  Iterative,  ///< an iterative solve (an ODE integration, a root search)
};

/// Combines the costs of the steps of a composition: the most expensive one wins.
constexpr Cost max_cost(Cost a, Cost b) {
  return static_cast<int>(a) >= static_cast<int>(b) ? a : b;
}

/// Scalar type of an Eigen expression or of a bijector.
template <typename T>
using scalar_t = typename std::remove_cvref_t<T>::Scalar;

/// @brief The batch type a bijector of (Scalar, Dim) returns for an input expression `X`: `X`'s
/// column count is kept (fixed for a single point, so that path never allocates).
template <typename Scalar, int Dim, typename X>
using BatchFor = Batch<Scalar, Dim, std::remove_cvref_t<X>::ColsAtCompileTime>;
/// @brief The `{value, log_det}` result a hook returns for an input expression `X`.
template <typename Scalar, int Dim, typename X>
using ResultFor = ValueAndLogDet<Scalar, Dim, std::remove_cvref_t<X>::ColsAtCompileTime>;
/// @brief The per-sample row (log-dets) for an input expression `X`.
template <typename Scalar, typename X>
using PerSampleFor = PerSample<Scalar, std::remove_cvref_t<X>::ColsAtCompileTime>;

namespace detail {
/// The result types of bijector B's calls on input X (B's Scalar and Dim; X's column count), for
/// declarations that must not deduce their return type: a requires-clause or concept check of a
/// call whose return type is deduced instantiates the whole body and everything it calls.
template <typename B, typename X>
using ResultOf =
    ValueAndLogDet<typename B::Scalar, B::Dim, std::remove_cvref_t<X>::ColsAtCompileTime>;
template <typename B, typename X>
using BatchOf = Batch<typename B::Scalar, B::Dim, std::remove_cvref_t<X>::ColsAtCompileTime>;
// The names the headers used before they were public.
using nflow::BatchFor;
using nflow::PerSampleFor;
using nflow::ResultFor;
}  // namespace detail

}  // namespace nflow
