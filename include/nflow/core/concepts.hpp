#pragma once
/// @file
/// @brief The Bijector concept and its trainable refinements.

#include <concepts>
#include <string>
#include <utility>

#include "nflow/core/traits.hpp"
#include "nflow/core/types.hpp"

namespace nflow {

/// @brief A Bijector is an invertible map of `Dim`-dimensional samples with a tractable log-det.
///
/// It names its `Scalar` and compile-time `Dim` (or Eigen::Dynamic, with `dim()` at run time), and
/// maps a `Dim × N` batch both ways with `forward_and_log_det` and `inverse_and_log_det`, each
/// returning `{value, log_det}` (see types.hpp). Deriving from nflow::BijectorBase supplies the
/// rest of the API; any type with these members composes in a Flow.
template <typename B>
concept Bijector = requires {
  typename B::Scalar;
  { B::Dim } -> std::convertible_to<int>;
}
&&requires(const B& b, const Batch<typename B::Scalar, B::Dim, Dynamic>& x) {
  { b.dim() } -> std::convertible_to<Index>;
  b.forward_and_log_det(x);
  b.inverse_and_log_det(x);
};

/// @brief A Bijector with parameters visited by name: `parameter_count()` and
/// `visit_parameters(f)` calling `f(name, Eigen::Ref<ParameterMatrix<Scalar>>)` for each tensor.
template <typename B>
concept Parameterized = Bijector<B> && requires(B& b, const B& cb) {
  { cb.parameter_count() } -> std::convertible_to<Index>;
  b.visit_parameters([](const std::string&, Eigen::Ref<ParameterMatrix<typename B::Scalar>>) {});
  cb.visit_parameters(
      [](const std::string&, Eigen::Ref<const ParameterMatrix<typename B::Scalar>>) {});
};

/// @brief A Bijector with an exact reverse-mode gradient of its forward direction:
/// `forward_vjp(x, grad_value, grad_log_det, grad_params)` returns ∂L/∂x and adds ∂L/∂θ into
/// `grad_params` (laid out as the parameter visit order, each tensor column-major).
template <typename B>
concept ForwardDifferentiable = Parameterized<B> &&
    requires(const B& b, const Batch<typename B::Scalar, B::Dim, Dynamic>& x,
             const PerSample<typename B::Scalar, Dynamic>& g, Vector<typename B::Scalar>& gp) {
  b.forward_vjp(x, x, g, gp);
};

/// @brief Like ForwardDifferentiable, for the inverse (sampling) direction.
template <typename B>
concept InverseDifferentiable = Parameterized<B> &&
    requires(const B& b, const Batch<typename B::Scalar, B::Dim, Dynamic>& x,
             const PerSample<typename B::Scalar, Dynamic>& g, Vector<typename B::Scalar>& gp) {
  b.inverse_vjp(x, x, g, gp);
};

/// @brief An elementwise transformer: the map a coupling or autoregressive structure applies to
/// the features it transforms, given the parameters its conditioner produces (the contract of
/// nflow/bijectors/transformers/affine.hpp).
///
/// It names its `Scalar` and `static constexpr int ParamsPerDim`, and has
/// `forward(x, params, z, log_det)`, `inverse(z, params, x, log_det)`,
/// `forward_backward(x, params, grad_z, grad_log_det, grad_x, grad_params)` and
/// `inverse_backward(z, params, grad_x, grad_log_det, grad_z, grad_params)` (outputs written into
/// the last arguments, log-dets added). Coupling and MaskedAutoregressive assert it first.
/// `ParamsPerDim` may be Dynamic (a count known at run time, as for a spline of run-time bin
/// count): the transformer then has `params_per_dim()`.
template <typename T>
concept Transformer = requires {
  typename T::Scalar;
  { T::ParamsPerDim } -> std::convertible_to<int>;
}
&&(T::ParamsPerDim >= 1 || (T::ParamsPerDim == Dynamic &&
                            requires(const T& t) {
                              { t.params_per_dim() } -> std::convertible_to<Index>;
                            })) &&
    requires(const T& t, const Eigen::Matrix<typename T::Scalar, Dynamic, Dynamic>& in,
             Eigen::Matrix<typename T::Scalar, Dynamic, Dynamic>& out,
             const Eigen::Matrix<typename T::Scalar, 1, Dynamic>& grad_log_det,
             Eigen::Matrix<typename T::Scalar, 1, Dynamic>& log_det) {
  t.forward(in, in, out, log_det);
  t.inverse(in, in, out, log_det);
  t.forward_backward(in, in, in, grad_log_det, out, out);
  t.inverse_backward(in, in, in, grad_log_det, out, out);
};

/// @brief A transformer that keeps what its forward pass computed for its backward pass (the
/// spline keeps its knots), so that a training step evaluates it once, not twice. Besides the
/// Transformer members it has a nested type `Tape` and
/// `forward_recorded(x, params, z, log_det, tape)` (forward() that also fills `tape`) and
/// `forward_backward_recorded(tape, x, params, grad_z, grad_log_det, grad_x, grad_params)`
/// (forward_backward() at the same x and params, from the tape; the same results to the bit).
/// Coupling and MaskedAutoregressive keep such a tape in their own (forward_recorded); for other
/// transformers (a nested `Tape` without both members is not enough) they call forward() and
/// forward_backward().
template <typename T>
concept RecordingTransformer = Transformer<T> && std::default_initializable<typename T::Tape> &&
    requires(const T& t, typename T::Tape& tape,
             const Eigen::Matrix<typename T::Scalar, Dynamic, Dynamic>& in,
             Eigen::Matrix<typename T::Scalar, Dynamic, Dynamic>& out,
             const Eigen::Matrix<typename T::Scalar, 1, Dynamic>& grad_log_det,
             Eigen::Matrix<typename T::Scalar, 1, Dynamic>& log_det) {
  t.forward_recorded(in, in, out, log_det, tape);
  t.forward_backward_recorded(std::as_const(tape), in, in, in, grad_log_det, out, out);
};

namespace detail {
/// The tape a layer keeps for its transformer: T::Tape, or an empty struct.
template <typename T>
struct TransformerTapeOf {
  struct type {};
};
template <RecordingTransformer T>
struct TransformerTapeOf<T> {
  using type = typename T::Tape;
};

/// t.forward(), filling `tape` when t keeps one.
template <typename T, typename X, typename P, typename Z, typename L>
void forward_recorded(const T& t, const X& x, const P& params, Z&& z, L&& log_det,
                      typename TransformerTapeOf<T>::type& tape) {
  if constexpr (RecordingTransformer<T>) {
    t.forward_recorded(x, params, z, log_det, tape);
  } else {
    (void)tape;
    t.forward(x, params, z, log_det);
  }
}

/// t.forward_backward(), from `tape` when t keeps one (recorded by forward_recorded above at the
/// same x and params).
template <typename T, typename X, typename P, typename GZ, typename GL, typename GX, typename GP>
void forward_backward_recorded(const T& t, const typename TransformerTapeOf<T>::type& tape,
                               const X& x, const P& params, const GZ& grad_z,
                               const GL& grad_log_det, GX&& grad_x, GP&& grad_params) {
  if constexpr (RecordingTransformer<T>) {
    t.forward_backward_recorded(tape, x, params, grad_z, grad_log_det, grad_x, grad_params);
  } else {
    (void)tape;
    t.forward_backward(x, params, grad_z, grad_log_det, grad_x, grad_params);
  }
}
}  // namespace detail

/// The raw parameters per feature of transformer `t`: T::ParamsPerDim, or t.params_per_dim()
/// when that is Dynamic.
template <Transformer T>
Index params_per_dim(const T& t) {
  if constexpr (T::ParamsPerDim == Dynamic) {
    return Index(t.params_per_dim());
  } else {
    (void)t;
    return Index(T::ParamsPerDim);
  }
}

}  // namespace nflow
