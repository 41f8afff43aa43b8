#pragma once
/// @file
/// @brief The fit loop: seeded mini-batches, Adam, a learning-rate schedule, validation with
/// early stopping, a progress callback, and a clean stop on a non-finite loss.

#include <chrono>
#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>

#include "nflow/core/errors.hpp"
#include "nflow/core/parameters.hpp"
#include "nflow/core/random.hpp"
#include "nflow/core/types.hpp"
#include "nflow/train/adam.hpp"
#include "nflow/train/data.hpp"
#include "nflow/train/objectives.hpp"

namespace nflow::train {

/// @brief Thrown when the training loss or gradient becomes NaN or infinite. The model keeps the
/// parameters it had before the failing step (the last finite ones).
class TrainingError : public std::runtime_error {
 public:
  TrainingError(const std::string& what, Index step) : std::runtime_error(what), step_(step) {}
  Index step() const { return step_; }

 private:
  Index step_;
};

/// @brief What the progress callback receives.
struct Progress {
  Index epoch = 0;        ///< 0-based epoch just finished (or in progress, with `every_steps`)
  Index step = 0;         ///< optimiser steps taken so far
  double train_loss = 0;  ///< mean training loss since the previous report
  double validation_loss = std::numeric_limits<double>::quiet_NaN();  ///< NaN without validation
  double seconds = 0;  ///< wall time since fit() started
  double learning_rate = 0;
};

struct FitOptions {
  Index batch_size = 256;
  Index epochs = 10;       ///< passes over the training set
  Index max_steps = -1;    ///< if positive, stop after this many steps whatever the epochs
  std::uint64_t seed = 1;  ///< shuffling
  AdamOptions adam{};
  Schedule schedule = Schedule::constant();
  /// Early stopping: stop after this many validations without improvement (0: never) and restore
  /// the parameters with the best validation loss.
  Index patience = 0;
  /// Report (and validate) every this many steps; 0 means once per epoch.
  Index report_every_steps = 0;
  std::function<void(const Progress&)> callback{};
};

struct FitResult {
  Index steps = 0;
  Index epochs = 0;
  double final_train_loss = std::numeric_limits<double>::quiet_NaN();
  double best_validation_loss = std::numeric_limits<double>::quiet_NaN();
  Index best_step = -1;
  bool stopped_early = false;
};

/// @brief Fits `density` to the samples of `train` by maximum likelihood (mean NLL), conditional
/// on `train.context` (one column per sample) when the density is conditional, with an optional
/// `validation` data set (of the same form) for early stopping and the restore of the best
/// parameters:
///
///     train::fit(density, {.samples = x}, {.epochs = 50, .patience = 5}, {.samples = x_valid});
///     train::fit(posterior, {.samples = theta, .context = obs}, options,
///                {.samples = theta_valid, .context = obs_valid});
///
/// The data sets are views (train::Data): the matrices must outlive the call, which they do when
/// the Data are written in it. Deterministic: the same seed, data and model give bit-identical
/// parameters.
/// @throws nflow::ShapeError, before any step, when a data set does not fit the density: empty
///   samples, samples without dim() rows, a context for an unconditional density, none for a
///   conditional one, or a context without context_dim() rows or one column per sample (the
///   message names the argument: `train.samples`, `validation.context`, ...);
///   nflow::ParameterError on a non-positive batch size; TrainingError on a non-finite loss.
template <typename D>
FitResult fit(D& density, const Data<typename D::Scalar>& train, const FitOptions& options,
              const Data<typename D::Scalar>& validation = {}) {
  using Scalar = typename D::Scalar;
  if (options.batch_size <= 0)
    throw ParameterError("nflow::train::fit: 'batch_size' must be positive");
  nflow::detail::check_data("train::fit", "train", train, density.dim(), density.context_dim());
  const bool validate = !validation.empty();
  if (validate) {
    nflow::detail::check_data("train::fit", "validation", validation, density.dim(),
                              density.context_dim());
  }
  const auto& data = train.samples;
  const Index n = data.cols();
  const bool conditional = density.context_dim() > 0;

  const Index batches_per_epoch = (n + options.batch_size - 1) / options.batch_size;
  const Index total_steps =
      options.max_steps > 0 ? options.max_steps : options.epochs * batches_per_epoch;
  Adam<Scalar> adam(density.parameter_count(), options.adam);
  std::mt19937_64 gen(options.seed);
  const auto start = std::chrono::steady_clock::now();
  auto seconds = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };

  auto validation_loss = [&]() -> double {
    if (!validate) return std::numeric_limits<double>::quiet_NaN();
    if (conditional) return nll_value(density, validation.samples, validation.context);
    return nll_value(density, validation.samples);
  };

  FitResult result;
  Vector<Scalar> best = get_parameters(density);
  double best_loss = std::numeric_limits<double>::infinity();
  Index since_best = 0;
  double loss_sum = 0;
  Index loss_count = 0;
  Vector<Scalar> grad(density.parameter_count());
  Batch<Scalar, D::Dim, Dynamic> xb;
  Batch<Scalar, Dynamic, Dynamic> cb;

  auto report = [&](Index epoch) -> bool {  // returns true to stop early
    Progress p;
    p.epoch = epoch;
    p.step = result.steps;
    p.train_loss =
        loss_count > 0 ? loss_sum / double(loss_count) : std::numeric_limits<double>::quiet_NaN();
    p.validation_loss = validation_loss();
    p.seconds = seconds();
    p.learning_rate = options.schedule.rate(options.adam.learning_rate, result.steps, total_steps);
    result.final_train_loss = p.train_loss;
    loss_sum = 0;
    loss_count = 0;
    if (options.callback) options.callback(p);
    if (!validate) return false;
    if (p.validation_loss < best_loss) {
      best_loss = p.validation_loss;
      best = get_parameters(density);
      result.best_step = result.steps;
      since_best = 0;
    } else if (options.patience > 0 && ++since_best >= options.patience) {
      return true;
    }
    return false;
  };

  NllTape<D> tape;  // reused by every step
  bool stop = false;
  for (Index epoch = 0; !stop && result.steps < total_steps; ++epoch) {
    const Eigen::VectorXi order = random_permutation(n, gen);
    for (Index b = 0; b < batches_per_epoch && result.steps < total_steps; ++b) {
      const Index first = b * options.batch_size;
      const Index size = std::min(options.batch_size, n - first);
      const auto idx = order.segment(first, size);
      xb = data(Eigen::all, idx);
      grad.setZero();
      double loss = 0;
      if (conditional) {
        cb = train.context(Eigen::all, idx);
        loss = nll(density, xb, grad, cb, tape);
      } else {
        loss = nll(density, xb, grad, no_context, tape);
      }
      if (!std::isfinite(loss) || !grad.allFinite()) {
        throw TrainingError(
            "nflow::train::fit: the loss or its gradient became non-finite at step " +
                std::to_string(result.steps) + " (loss " + std::to_string(loss) +
                "); the parameters are those before this step",
            result.steps);
      }
      const double lr =
          options.schedule.rate(options.adam.learning_rate, result.steps, total_steps);
      adam.step_model(density, grad, lr);
      ++result.steps;
      loss_sum += loss;
      ++loss_count;
      if (options.report_every_steps > 0 && result.steps % options.report_every_steps == 0) {
        if (report(epoch)) {
          stop = true;
          result.stopped_early = true;
          break;
        }
      }
    }
    result.epochs = epoch + 1;
    if (!stop && options.report_every_steps == 0 && report(epoch)) {
      stop = true;
      result.stopped_early = true;
    }
  }
  if (loss_count > 0 && report(result.epochs - 1)) result.stopped_early = true;
  if (validate && std::isfinite(best_loss)) {
    set_parameters(density, best);
    result.best_validation_loss = best_loss;
  }
  return result;
}

}  // namespace nflow::train
