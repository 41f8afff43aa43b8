#pragma once
/// @file
/// @brief DynamicFlow<Scalar>: a sequence of AnyBijector<Scalar> steps whose number and kinds are
/// chosen at run time, itself a bijector — the run-time counterpart of Flow<B1, ..., Bn>.
///
/// It is Stack<AnyBijector<Scalar>> (nflow/core/stack.hpp): the fold, the vjps, the names and the
/// checks are Stack's, with the capabilities each held bijector answers at run time. Same
/// conventions as Flow (docs/conventions.md): forward applies step 0 first and adds the log-dets;
/// inverse applies the last step's inverse first; a context reaches the conditional steps (those
/// with context_dim() > 0) only; step i's parameters and buffers are named "<i>.<name>". A
/// DynamicFlow and the Flow<...> of the same steps have the same parameter and buffer names, the
/// same flat parameter layout and the same numbers, so each loads the other's files.

#include "nflow/core/any_bijector.hpp"
#include "nflow/core/stack.hpp"

namespace nflow {

/// @brief The composition of a run-time sequence of bijectors, itself a bijector (Dim =
/// ContextDim = Eigen::Dynamic): Stack<AnyBijector<Scalar>>.
///
/// forward(x) = Tₙ₋₁(…T₁(T₀(x))), log-det Σᵢ log|det J_Tᵢ|; inverse(z) = T₀⁻¹(…Tₙ₋₁⁻¹(z)).
/// Build it with push_back(AnyBijector) or emplace_back(bijector, "name"); step(i), size() and
/// summary() ("<i>: <step.describe()>" per line) inspect it.
///
/// Class invariant (Stack's): every step has the dimension of step 0, and every conditional step
/// the same context dimension; push_back and the constructor check it and throw
/// nflow::ParameterError naming the step's index and name().
///
/// An empty DynamicFlow is a flow under construction, not the identity: dim() and every call
/// throw nflow::UnsupportedError until a step is added. A flow read from a file with no layers is
/// almost certainly a broken file, and saying so beats an identity map of unknown size.
///
/// Capabilities: has_forward_vjp() (resp. has_inverse_vjp()) when every step has it; the vjps
/// throw nflow::UnsupportedError naming the first step that lacks it. Static traits are
/// conservative (IsConstantLogDet false, costs Cost::Iterative); is_constant_log_det(),
/// forward_cost() and inverse_cost() combine the steps' at run time.
///
/// Thread safety: a const DynamicFlow is safe to share between threads (as are the held
/// bijectors of nflow).
/// @tparam Scalar float or double.
template <typename Scalar>
using DynamicFlow = Stack<AnyBijector<Scalar>>;

}  // namespace nflow
