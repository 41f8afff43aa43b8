#pragma once
/// @file
/// @brief Density<Base, Transform>: a normalizing flow as a probability density.

#include <random>
#include <string>
#include <utility>

#include "nflow/core/bijector_base.hpp"
#include "nflow/core/buffers.hpp"
#include "nflow/core/composite.hpp"
#include "nflow/core/concepts.hpp"
#include "nflow/core/errors.hpp"
#include "nflow/core/types.hpp"

namespace nflow {

/// @brief Samples drawn from a density together with their log-densities.
template <typename Scalar, int Dim>
struct SamplesAndLogProb {
  Batch<Scalar, Dim, Dynamic> samples;
  PerSample<Scalar, Dynamic> log_prob;
};

/// @brief The density of x = T⁻¹(z), z ~ Base: log p(x) = log p_base(T(x)) + log|det ∂T/∂x|.
///
/// `log_prob(x)` evaluates the forward (normalizing) direction once; `sample(n, rng)` draws z from
/// the base and maps it through the inverse. With a conditional transform every call takes a
/// context: one column per sample, or for `sample` a single column shared by all n samples;
/// `sample(gen, context)` draws one sample per context column.
/// Parameters are named "base.<name>" then "transform.<name>"; the flat gradient follows that
/// order. NaN in a sample gives NaN for that sample's log-density only.
/// @tparam Base a base distribution (StandardNormal, DiagonalNormal, or one of the same shape).
/// @tparam Transform a nflow::Bijector in the data → latent direction.
template <typename Base, typename Transform>
class Density {
  static_assert(Bijector<Transform>,
                "nflow::Density<Base, Transform>: Transform must model nflow::Bijector");
  static_assert(
      std::is_same_v<typename Base::Scalar, typename Transform::Scalar>,
      "nflow::Density<Base, Transform>: Base and Transform must use the same Scalar type");
  static_assert(Base::Dim == Dynamic || Transform::Dim == Dynamic || Base::Dim == Transform::Dim,
                "nflow::Density<Base, Transform>: Base and Transform must have the same dimension");
  static_assert(detail::CheckParameterMembers<0, Base>::ok &&
                detail::CheckParameterMembers<1, Transform>::ok);

 public:
  using Scalar = typename Transform::Scalar;
  static constexpr int Dim = Transform::Dim != Dynamic ? Transform::Dim : Base::Dim;
  static constexpr int ContextDim = context_dim_v<Transform>;

  Density(Base base, Transform transform)
      : base_(std::move(base)), transform_(std::move(transform)) {
    if (base_.dim() != transform_.dim()) {
      throw ShapeError("nflow::Density: the base has dimension " + std::to_string(base_.dim()) +
                       " but the transform has dimension " + std::to_string(transform_.dim()));
    }
  }

  Index dim() const { return transform_.dim(); }
  /// Rows of the context the transform takes (0: unconditional), known at run time when
  /// ContextDim is Dynamic.
  Index context_dim() const {
    if constexpr (is_conditional_v<Transform>) {
      return transform_.context_dim();
    } else {
      return 0;
    }
  }
  const Base& base() const { return base_; }
  Base& base() { return base_; }
  const Transform& transform() const { return transform_; }
  Transform& transform() { return transform_; }

  /// log p(x) per column (a Scalar when `x` is a single point, `Dim × 1` at compile time).
  template <typename X, ContextArg C = NoContext>
  auto log_prob(const Eigen::MatrixBase<X>& x, const C& context = C{}) const {
    auto r = transform_.forward_and_log_det(x, context);
    PerSample<Scalar, X::ColsAtCompileTime> lp = base_.log_prob(r.value) + r.log_det;
    if constexpr (X::ColsAtCompileTime == 1) {
      return lp(0);
    } else {
      return lp;
    }
  }

  /// `n` samples, Dim × n. With a conditional transform the context has n columns (sample j is
  /// drawn given column j) or 1 (n samples for one context, e.g. n posterior draws for one
  /// observation: `sample(n, gen, c)` with c context_dim × 1).
  /// @throws nflow::ShapeError when the context has neither 1 nor n columns (the message names
  ///   both numbers; nothing is drawn), or does not fit the transform (its rows, or a context
  ///   given to an unconditional transform).
  template <std::uniform_random_bit_generator G, ContextArg C = NoContext>
  Batch<Scalar, Dim, Dynamic> sample(Index n, G& gen, const C& context = C{}) const {
    return sample_and_log_prob(n, gen, context).samples;
  }

  /// One sample per context column: sample j is drawn given column j, so n = context.cols() (e.g.
  /// one posterior draw for each of 10⁴ observations, in one call). The same as
  /// `sample(context.cols(), gen, context)`.
  template <std::uniform_random_bit_generator G, typename C>
  Batch<Scalar, Dim, Dynamic> sample(G& gen, const Eigen::MatrixBase<C>& context) const {
    return sample_and_log_prob(context.cols(), gen, context.derived()).samples;
  }

  /// `n` samples with their log-densities, from one pass: log p(x) = log p_base(z) − log|det ∂T⁻¹/∂z|.
  /// The context is as for sample(n, gen, context): n columns, or 1 shared by all n samples.
  ///
  /// The base draws come first, in storage order, so sample j uses the same latent z_j whatever
  /// the context. NaN in a context column is not an error: the samples drawn with that column
  /// (all n of them when one column is shared) and their log-densities are NaN, and no other
  /// sample is affected; nflow::non_finite_columns(context) says which columns those are.
  template <std::uniform_random_bit_generator G, ContextArg C = NoContext>
  SamplesAndLogProb<Scalar, Dim> sample_and_log_prob(Index n, G& gen,
                                                     const C& context = C{}) const {
    if (n < 0)
      throw ShapeError("nflow::Density::sample: n must be non-negative, got " + std::to_string(n));
    if constexpr (!is_no_context_v<C>) {
      if (context.cols() != 1 && context.cols() != n) {
        throw ShapeError("nflow::Density::sample: the context must have 1 column (shared by all " +
                         std::to_string(n) + " samples) or " + std::to_string(n) +
                         " columns (one per sample), got " +
                         detail::shape_string(context.rows(), context.cols()));
      }
    }
    Batch<Scalar, Dim, Dynamic> z = base_.sample(n, gen);
    PerSample<Scalar, Dynamic> base_lp = base_.log_prob(z);
    auto r = [&] {
      if constexpr (is_no_context_v<C>) {
        return transform_.inverse_and_log_det(z);
      } else if (context.cols() == 1 && n != 1) {
        const Eigen::Matrix<Scalar, Dynamic, Dynamic> shared = context.replicate(1, n);
        return transform_.inverse_and_log_det(z, shared);
      } else {
        return transform_.inverse_and_log_det(z, context);
      }
    }();
    return {std::move(r.value), base_lp - r.log_det};
  }

  /// One sample per context column with its log-density (n = context.cols()); see
  /// sample(gen, context).
  template <std::uniform_random_bit_generator G, typename C>
  SamplesAndLogProb<Scalar, Dim> sample_and_log_prob(G& gen,
                                                     const Eigen::MatrixBase<C>& context) const {
    return sample_and_log_prob(context.cols(), gen, context.derived());
  }

  /// ∇ₓ log p(x), the score, per column (Dim × N). Needs a ForwardDifferentiable transform.
  template <typename X, ContextArg C = NoContext>
  auto score(const Eigen::MatrixBase<X>& x,
             const C& context = C{}) const requires ForwardDifferentiable<Transform> {
    Vector<Scalar> scratch = Vector<Scalar>::Zero(parameter_count());
    PerSample<Scalar, X::ColsAtCompileTime> ones =
        PerSample<Scalar, X::ColsAtCompileTime>::Ones(1, x.cols());
    return log_prob_vjp(x, ones, scratch, context);
  }

  /// ∇_c log p(x | c), the gradient of the log-density with respect to the context, per column
  /// (context_dim × N): what HMC over c needs of a conditional flow (a likelihood emulator).
  /// Needs a ForwardDifferentiable transform whose conditional steps differentiate their context
  /// (couplings, autoregressive layers and their compositions do; a ContinuousFlow does not:
  /// nflow::UnsupportedError).
  /// @throws nflow::ShapeError if the density is unconditional (there is no context to
  ///   differentiate) or x and the context do not fit it (the context needs one column per
  ///   sample).
  template <typename X, typename C>
  ContextGradient<Scalar> context_score(const Eigen::MatrixBase<X>& x,
                                        const Eigen::MatrixBase<C>& context) const requires
      ForwardDifferentiable<Transform> {
    if (context_dim() == 0) {
      throw ShapeError(
          "nflow::Density::context_score: the density is unconditional (context_dim 0): there "
          "is no context to differentiate");
    }
    detail::check_rows("Density::context_score", "context", context_dim(), context.rows(),
                       context.cols());
    detail::check_cols("Density::context_score", "context", x.cols(), context.rows(),
                       context.cols());
    ContextGradient<Scalar> g = ContextGradient<Scalar>::Zero(context_dim(), x.cols());
    Vector<Scalar> scratch = Vector<Scalar>::Zero(parameter_count());
    const PerSample<Scalar, Dynamic> ones = PerSample<Scalar, Dynamic>::Ones(1, x.cols());
    log_prob_vjp(x, ones, scratch, context.derived(), &g);
    return g;
  }

  /// Reverse mode of log_prob: given ∂L/∂log p(x) (1 × N) returns ∂L/∂x and adds ∂L/∂θ into
  /// `grad_params` (base parameters first, then the transform's). With `grad_context` (a
  /// context_dim × N matrix, given with the context) it adds ∂L/∂c into it as well.
  template <typename X, typename G, ContextArg C = NoContext>
  auto log_prob_vjp(const Eigen::MatrixBase<X>& x, const Eigen::MatrixBase<G>& grad_log_prob,
                    Eigen::Ref<Vector<Scalar>> grad_params, const C& context = C{},
                    ContextGradient<Scalar>* grad_context = nullptr) const requires
      ForwardDifferentiable<Transform> {
    detail::check_size("Density::log_prob_vjp", "grad_params", parameter_count(),
                       grad_params.size());
    detail::check_cols("Density::log_prob_vjp", "grad_log_prob", x.cols(), grad_log_prob.rows(),
                       grad_log_prob.cols());
    const Index nb = detail::part_parameter_count(base_);
    // log p = log p_base(z) + log_det: z's gradient comes from the base, log_det's is grad_log_prob.
    auto seed = [&](const auto& z, const auto&, auto& grad_z, auto& grad_log_det) {
      grad_log_det = grad_log_prob;
      grad_z = base_.log_prob_vjp(z, grad_log_prob, grad_params.head(nb));
    };
    tape_t<Transform> tape;
    return detail::BatchFor<Scalar, Transform::Dim, X>(transform_.forward_and_vjp(
        x, seed, grad_params.tail(grad_params.size() - nb), context, tape, grad_context));
  }

  Index parameter_count() const {
    return detail::part_parameter_count(base_) + detail::part_parameter_count(transform_);
  }
  template <typename F>
  void visit_parameters(F&& f) {
    visit_impl(*this, f);
  }
  template <typename F>
  void visit_parameters(F&& f) const {
    visit_impl(*this, f);
  }
  /// The buffers of the base and the transform, prefixed "base." and "transform.".
  template <typename F>
  void visit_buffers(F&& f) {
    detail::visit_prefixed_buffers(base_, "base.", f);
    detail::visit_prefixed_buffers(transform_, "transform.", f);
  }
  template <typename F>
  void visit_buffers(F&& f) const {
    detail::visit_prefixed_buffers(base_, "base.", f);
    detail::visit_prefixed_buffers(transform_, "transform.", f);
  }

 private:
  template <typename Self, typename F>
  static void visit_impl(Self& self, F& f) {
    detail::visit_part_parameters(self.base_, "base.", f);
    detail::visit_part_parameters(self.transform_, "transform.", f);
  }

  Base base_;
  Transform transform_;
};

}  // namespace nflow
