#pragma once
/// @file
/// @brief Checkpoints of a data-parallel run: rank 0 writes the model and the optimiser's state
/// (safetensors, through nflow/io), every rank reads them back to resume.

#include <filesystem>
#include <functional>
#include <string>
#include <utility>

#include "nflow/core/types.hpp"
#include "nflow/io/optimizer.hpp"
#include "nflow/io/safetensors.hpp"
#include "nflow/mpi/communicator.hpp"
#include "nflow/mpi/train.hpp"
#include "nflow/train/adam.hpp"

namespace nflow::mpi {

/// @brief The files of a checkpoint in `directory`: "model.safetensors" (io::save of the model)
/// and "optimizer.safetensors" (io::save_optimizer of its Adam state).
struct CheckpointFiles {
  std::filesystem::path model;
  std::filesystem::path optimizer;
  explicit CheckpointFiles(const std::filesystem::path& directory)
      : model(directory / "model.safetensors"), optimizer(directory / "optimizer.safetensors") {}
};

/// @brief Writes a checkpoint of `model` and `state` to `directory` on rank 0 (each file written
/// beside its final name, then renamed over it, so a run killed while writing leaves the previous
/// checkpoint whole; the step is in the metadata, "step"). Collective: every rank calls it; a
/// failure on rank 0 throws on every rank.
template <typename Model>
void save_checkpoint(Communicator& comm, const Model& model, const train::AdamState& state,
                     const std::filesystem::path& directory) {
  collective_call(comm, "nflow::mpi::save_checkpoint", [&] {
    if (comm.rank() != 0) return;
    const CheckpointFiles files(directory);
    std::filesystem::create_directories(directory);
    const io::Metadata metadata{{"step", std::to_string(state.step)}};
    auto write = [&](const std::filesystem::path& path, auto&& save) {
      std::filesystem::path partial = path;
      partial += ".partial";
      save(partial);
      std::filesystem::rename(partial, path);
    };
    write(files.model, [&](const auto& path) {
      io::save(model, path, {.dtype = std::nullopt, .metadata = metadata});
    });
    write(files.optimizer, [&](const auto& path) { io::save_optimizer(state, path, metadata); });
  });
}

/// @brief FitOptions::checkpoint for a data-parallel run: save_checkpoint of `model` (the
/// model being fitted) into `directory`. `comm` and `model` must outlive the fit.
template <typename Model>
std::function<void(Index, const train::AdamState&)> checkpoint(Communicator& comm,
                                                               const Model& model,
                                                               std::filesystem::path directory) {
  return [&comm, &model, directory = std::move(directory)](Index, const train::AdamState& state) {
    save_checkpoint(comm, model, state, directory);
  };
}

/// @brief Loads the checkpoint in `directory` on every rank: the model's parameters (strictly,
/// as io::load) and the optimiser's state, returned for FitOptions::resume. Collective: a
/// failure on any rank throws on every rank (the model is then unchanged where it failed).
template <typename Model>
train::AdamState load_checkpoint(Communicator& comm, Model& model,
                                 const std::filesystem::path& directory) {
  train::Adam<typename Model::Scalar> adam(model.parameter_count());
  collective_call(comm, "nflow::mpi::load_checkpoint", [&] {
    const CheckpointFiles files(directory);
    io::load_optimizer(adam, files.optimizer);
    io::load(model, files.model);
  });
  return adam.state();
}

}  // namespace nflow::mpi
