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
#include <utility>

#include "nflow/core/errors.hpp"
#include "nflow/core/random.hpp"
#include "nflow/core/types.hpp"
#include "nflow/ode/concepts.hpp"
#include "nflow/train/adam.hpp"
#include "nflow/train/assignment.hpp"
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

/// @brief How fit_flow_matching pairs the noise it draws with a batch's samples.
enum class FlowMatchingCoupling {
  Independent,  ///< as drawn: x₀ ~ N(0, I) independent of x₁ (conditional flow matching)
  /// Minibatch optimal transport (Tong et al. 2023, Pooladian et al. 2023): the batch's noise
  /// columns are permuted to the assignment minimising Σⱼ ‖x₀,π(j) − x₁,j‖² (exact, by
  /// nflow::linear_assignment), so each marginal is unchanged and the pairs' straight paths cross
  /// less. O(B³) per step in the worst case (B the batch size); unconditional flows only.
  MinibatchOT,
};

/// @brief Settings of fit_flow_matching.
struct FlowMatchingOptions {
  double sigma_min = 0.0;  ///< width of the path at the data end (0: straight lines to the data)
  /// Pairing of noise and samples within a batch (not for fit_flow_matching on given pairs).
  FlowMatchingCoupling coupling = FlowMatchingCoupling::Independent;
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

/// The flow-matching loop's view of a batch source (a data set, a user's sampler or coupled
/// pairs): fills the batch (x₁, x₀, c) for `step`. A function pointer, so the loop is compiled
/// once per flow type. `coupled`: the source also fills the noise x₀ (its partner of each
/// sample); otherwise the loop draws x₀ ~ N(0, I) itself.
template <typename S>
struct FlowMatchingSource {
  using M = Eigen::Matrix<S, Dynamic, Dynamic>;
  void* self = nullptr;
  void (*fill)(void*, M& x1, M& x0, M& c, Index, std::mt19937_64&) = nullptr;
  bool coupled = false;
};

/// Mini-batches of column indices without replacement, from a seeded permutation redrawn when it
/// runs out (the first drawn at the first batch).
struct PermutedBatches {
  Index n = 0;
  Index size = 0;
  bool first = true;
  Index cursor = 0;
  Eigen::VectorXi order{};
  template <typename G>
  auto next(G& gen) {
    if (first) order = random_permutation(n, gen);
    first = false;
    if (cursor + size > n) {
      order = random_permutation(n, gen);
      cursor = 0;
    }
    const auto idx = order.segment(cursor, size);
    cursor += size;
    return idx;
  }
};

/// Permutes the noise columns x0 (in place) to the exact minimiser of Σⱼ ‖x0_π(j) − x1_j‖².
template <typename S>
void minibatch_ot_pairing(const Eigen::Matrix<S, Dynamic, Dynamic>& x1,
                          Eigen::Matrix<S, Dynamic, Dynamic>& x0, Eigen::MatrixXd& cost) {
  const Index n = x1.cols();
  cost.resize(n, n);
  for (Index j = 0; j < n; ++j) {
    for (Index i = 0; i < n; ++i)
      cost(i, j) = (x1.col(i) - x0.col(j)).template cast<double>().squaredNorm();
  }
  const Eigen::VectorXi match = linear_assignment(cost);  // row i (sample) → column (noise)
  x0 = Eigen::Matrix<S, Dynamic, Dynamic>(x0(Eigen::all, match));
}

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
  M x0b;
  Eigen::Matrix<S, 1, Dynamic> taub;
  Eigen::MatrixXd cost;
  if (options.coupling == FlowMatchingCoupling::MinibatchOT && source.coupled) {
    throw ParameterError(
        "nflow::train::fit_flow_matching: options.coupling = MinibatchOT pairs the noise the loop "
        "draws; fit_flow_matching on given pairs takes their own coupling (leave it Independent)");
  }
  if (options.coupling == FlowMatchingCoupling::MinibatchOT && flow.context_dim() > 0) {
    throw ParameterError(
        "nflow::train::fit_flow_matching: options.coupling = MinibatchOT is for unconditional "
        "flows (pairing across contexts would mix the conditionals)");
  }
  for (Index step = 0; step < options.steps; ++step) {
    if (sampled) poison_batch(xb, cb);
    source.fill(source.self, xb, x0b, cb, step, gen);
    if (sampled) {
      const std::string bad = check_sampled_batch("train::fit_flow_matching", flow.dim(),
                                                  flow.context_dim(), xb, cb, step);
      if (!bad.empty()) throw std::runtime_error(bad);
    }
    grad.setZero();
    double loss = 0;
    if (source.coupled) {  // the pairs' own noise; only the times are drawn
      taub.resize(xb.cols());
      for (Index j = 0; j < taub.size(); ++j) taub(j) = S(uniform_open01(gen));
      loss = flow_matching_loss(flow.field(), xb, x0b, taub, cb, options.sigma_min, grad);
    } else if (options.coupling == FlowMatchingCoupling::MinibatchOT) {
      flow_matching_draw(xb.rows(), xb.cols(), gen, x0b, taub);
      minibatch_ot_pairing(xb, x0b, cost);
      loss = flow_matching_loss(flow.field(), xb, x0b, taub, cb, options.sigma_min, grad);
    } else {
      loss = flow_matching_loss(flow.field(), xb, cb, options.sigma_min, gen, grad);
    }
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
    internal::PermutedBatches batches;
  };
  const Index n = data.samples.cols();
  Permuted state{data, {n, std::min(options.batch_size, n)}};
  internal::FlowMatchingSource<S> source;
  source.self = &state;
  source.fill = [](void* self, M& x, M&, M& c, Index, std::mt19937_64& gen) {
    Permuted& s = *static_cast<Permuted*>(self);
    const auto idx = s.batches.next(gen);
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
  source.fill = [](void* self, M& x, M&, M& c, Index step, std::mt19937_64& gen) {
    internal::call_sampler(*static_cast<F*>(self), x, c, step, gen);
  };
  return internal::flow_matching_loop(flow, options, true, source);
}

/// @brief Coupled pairs for flow matching: column j of `noise` (x₀, Dim × N) is the partner of
/// column j of `samples` (x₁, Dim × N), with, for a conditional flow, column j of `context`
/// (context_dim × N; empty otherwise). train::reflow_pairs (nflow/train/reflow.hpp) makes them
/// from a trained flow (x₁ = flow.inverse(x₀)); any other coupling (e.g. an optimal-transport
/// one) can be given the same way. Owns its matrices; built with a constructor,
/// `train::CoupledPairs<double>(z, x)` or `(z, x, c)` (not an aggregate, so that
/// `fit_flow_matching(flow, {.samples = x}, options)` still means a data set).
template <typename Scalar>
struct CoupledPairs {
  using Matrix = Eigen::Matrix<Scalar, Dynamic, Dynamic>;
  Matrix noise;
  Matrix samples;
  Matrix context;
  CoupledPairs() = default;
  CoupledPairs(Matrix noise_, Matrix samples_, Matrix context_ = Matrix())
      : noise(std::move(noise_)), samples(std::move(samples_)), context(std::move(context_)) {}
};

/// @brief Trains the field by flow matching on fixed coupled pairs (x₀, x₁) instead of
/// independent noise: the same loss, x_τ = (1 − (1 − σ_min) τ) x₀ + τ x₁ with the target
/// (1 − σ_min) x₀ − x₁ at flow time 1 − τ, where each mini-batch takes whole pairs (and their
/// contexts), drawn without replacement from a seeded permutation redrawn each epoch, and only the
/// times τ ~ U(0, 1) are drawn per step. With the pairs of train::reflow_pairs this is one round
/// of reflow (Liu et al. 2023, rectified flow), which straightens the flow's paths; it continues
/// from the flow's current parameters (build a fresh flow to train a new field). The same loop as
/// the other overloads; deterministic for a given seed.
/// @throws nflow::ShapeError, before any step, when the pairs do not fit the flow (empty, noise
///   and samples of other shapes than dim() × N, a context without context_dim() rows or N
///   columns, or one for an unconditional flow); nflow::ParameterError on bad options;
///   std::runtime_error (with the step) if the loss or its gradient becomes non-finite.
template <typename Flow>
FlowMatchingResult fit_flow_matching(Flow& flow, const CoupledPairs<typename Flow::Scalar>& pairs,
                                     const FlowMatchingOptions& options) {
  internal::require_vector_field<Flow>();
  using S = typename Flow::Scalar;
  using M = Eigen::Matrix<S, Dynamic, Dynamic>;
  const Data<S> data{.samples = pairs.samples, .context = pairs.context};
  nflow::detail::check_data("train::fit_flow_matching", "pairs", data, flow.dim(),
                            flow.context_dim());
  nflow::detail::check_rows("train::fit_flow_matching", "pairs.noise", flow.dim(),
                            pairs.noise.rows(), pairs.noise.cols());
  nflow::detail::check_cols("train::fit_flow_matching", "pairs.noise", pairs.samples.cols(),
                            pairs.noise.rows(), pairs.noise.cols());
  internal::check_flow_matching_options(options);
  struct Permuted {
    const CoupledPairs<S>& pairs;
    internal::PermutedBatches batches;
  };
  const Index n = pairs.samples.cols();
  Permuted state{pairs, {n, std::min(options.batch_size, n)}};
  internal::FlowMatchingSource<S> source;
  source.self = &state;
  source.coupled = true;
  source.fill = [](void* self, M& x1, M& x0, M& c, Index, std::mt19937_64& gen) {
    Permuted& s = *static_cast<Permuted*>(self);
    const auto idx = s.batches.next(gen);
    x1 = s.pairs.samples(Eigen::all, idx);
    x0 = s.pairs.noise(Eigen::all, idx);
    if (s.pairs.context.size() > 0) c = s.pairs.context(Eigen::all, idx);
  };
  return internal::flow_matching_loop(flow, options, false, source);
}

}  // namespace nflow::train
