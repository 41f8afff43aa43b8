#pragma once
/// @file
/// @brief The fit loop: seeded mini-batches of a data set or fresh batches from a sampler
/// (train::sampler), Adam, a learning-rate schedule, validation with early stopping, a progress
/// callback, and a clean stop on a non-finite loss.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <random>
#include <span>
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
#include "nflow/train/distributed.hpp"
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
  /// Data-parallel training (null: this process alone). Every process runs fit with the same
  /// options, model and data; each computes the loss and gradient of its slice of every global
  /// batch of `batch_size` samples (train::batch_slice of the same seeded shuffle), one sum over
  /// the processes per step adds them into the global batch's mean, and every process takes the
  /// same Adam step: the parameters equal those of one process to rounding. With a sampler each
  /// process fills batch_size / size() columns from a generator seeded with
  /// stream_seed(seed, rank). nflow/mpi/train.hpp (nflow::mpi::Communicator) gives one on MPI;
  /// docs/distributed.md says more. The object must outlive the call.
  Collective* collective = nullptr;
  /// With a collective: compare a hash of the parameters across the processes every this many
  /// steps (0: only before the first step) and throw TrainingError when they differ.
  Index consistency_check_every_steps = 100;
  /// Resume a run: the optimiser's state when it stopped (its step count is the number of steps
  /// already taken), with the model's parameters of that step. The shuffling is replayed to that
  /// step (a sampler is called for the steps skipped), the schedule continues, and the next
  /// steps are bit-identical to those of the run that never stopped. Early stopping's count
  /// starts afresh.
  std::optional<AdamState> resume{};
  /// Called after every `checkpoint_every_steps` steps (0: never) with the number of steps taken
  /// and the optimiser's state, the model holding that step's parameters: save both (io::save,
  /// io::save_optimizer) to resume from them. nflow::mpi::checkpoint writes them on rank 0.
  Index checkpoint_every_steps = 0;
  std::function<void(Index, const AdamState&)> checkpoint{};
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

/// The fit loop's view of a batch source: fills this process's part of the batch for `step`,
/// sets `global` to the columns of the whole batch (over every process) and returns true when
/// that batch ends an epoch (never, for a sampler). A function pointer, so that the loop is
/// compiled once per density type, whatever the source. `hash` identifies its data (0 for a
/// sampler), compared across the processes of a data-parallel run.
template <typename D>
struct BatchSource {
  using X = Batch<typename D::Scalar, D::Dim, Dynamic>;
  using C = Batch<typename D::Scalar, Dynamic, Dynamic>;
  void* self = nullptr;
  bool (*fill)(void*, X&, C&, Index, std::mt19937_64&, Index& global) = nullptr;
  std::uint64_t hash = 0;
};

/// The hash of a data set's samples and contexts (0 when empty).
template <typename Scalar>
std::uint64_t data_hash(const Data<Scalar>& data) {
  if (data.empty()) return 0;
  return nflow::train::detail::hash_values(data.context,
                                           nflow::train::detail::hash_values(data.samples));
}

/// Before the first step of a data-parallel run: the processes must agree on everything that
/// decides how many collective calls the run makes and what they sum.
template <typename D>
void check_data_parallel_start(Collective& collective, const D& density, const FitOptions& options,
                               std::uint64_t data, std::uint64_t validation, Index total_steps,
                               Index start) {
  const std::uint64_t values[] = {std::uint64_t(collective.size()),
                                  std::uint64_t(density.parameter_count()),
                                  std::uint64_t(options.batch_size),
                                  std::uint64_t(total_steps),
                                  std::uint64_t(start),
                                  options.seed,
                                  std::uint64_t(options.consistency_check_every_steps),
                                  std::uint64_t(options.report_every_steps),
                                  std::uint64_t(options.patience),
                                  data,
                                  validation,
                                  parameter_hash(density)};
  static constexpr const char* names[] = {"the number of processes",
                                          "the parameter count",
                                          "batch_size",
                                          "the number of steps",
                                          "the step resumed from",
                                          "the seed",
                                          "consistency_check_every_steps",
                                          "report_every_steps",
                                          "patience",
                                          "the training data (a hash)",
                                          "the validation data (a hash)",
                                          ("the initial parameters (a hash; broadcast them from "
                                           "one rank, e.g. nflow::mpi::broadcast_parameters)")};
  check_same_on_every_rank(collective, "nflow::train::fit", values, names);
}

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
  Collective* const collective = options.collective;
  Adam<Scalar> adam(density.parameter_count(), options.adam);
  if (options.resume) adam.set_state(*options.resume);
  const Index first_step = adam.steps();
  if (first_step > total_steps) {
    throw ParameterError("nflow::train::fit: 'resume' is at step " + std::to_string(first_step) +
                         ", beyond the run's " + std::to_string(total_steps) + " steps");
  }
  if (collective != nullptr) {
    check_data_parallel_start(collective[0], density, options, source.hash, data_hash(validation),
                              total_steps, first_step);
  }
  // Data: one shuffle shared by every process; a sampler: a stream per process.
  std::mt19937_64 gen(collective != nullptr && !epochs
                          ? stream_seed(options.seed, std::uint64_t(collective->rank()))
                          : options.seed);
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
  // With a collective: the scaled gradient and the loss, summed over the processes at once.
  Vector<Scalar> summed(collective != nullptr ? density.parameter_count() + 1 : 0);
  const Index local_batch =
      collective != nullptr ? options.batch_size / collective->size() : options.batch_size;
  typename BatchSource<D>::X xb(density.dim(), local_batch);
  typename BatchSource<D>::C cb(density.context_dim(), conditional ? local_batch : 0);

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
  Index global = 0;
  // Resuming: the batches of the steps already taken are drawn again (not trained on), so that
  // the shuffle (or the sampler's generator) and the epoch count are where they were.
  for (; result.steps < first_step; ++result.steps) {
    const bool epoch_end = source.fill(source.self, xb, cb, result.steps, gen, global) ||
                           result.steps + 1 == total_steps;
    if (epochs && epoch_end) result.epochs = ++epoch;
  }
  while (result.steps < total_steps) {
    if (sampled) poison_batch(xb, cb);
    const bool epoch_end = source.fill(source.self, xb, cb, result.steps, gen, global) ||
                           result.steps + 1 == total_steps;
    if (!epochs) global = collective != nullptr ? options.batch_size : xb.cols();
    std::string bad;
    if (sampled) {
      bad = check_sampled_batch("train::fit", density.dim(), density.context_dim(), xb, cb,
                                result.steps);
      if (!bad.empty() && collective == nullptr) throw TrainingError(bad, result.steps);
    }
    grad.setZero();
    double loss = 0;
    if (bad.empty() && xb.cols() > 0) {  // a process's slice of a short last batch may be empty
      loss =
          conditional ? nll(density, xb, grad, cb, tape) : nll(density, xb, grad, no_context, tape);
    }
    if (collective != nullptr) {
      // The global mean: Σ over processes of (local mean) · (local columns / global columns).
      // A bad batch on one process makes the sum NaN on all, so that all stop together.
      const Scalar weight = bad.empty() ? Scalar(double(xb.cols()) / double(global))
                                        : std::numeric_limits<Scalar>::quiet_NaN();
      summed.head(grad.size()) = grad * weight;
      summed(grad.size()) = Scalar(loss * double(weight));
      collective->sum(std::span<Scalar>(summed.data(), std::size_t(summed.size())));
      grad = summed.head(grad.size());
      loss = double(summed(grad.size()));
      if (!bad.empty()) throw TrainingError(bad, result.steps);
    }
    if (!std::isfinite(loss) || !grad.allFinite()) {
      throw TrainingError("nflow::train::fit: the loss or its gradient became non-finite at step " +
                              std::to_string(result.steps) + " (loss " + std::to_string(loss) +
                              (collective != nullptr ? ", on some process" : "") +
                              "); the parameters are those before this step",
                          result.steps);
    }
    const double lr = options.schedule.rate(options.adam.learning_rate, result.steps, total_steps);
    adam.step_model(density, grad, lr);
    ++result.steps;
    loss_sum += loss;
    ++loss_count;
    if (collective != nullptr && options.consistency_check_every_steps > 0 &&
        result.steps % options.consistency_check_every_steps == 0) {
      const std::string diverged = parameter_divergence(collective[0], density, result.steps);
      if (!diverged.empty()) throw TrainingError("nflow::train::fit: " + diverged, result.steps);
    }
    if (options.checkpoint && options.checkpoint_every_steps > 0 &&
        result.steps % options.checkpoint_every_steps == 0) {
      options.checkpoint(result.steps, adam.state());
    }
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

/// The checks of the options that both fits share.
inline void check_fit_options(const FitOptions& options) {
  if (options.batch_size <= 0)
    throw ParameterError("nflow::train::fit: 'batch_size' must be positive");
  if (options.consistency_check_every_steps < 0 || options.checkpoint_every_steps < 0) {
    throw ParameterError(
        "nflow::train::fit: 'consistency_check_every_steps' and 'checkpoint_every_steps' must be "
        "non-negative");
  }
  if (options.checkpoint_every_steps > 0 && !options.checkpoint) {
    throw ParameterError(
        "nflow::train::fit: 'checkpoint_every_steps' is set but 'checkpoint' is empty");
  }
  const Collective* const collective = options.collective;
  if (collective != nullptr && options.batch_size % collective->size() != 0) {
    throw ParameterError(
        "nflow::train::fit: the global 'batch_size' (" + std::to_string(options.batch_size) +
        ") must be divisible by the number of processes (" + std::to_string(collective->size()) +
        "), so that each process computes an equal share of every batch");
  }
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
  // With a collective, a process whose arguments fail throws and the others with it.
  agree_on_failure(options.collective, "nflow::train::fit", [&] {
    internal::check_fit_options(options);
    nflow::detail::check_data("train::fit", "train", train, density.dim(), density.context_dim());
    if (!validation.empty()) {
      nflow::detail::check_data("train::fit", "validation", validation, density.dim(),
                                density.context_dim());
    }
  });
  // Each epoch: a fresh seeded permutation, then its batches in order (the last may be short).
  // With a collective, this process takes its slice of each batch (train::batch_slice).
  struct Epochs {
    const Data<typename D::Scalar>& data;
    Index batch_size;
    Index batches;
    Index rank;
    Index ranks;
    Index batch = 0;
    Eigen::VectorXi order{};
  };
  const Index n = train.samples.cols();
  const Collective* const collective = options.collective;
  Epochs state{train, options.batch_size, (n + options.batch_size - 1) / options.batch_size,
               collective != nullptr ? collective->rank() : 0,
               collective != nullptr ? collective->size() : 1};
  const Index total_steps =
      options.max_steps > 0 ? options.max_steps : options.epochs * state.batches;
  internal::BatchSource<D> source;
  source.self = &state;
  if (collective != nullptr) source.hash = internal::data_hash(train);
  source.fill = [](void* self, typename internal::BatchSource<D>::X& x,
                   typename internal::BatchSource<D>::C& c, Index, std::mt19937_64& gen,
                   Index& global) {
    Epochs& s = *static_cast<Epochs*>(self);
    const Index n = s.data.samples.cols();
    if (s.batch == 0) s.order = random_permutation(n, gen);
    const Index first = s.batch * s.batch_size;
    global = std::min(s.batch_size, n - first);
    const Slice mine = batch_slice(global, s.rank, s.ranks);
    const auto idx = s.order.segment(first + mine.first, mine.count);
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
  agree_on_failure(options.collective, "nflow::train::fit", [&] {
    internal::check_fit_options(options);
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
  });
  internal::BatchSource<D> source;
  source.self = &sampler.fill;
  source.fill = [](void* self, typename internal::BatchSource<D>::X& x,
                   typename internal::BatchSource<D>::C& c, Index step, std::mt19937_64& gen,
                   Index& global) {
    internal::call_sampler(*static_cast<F*>(self), x, c, step, gen);
    global = x.cols();
    return false;
  };
  return internal::fit_loop(density, options, validation, options.max_steps, false, true, source);
}

}  // namespace nflow::train
