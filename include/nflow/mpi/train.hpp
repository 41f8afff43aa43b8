#pragma once
/// @file
/// @brief Data-parallel training on MPI: the same parameters on every rank
/// (broadcast_parameters), per-rank random streams (rank_generator), the distributed reverse-KL
/// step, the divergence check for loops of one's own, and `collective_call`, which turns an
/// exception on one rank into an exception on every rank instead of a hang.
/// train::fit itself runs data-parallel with FitOptions::collective = &communicator.

#include <Eigen/Core>
#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <utility>

#include "nflow/core/parameters.hpp"
#include "nflow/core/random.hpp"
#include "nflow/core/types.hpp"
#include "nflow/mpi/communicator.hpp"
#include "nflow/train/distributed.hpp"
#include "nflow/train/fit.hpp"
#include "nflow/train/objectives.hpp"

namespace nflow::mpi {

/// @brief train::agree_on_failure on `comm`: runs `f()` on this rank, and if it throws on any
/// rank, every rank throws (its own exception where it failed). Collective.
template <typename F>
void collective_call(Communicator& comm, const char* who, F&& f) {
  train::agree_on_failure(&comm, who, std::forward<F>(f));
}

/// @brief Copies the parameters of `model` on rank `root` to every rank (in place), so that
/// every rank starts training from the same model. Collective.
/// @throws ParameterError on every rank when the ranks' models have different parameter
///   counts (checked first, so the broadcast cannot mismatch).
template <typename Model>
void broadcast_parameters(Communicator& comm, Model& model, Index root = 0) {
  const std::uint64_t count[] = {std::uint64_t(model.parameter_count())};
  static constexpr const char* names[] = {"the parameter count"};
  train::check_same_on_every_rank(comm, "nflow::mpi::broadcast_parameters", count, names);
  Vector<typename Model::Scalar> flat = get_parameters(model);
  comm.broadcast(std::span(flat.data(), std::size_t(flat.size())), root);
  set_parameters(model, flat);
}

/// @brief Throws train::TrainingError on every rank when the ranks' parameters differ (a hash
/// compared with one gather); for training loops of one's own (train::fit checks by itself
/// every FitOptions::consistency_check_every_steps steps). Collective.
template <typename Model>
void check_parameters(Communicator& comm, const Model& model, Index step) {
  const std::string diverged = train::parameter_divergence(comm, model, step);
  if (!diverged.empty())
    throw train::TrainingError("nflow::mpi::check_parameters: " + diverged, step);
}

/// @brief This rank's random generator for a run seeded with `seed`: std::mt19937_64 seeded with
/// nflow::stream_seed(seed, rank). Streams of different ranks are independent; rank r's depends
/// only on (seed, r).
inline std::mt19937_64 rank_generator(const Communicator& comm, std::uint64_t seed) {
  return std::mt19937_64(stream_seed(seed, std::uint64_t(comm.rank())));
}

/// @brief Distributed reverse KL: each rank draws global_n / size() latents from its own `gen`
/// (rank_generator), computes train::reverse_kl on them, and one sum over the ranks gives every
/// rank the loss and gradient of the global batch of `global_n` samples (the mean of the ranks'
/// means), which is added into `grad`. Returns the global loss. An Adam step on it keeps the
/// ranks' parameters equal. `workspace` holds this rank's samples afterwards. Collective.
/// @throws ParameterError when global_n is not a positive multiple of size(); what
///   train::reverse_kl throws (on this rank; a failure on one rank leaves the others waiting,
///   unless the target fails on every rank alike).
template <typename D, typename T, std::uniform_random_bit_generator G>
requires train::detail::InverseTrainable<D>
double reverse_kl(Communicator& comm, const D& density, const T& target, Index global_n, G& gen,
                  Eigen::Ref<Vector<typename D::Scalar>> grad,
                  train::ReverseKlWorkspace<D>& workspace) {
  using Scalar = typename D::Scalar;
  if (global_n <= 0 || global_n % comm.size() != 0) {
    throw ParameterError("nflow::mpi::reverse_kl: the global number of samples (" +
                         std::to_string(global_n) +
                         ") must be a positive multiple of the number of ranks (" +
                         std::to_string(comm.size()) + ")");
  }
  nflow::detail::check_size("mpi::reverse_kl", "grad", density.parameter_count(), grad.size());
  Vector<Scalar> summed = Vector<Scalar>::Zero(grad.size() + 1);
  const double loss = train::reverse_kl(density, target, global_n / comm.size(), gen,
                                        summed.head(grad.size()), workspace);
  const Scalar share = Scalar(1) / Scalar(comm.size());
  summed.head(grad.size()) *= share;
  summed(grad.size()) = Scalar(loss) * share;
  comm.sum(std::span(summed.data(), std::size_t(summed.size())));
  grad += summed.head(grad.size());
  return double(summed(grad.size()));
}

}  // namespace nflow::mpi
