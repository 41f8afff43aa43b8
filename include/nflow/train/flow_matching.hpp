#pragma once
/// @file
/// @brief Conditional flow matching (Lipman et al. 2023; rectified flow, Liu et al. 2023) for
/// nflow::ContinuousFlow: a regression of the vector field on the velocity of a straight path
/// between noise and data, with no ODE solve during training.
///
/// Direction. Flow matching is usually written noise → data: with x₀ ~ N(0, I), x₁ a data point
/// and τ ∈ [0, 1],
///     x_τ = (1 − (1 − σ_min) τ) x₀ + τ x₁,      u_τ = dx_τ/dτ = x₁ − (1 − σ_min) x₀.
/// nflow's forward maps data → latent by integrating t from 0 to 1, so the flow's time is
/// t = 1 − τ (t = 0 at the data end, t = 1 at the noise end) and its field must be the reversed
/// velocity:
///     f(x_τ, t = 1 − τ, c) ≈ −u_τ = (1 − σ_min) x₀ − x₁.
/// The loss is the mean over samples of the squared error summed over dimensions,
///     L = (1/N) Σⱼ ‖f(x_{τⱼ}, 1 − τⱼ, cⱼ) − (−u_{τⱼ})‖²,
/// with τ ~ U(0, 1). Its minimiser is the marginal field; with σ_min = 0 and data N(μ, Σ) it is
/// −v*(x, 1 − t) with v*(x, τ) = μ + (τΣ − (1 − τ)I)·C_τ⁻¹·(x − τμ), C_τ = (1 − τ)²I + τ²Σ.
/// After training, forward_and_log_det (preferably with the exact trace and Dopri5) gives the
/// exact log-likelihood of the learned flow.

#include <Eigen/Core>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <string>

#include "nflow/core/errors.hpp"
#include "nflow/core/random.hpp"
#include "nflow/core/types.hpp"
#include "nflow/ode/concepts.hpp"
#include "nflow/train/adam.hpp"
#include "nflow/train/data.hpp"

namespace nflow::train {

namespace internal {

/// The compile-time check of fit_flow_matching's flow argument (both overloads).
template <typename Flow>
constexpr void require_vector_field() {
  static_assert(
      ode::HasVectorField<Flow>,
      "nflow::train::fit_flow_matching: the flow must expose its nflow::ode::VectorField as "
      "field() (as nflow::ContinuousFlow does), with Scalar, dim(), context_dim() and "
      "parameter_count()");
}

/// The flow-matching residual f(x_τ, 1 − τ, c) − (−u_τ) (Dim × N) after the shape checks, with
/// the path points and flow times it was evaluated at (for the backward pass).
template <typename Field>
void flow_matching_residual(const Field& field,
                            const Eigen::Matrix<typename Field::Scalar, Dynamic, Dynamic>& x1,
                            const Eigen::Matrix<typename Field::Scalar, Dynamic, Dynamic>& x0,
                            const Eigen::Matrix<typename Field::Scalar, 1, Dynamic>& tau,
                            const Eigen::Matrix<typename Field::Scalar, Dynamic, Dynamic>& context,
                            double sigma_min,
                            Eigen::Matrix<typename Field::Scalar, Dynamic, Dynamic>& xt,
                            Eigen::Matrix<typename Field::Scalar, 1, Dynamic>& t,
                            Eigen::Matrix<typename Field::Scalar, Dynamic, Dynamic>& residual) {
  static_assert(ode::VectorField<Field>,
                "nflow::train::flow_matching_loss: the field must model nflow::ode::VectorField "
                "(Scalar, dim(), "
                "context_dim(), parameter_count(), value(t, z, c) and value_backward(t, z, c, gf, "
                "grad) with one "
                "time per column)");
  using S = typename Field::Scalar;
  const Index n = x1.cols();
  if (n == 0) throw ShapeError("nflow::train::flow_matching_loss: the batch is empty");
  nflow::detail::check_rows("train::flow_matching_loss", "x1", field.dim(), x1.rows(), x1.cols());
  nflow::detail::check_rows("train::flow_matching_loss", "x0", field.dim(), x0.rows(), x0.cols());
  nflow::detail::check_cols("train::flow_matching_loss", "x0", n, x0.rows(), x0.cols());
  nflow::detail::check_cols("train::flow_matching_loss", "tau", n, tau.rows(), tau.cols());
  nflow::detail::check_rows("train::flow_matching_loss", "context", field.context_dim(),
                            context.rows(), context.cols());
  if (field.context_dim() > 0)
    nflow::detail::check_cols("train::flow_matching_loss", "context", n, context.rows(),
                              context.cols());
  const S keep = S(1) - S(sigma_min);
  // x_τ = (1 − keep·τ) x₀ + τ x₁ ; target −u = keep·x₀ − x₁ ; flow time t = 1 − τ.
  xt = (x0.array().rowwise() * (S(1) - keep * tau.array())).matrix() +
       (x1.array().rowwise() * tau.array()).matrix();
  t = (S(1) - tau.array()).matrix();
  residual = field.value(t, xt, context) - (keep * x0 - x1);
}

}  // namespace internal

/// @brief The flow-matching loss for given data x₁, noise x₀ and path times τ (one per column),
/// and its gradient with respect to the field's parameters, ADDED into `grad` (the field's flat
/// layout, which is also its ContinuousFlow's). Deterministic; see the file comment for the maths.
/// For the loss alone (validation), flow_matching_loss_value needs no gradient buffer.
/// @param field any nflow::ode::VectorField: an ode::MLPVectorField, or `flow.field()`.
/// @param x1 data, Dim × N; @param x0 noise, Dim × N; @param tau path times in [0, 1], 1 × N.
/// @param context context_dim × N (an empty matrix when the field has none).
/// @throws nflow::ShapeError on mismatched shapes or an empty batch.
template <typename Field>
double flow_matching_loss(const Field& field,
                          const Eigen::Matrix<typename Field::Scalar, Dynamic, Dynamic>& x1,
                          const Eigen::Matrix<typename Field::Scalar, Dynamic, Dynamic>& x0,
                          const Eigen::Matrix<typename Field::Scalar, 1, Dynamic>& tau,
                          const Eigen::Matrix<typename Field::Scalar, Dynamic, Dynamic>& context,
                          double sigma_min, Eigen::Ref<Vector<typename Field::Scalar>> grad) {
  using S = typename Field::Scalar;
  using M = Eigen::Matrix<S, Dynamic, Dynamic>;
  M xt, residual;
  Eigen::Matrix<S, 1, Dynamic> t;
  internal::flow_matching_residual(field, x1, x0, tau, context, sigma_min, xt, t, residual);
  nflow::detail::check_size("train::flow_matching_loss", "grad", field.parameter_count(),
                            grad.size());
  const M g = (S(2) / S(x1.cols())) * residual;
  field.value_backward(t, xt, context, g, grad);
  return double(residual.template cast<double>().colwise().squaredNorm().mean());
}

/// @brief The flow-matching loss alone (no gradient, no buffer for one): the same number as
/// flow_matching_loss with the same arguments, for validation.
/// @throws nflow::ShapeError on mismatched shapes or an empty batch.
template <typename Field>
double flow_matching_loss_value(
    const Field& field, const Eigen::Matrix<typename Field::Scalar, Dynamic, Dynamic>& x1,
    const Eigen::Matrix<typename Field::Scalar, Dynamic, Dynamic>& x0,
    const Eigen::Matrix<typename Field::Scalar, 1, Dynamic>& tau,
    const Eigen::Matrix<typename Field::Scalar, Dynamic, Dynamic>& context, double sigma_min) {
  using S = typename Field::Scalar;
  Eigen::Matrix<S, Dynamic, Dynamic> xt, residual;
  Eigen::Matrix<S, 1, Dynamic> t;
  internal::flow_matching_residual(field, x1, x0, tau, context, sigma_min, xt, t, residual);
  return double(residual.template cast<double>().colwise().squaredNorm().mean());
}

namespace internal {
/// Draws the noise x₀ ~ N(0, I) and the times τ ~ U(0, 1) of a batch of `n` columns (noise
/// first, then times, each in storage order).
template <typename S, typename G>
void flow_matching_draw(Index dim, Index n, G& gen, Eigen::Matrix<S, Dynamic, Dynamic>& x0,
                        Eigen::Matrix<S, 1, Dynamic>& tau) {
  x0 = standard_normal_matrix<S>(dim, n, gen);
  tau.resize(n);
  for (Index j = 0; j < tau.size(); ++j) tau(j) = S(uniform_open01(gen));
}
}  // namespace internal

/// @brief The loss alone with x₀ ~ N(0, I) and τ ~ U(0, 1) drawn from `gen` (as
/// flow_matching_loss draws them): a validation loss, with a generator seeded afresh each time so
/// that every evaluation uses the same noise.
template <typename Field, std::uniform_random_bit_generator G>
double flow_matching_loss_value(
    const Field& field, const Eigen::Matrix<typename Field::Scalar, Dynamic, Dynamic>& x1,
    const Eigen::Matrix<typename Field::Scalar, Dynamic, Dynamic>& context, double sigma_min,
    G& gen) {
  using S = typename Field::Scalar;
  Eigen::Matrix<S, Dynamic, Dynamic> x0;
  Eigen::Matrix<S, 1, Dynamic> tau;
  internal::flow_matching_draw(x1.rows(), x1.cols(), gen, x0, tau);
  return flow_matching_loss_value(field, x1, x0, tau, context, sigma_min);
}

/// @brief The same loss with x₀ ~ N(0, I) and τ ~ U(0, 1) drawn from `gen` (noise first, then
/// times, each in storage order).
template <typename Field, std::uniform_random_bit_generator G>
double flow_matching_loss(const Field& field,
                          const Eigen::Matrix<typename Field::Scalar, Dynamic, Dynamic>& x1,
                          const Eigen::Matrix<typename Field::Scalar, Dynamic, Dynamic>& context,
                          double sigma_min, G& gen,
                          Eigen::Ref<Vector<typename Field::Scalar>> grad) {
  using S = typename Field::Scalar;
  Eigen::Matrix<S, Dynamic, Dynamic> x0;
  Eigen::Matrix<S, 1, Dynamic> tau;
  internal::flow_matching_draw(x1.rows(), x1.cols(), gen, x0, tau);
  return flow_matching_loss(field, x1, x0, tau, context, sigma_min, grad);
}

/// @brief Settings of fit_flow_matching.
struct FlowMatchingOptions {
  double sigma_min = 0.0;  ///< width of the path at the data end (0: straight lines to the data)
  Index batch_size = 256;
  Index steps = 2000;      ///< optimiser steps
  std::uint64_t seed = 1;  ///< mini-batches, noise and times
  AdamOptions adam{};
  Schedule schedule = Schedule::constant();
  /// Called every `report_every` steps with (step, mean loss since the last report).
  Index report_every = 100;
  std::function<void(Index, double)> callback{};
};

/// @brief What fit_flow_matching returns.
struct FlowMatchingResult {
  Index steps = 0;
  double final_loss =
      std::numeric_limits<double>::quiet_NaN();  ///< mean loss over the last report window
};

namespace internal {

/// The flow-matching loop's view of a batch source (a data set or a user's sampler): fills the
/// batch for `step`. A function pointer, so the loop is compiled once per flow type.
template <typename S>
struct FlowMatchingSource {
  using M = Eigen::Matrix<S, Dynamic, Dynamic>;
  void* self = nullptr;
  void (*fill)(void*, M&, M&, Index, std::mt19937_64&) = nullptr;
};

/// The one flow-matching loop: batches from `source`, the loss, Adam, the reports. `sampled`:
/// check each batch's shape (the source is a user's sampler).
template <typename Flow>
FlowMatchingResult flow_matching_loop(Flow& flow, const FlowMatchingOptions& options, bool sampled,
                                      FlowMatchingSource<typename Flow::Scalar> source) {
  using S = typename Flow::Scalar;
  using M = Eigen::Matrix<S, Dynamic, Dynamic>;
  Adam<S> adam(flow.parameter_count(), options.adam);
  std::mt19937_64 gen(options.seed);
  Vector<S> grad(flow.parameter_count());
  FlowMatchingResult result;
  double sum = 0;
  Index count = 0;
  M xb(flow.dim(), options.batch_size);
  M cb(flow.context_dim(), flow.context_dim() > 0 ? options.batch_size : 0);
  for (Index step = 0; step < options.steps; ++step) {
    if (sampled) poison_batch(xb, cb);
    source.fill(source.self, xb, cb, step, gen);
    if (sampled) {
      const std::string bad = check_sampled_batch("train::fit_flow_matching", flow.dim(),
                                                  flow.context_dim(), xb, cb, step);
      if (!bad.empty()) throw std::runtime_error(bad);
    }
    grad.setZero();
    const double loss = flow_matching_loss(flow.field(), xb, cb, options.sigma_min, gen, grad);
    if (!std::isfinite(loss) || !grad.allFinite()) {
      throw std::runtime_error(
          "nflow::train::fit_flow_matching: the loss or its gradient became non-finite at step " +
          std::to_string(step) + "; the parameters are those before this step");
    }
    adam.step_model(flow, grad,
                    options.schedule.rate(options.adam.learning_rate, step, options.steps));
    sum += loss;
    ++count;
    result.steps = step + 1;
    if ((options.report_every > 0 && (step + 1) % options.report_every == 0) ||
        step + 1 == options.steps) {
      result.final_loss = sum / double(count);
      if (options.callback) options.callback(step + 1, result.final_loss);
      sum = 0;
      count = 0;
    }
  }
  return result;
}

inline void check_flow_matching_options(const FlowMatchingOptions& options) {
  if (options.batch_size <= 0 || options.steps < 0 ||
      !(options.sigma_min >= 0 && options.sigma_min < 1)) {
    throw ParameterError(
        "nflow::train::fit_flow_matching: options need batch_size > 0, steps >= 0, 0 <= sigma_min "
        "< 1");
  }
}

}  // namespace internal

/// @brief Trains the field of a flow that exposes one (ode::HasVectorField: a ContinuousFlow) by
/// conditional flow matching on the samples of `data`, with one context column per sample when
/// the flow is conditional, with Adam:
///
///     train::fit_flow_matching(flow, {.samples = x}, {.steps = 2000});
///     train::fit_flow_matching(flow, {.samples = x, .context = c}, options);
///
/// `data` is a view (train::Data): its matrices must outlive the call. Mini-batches are drawn
/// without replacement from a fresh seeded permutation each epoch. Deterministic for a given seed.
/// @throws nflow::ShapeError, before any step, when `data` does not fit the flow (empty samples,
///   samples without dim() rows, a context for an unconditional flow, none for a conditional one,
///   a context without context_dim() rows or one column per sample; the message names
///   `data.samples` or `data.context`); nflow::ParameterError on bad options;
///   std::runtime_error (with the step) if the loss or its gradient becomes non-finite.
template <typename Flow>
FlowMatchingResult fit_flow_matching(Flow& flow, const Data<typename Flow::Scalar>& data,
                                     const FlowMatchingOptions& options) {
  internal::require_vector_field<Flow>();
  using S = typename Flow::Scalar;
  using M = Eigen::Matrix<S, Dynamic, Dynamic>;
  nflow::detail::check_data("train::fit_flow_matching", "data", data, flow.dim(),
                            flow.context_dim());
  internal::check_flow_matching_options(options);
  // Batches without replacement from a seeded permutation, redrawn when it runs out.
  struct Permuted {
    const Data<S>& data;
    Index size;
    bool first = true;
    Index cursor = 0;
    Eigen::VectorXi order{};
  };
  const Index n = data.samples.cols();
  Permuted state{data, std::min(options.batch_size, n)};
  internal::FlowMatchingSource<S> source;
  source.self = &state;
  source.fill = [](void* self, M& x, M& c, Index, std::mt19937_64& gen) {
    Permuted& s = *static_cast<Permuted*>(self);
    const Index n = s.data.samples.cols();
    if (s.first) s.order = random_permutation(n, gen);
    s.first = false;
    if (s.cursor + s.size > n) {
      s.order = random_permutation(n, gen);
      s.cursor = 0;
    }
    const auto idx = s.order.segment(s.cursor, s.size);
    s.cursor += s.size;
    x = s.data.samples(Eigen::all, idx);
    if (s.data.context.size() > 0) c = s.data.context(Eigen::all, idx);
  };
  return internal::flow_matching_loop(flow, options, false, source);
}

/// @brief Trains the field by flow matching on batches drawn fresh each step by a sampler
/// (train::sampler, see fit.hpp: `f(x, c, gen)` or `f(x, c, step, gen)`, with x a Dim ×
/// batch_size and c a context_dim × batch_size `Eigen::Matrix<Scalar, Dynamic, Dynamic>`):
///
///     train::fit_flow_matching(flow, train::sampler([](auto& x, auto&, std::mt19937_64& gen) {
///                                x = draw_data(x.cols(), gen); }), {.steps = 2000});
///
/// `steps` bounds the run; `seed` seeds the generator handed to the sampler, which the loop then
/// also draws the noise and times from (the sampler first). Deterministic for a given seed.
/// @throws nflow::ParameterError on bad options; nflow::ShapeError (naming the sampler) when a
///   batch the sampler returns does not fit the flow; std::runtime_error on a non-finite loss.
template <typename Flow, typename F>
FlowMatchingResult fit_flow_matching(Flow& flow, Sampler<F> sampler,
                                     const FlowMatchingOptions& options) {
  internal::require_vector_field<Flow>();
  using S = typename Flow::Scalar;
  using M = Eigen::Matrix<S, Dynamic, Dynamic>;
  internal::check_flow_matching_options(options);
  internal::FlowMatchingSource<S> source;
  source.self = &sampler.fill;
  source.fill = [](void* self, M& x, M& c, Index step, std::mt19937_64& gen) {
    internal::call_sampler(*static_cast<F*>(self), x, c, step, gen);
  };
  return internal::flow_matching_loop(flow, options, true, source);
}

}  // namespace nflow::train
