#pragma once
/// @file
/// @brief Training objectives: negative log-likelihood (forward KL), reverse KL against an
/// unnormalised log-density, and their weighted sum. Each returns the loss and adds its gradient
/// into a flat gradient vector laid out like the density's parameters.

#include <cmath>
#include <random>
#include <type_traits>
#include <utility>

#include "nflow/core/bijector_base.hpp"
#include "nflow/core/concepts.hpp"
#include "nflow/core/errors.hpp"
#include "nflow/core/types.hpp"

namespace nflow::train {

/// @brief What train::nll records into: the tape of the density's transform (nflow::tape_t).
/// Give the same one to every step of a training loop (one per thread) and its buffers are
/// reused instead of allocated afresh each step.
template <typename D>
using NllTape = tape_t<decltype(std::declval<const D&>().transform())>;

/// @brief Mean negative log-likelihood of a batch, −(1/N) Σⱼ log p(xⱼ [| cⱼ]); adds its gradient
/// with respect to every parameter of `density` (base and transform) into `grad`, recording the
/// forward pass into `tape` (reused buffers; see NllTape).
///
/// One recorded forward pass gives the loss; the backward pass reads what it recorded
/// (forward_and_vjp; see docs/gradients.md). A non-finite sample makes the loss non-finite (the
/// fit loop stops on it).
template <typename D, typename X, ContextArg C>
double nll(const D& density, const Eigen::MatrixBase<X>& x,
           Eigen::Ref<Vector<typename D::Scalar>> grad, const C& context, NllTape<D>& tape) {
  using Scalar = typename D::Scalar;
  detail::check_size("train::nll", "grad", density.parameter_count(), grad.size());
  const Index n = x.cols();
  if (n == 0) throw ShapeError("nflow::train::nll: the batch is empty");
  const Index nb = density.base().parameter_count();
  double loss = 0;
  // d(loss)/d(log p(x_j)) = −1/n for every sample; log p = log p_base(z) + log_det.
  auto seed = [&](const auto& z, const auto& log_det, auto& grad_z, auto& grad_log_det) {
    const PerSample<Scalar, Dynamic> lp = density.base().log_prob(z) + log_det;
    loss = -double(lp.template cast<double>().mean());
    grad_log_det.setConstant(Scalar(-1) / Scalar(n));
    grad_z = density.base().log_prob_vjp(z, grad_log_det, grad.head(nb));
  };
  density.transform().forward_and_vjp(x, seed, grad.tail(grad.size() - nb), context, tape);
  return loss;
}

/// @brief nll() with a tape of its own (allocated for this call).
template <typename D, typename X, ContextArg C = NoContext>
double nll(const D& density, const Eigen::MatrixBase<X>& x,
           Eigen::Ref<Vector<typename D::Scalar>> grad, const C& context = C{}) {
  NllTape<D> tape;
  return nll(density, x, grad, context, tape);
}

/// @brief Mean negative log-likelihood without gradients (for validation).
template <typename D, typename X, ContextArg C = NoContext>
double nll_value(const D& density, const Eigen::MatrixBase<X>& x, const C& context = C{}) {
  return -double(density.log_prob(x, context).template cast<double>().mean());
}

/// @brief An unnormalised target log p̃(x) for reverse-KL training: `log_prob(x)` returns 1 × N,
/// `grad_log_prob(x)` returns ∇ₓ log p̃ as Dim × N. Wrap two callables with make_target().
template <typename LogProb, typename Grad>
struct Target {
  LogProb log_prob;
  Grad grad_log_prob;
};
template <typename LogProb, typename Grad>
Target<LogProb, Grad> make_target(LogProb log_prob, Grad grad_log_prob) {
  return {std::move(log_prob), std::move(grad_log_prob)};
}

/// @brief Reverse KL, KL(q‖p) up to the target's unknown log Z:
///   loss = (1/n) Σ [log q(xⱼ) − log p̃(xⱼ)],  xⱼ = T⁻¹(zⱼ), zⱼ ~ base,
/// with log q(x) = log p_base(z) − log|det ∂T⁻¹/∂z|. Adds the reparameterised gradient with
/// respect to the transform's parameters into `grad` (the base's parameters get none: the base is
/// held fixed in this objective). Needs an InverseDifferentiable transform (coupling layers, IAF).
/// Returns the loss; KL(q‖p) = loss + log Z ≥ 0.
template <typename D, typename T, std::uniform_random_bit_generator G>
double reverse_kl(const D& density, const T& target, Index n, G& gen,
                  Eigen::Ref<Vector<typename D::Scalar>> grad) requires
    InverseDifferentiable<std::remove_cvref_t<decltype(density.transform())>> {
  using Scalar = typename D::Scalar;
  detail::check_size("train::reverse_kl", "grad", density.parameter_count(), grad.size());
  if (n <= 0) throw ShapeError("nflow::train::reverse_kl: the number of samples must be positive");
  const Batch<Scalar, D::Dim, Dynamic> z = density.base().sample(n, gen);
  const auto r = density.transform().inverse_and_log_det(z);
  const PerSample<Scalar, Dynamic> log_q = density.base().log_prob(z) - r.log_det;
  const PerSample<Scalar, Dynamic> log_p = target.log_prob(r.value);
  detail::check_cols("train::reverse_kl", "target log_prob", n, log_p.rows(), log_p.cols());
  const Batch<Scalar, D::Dim, Dynamic> score = target.grad_log_prob(r.value);
  detail::check_rows("train::reverse_kl", "target gradient", density.dim(), score.rows(),
                     score.cols());
  // ∂loss/∂x = −∇ log p̃ / n; ∂loss/∂(inverse log-det) = −1/n.
  const Scalar inv_n = Scalar(1) / Scalar(n);
  const Batch<Scalar, D::Dim, Dynamic> gv = -inv_n * score;
  const PerSample<Scalar, Dynamic> gl = PerSample<Scalar, Dynamic>::Constant(1, n, -inv_n);
  const Index nb = density.base().parameter_count();
  density.transform().inverse_vjp(z, gv, gl, grad.tail(grad.size() - nb));
  return double((log_q - log_p).template cast<double>().mean());
}

}  // namespace nflow::train
