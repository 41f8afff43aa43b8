#pragma once
/// @file
/// @brief Inverted<B>: the bijector B used the other way round.

#include <utility>

#include "nflow/core/bijector_base.hpp"
#include "nflow/core/buffers.hpp"
#include "nflow/core/composite.hpp"
#include "nflow/core/concepts.hpp"
#include "nflow/core/flow_gradients.hpp"

namespace nflow {

/// @brief The inverse of a bijector as a bijector: forward = B's inverse, inverse = B's forward.
///
/// forward(x) = B⁻¹(x) with log-det log|det ∂B⁻¹/∂x|; inverse(z) = B(z). The costs swap (an
/// inverted MAF layer is an IAF layer: one-pass sampling, Dim-pass density). Parameters keep
/// B's names unchanged.
/// @tparam B any nflow::Bijector.
template <typename B>
class Inverted : public BijectorBase<Inverted<B>> {
  static_assert(Bijector<B>, "nflow::Inverted<B>: B must model nflow::Bijector");
  static_assert(detail::CheckParameterMembers<0, B>::ok);

 public:
  using Scalar = typename B::Scalar;
  static constexpr int Dim = B::Dim;
  static constexpr int ContextDim = context_dim_v<B>;
  static constexpr bool IsConstantLogDet = is_constant_log_det_v<B>;
  static constexpr Cost ForwardCost = inverse_cost_v<B>;
  static constexpr Cost InverseCost = forward_cost_v<B>;

  Inverted() requires std::default_initializable<B>
  = default;
  explicit Inverted(B inner) : inner_(std::move(inner)) {}

  const B& inner() const { return inner_; }
  B& inner() { return inner_; }

  Index dim() const { return inner_.dim(); }
  Index context_dim() const {
    if constexpr (is_conditional_v<B>) {
      return inner_.context_dim();
    } else {
      return 0;
    }
  }
  /// The parameters of B, under the same names.
  template <typename Self, typename F>
  static void parameters_impl(Self& self, F&& f) {
    detail::visit_part_parameters(self.inner_, std::string(), f);
  }
  /// The wrapped bijector's buffers, under the same names.
  template <typename F>
  void visit_buffers(F&& f) {
    detail::visit_prefixed_buffers(inner_, std::string(), f);
  }
  template <typename F>
  void visit_buffers(F&& f) const {
    detail::visit_prefixed_buffers(inner_, std::string(), f);
  }

  template <typename X, typename C>
  detail::ResultFor<Scalar, Dim, X> forward_impl(const X& x, const C& ctx) const {
    return with_context<B>(ctx,
                           [&](const auto&... c) { return inner_.inverse_and_log_det(x, c...); });
  }
  template <typename Z, typename C>
  detail::ResultFor<Scalar, Dim, Z> inverse_impl(const Z& z, const C& ctx) const {
    return with_context<B>(ctx,
                           [&](const auto&... c) { return inner_.forward_and_log_det(z, c...); });
  }
  /// (gc: ∂L/∂c is added into it when not null; B's vjp of the other direction computes it.)
  template <typename X, typename GV, typename GL, typename C>
  requires InverseDifferentiable<B> detail::BatchFor<Scalar, Dim, X> forward_vjp_impl(
      const X& x, const GV& gv, const GL& gl, Eigen::Ref<Vector<Scalar>> gp, const C& ctx,
      ContextGradient<Scalar>* gc = nullptr)
  const { return detail::step_vjp_in_context<true>(inner_, x, gv, gl, gp, ctx, gc); }
  template <typename Z, typename GV, typename GL, typename C>
  requires ForwardDifferentiable<B> detail::BatchFor<Scalar, Dim, Z> inverse_vjp_impl(
      const Z& z, const GV& gv, const GL& gl, Eigen::Ref<Vector<Scalar>> gp, const C& ctx,
      ContextGradient<Scalar>* gc = nullptr)
  const { return detail::step_vjp_in_context<false>(inner_, z, gv, gl, gp, ctx, gc); }

 private:
  B inner_;
};

}  // namespace nflow
