#pragma once
/// @file
/// @brief Saving and loading an optimiser's state (safetensors), so that training resumes exactly:
/// save the model with io::save and its optimiser with io::save_optimizer at the same step; load
/// both into a model and an optimiser built the same way, and the next steps are bit-identical to
/// those of the run that never stopped.

#include <Eigen/Core>
#include <filesystem>
#include <istream>
#include <ostream>
#include <string>
#include <utility>

#include "nflow/io/safetensors.hpp"

namespace nflow::io {

/// @brief An optimiser's state seen as a parameterised object, so that save/load (and their
/// strictness and strong guarantee) apply to it unchanged. The optimiser must provide
/// `visit_state(f)` calling `f(name, Eigen::Ref<Eigen::MatrixXd>)` for each state tensor and
/// validating what it was given afterwards (train::Adam: "adam.step", "adam.m", "adam.v").
template <typename Optimizer>
class OptimizerState {
 public:
  using Scalar = double;
  explicit OptimizerState(Optimizer optimizer) : optimizer_(std::move(optimizer)) {}

  const Optimizer& optimizer() const { return optimizer_; }
  Optimizer& optimizer() { return optimizer_; }

  template <typename F>
  void visit_parameters(F&& f) {
    optimizer_.visit_state(f);
  }
  /// Read-only visit: runs visit_state on a copy, so the optimiser itself is never touched.
  template <typename F>
  void visit_parameters(F&& f) const {
    Optimizer copy = optimizer_;
    copy.visit_state([&](const std::string& name, Eigen::Ref<Eigen::MatrixXd> tensor) {
      f(name, Eigen::Ref<const Eigen::MatrixXd>(tensor));
    });
  }

 private:
  Optimizer optimizer_;
};

/// @brief Saves the optimiser's state (F64) to `out` or to the file at `path`.
template <typename Optimizer>
void save_optimizer(const Optimizer& optimizer, std::ostream& out, Metadata metadata = {}) {
  save(OptimizerState<Optimizer>(optimizer), out, SaveOptions{DType::F64, std::move(metadata)});
}
template <typename Optimizer>
void save_optimizer(const Optimizer& optimizer, const std::filesystem::path& path,
                    Metadata metadata = {}) {
  save(OptimizerState<Optimizer>(optimizer), path, SaveOptions{DType::F64, std::move(metadata)});
}

/// @brief Loads the optimiser's state strictly (as io::load: every tensor present with the
/// optimiser's shape, which depends on its parameter count, nothing else in the file, finite
/// values, a non-negative integer step). On any exception `optimizer` is unchanged.
template <typename Optimizer, typename Source>
Metadata load_optimizer(Optimizer& optimizer, Source&& source) {
  OptimizerState<Optimizer> state(optimizer);
  Metadata metadata = load(state, std::forward<Source>(source));
  optimizer = std::move(state.optimizer());
  return metadata;
}

}  // namespace nflow::io
