#pragma once
/// @file
/// @brief Adam and AdamW over a model's named parameters, with global-norm gradient clipping.

#include "nflow/core/errors.hpp"
#include "nflow/core/parameters.hpp"
#include "nflow/core/types.hpp"

#include <cmath>
#include <string>

namespace nflow::train {

/// @brief Settings of Adam (Kingma & Ba 2015, arXiv:1412.6980) and AdamW (Loshchilov & Hutter
/// 2019, arXiv:1711.05101).
struct AdamOptions {
  double learning_rate = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double epsilon = 1e-8;
  /// Decoupled weight decay (AdamW): θ ← θ − lr·weight_decay·θ each step. 0 gives plain Adam.
  double weight_decay = 0.0;
  /// Global-norm clipping: if ‖g‖₂ > clip_norm the whole gradient is scaled to norm clip_norm.
  /// 0 disables clipping.
  double clip_norm = 0.0;
};

/// @brief Scales `grad` in place so that its Euclidean norm is at most `max_norm`; returns the
/// norm before clipping. A non-finite norm leaves the gradient unchanged (the caller decides).
template <typename Scalar>
double clip_global_norm(Eigen::Ref<Vector<Scalar>> grad, double max_norm) {
  const double norm = double(grad.template cast<double>().norm());
  if (max_norm > 0 && std::isfinite(norm) && norm > max_norm) grad *= Scalar(max_norm / norm);
  return norm;
}

/// @brief The Adam / AdamW optimiser over a flat parameter vector.
///
/// With g the (clipped) gradient, t the step count and lr the step's learning rate:
///   m ← β₁m + (1 − β₁)g,  v ← β₂v + (1 − β₂)g²,
///   θ ← θ − lr·weight_decay·θ − lr·(m/(1 − β₁ᵗ)) / (√(v/(1 − β₂ᵗ)) + ε).
/// The moments are kept in double whatever the model's Scalar, so float models train stably.
/// Its state (step count and moments) is visited by name ("adam.step", "adam.m", "adam.v") so that
/// it can be saved and training resumed exactly.
template <typename Scalar>
class Adam {
 public:
  Adam(Index parameter_count, AdamOptions options = {}) : options_(options) {
    if (parameter_count < 0) throw ParameterError("nflow::train::Adam: parameter_count must be non-negative");
    if (!(options.learning_rate >= 0) || !(options.beta1 >= 0 && options.beta1 < 1) ||
        !(options.beta2 >= 0 && options.beta2 < 1) || !(options.epsilon > 0) || !(options.weight_decay >= 0) ||
        !(options.clip_norm >= 0)) {
      throw ParameterError(
          "nflow::train::Adam: options must satisfy learning_rate >= 0, 0 <= beta1, beta2 < 1, epsilon > 0, "
          "weight_decay >= 0, clip_norm >= 0");
    }
    m_ = Eigen::VectorXd::Zero(parameter_count);
    v_ = Eigen::VectorXd::Zero(parameter_count);
  }

  const AdamOptions& options() const { return options_; }
  Index steps() const { return step_; }

  /// One update of `params` (flat, in place) from `grad` (flat, clipped in place if clipping is
  /// on), at learning rate `lr` (the options' rate when negative). Returns the gradient's norm
  /// before clipping.
  double step(Eigen::Ref<Vector<Scalar>> params, Eigen::Ref<Vector<Scalar>> grad, double lr = -1) {
    detail::check_size("Adam::step", "params", m_.size(), params.size());
    detail::check_size("Adam::step", "grad", m_.size(), grad.size());
    if (lr < 0) lr = options_.learning_rate;
    const double norm = clip_global_norm<Scalar>(grad, options_.clip_norm);
    ++step_;
    const double b1 = options_.beta1, b2 = options_.beta2;
    const double c1 = 1.0 - std::pow(b1, double(step_));
    const double c2 = 1.0 - std::pow(b2, double(step_));
    const Eigen::VectorXd g = grad.template cast<double>();
    m_ = b1 * m_ + (1.0 - b1) * g;
    v_ = b2 * v_ + (1.0 - b2) * g.cwiseAbs2();
    Eigen::VectorXd theta = params.template cast<double>();
    if (options_.weight_decay > 0) theta *= 1.0 - lr * options_.weight_decay;
    theta.array() -= lr * (m_.array() / c1) / ((v_.array() / c2).sqrt() + options_.epsilon);
    params = theta.cast<Scalar>();
    return norm;
  }

  /// One update of a model's parameters in place, read and written through visit_parameters.
  template <typename Model>
  double step_model(Model& model, Eigen::Ref<Vector<Scalar>> grad, double lr = -1) {
    Vector<Scalar> theta = get_parameters(model);
    const double norm = step(theta, grad, lr);
    set_parameters(model, theta);
    return norm;
  }

  /// Visits the optimiser state: "adam.step" (1 × 1), "adam.m", "adam.v" (n × 1), in double.
  template <typename F>
  void visit_state(F&& f) {
    Eigen::Matrix<double, 1, 1> s;
    s(0) = double(step_);
    f(std::string("adam.step"), Eigen::Ref<Eigen::MatrixXd>(s));
    f(std::string("adam.m"), Eigen::Ref<Eigen::MatrixXd>(m_));
    f(std::string("adam.v"), Eigen::Ref<Eigen::MatrixXd>(v_));
    if (!(s(0) >= 0) || s(0) != std::floor(s(0))) throw ParameterError("nflow::train::Adam: 'adam.step' must be a non-negative integer");
    step_ = Index(s(0));
  }

 private:
  AdamOptions options_;
  Eigen::VectorXd m_;
  Eigen::VectorXd v_;
  Index step_ = 0;
};

/// @brief Learning-rate schedules: a function of the step (0-based) and the total number of steps.
struct Schedule {
  enum class Kind { Constant, Cosine } kind = Kind::Constant;
  double min_fraction = 0.0;  ///< cosine: the final rate as a fraction of the base rate
  Index warmup_steps = 0;     ///< linear warm-up from 0 over the first steps
  /// The rate at `step` out of `total_steps` for a base rate `base`.
  double rate(double base, Index step, Index total_steps) const {
    if (warmup_steps > 0 && step < warmup_steps) return base * double(step + 1) / double(warmup_steps);
    if (kind == Kind::Constant || total_steps <= warmup_steps) return base;
    const double progress = std::min(1.0, double(step - warmup_steps) / double(total_steps - warmup_steps));
    const double cosine = 0.5 * (1.0 + std::cos(3.14159265358979323846 * progress));
    return base * (min_fraction + (1.0 - min_fraction) * cosine);
  }
  static Schedule constant() { return {}; }
  static Schedule cosine(double min_fraction = 0.0, Index warmup_steps = 0) {
    return {Kind::Cosine, min_fraction, warmup_steps};
  }
};

}  // namespace nflow::train
