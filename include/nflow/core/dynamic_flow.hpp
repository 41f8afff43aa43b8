#pragma once
/// @file
/// @brief DynamicFlow<Scalar>: a sequence of AnyBijector<Scalar> steps whose number and kinds are
/// chosen at run time, itself a bijector — the run-time counterpart of Flow<B1, ..., Bn>.
///
/// Same conventions as Flow (nflow/core/flow.hpp, docs/conventions.md): forward applies step 0
/// first and adds the log-dets; inverse applies the last step's inverse first; a context reaches
/// the conditional steps only; step i's parameters and buffers are named "<i>.<name>". A
/// DynamicFlow and the Flow<...> of the same steps have the same parameter and buffer names, the
/// same flat parameter layout and the same numbers, so each loads the other's files.

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "nflow/core/any_bijector.hpp"
#include "nflow/core/bijector_base.hpp"
#include "nflow/core/buffers.hpp"
#include "nflow/core/composite.hpp"
#include "nflow/core/errors.hpp"
#include "nflow/core/types.hpp"

namespace nflow {

/// @brief The composition of a run-time sequence of bijectors, itself a bijector (Dim =
/// ContextDim = Eigen::Dynamic).
///
/// forward(x) = Tₙ₋₁(…T₁(T₀(x))), log-det Σᵢ log|det J_Tᵢ|; inverse(z) = T₀⁻¹(…Tₙ₋₁⁻¹(z)).
/// forward_vjp records one tape per step and runs the steps' taped vjps last step first;
/// inverse_vjp keeps what each step's inverse receives and runs the steps' inverse vjps from step 0
/// up (as Flow). The flat parameter vector is the steps' in step order.
///
/// Class invariant: every step has the dimension of step 0, and every conditional step (a step
/// with context_dim() > 0) the same context dimension; push_back and the constructor check it
/// and throw nflow::ParameterError naming the step. (Replacing a step through step(i) skips that
/// check; calls then throw ShapeError at the step that does not fit.)
///
/// An empty DynamicFlow is a flow under construction, not the identity: it has no dimension to
/// check inputs against (the compile-time Flow<> does not compile either), so dim() and every call
/// throw nflow::UnsupportedError until a step is added. A flow read from a file with no layers is
/// almost certainly a broken file, and saying so beats an identity map of unknown size.
///
/// Capabilities: has_forward_vjp() (resp. has_inverse_vjp()) when every step has it; the vjps
/// throw nflow::UnsupportedError naming the first step that lacks it. Static traits are
/// conservative (IsConstantLogDet false, costs Cost::Iterative); is_constant_log_det(),
/// forward_cost() and inverse_cost() combine the steps' at run time.
///
/// Thread safety: const calls read the steps only; a const DynamicFlow is safe to share between
/// threads (as are the held bijectors of nflow). Batch calls allocate per call and per step (each
/// step's output), never per sample.
/// @tparam Scalar_ float or double.
template <typename Scalar_>
class DynamicFlow : public BijectorBase<DynamicFlow<Scalar_>> {
  using Mat = Batch<Scalar_, Dynamic, Dynamic>;

 public:
  using Scalar = Scalar_;
  using Step = AnyBijector<Scalar>;
  static constexpr int Dim = Dynamic;
  static constexpr int ContextDim = Dynamic;
  static constexpr bool IsConstantLogDet = false;
  static constexpr Cost ForwardCost = Cost::Iterative;
  static constexpr Cost InverseCost = Cost::Iterative;

  /// An empty flow: add steps with push_back or emplace_back before calling it.
  DynamicFlow() = default;
  /// The steps in forward order. @throws ParameterError if their dimensions or context
  /// dimensions disagree (naming the step).
  explicit DynamicFlow(std::vector<Step> steps) {
    steps_.reserve(steps.size());
    for (Step& s : steps) push_back(std::move(s));
  }

  /// Appends a step (applied after the others in forward). @throws ParameterError if its
  /// dimension differs from step 0's, or it is conditional with another context dimension than
  /// the conditional steps before it; the flow is then unchanged.
  void push_back(Step step) {
    check_step(step);
    steps_.push_back(std::move(step));
  }
  /// Appends AnyBijector<Scalar>(args...), e.g. `emplace_back(MAF<double>(4), "maf")`, with the
  /// checks of push_back; returns the new step.
  template <typename... Args>
  Step& emplace_back(Args&&... args) {
    push_back(Step(std::forward<Args>(args)...));
    return steps_.back();
  }

  /// The number of steps.
  Index size() const { return Index(steps_.size()); }
  bool empty() const { return steps_.empty(); }
  /// Step i (0-based, forward order). @throws std::out_of_range if i is not below size().
  const Step& step(Index i) const { return steps_.at(std::size_t(i)); }
  Step& step(Index i) { return steps_.at(std::size_t(i)); }

  /// Step 0's dimension. @throws UnsupportedError if the flow has no steps.
  Index dim() const {
    if (steps_.empty()) {
      throw UnsupportedError(
          "nflow::DynamicFlow: the flow has no steps (an empty flow has no dimension; add a step "
          "with push_back or emplace_back before calling it)");
    }
    return steps_.front().dim();
  }
  /// The conditional steps' context dimension (0 if no step is conditional).
  Index context_dim() const {
    for (const Step& s : steps_) {
      if (s.context_dim() > 0) return s.context_dim();
    }
    return 0;
  }
  /// Whether every step may split batch calls into tiles (nflow/core/tiling.hpp).
  bool splits_batches() const {
    for (const Step& s : steps_) {
      if (!s.splits_batches()) return false;
    }
    return true;
  }
  /// Whether every step has a forward (resp. inverse) vjp.
  bool has_forward_vjp() const { return first_without(false) == size(); }
  bool has_inverse_vjp() const { return first_without(true) == size(); }
  /// The steps' traits at run time: constant log-det if every step's is; each direction costs
  /// what its most expensive step costs.
  bool is_constant_log_det() const {
    for (const Step& s : steps_) {
      if (!s.is_constant_log_det()) return false;
    }
    return true;
  }
  Cost forward_cost() const {
    Cost c = Cost::OnePass;
    for (const Step& s : steps_) c = max_cost(c, s.forward_cost());
    return c;
  }
  Cost inverse_cost() const {
    Cost c = Cost::OnePass;
    for (const Step& s : steps_) c = max_cost(c, s.inverse_cost());
    return c;
  }

  /// One line per step, "<i>: <step.describe()>", each ending in a newline.
  std::string summary() const {
    std::string out;
    for (std::size_t i = 0; i < steps_.size(); ++i)
      out += std::to_string(i) + ": " + steps_[i].describe() + "\n";
    return out;
  }

  /// The parameters of every step, in step order, named "<index>.<name>" as in Flow (the hook
  /// BijectorBase derives the visits and the count from).
  template <typename Self, typename F>
  static void parameters_impl(Self& self, F&& f) {
    for (std::size_t i = 0; i < self.steps_.size(); ++i)
      detail::visit_part_parameters(self.steps_[i], std::to_string(i) + ".", f);
  }
  /// The buffers of every step, named "<index>.<name>" as in Flow. A step that rejects a new
  /// value throws; the steps before it keep theirs.
  template <typename F>
  void visit_buffers(F&& f) {
    for (std::size_t i = 0; i < steps_.size(); ++i)
      detail::visit_prefixed_buffers(steps_[i], std::to_string(i) + ".", f);
  }
  template <typename F>
  void visit_buffers(F&& f) const {
    for (std::size_t i = 0; i < steps_.size(); ++i)
      detail::visit_prefixed_buffers(steps_[i], std::to_string(i) + ".", f);
  }

  // ---- hooks for BijectorBase: the fold -------------------------------------------------------
  template <typename X, typename C>
  ResultFor<Scalar, Dynamic, X> forward_impl(const X& x, const C& ctx) const {
    return fold<false>(x, ctx);
  }
  template <typename Z, typename C>
  ResultFor<Scalar, Dynamic, Z> inverse_impl(const Z& z, const C& ctx) const {
    return fold<true>(z, ctx);
  }

  // ---- hooks for BijectorBase: gradients ------------------------------------------------------
  /// What forward_recorded() keeps: each step's tape.
  struct Tape {
    std::vector<typename Step::Tape> steps;
    /// The number of samples recorded.
    Index cols() const { return steps.empty() ? 0 : steps.front().cols(); }
  };
  template <typename C>
  ValueAndLogDet<Scalar, Dynamic, Dynamic> record_forward_impl(const Mat& x, const C& ctx,
                                                               Tape& tape) const {
    const auto& c = evaluated_context(ctx);
    tape.steps.resize(steps_.size());
    ValueAndLogDet<Scalar, Dynamic, Dynamic> out;
    for (std::size_t i = 0; i < steps_.size(); ++i) {
      auto r = on_step(steps_[i], c, [&](const auto&... cs) {
        return steps_[i].forward_recorded(i == 0 ? x : out.value, tape.steps[i], cs...);
      });
      accumulate(i, std::move(r), out);
    }
    return out;
  }
  template <typename GV, typename GL, typename C>
  Mat taped_vjp_impl(const Tape& tape, const GV& gv, const GL& gl, Eigen::Ref<Vector<Scalar>> gp,
                     const C& ctx) const {
    require_vjp(false, "forward_vjp_recorded");
    if (tape.steps.size() != steps_.size()) {
      throw ShapeError("nflow::DynamicFlow: forward_vjp_recorded: the tape holds " +
                       std::to_string(tape.steps.size()) + " steps, the flow has " +
                       std::to_string(steps_.size()));
    }
    const auto& c = evaluated_context(ctx);
    const std::vector<Index> offsets = parameter_offsets();
    const auto& gls = detail::as_batch<Scalar, 1>(gl);
    Mat g = gv;
    for (std::size_t k = steps_.size(); k-- > 0;) {
      g = on_step(steps_[k], c, [&](const auto&... cs) {
        return steps_[k].forward_vjp_recorded(
            tape.steps[k], g, gls, gp.segment(offsets[k], offsets[k + 1] - offsets[k]), cs...);
      });
    }
    return g;
  }
  template <typename X, typename GV, typename GL, typename C>
  BatchFor<Scalar, Dynamic, X> forward_vjp_impl(const X& x, const GV& gv, const GL& gl,
                                                Eigen::Ref<Vector<Scalar>> gp, const C& ctx) const {
    require_vjp(false, "forward_vjp");
    const auto& c = evaluated_context(ctx);
    Tape tape;  // a recorded forward pass, then the steps' vjps from their tapes
    record_forward_impl(detail::as_batch<Scalar, Dynamic>(x), c, tape);
    return BatchFor<Scalar, Dynamic, X>(taped_vjp_impl(tape, gv, gl, gp, c));
  }
  template <typename Z, typename GV, typename GL, typename C>
  BatchFor<Scalar, Dynamic, Z> inverse_vjp_impl(const Z& z, const GV& gv, const GL& gl,
                                                Eigen::Ref<Vector<Scalar>> gp, const C& ctx) const {
    require_vjp(true, "inverse_vjp");
    const auto& c = evaluated_context(ctx);
    const std::size_t n = steps_.size();
    std::vector<Mat> inputs(n);  // inputs[i]: what step i's inverse receives
    inputs[n - 1] = z;
    for (std::size_t i = n - 1; i > 0; --i) {
      inputs[i - 1] = on_step(steps_[i], c, [&](const auto&... cs) {
                        return steps_[i].inverse_and_log_det(inputs[i], cs...);
                      }).value;
    }
    const std::vector<Index> offsets = parameter_offsets();
    const auto& gls = detail::as_batch<Scalar, 1>(gl);
    Mat g = gv;
    for (std::size_t i = 0; i < n; ++i) {
      g = on_step(steps_[i], c, [&](const auto&... cs) {
        return steps_[i].inverse_vjp(inputs[i], g, gls,
                                     gp.segment(offsets[i], offsets[i + 1] - offsets[i]), cs...);
      });
    }
    return BatchFor<Scalar, Dynamic, Z>(std::move(g));
  }

 private:
  /// Forward: steps 0 … n−1; inverse: steps n−1 … 0. The context is evaluated once.
  template <bool Inverse, typename X, typename C>
  ResultFor<Scalar, Dynamic, X> fold(const X& x, const C& ctx) const {
    const auto& c = evaluated_context(ctx);
    const std::size_t n = steps_.size();
    const auto& x0 = detail::as_batch<Scalar, Dynamic>(x);
    ValueAndLogDet<Scalar, Dynamic, Dynamic> out;
    for (std::size_t k = 0; k < n; ++k) {
      const Step& s = steps_[Inverse ? n - 1 - k : k];
      auto r = on_step(s, c, [&](const auto&... cs) {
        const Mat& v = k == 0 ? x0 : out.value;
        if constexpr (Inverse) {
          return s.inverse_and_log_det(v, cs...);
        } else {
          return s.forward_and_log_det(v, cs...);
        }
      });
      accumulate(k, std::move(r), out);
    }
    return {std::move(out.value), std::move(out.log_det)};
  }

  /// The context as a dynamic matrix (a reference when it is one), or NoContext.
  template <typename C>
  static decltype(auto) evaluated_context(const C& ctx) {
    if constexpr (is_no_context_v<C>) {
      return NoContext{};
    } else {
      return detail::as_batch<Scalar, Dynamic>(ctx);
    }
  }
  /// Calls f() or f(context): the context only for a conditional step (BijectorBase has checked
  /// that a context is given exactly when the flow is conditional).
  template <typename C, typename F>
  static auto on_step(const Step& s, const C& ctx, F&& f) {
    if constexpr (is_no_context_v<C>) {
      return f();
    } else {
      return s.context_dim() > 0 ? f(ctx) : f();
    }
  }
  /// Step k's result into the running value and log-det sum.
  static void accumulate(std::size_t k, ValueAndLogDet<Scalar, Dynamic, Dynamic>&& r,
                         ValueAndLogDet<Scalar, Dynamic, Dynamic>& out) {
    out.value = std::move(r.value);
    if (k == 0) {
      out.log_det = std::move(r.log_det);
    } else {
      out.log_det += r.log_det;
    }
  }

  /// Where each step's slice of the flat parameter vector starts (and, last, the total).
  std::vector<Index> parameter_offsets() const {
    std::vector<Index> off(steps_.size() + 1, 0);
    for (std::size_t i = 0; i < steps_.size(); ++i)
      off[i + 1] = off[i] + steps_[i].parameter_count();
    return off;
  }
  /// The index of the first step without the vjp of that direction (size() if none).
  Index first_without(bool inverse) const {
    for (std::size_t i = 0; i < steps_.size(); ++i) {
      if (!(inverse ? steps_[i].has_inverse_vjp() : steps_[i].has_forward_vjp())) return Index(i);
    }
    return size();
  }
  void require_vjp(bool inverse, const char* call) const {
    const Index i = first_without(inverse);
    if (i == size()) return;
    const std::string dir = inverse ? "inverse" : "forward";
    throw UnsupportedError(std::string("nflow::DynamicFlow: ") + call + ": step " +
                           std::to_string(i) + " ('" + steps_[std::size_t(i)].name() +
                           "') has no " + dir + " vjp; ask has_" + dir + "_vjp() first");
  }
  void check_step(const Step& s) const {
    const std::string which =
        "nflow::DynamicFlow: step " + std::to_string(steps_.size()) + " ('" + s.name() + "')";
    if (!steps_.empty() && s.dim() != steps_.front().dim()) {
      throw ParameterError(which + " has dimension " + std::to_string(s.dim()) + ", but step 0 ('" +
                           steps_.front().name() + "') has dimension " +
                           std::to_string(steps_.front().dim()));
    }
    const Index cd = context_dim();
    if (s.context_dim() > 0 && cd > 0 && s.context_dim() != cd) {
      throw ParameterError(which + " takes a context of " + std::to_string(s.context_dim()) +
                           " rows, but an earlier conditional step takes " + std::to_string(cd));
    }
  }

  std::vector<Step> steps_;
};

}  // namespace nflow
