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

/// @brief The flow-matching loss for given data x₁, noise x₀ and path times τ (one per column),
/// and its gradient with respect to the field's parameters, ADDED into `grad` (the field's flat
/// layout, which is also its ContinuousFlow's). Deterministic; see the file comment for the maths.
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
  static_assert(ode::VectorField<Field>,
                "nflow::train::flow_matching_loss: the field must model nflow::ode::VectorField "
                "(Scalar, dim(), "
                "context_dim(), parameter_count(), value(t, z, c) and value_backward(t, z, c, gf, "
                "grad) with one "
                "time per column)");
  using S = typename Field::Scalar;
  using M = Eigen::Matrix<S, Dynamic, Dynamic>;
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
  nflow::detail::check_size("train::flow_matching_loss", "grad", field.parameter_count(),
                            grad.size());
  const S keep = S(1) - S(sigma_min);
  // x_τ = (1 − keep·τ) x₀ + τ x₁ ; target −u = keep·x₀ − x₁ ; flow time t = 1 − τ.
  const M xt = (x0.array().rowwise() * (S(1) - keep * tau.array())).matrix() +
               (x1.array().rowwise() * tau.array()).matrix();
  const M target = keep * x0 - x1;
  const Eigen::Matrix<S, 1, Dynamic> t = (S(1) - tau.array()).matrix();
  const M residual = field.value(t, xt, context) - target;
  const M g = (S(2) / S(n)) * residual;
  field.value_backward(t, xt, context, g, grad);
  return double(residual.template cast<double>().colwise().squaredNorm().mean());
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
  const Eigen::Matrix<S, Dynamic, Dynamic> x0 =
      standard_normal_matrix<S>(x1.rows(), x1.cols(), gen);
  Eigen::Matrix<S, 1, Dynamic> tau(x1.cols());
  for (Index j = 0; j < tau.size(); ++j) tau(j) = S(uniform_open01(gen));
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
  static_assert(
      ode::HasVectorField<Flow>,
      "nflow::train::fit_flow_matching: the flow must expose its nflow::ode::VectorField as "
      "field() "
      "(as nflow::ContinuousFlow does), with Scalar, dim(), context_dim() and parameter_count()");
  using S = typename Flow::Scalar;
  using M = Eigen::Matrix<S, Dynamic, Dynamic>;
  nflow::detail::check_data("train::fit_flow_matching", "data", data, flow.dim(),
                            flow.context_dim());
  const Index n = data.samples.cols();
  if (options.batch_size <= 0 || options.steps < 0 ||
      !(options.sigma_min >= 0 && options.sigma_min < 1)) {
    throw ParameterError(
        "nflow::train::fit_flow_matching: options need batch_size > 0, steps >= 0, 0 <= sigma_min "
        "< 1");
  }
  Adam<S> adam(flow.parameter_count(), options.adam);
  std::mt19937_64 gen(options.seed);
  Vector<S> grad(flow.parameter_count());
  Eigen::VectorXi order = random_permutation(n, gen);
  Index cursor = 0;
  FlowMatchingResult result;
  double sum = 0;
  Index count = 0;
  M xb;
  M cb;
  for (Index step = 0; step < options.steps; ++step) {
    const Index size = std::min(options.batch_size, n);
    if (cursor + size > n) {
      order = random_permutation(n, gen);
      cursor = 0;
    }
    const auto idx = order.segment(cursor, size);
    cursor += size;
    xb = data.samples(Eigen::all, idx);
    if (flow.context_dim() > 0) cb = data.context(Eigen::all, idx);
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

}  // namespace nflow::train
