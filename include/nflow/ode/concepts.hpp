#pragma once
/// @file
/// @brief The concepts of nflow's continuous flows: VectorField (what flow matching and the
/// solvers' callers need of a time-dependent field f(z, t, c)) and HasVectorField (a flow that
/// exposes the field it integrates, as nflow::ContinuousFlow does).

#include <Eigen/Core>
#include <concepts>
#include <type_traits>

#include "nflow/core/types.hpp"

namespace nflow::ode {

/// @brief A trainable vector field f(z, t, c) on batches: `value(t, z, c)` evaluates it with one
/// time per column (t is 1 × N, z is dim() × N, c is context_dim() × N or empty) and
/// `value_backward(t, z, c, gf, grad)` is its reverse mode (returns ∂L/∂z given gf = ∂L/∂f and
/// ADDS ∂L/∂θ into grad, a flat vector of parameter_count() entries in the field's visiting
/// order). ode::MLPVectorField models it; so can a user's own field.
template <typename F>
concept VectorField = requires(const F& f, const Eigen::Matrix<typename F::Scalar, 1, Dynamic>& t,
                               const Eigen::Matrix<typename F::Scalar, Dynamic, Dynamic>& z,
                               Eigen::Ref<Vector<typename F::Scalar>> grad) {
  typename F::Scalar;
  { f.dim() } -> std::convertible_to<Index>;
  { f.context_dim() } -> std::convertible_to<Index>;
  { f.parameter_count() } -> std::convertible_to<Index>;
  { f.value(t, z, z) } -> std::convertible_to<Eigen::Matrix<typename F::Scalar, Dynamic, Dynamic>>;
  {
    f.value_backward(t, z, z, z, grad)
    } -> std::convertible_to<Eigen::Matrix<typename F::Scalar, Dynamic, Dynamic>>;
};

/// @brief A flow whose map is the solution of an ODE with a VectorField it exposes as `field()`
/// (const and non-const), with the same Scalar, dimension, context size and parameters.
template <typename Flow>
concept HasVectorField = requires(const Flow& flow) {
  typename Flow::Scalar;
  requires VectorField<std::remove_cvref_t<decltype(flow.field())>>;
  { flow.dim() } -> std::convertible_to<Index>;
  { flow.context_dim() } -> std::convertible_to<Index>;
  { flow.parameter_count() } -> std::convertible_to<Index>;
};

}  // namespace nflow::ode
