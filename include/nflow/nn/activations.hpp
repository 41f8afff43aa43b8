#pragma once
/// @file
/// @brief Elementwise activation functions as compile-time policies, each with its backward pass.
///
/// An activation is a struct with only static members:
/// - `name`: a short lower-case name ("relu", "tanh", ...);
/// - `BackwardFromOutput`: true when the derivative is computed from the activation's *output*
///   y = f(a), false when it needs the *pre-activation* a;
/// - `apply(x)`: replaces every coefficient of `x` by f(x), in place;
/// - `backward(value, grad)`: multiplies `grad` in place, coefficient by coefficient, by f'(a),
///   where `value` holds y = f(a) if `BackwardFromOutput`, else a.
///
/// `x`, `value` and `grad` may be any dense Eigen object or writable block (matrix or array), for
/// instance `h`, `h.array()` or `h.middleCols(j, n)`. The maps are coefficient-wise, so a NaN in
/// one coefficient never reaches another. A NaN input gives a NaN output for every activation
/// (ReLU included).

#include <Eigen/Core>
#include <concepts>
#include <type_traits>

#include "nflow/math/functions.hpp"

namespace nflow::detail {

/// max(a, b) and min(a, b) that return NaN when either argument is NaN, vectorised. (Eigen 3.4's
/// public `max`/`min` leave the NaN case unspecified; its functors take the policy as a template
/// argument.)
template <typename Scalar>
using MaxPropagatingNaN = Eigen::internal::scalar_max_op<Scalar, Scalar, Eigen::PropagateNaN>;
template <typename Scalar>
using MinPropagatingNaN = Eigen::internal::scalar_min_op<Scalar, Scalar, Eigen::PropagateNaN>;

/// max(a, 0) coefficient-wise, NaN-propagating.
template <typename A>
auto max_with_zero(const A& a) {
  using S = typename A::Scalar;
  return a.binaryExpr(A::Zero(a.rows(), a.cols()), MaxPropagatingNaN<S>());
}

/// min(a, 0) coefficient-wise, NaN-propagating.
template <typename A>
auto min_with_zero(const A& a) {
  using S = typename A::Scalar;
  return a.binaryExpr(A::Zero(a.rows(), a.cols()), MinPropagatingNaN<S>());
}

/// (g, y) ↦ g if y > 0 else 0, vectorised through a compare and a bitwise and (Eigen 3.4's
/// `select` is evaluated one coefficient at a time, several times slower than a GEMM's share).
template <typename Scalar>
struct PassWherePositiveOp {
  using result_type = Scalar;
  Scalar operator()(const Scalar& g, const Scalar& y) const {
    return y > Scalar(0) ? g : Scalar(0);
  }
  template <typename Packet>
  Packet packetOp(const Packet& g, const Packet& y) const {
    return Eigen::internal::pand(g, Eigen::internal::pcmp_lt(Eigen::internal::pzero(y), y));
  }
};

}  // namespace nflow::detail

namespace Eigen::internal {
template <typename Scalar>
struct functor_traits<nflow::detail::PassWherePositiveOp<Scalar>> {
  enum { Cost = 2 * NumTraits<Scalar>::AddCost, PacketAccess = packet_traits<Scalar>::HasCmp };
};
}  // namespace Eigen::internal

namespace nflow::detail {

/// Shared entry points: accept lvalues and rvalue blocks, matrices and arrays, and forward to
/// the policy's array hooks `apply_array(a)` and `backward_array(value, grad)`.
template <typename Policy>
struct ActivationEntryPoints {
  /// Replaces every coefficient of `x` by f(x).
  template <typename Derived>
  static void apply(Eigen::DenseBase<Derived>& x) {
    auto&& a = x.derived().array();
    Policy::apply_array(a);
  }
  /// Rvalue overload, for blocks: `apply(h.middleCols(j, n))`.
  template <typename Derived>
  static void apply(Eigen::DenseBase<Derived>&& x) {
    apply(x);
  }
  /// Multiplies `grad` in place by f'(a), with `value` = f(a) or a (see `BackwardFromOutput`).
  template <typename ValueDerived, typename GradDerived>
  static void backward(const Eigen::DenseBase<ValueDerived>& value,
                       Eigen::DenseBase<GradDerived>& grad) {
    eigen_assert(value.rows() == grad.rows() && value.cols() == grad.cols());
    auto&& g = grad.derived().array();
    Policy::backward_array(value.derived().array(), g);
  }
  /// Rvalue overload, for blocks of the gradient.
  template <typename ValueDerived, typename GradDerived>
  static void backward(const Eigen::DenseBase<ValueDerived>& value,
                       Eigen::DenseBase<GradDerived>&& grad) {
    backward(value, grad);
  }
};

}  // namespace nflow::detail

namespace nflow::nn {

/// @brief The identity, f(a) = a, f'(a) = 1. Apply and backward do nothing.
struct Identity : detail::ActivationEntryPoints<Identity> {
  static constexpr const char* name = "identity";
  static constexpr bool BackwardFromOutput = true;

  template <typename A>
  static void apply_array(A&) {}
  template <typename V, typename G>
  static void backward_array(const V&, G&) {}
};

/// @brief Rectified linear unit, f(a) = max(a, 0), f'(a) = [a > 0] (0 at the kink).
///
/// Backward from the output: f'(a) = [y > 0]. NaN maps to NaN (not to 0, as a plain max might);
/// the gradient at a NaN output is 0.
struct ReLU : detail::ActivationEntryPoints<ReLU> {
  static constexpr const char* name = "relu";
  static constexpr bool BackwardFromOutput = true;

  template <typename A>
  static void apply_array(A& a) {
    a = detail::max_with_zero(a);
  }
  template <typename V, typename G>
  static void backward_array(const V& y, G& g) {
    using S = typename std::remove_cvref_t<G>::Scalar;
    g = g.binaryExpr(y, detail::PassWherePositiveOp<S>());
  }
};

/// @brief Hyperbolic tangent, f(a) = tanh(a), f'(a) = 1 − tanh²(a).
///
/// Backward from the output: f'(a) = 1 − y².
struct Tanh : detail::ActivationEntryPoints<Tanh> {
  static constexpr const char* name = "tanh";
  static constexpr bool BackwardFromOutput = true;

  template <typename A>
  static void apply_array(A& a) {
    a = a.tanh();
  }
  template <typename V, typename G>
  static void backward_array(const V& y, G& g) {
    using S = typename std::remove_cvref_t<G>::Scalar;
    g *= S(1) - y.square();
  }
};

/// @brief Sigmoid-weighted linear unit (swish), f(a) = a·σ(a),
/// f'(a) = σ(a)·(1 + a·(1 − σ(a))).
///
/// Backward from the pre-activation a (the output alone does not determine a).
/// References: Elfwing, Uchibe, Doya 2018 (arXiv:1702.03118); Ramachandran et al. 2017.
struct SiLU : detail::ActivationEntryPoints<SiLU> {
  static constexpr const char* name = "silu";
  static constexpr bool BackwardFromOutput = false;

  template <typename A>
  static void apply_array(A& a) {
    a = a * nflow::sigmoid(a);
  }
  template <typename V, typename G>
  static void backward_array(const V& a, G& g) {
    using S = typename std::remove_cvref_t<G>::Scalar;
    const auto s = nflow::sigmoid(a);
    g *= s * (S(1) + a * (S(1) - s));
  }
};

/// @brief Exponential linear unit with α = 1 (PyTorch's default), f(a) = a for a > 0 and
/// exp(a) − 1 otherwise; f'(a) = 1 for a > 0 and exp(a) otherwise.
///
/// Backward from the output: f'(a) = 1 if y > 0, else y + 1, i.e. min(y, 0) + 1. For a ≤ 0 the
/// value is computed as exp(a) − 1, with an absolute error of order ε near 0 (expm1 would be
/// exact there, but Eigen 3.4 evaluates it 2–3 times slower than exp). References: Clevert,
/// Unterthiner, Hochreiter 2016 (arXiv:1511.07289).
struct ELU : detail::ActivationEntryPoints<ELU> {
  static constexpr const char* name = "elu";
  static constexpr bool BackwardFromOutput = true;

  template <typename A>
  static void apply_array(A& a) {
    using S = typename std::remove_cvref_t<A>::Scalar;
    // max(a, 0) + exp(min(a, 0)) − 1: no select, so every term is vectorised.
    a = detail::max_with_zero(a) + (detail::min_with_zero(a).exp() - S(1));
  }
  template <typename V, typename G>
  static void backward_array(const V& y, G& g) {
    using S = typename std::remove_cvref_t<G>::Scalar;
    g *= detail::min_with_zero(y) + S(1);
  }
};

/// @brief An activation policy: a type with `name`, `BackwardFromOutput`, and static
/// `apply(x)` and `backward(value, grad)` acting in place on Eigen objects (see activations.hpp).
template <typename A>
concept ActivationPolicy = requires(Eigen::ArrayXXd& x, Eigen::MatrixXf& y) {
  { A::name } -> std::convertible_to<const char*>;
  { A::BackwardFromOutput } -> std::convertible_to<bool>;
  A::apply(x);
  A::apply(y);
  A::backward(x, x);
  A::backward(y, y);
};

}  // namespace nflow::nn
