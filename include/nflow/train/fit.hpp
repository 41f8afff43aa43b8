#pragma once
/// @file
/// @brief The fit loop: seeded mini-batches of a data set or fresh batches from a sampler
/// (train::sampler), Adam, a learning-rate schedule, validation with early stopping, a progress
/// callback, and a clean stop on a non-finite loss.

#include <chrono>
#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

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
  /// 0-based epoch just finished (or in progress, with `every_steps`); 0 with a sampler
  Index epoch = 0;
  Index step = 0;         ///< optimiser steps taken so far
  double train_loss = 0;  ///< mean training loss since the previous report
  double validation_loss = std::numeric_limits<double>::quiet_NaN();  ///< NaN without validation
  double seconds = 0;  ///< wall time since fit() started
  double learning_rate = 0;
};

struct FitOptions {
  Index batch_size = 256;
  Index epochs = 10;       ///< passes over the training set (ignored with a sampler)
  Index max_steps = -1;    ///< if positive, stop after this many steps whatever the epochs;
                           ///< with a sampler, the run's length (required)
  std::uint64_t seed = 1;  ///< shuffling; with a sampler, the generator handed to it
  AdamOptions adam{};
  Schedule schedule = Schedule::constant();
  /// Early stopping: stop after this many validations without improvement (0: never) and restore
  /// the parameters with the best validation loss.
  Index patience = 0;
  /// Report (and validate) every this many steps; 0 means once per epoch (with a sampler: only
  /// at the end).
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

namespace internal {

/// The fit loop's view of a batch source: fills the batch for `step` and returns true when that
/// batch ends an epoch (never, for a sampler). A function pointer, so that the loop is compiled
/// once per density type, whatever the source.
template <typename D>
struct BatchSource {
  using X = Batch<typename D::Scalar, D::Dim, Dynamic>;
  using C = Batch<typename D::Scalar, Dynamic, Dynamic>;
  void* self = nullptr;
  bool (*fill)(void*, X&, C&, Index, std::mt19937_64&) = nullptr;
};

/// The one fit loop: steps (nll, Adam), reports, validation, early stopping. `epochs`: whether
/// the source has epochs (a fixed data set) or not (a sampler); `sampled`: check each batch's
/// shape (the source is a user's sampler).
template <typename D>
FitResult fit_loop(D& density, const FitOptions& options,
                   const train::Data<typename D::Scalar>& validation, Index total_steps,
                   bool epochs, bool sampled, BatchSource<D> source) {
  using Scalar = typename D::Scalar;
  const bool validate = !validation.empty();
  const bool conditional = density.context_dim() > 0;
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
  typename BatchSource<D>::X xb(density.dim(), options.batch_size);
  typename BatchSource<D>::C cb(density.context_dim(), conditional ? options.batch_size : 0);

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
  Index epoch = 0;  // the epoch in progress (always 0 without epochs)
  while (result.steps < total_steps) {
    if (sampled) poison_batch(xb, cb);
    const bool epoch_end =
        source.fill(source.self, xb, cb, result.steps, gen) || result.steps + 1 == total_steps;
    if (sampled) {
      const std::string bad = check_sampled_batch("train::fit", density.dim(),
                                                  density.context_dim(), xb, cb, result.steps);
      if (!bad.empty()) throw TrainingError(bad, result.steps);
    }
    grad.setZero();
    const double loss =
        conditional ? nll(density, xb, grad, cb, tape) : nll(density, xb, grad, no_context, tape);
    if (!std::isfinite(loss) || !grad.allFinite()) {
      throw TrainingError("nflow::train::fit: the loss or its gradient became non-finite at step " +
                              std::to_string(result.steps) + " (loss " + std::to_string(loss) +
                              "); the parameters are those before this step",
                          result.steps);
    }
    const double lr = options.schedule.rate(options.adam.learning_rate, result.steps, total_steps);
    adam.step_model(density, grad, lr);
    ++result.steps;
    loss_sum += loss;
    ++loss_count;
    if (options.report_every_steps > 0 && result.steps % options.report_every_steps == 0 &&
        report(epoch)) {
      result.stopped_early = true;
      if (epochs) result.epochs = epoch + 1;
      break;
    }
    if (epochs && epoch_end) {
      result.epochs = ++epoch;
      if (options.report_every_steps == 0 && report(epoch - 1)) {
        result.stopped_early = true;
        break;
      }
    }
  }
  if (loss_count > 0 && report(epochs ? std::max<Index>(result.epochs - 1, 0) : 0))
    result.stopped_early = true;
  if (validate && std::isfinite(best_loss)) {
    set_parameters(density, best);
    result.best_validation_loss = best_loss;
  }
  return result;
}

}  // namespace internal

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
  if (options.batch_size <= 0)
    throw ParameterError("nflow::train::fit: 'batch_size' must be positive");
  nflow::detail::check_data("train::fit", "train", train, density.dim(), density.context_dim());
  if (!validation.empty()) {
    nflow::detail::check_data("train::fit", "validation", validation, density.dim(),
                              density.context_dim());
  }
  // Each epoch: a fresh seeded permutation, then its batches in order (the last may be short).
  struct Epochs {
    const Data<typename D::Scalar>& data;
    Index batch_size;
    Index batches;
    Index batch = 0;
    Eigen::VectorXi order{};
  };
  const Index n = train.samples.cols();
  Epochs state{train, options.batch_size, (n + options.batch_size - 1) / options.batch_size};
  const Index total_steps =
      options.max_steps > 0 ? options.max_steps : options.epochs * state.batches;
  internal::BatchSource<D> source;
  source.self = &state;
  source.fill = [](void* self, typename internal::BatchSource<D>::X& x,
                   typename internal::BatchSource<D>::C& c, Index, std::mt19937_64& gen) {
    Epochs& s = *static_cast<Epochs*>(self);
    const Index n = s.data.samples.cols();
    if (s.batch == 0) s.order = random_permutation(n, gen);
    const Index first = s.batch * s.batch_size;
    const auto idx = s.order.segment(first, std::min(s.batch_size, n - first));
    x = s.data.samples(Eigen::all, idx);
    if (s.data.context.size() > 0) c = s.data.context(Eigen::all, idx);
    s.batch = (s.batch + 1) % s.batches;
    return s.batch == 0;
  };
  return internal::fit_loop(density, options, validation, total_steps, true, false, source);
}

/// @brief Fits `density` by maximum likelihood to batches drawn fresh each step by a sampler
/// (train::sampler): data from a simulator or a generator, never materialised. For
/// simulation-based inference (a posterior q(θ | x) trained on θ ~ prior, x ~ simulator(θ)):
///
///     train::fit(posterior, train::sampler([&](auto& theta, auto& x, std::mt19937_64& gen) {
///                  for (Index j = 0; j < theta.cols(); ++j) {
///                    theta.col(j) = prior(gen);
///                    x.col(j) = simulate(theta.col(j), gen);
///                  }
///                }),
///                {.batch_size = 256, .max_steps = 5000}, {.samples = theta_v, .context = x_v});
///
/// What the options mean here: `max_steps` is the length of the run and must be positive (a
/// sampler has no epochs: `epochs` is ignored, Progress::epoch and FitResult::epochs are 0);
/// `batch_size` is the number of columns of the buffers handed to the sampler; `seed` seeds the
/// generator handed to it (the same seed, sampler and model give bit-identical parameters);
/// reports, validations and the patience count happen every `report_every_steps` steps, and
/// once at the end (with `report_every_steps` 0: only at the end, so `patience` needs it
/// positive). Validation is on a fixed held-out data set, as for fit on data; draw it once with
/// its own seed, e.g. by calling the same sampler on a larger buffer with `std::mt19937_64
/// gen(seed)`. The batch the sampler fills is checked each step.
/// @throws nflow::ParameterError before any step when `max_steps` is not positive, the batch
///   size is not, or `patience` is set without `report_every_steps`; nflow::ShapeError when the
///   validation set does not fit the density (before any step) or when the sampler returns a
///   batch that does not (an empty one, samples without dim() rows, a context without
///   context_dim() rows or one column per sample, a context for an unconditional density; the
///   message names the sampler); TrainingError on a non-finite loss.
template <typename D, typename F>
FitResult fit(D& density, Sampler<F> sampler, const FitOptions& options,
              const Data<typename D::Scalar>& validation = {}) {
  if (options.batch_size <= 0)
    throw ParameterError("nflow::train::fit: 'batch_size' must be positive");
  if (options.max_steps <= 0) {
    throw ParameterError(
        "nflow::train::fit: with a sampler, 'max_steps' must be positive: a sampler has no "
        "epochs, so the number of steps is what bounds the run");
  }
  if (options.patience > 0 && options.report_every_steps <= 0) {
    throw ParameterError(
        "nflow::train::fit: with a sampler, 'patience' needs 'report_every_steps' > 0 (there "
        "are no epochs at whose ends to validate)");
  }
  if (!validation.empty()) {
    nflow::detail::check_data("train::fit", "validation", validation, density.dim(),
                              density.context_dim());
  }
  internal::BatchSource<D> source;
  source.self = &sampler.fill;
  source.fill = [](void* self, typename internal::BatchSource<D>::X& x,
                   typename internal::BatchSource<D>::C& c, Index step, std::mt19937_64& gen) {
    internal::call_sampler(*static_cast<F*>(self), x, c, step, gen);
    return false;
  };
  return internal::fit_loop(density, options, validation, options.max_steps, false, true, source);
}

}  // namespace nflow::train
