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
  std::function<void(const Progress&)> callback;
};

struct FitResult {
  Index steps = 0;
  Index epochs = 0;
  double final_train_loss = std::numeric_limits<double>::quiet_NaN();
  double best_validation_loss = std::numeric_limits<double>::quiet_NaN();
  Index best_step = -1;
  bool stopped_early = false;
};

/// @brief Fits `density` to the columns of `data` by maximum likelihood (mean NLL), optionally
/// conditional on `context` (one column per sample), with `validation` data for early stopping.
/// Deterministic: the same seed, data and model give bit-identical parameters.
template <typename D, typename X, typename V = Batch<typename D::Scalar, Dynamic, Dynamic>>
FitResult fit(D& density, const Eigen::MatrixBase<X>& data, const FitOptions& options,
              const Eigen::MatrixBase<V>& validation = V(),
              const Batch<typename D::Scalar, Dynamic, Dynamic>& context = {},
              const Batch<typename D::Scalar, Dynamic, Dynamic>& validation_context = {}) {
  using Scalar = typename D::Scalar;
  const Index n = data.cols();
  if (n == 0) throw ShapeError("nflow::train::fit: the training set is empty");
  if (options.batch_size <= 0)
    throw ParameterError("nflow::train::fit: 'batch_size' must be positive");
  detail::check_rows("train::fit", "data", density.dim(), data.rows(), data.cols());
  const bool conditional = context.size() > 0;
  if (conditional) detail::check_cols("train::fit", "context", n, context.rows(), context.cols());
  const bool validate = validation.cols() > 0;
  if (validate)
    detail::check_rows("train::fit", "validation", density.dim(), validation.rows(),
                       validation.cols());

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
    if (conditional) return nll_value(density, validation, validation_context);
    return nll_value(density, validation);
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
        cb = context(Eigen::all, idx);
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
