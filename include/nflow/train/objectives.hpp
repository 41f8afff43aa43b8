#pragma once
/// @file
/// @brief Training objectives: negative log-likelihood (forward KL), reverse KL against an
/// unnormalised log-density, and their weighted sum. Each returns the loss and adds its gradient
/// into a flat gradient vector laid out like the density's parameters.

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <utility>

#include "nflow/core/bijector_base.hpp"
#include "nflow/core/concepts.hpp"
#include "nflow/core/errors.hpp"
#include "nflow/core/types.hpp"
#include "nflow/math/functions.hpp"

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
  nflow::detail::check_size("train::nll", "grad", density.parameter_count(), grad.size());
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

template <typename D>
class ReverseKlWorkspace;

namespace detail {

/// A density whose transform has an inverse vjp (what reverse_kl differentiates).
template <typename D>
concept InverseTrainable =
    InverseDifferentiable<std::remove_cvref_t<decltype(std::declval<const D&>().transform())>>;

/// Columns per inverse pass (and inverse vjp) of train::reverse_kl: a batch is sent through the
/// transform in chunks of this many samples, so that a layer's temporaries (hidden width × 64
/// values: 32 KiB for a width of 64) stay below glibc's mmap threshold (128 KiB) and a step's
/// transient memory stays small; one big batch made glibc trim and re-grow the heap every step
/// (docs/performance.md). The gradient is a sum over samples, so the chunks change only its
/// rounding.
inline constexpr Index reverse_kl_chunk = 64;

/// The computation of train::reverse_kl, into a workspace (a friend of ReverseKlWorkspace).
/// Conditional: the workspace's contexts (context_dim × n) are given to the transform and to the
/// target, one column per sample.
struct ReverseKl {
  template <bool Conditional, typename D, typename T, typename G>
  static double run(const D& density, const T& target, Index n, G& gen,
                    Eigen::Ref<Vector<typename D::Scalar>> grad, ReverseKlWorkspace<D>& ws) {
    using Scalar = typename D::Scalar;
    nflow::detail::check_size("train::reverse_kl", "grad", density.parameter_count(), grad.size());
    if (n <= 0) {
      throw ShapeError("nflow::train::reverse_kl: the number of samples must be positive");
    }
    const auto& transform = density.transform();
    ws.complete_ = false;  // until the step has finished (a call that throws leaves it false)
    if constexpr (!Conditional) ws.context_.resize(0, 0);
    ws.z_ = density.base().sample(n, gen);
    ws.x_.resize(ws.z_.rows(), n);
    ws.log_q_ = density.base().log_prob(ws.z_);
    // x = T⁻¹(z) and log q = log p_base(z) − log|det ∂T⁻¹/∂z|, chunk by chunk.
    for_each_chunk<Conditional>(ws, n, [&](const auto& z, Index begin, Index m, const auto* c) {
      const auto r = transform.inverse_and_log_det(z, *c);
      ws.x_.middleCols(begin, m) = r.value;
      ws.log_q_.middleCols(begin, m) -= r.log_det;
    });
    {
      // Checked before they are stored (a wrong number of rows cannot go into a fixed-size
      // buffer); evaluated at once (a returned expression may refer to a converted argument).
      const auto log_p = call_target<Conditional>(target.log_prob, ws).eval();
      nflow::detail::check_rows("train::reverse_kl", "target log_prob", 1, log_p.rows(),
                                log_p.cols());
      nflow::detail::check_cols("train::reverse_kl", "target log_prob", n, log_p.rows(),
                                log_p.cols());
      ws.log_p_ = log_p;
    }
    const auto score = call_target<Conditional>(target.grad_log_prob, ws).eval();
    nflow::detail::check_rows("train::reverse_kl", "target gradient", density.dim(), score.rows(),
                              score.cols());
    nflow::detail::check_cols("train::reverse_kl", "target gradient", n, score.rows(),
                              score.cols());
    // ∂loss/∂x = −∇ log p̃ / n; ∂loss/∂(inverse log-det) = −1/n.
    const Scalar inv_n = Scalar(1) / Scalar(n);
    ws.grad_x_.resize(score.rows(), n);
    ws.grad_x_.noalias() = -inv_n * score;
    ws.grad_log_det_.setConstant(1, n, -inv_n);
    const Index nb = density.base().parameter_count();
    auto grad_transform = grad.tail(grad.size() - nb);
    for_each_chunk<Conditional>(ws, n, [&](const auto& z, Index begin, Index m, const auto* c) {
      if (m == n) {
        transform.inverse_vjp(z, ws.grad_x_, ws.grad_log_det_, grad_transform, *c);
      } else {
        ws.chunk_grad_x_ = ws.grad_x_.middleCols(begin, m);
        ws.chunk_grad_log_det_ = ws.grad_log_det_.middleCols(begin, m);
        transform.inverse_vjp(z, ws.chunk_grad_x_, ws.chunk_grad_log_det_, grad_transform, *c);
      }
    });
    ws.log_w_ = ws.log_p_ - ws.log_q_;
    ws.complete_ = true;
    // mean(log q − log p) = −mean(log w), exactly (negation commutes with rounding).
    return -double(ws.log_w_.template cast<double>().mean());
  }

  /// The conditional step: copies the contexts into the workspace, then run<true>.
  template <typename D, typename T, typename CM, typename G>
  static double run_conditional(const D& density, const T& target,
                                const Eigen::MatrixBase<CM>& contexts, G& gen,
                                Eigen::Ref<Vector<typename D::Scalar>> grad,
                                ReverseKlWorkspace<D>& ws) {
    ws.complete_ = false;
    ws.context_ = contexts.template cast<typename D::Scalar>();
    return run<true>(density, target, contexts.cols(), gen, grad, ws);
  }

 private:
  template <bool Conditional, typename F, typename W>
  static decltype(auto) call_target(const F& f, const W& ws) {
    if constexpr (Conditional) {
      return f(ws.x_, ws.context_);
    } else {
      return f(ws.x_);
    }
  }
  /// f(z_chunk, begin, m, context_chunk) for consecutive chunks of reverse_kl_chunk columns of
  /// ws.z_ and ws.context_ (unconditional: a pointer to a NoContext, the transform's calls'
  /// default context); the chunks are plain matrices (ws.z_ and ws.context_ themselves when one
  /// chunk holds the batch), so that the transform's calls are instantiated for one argument
  /// type.
  template <bool Conditional, typename W, typename F>
  static void for_each_chunk(W& ws, Index n, F&& f) {
    static constexpr NoContext none{};
    auto context = [&](bool whole) {
      if constexpr (Conditional) {
        return whole ? &ws.context_ : &ws.chunk_context_;
      } else {
        (void)whole;
        return &none;
      }
    };
    if (n <= reverse_kl_chunk) {
      f(ws.z_, Index(0), n, context(true));
      return;
    }
    for (Index begin = 0; begin < n; begin += reverse_kl_chunk) {
      const Index m = std::min(reverse_kl_chunk, n - begin);
      ws.chunk_z_ = ws.z_.middleCols(begin, m);
      if constexpr (Conditional) ws.chunk_context_ = ws.context_.middleCols(begin, m);
      f(ws.chunk_z_, begin, m, context(false));
    }
  }
};

}  // namespace detail

/// @brief What train::reverse_kl computes in a step, and the buffers it computes into: give the
/// same workspace to every step of a training loop (one per thread) and the step reuses them
/// instead of allocating afresh. After a call it holds that step's samples: the latents zⱼ, the
/// samples xⱼ = T⁻¹(zⱼ), log q(xⱼ), log p̃(xⱼ) and the log-weights log p̃(xⱼ) − log q(xⱼ), so
/// that a training loop can watch the effective sample size (or feed an
/// nflow::sampling::ImportanceAccumulator) without a second sampling pass. Empty before the
/// first call.
template <typename D>
class ReverseKlWorkspace {
 public:
  using Scalar = typename D::Scalar;
  using Samples = Batch<Scalar, D::Dim, Dynamic>;
  using Values = PerSample<Scalar, Dynamic>;

  /// The number of samples of the last step (0 before the first, and after a call that threw:
  /// the other accessors then hold a partial step, and ess() and log_z() throw).
  Index size() const { return complete_ ? x_.cols() : 0; }
  /// The last step's samples xⱼ = T⁻¹(zⱼ) (Dim × n).
  const Samples& samples() const { return x_; }
  /// The last step's latents zⱼ, drawn from the base (Dim × n).
  const Samples& latents() const { return z_; }
  /// The last step's contexts cⱼ (context_dim × n; empty after an unconditional step).
  const Batch<Scalar, Dynamic, Dynamic>& contexts() const { return context_; }
  /// log q(xⱼ) = log p_base(zⱼ) − log|det ∂T⁻¹/∂z| of the last step's samples (1 × n).
  const Values& log_prob() const { return log_q_; }
  /// The target's log p̃(xⱼ) of the last step's samples (1 × n).
  const Values& target_log_prob() const { return log_p_; }
  /// The importance log-weights log p̃(xⱼ) − log q(xⱼ) of the last step's samples (1 × n); the
  /// step's loss is minus their mean.
  const Values& log_weights() const { return log_w_; }
  /// log Ẑ = log((1/n) Σⱼ exp(log wⱼ)) of the last step's batch (log-sum-exp, in double): an
  /// estimate of the target's log-normaliser, low in expectation. −∞ if every weight is 0; NaN if
  /// a log-weight is NaN or +∞. @throws UnsupportedError before the first step.
  double log_z() const {
    const Eigen::Matrix<double, 1, Dynamic> lw = checked_log_weights("log_z");
    if (lw.hasNaN()) return std::numeric_limits<double>::quiet_NaN();
    return log_sum_exp(lw) - std::log(double(lw.size()));
  }
  /// Kish's effective sample size (Σⱼ wⱼ)² / Σⱼ wⱼ² of the last step's batch, in [1, n] (in log
  /// space, in double); 0 if every weight is 0, NaN if a log-weight is NaN or +∞.
  /// @throws UnsupportedError before the first step.
  double ess() const {
    const Eigen::Matrix<double, 1, Dynamic> lw = checked_log_weights("ess");
    if (lw.hasNaN()) return std::numeric_limits<double>::quiet_NaN();
    const double a = log_sum_exp(lw);
    if (a == -std::numeric_limits<double>::infinity()) return 0;
    return std::exp(2 * a - log_sum_exp(2 * lw));
  }

 private:
  friend struct detail::ReverseKl;
  Eigen::Matrix<double, 1, Dynamic> checked_log_weights(const char* what) const {
    if (!complete_) {
      throw UnsupportedError(std::string("nflow::train::ReverseKlWorkspace::") + what +
                             ": the workspace holds no complete step (pass it to "
                             "train::reverse_kl first; a call that threw leaves none)");
    }
    return log_w_.template cast<double>();
  }
  Samples z_, x_, grad_x_, chunk_z_, chunk_grad_x_;
  Values log_q_, log_p_, log_w_, grad_log_det_, chunk_grad_log_det_;
  Batch<Scalar, Dynamic, Dynamic> context_, chunk_context_;  // the conditional overload's
  bool complete_ = false;
};

/// @brief Reverse KL, KL(q‖p) up to the target's unknown log Z:
///   loss = (1/n) Σ [log q(xⱼ) − log p̃(xⱼ)],  xⱼ = T⁻¹(zⱼ), zⱼ ~ base,
/// with log q(x) = log p_base(z) − log|det ∂T⁻¹/∂z|. Adds the reparameterised gradient with
/// respect to the transform's parameters into `grad` (the base's parameters get none: the base is
/// held fixed in this objective). Needs an InverseDifferentiable transform (coupling layers, IAF).
/// Returns the loss; KL(q‖p) = loss + log Z ≥ 0.
///
/// Computes into `workspace` (reused buffers; see ReverseKlWorkspace), which afterwards holds the
/// step's samples and log-weights. The samples go through the transform in chunks of 64 (see
/// detail::reverse_kl_chunk).
/// @throws ShapeError if n ≤ 0, `grad` has the wrong size, or the target's log_prob is not 1 × n
///   or its gradient not Dim × n.
template <typename D, typename T, std::uniform_random_bit_generator G>
requires detail::InverseTrainable<D>
double reverse_kl(const D& density, const T& target, Index n, G& gen,
                  Eigen::Ref<Vector<typename D::Scalar>> grad, ReverseKlWorkspace<D>& workspace) {
  return detail::ReverseKl::run<false>(density, target, n, gen, grad, workspace);
}

/// @brief Conditional (amortised) reverse KL: trains q(x | c) against p̃(x | c) over a batch of
/// contexts, one sample per context column,
///   loss = (1/n) Σ [log q(xⱼ | cⱼ) − log p̃(xⱼ | cⱼ)],  xⱼ = T⁻¹(zⱼ; cⱼ), zⱼ ~ base,
/// with n = contexts.cols(). The target's callables take the context too:
/// `log_prob(x, c)` (1 × n) and `grad_log_prob(x, c)` (∇ₓ log p̃, Dim × n), c context_dim × n.
/// Draw the contexts from the distribution to amortise over (a prior, a design), e.g. fresh
/// each step. The loss estimates E_c[KL(q(·|c)‖p(·|c))] − E_c[log Z(c)]. The workspace's
/// log-weights are per sample, each with its own context, so its ess() and log_z() mix contexts:
/// they mean what they say when every column holds the same context. Everything else as the
/// unconditional overload.
/// @throws ShapeError if the density is not conditional, `contexts` does not have context_dim()
///   rows or has no column, `grad` has the wrong size, or the target's outputs have the wrong
///   shapes; ParameterError if a context is NaN or infinite.
template <typename D, typename T, typename CM, std::uniform_random_bit_generator G>
requires detail::InverseTrainable<D>
double reverse_kl(const D& density, const T& target, const Eigen::MatrixBase<CM>& contexts, G& gen,
                  Eigen::Ref<Vector<typename D::Scalar>> grad, ReverseKlWorkspace<D>& workspace) {
  if (density.context_dim() == 0) {
    throw ShapeError(
        "nflow::train::reverse_kl: contexts were given, but the density is not conditional");
  }
  nflow::detail::check_rows("train::reverse_kl", "contexts", density.context_dim(), contexts.rows(),
                            contexts.cols());
  if (contexts.cols() == 0) {
    throw ShapeError("nflow::train::reverse_kl: contexts has no column (one per sample)");
  }
  if (!contexts.allFinite()) {
    throw ParameterError("nflow::train::reverse_kl: a context is NaN or infinite");
  }
  return detail::ReverseKl::run_conditional(density, target, contexts, gen, grad, workspace);
}

/// @brief The conditional reverse_kl() with a workspace of its own (allocated for this call).
template <typename D, typename T, typename CM, std::uniform_random_bit_generator G>
requires detail::InverseTrainable<D>
double reverse_kl(const D& density, const T& target, const Eigen::MatrixBase<CM>& contexts, G& gen,
                  Eigen::Ref<Vector<typename D::Scalar>> grad) {
  ReverseKlWorkspace<D> workspace;
  return reverse_kl(density, target, contexts, gen, grad, workspace);
}

/// @brief reverse_kl() with a workspace of its own (allocated for this call).
template <typename D, typename T, std::uniform_random_bit_generator G>
requires detail::InverseTrainable<D>
double reverse_kl(const D& density, const T& target, Index n, G& gen,
                  Eigen::Ref<Vector<typename D::Scalar>> grad) {
  ReverseKlWorkspace<D> workspace;
  return reverse_kl(density, target, n, gen, grad, workspace);
}

}  // namespace nflow::train
