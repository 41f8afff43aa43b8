#pragma once
/// @file
/// @brief Adam and AdamW over a model's named parameters, with global-norm gradient clipping.

#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>
#include <utility>

#include "nflow/core/errors.hpp"
#include "nflow/core/parameters.hpp"
#include "nflow/core/types.hpp"

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
  // Four partial sums in double (Eigen would not vectorise the cast).
  double partial[4] = {0, 0, 0, 0};
  const Index n = grad.size();
  Index i = 0;
  for (; i + 4 <= n; i += 4) {
    for (int k = 0; k < 4; ++k) partial[k] += double(grad(i + k)) * double(grad(i + k));
  }
  for (; i < n; ++i) partial[0] += double(grad(i)) * double(grad(i));
  const double norm = std::sqrt((partial[0] + partial[1]) + (partial[2] + partial[3]));
  if (max_norm > 0 && std::isfinite(norm) && norm > max_norm) grad *= Scalar(max_norm / norm);
  return norm;
}

/// @brief The state of an Adam optimiser: its step count and moments, in double whatever the
/// model's Scalar. Visited by name like Adam itself ("adam.step", "adam.m", "adam.v"), so that
/// io::save_optimizer and io::load_optimizer take either, with the same files; FitOptions::resume
/// starts train::fit from one, and FitOptions::checkpoint receives one.
struct AdamState {
  Index step = 0;
  Eigen::VectorXd m{};
  Eigen::VectorXd v{};

  /// Visits "adam.step" (1 × 1), "adam.m", "adam.v" (n × 1), then validates the step count.
  template <typename F>
  void visit_state(F&& f) {
    Eigen::Matrix<double, 1, 1> s;
    s(0) = double(step);
    f(std::string("adam.step"), Eigen::Ref<Eigen::MatrixXd>(s));
    f(std::string("adam.m"), Eigen::Ref<Eigen::MatrixXd>(m));
    f(std::string("adam.v"), Eigen::Ref<Eigen::MatrixXd>(v));
    if (!(s(0) >= 0) || s(0) != std::floor(s(0)))
      throw ParameterError("nflow::train::Adam: 'adam.step' must be a non-negative integer");
    step = Index(s(0));
  }
};

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
    if (parameter_count < 0)
      throw ParameterError("nflow::train::Adam: parameter_count must be non-negative");
    if (!(options.learning_rate >= 0) || !(options.beta1 >= 0 && options.beta1 < 1) ||
        !(options.beta2 >= 0 && options.beta2 < 1) || !(options.epsilon > 0) ||
        !(options.weight_decay >= 0) || !(options.clip_norm >= 0)) {
      throw ParameterError(
          "nflow::train::Adam: options must satisfy learning_rate >= 0, 0 <= beta1, beta2 < 1, "
          "epsilon > 0, "
          "weight_decay >= 0, clip_norm >= 0");
    }
    state_.m = Eigen::VectorXd::Zero(parameter_count);
    state_.v = Eigen::VectorXd::Zero(parameter_count);
  }

  const AdamOptions& options() const { return options_; }
  Index steps() const { return state_.step; }

  /// The step count and moments (see AdamState).
  const AdamState& state() const { return state_; }
  /// Replaces the step count and moments, e.g. with those of a checkpoint.
  /// @throws ParameterError when the moments do not have the optimiser's parameter count or the
  ///   step count is negative; the optimiser is then unchanged.
  void set_state(const AdamState& state) {
    const Index n = state_.m.size();
    if (state.m.size() != n || state.v.size() != n || state.step < 0) {
      throw ParameterError(
          "nflow::train::Adam::set_state: expected moments of " + std::to_string(n) +
          " parameters and a non-negative step, got " + std::to_string(state.m.size()) + " and " +
          std::to_string(state.v.size()) + " moments at step " + std::to_string(state.step));
    }
    state_ = state;
  }

  /// One update of `params` (flat, in place) from `grad` (flat, clipped in place if clipping is
  /// on), at learning rate `lr` (the options' rate when negative). Returns the gradient's norm
  /// before clipping.
  double step(Eigen::Ref<Vector<Scalar>> params, Eigen::Ref<Vector<Scalar>> grad, double lr = -1) {
    nflow::detail::check_size("Adam::step", "params", state_.m.size(), params.size());
    nflow::detail::check_size("Adam::step", "grad", state_.m.size(), grad.size());
    const Update u = begin_step(grad, lr);
    apply(params, grad, 0, u);
    return u.norm;
  }

  /// One update of a model's parameters in place, each tensor visited through
  /// visit_parameters (no copy of the parameters). The same numbers as step() on
  /// get_parameters(model).
  template <typename Model>
  double step_model(Model& model, Eigen::Ref<Vector<Scalar>> grad, double lr = -1) {
    nflow::detail::check_size("Adam::step_model", "grad", state_.m.size(), grad.size());
    nflow::detail::check_size("Adam::step_model", "the model's parameters", state_.m.size(),
                              model.parameter_count());
    const Update u = begin_step(grad, lr);
    Index offset = 0;
    model.visit_parameters([&](const std::string&, auto&& tensor) {
      if (tensor.outerStride() == tensor.rows()) {
        Eigen::Map<Vector<Scalar>> flat(tensor.data(), tensor.size());
        apply(flat, grad.segment(offset, tensor.size()), offset, u);
        offset += tensor.size();
        return;
      }
      for (Index j = 0; j < tensor.cols(); ++j) {
        apply(tensor.col(j), grad.segment(offset, tensor.rows()), offset, u);
        offset += tensor.rows();
      }
    });
    return u.norm;
  }

  /// Visits the optimiser state: "adam.step" (1 × 1), "adam.m", "adam.v" (n × 1), in double
  /// (AdamState::visit_state).
  template <typename F>
  void visit_state(F&& f) {
    state_.visit_state(std::forward<F>(f));
  }

 private:
  struct Update {
    double norm, lr, c1, c2;
  };
  /// Clips the gradient, counts the step and returns its constants.
  Update begin_step(Eigen::Ref<Vector<Scalar>> grad, double lr) {
    if (lr < 0) lr = options_.learning_rate;
    const double norm = clip_global_norm<Scalar>(grad, options_.clip_norm);
    ++state_.step;
    return {norm, lr, 1.0 - std::pow(options_.beta1, double(state_.step)),
            1.0 - std::pow(options_.beta2, double(state_.step))};
  }
  /// The update of the parameters `first` … `first + params.size() − 1`, in chunks of 256
  /// coefficients. Each chunk is computed in double with fixed-size vectorised array arithmetic:
  /// the moments in place, the gradient and parameters widened on the stack (Eigen 3.4 evaluates
  /// float↔double casts inside an expression coefficient by coefficient, so the casts are plain
  /// loops of constant trip count, which the compilers vectorise). A last partial chunk is padded
  /// with zeros (g = m = v = 0 gives a finite, discarded update: the denominator is ≥ ε).
  template <typename P, typename G>
  void apply(P&& params, const G& grad, Index first, const Update& u) {
    Scalar* const pp = params.data();
    const Scalar* const gp = grad.data();
    double* const mp = state_.m.data() + first;
    double* const vp = state_.v.data() + first;
    const Index n = params.size();
    Index s = 0;
    for (; s + Chunk::SizeAtCompileTime <= n; s += Chunk::SizeAtCompileTime) {
      Eigen::Map<Chunk> m(mp + s);
      Eigen::Map<Chunk> v(vp + s);
      if constexpr (std::is_same_v<Scalar, double>) {
        Eigen::Map<Chunk> p(pp + s);
        update_chunk(Eigen::Map<const Chunk>(gp + s), p, m, v, u);
      } else {
        Chunk g;
        Chunk p;
        for (Index i = 0; i < Chunk::SizeAtCompileTime; ++i) g(i) = double(gp[s + i]);
        for (Index i = 0; i < Chunk::SizeAtCompileTime; ++i) p(i) = double(pp[s + i]);
        update_chunk(g, p, m, v, u);
        for (Index i = 0; i < Chunk::SizeAtCompileTime; ++i) pp[s + i] = Scalar(p(i));
      }
    }
    if (s == n) return;
    const Index k = n - s;
    Chunk g = Chunk::Zero();
    Chunk p = Chunk::Zero();
    Chunk m = Chunk::Zero();
    Chunk v = Chunk::Zero();
    for (Index i = 0; i < k; ++i) {
      g(i) = double(gp[s + i]);
      p(i) = double(pp[s + i]);
      m(i) = mp[s + i];
      v(i) = vp[s + i];
    }
    update_chunk(g, p, m, v, u);
    for (Index i = 0; i < k; ++i) {
      pp[s + i] = Scalar(p(i));
      mp[s + i] = m(i);
      vp[s + i] = v(i);
    }
  }
  using Chunk = Eigen::Array<double, 256, 1>;
  /// m ← β₁m + (1 − β₁)g, v ← β₂v + (1 − β₂)g², θ ← θ·(1 − lr·decay) − lr·(m/c₁)/(√(v/c₂) + ε),
  /// with one division and one square root per coefficient.
  template <typename GC, typename PC, typename MC, typename VC>
  void update_chunk(const GC& g, PC& p, MC& m, VC& v, const Update& u) const {
    const double b1 = options_.beta1, b2 = options_.beta2, eps = options_.epsilon;
    const double decay = options_.weight_decay > 0 ? 1.0 - u.lr * options_.weight_decay : 1.0;
    const double step_size = u.lr / u.c1;
    const double inv_sqrt_c2 = 1.0 / std::sqrt(u.c2);
    m = b1 * m + (1.0 - b1) * g;
    v = b2 * v + (1.0 - b2) * g.square();
    p = p * decay - step_size * m / (v.sqrt() * inv_sqrt_c2 + eps);
  }

  AdamOptions options_;
  AdamState state_;
};

/// @brief Learning-rate schedules: a function of the step (0-based) and the total number of steps.
struct Schedule {
  enum class Kind { Constant, Cosine } kind = Kind::Constant;
  double min_fraction = 0.0;  ///< cosine: the final rate as a fraction of the base rate
  Index warmup_steps = 0;     ///< linear warm-up from 0 over the first steps
  /// The rate at `step` out of `total_steps` for a base rate `base`.
  double rate(double base, Index step, Index total_steps) const {
    if (warmup_steps > 0 && step < warmup_steps)
      return base * double(step + 1) / double(warmup_steps);
    if (kind == Kind::Constant || total_steps <= warmup_steps) return base;
    const double progress =
        std::min(1.0, double(step - warmup_steps) / double(total_steps - warmup_steps));
    const double cosine = 0.5 * (1.0 + std::cos(3.14159265358979323846 * progress));
    return base * (min_fraction + (1.0 - min_fraction) * cosine);
  }
  static Schedule constant() { return {}; }
  static Schedule cosine(double min_fraction = 0.0, Index warmup_steps = 0) {
    return {Kind::Cosine, min_fraction, warmup_steps};
  }
};

}  // namespace nflow::train
