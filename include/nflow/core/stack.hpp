#pragma once
/// @file
/// @brief Stack<Block>: a run-time number of blocks of one type, itself a bijector — depth as a
/// hyperparameter. The run-time counterpart of Repeat<N, Block> (nflow/core/flow.hpp), and, with
/// Block = AnyBijector<Scalar>, the run-time composition DynamicFlow<Scalar>
/// (nflow/core/dynamic_flow.hpp).
///
/// Same conventions as Flow (docs/conventions.md): forward applies block 0 first and adds the
/// log-dets; inverse applies the last block's inverse first; a context reaches the conditional
/// blocks only; block i's parameters and buffers are named "<i>.<name>". A Stack of n blocks and
/// the Repeat<n, Block> (or any Flow) of the same blocks have the same parameter and buffer
/// names, the same flat parameter layout and the same numbers, so each loads the other's files.

#include <concepts>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "nflow/core/bijector_base.hpp"
#include "nflow/core/buffers.hpp"
#include "nflow/core/composite.hpp"
#include "nflow/core/concepts.hpp"
#include "nflow/core/errors.hpp"
#include "nflow/core/flow_gradients.hpp"
#include "nflow/core/traits.hpp"
#include "nflow/core/types.hpp"

namespace nflow {

/// @brief The composition of a run-time sequence of blocks of one type `Block`, itself a
/// bijector with Dim = Block::Dim and ContextDim = Block::ContextDim.
///
/// forward(x) = Bₙ₋₁(…B₁(B₀(x))), log-det Σᵢ log|det J_Bᵢ|; inverse(z) = B₀⁻¹(…Bₙ₋₁⁻¹(z)).
/// forward_vjp records one tape per block and runs the blocks' taped vjps last block first;
/// inverse_vjp keeps what each block's inverse receives and runs the blocks' inverse vjps from
/// block 0 up (as Flow). The flat parameter vector is the blocks' in block order.
///
/// Sizes stay what the Block makes them: with a fixed Dim a one-point call runs on fixed-size
/// vectors from block to block and allocates nothing the blocks do not (the steps live in a
/// std::vector, the per-call values on the stack). Batch calls allocate per call and per block
/// (each block's output), never per sample.
///
/// Capabilities are the Block's: Stack<Block> is ForwardDifferentiable (InverseDifferentiable)
/// exactly when Block is, IsConstantLogDet and the costs are Block's. A Block that answers them at
/// run time (AnyBijector: has_forward_vjp(), is_constant_log_det(), forward_cost(), ...) is asked
/// block by block: has_forward_vjp() holds when every block has it, and a vjp throws
/// nflow::UnsupportedError naming the first block that lacks it; is_constant_log_det(),
/// forward_cost() and inverse_cost() combine the blocks'. A Block whose ContextDim is Dynamic
/// receives the context only when its context_dim() is positive.
///
/// Class invariant: every block has the dimension of block 0, and every conditional block (one
/// with context_dim() > 0) the same context dimension; the constructors and push_back check it and
/// throw nflow::ParameterError naming the block (and its name(), if Block has one). Replacing a
/// block through step(i) skips that check; calls then throw ShapeError at the block that does not
/// fit.
///
/// An empty Stack is a flow under construction, not the identity: dim() and every call throw
/// nflow::UnsupportedError until a block is added (the compile-time Flow<> and Repeat<0, Block> do
/// not compile either). Thread safety: const calls read the blocks only; a const Stack is safe to
/// share between threads when its blocks are.
/// @tparam Block a bijector type (nflow::Bijector), e.g. a Flow of a coupling layer and a
///   permutation, or AnyBijector<Scalar> for blocks whose kinds are chosen at run time.
template <typename Block>
class Stack : public BijectorBase<Stack<Block>> {
  static_assert(Bijector<Block>,
                "nflow::Stack<Block>: Block must model nflow::Bijector (a Scalar type, a static "
                "constexpr int Dim, dim(), forward_and_log_det(x) and inverse_and_log_det(z)); "
                "see nflow/core/concepts.hpp");
  static_assert(detail::CheckParameterMembers<0, Block>::ok);
  using Mat = Batch<typename Block::Scalar, Block::Dim, Dynamic>;

 public:
  using Scalar = typename Block::Scalar;
  /// The type of every block (DynamicFlow's name for it is Step).
  using Step = Block;
  static constexpr int Dim = Block::Dim;
  static constexpr int ContextDim = context_dim_v<Block>;
  static constexpr bool IsConstantLogDet = is_constant_log_det_v<Block>;
  static constexpr Cost ForwardCost = forward_cost_v<Block>;
  static constexpr Cost InverseCost = inverse_cost_v<Block>;

  /// An empty stack: add blocks with push_back or emplace_back before calling it.
  Stack() = default;
  /// The blocks in forward order. @throws ParameterError if their dimensions or context
  /// dimensions disagree (naming the block).
  explicit Stack(std::vector<Block> blocks) {
    steps_.reserve(blocks.size());
    for (Block& b : blocks) push_back(std::move(b));
  }
  /// The n blocks make(0), …, make(n − 1) in forward order (so each may get its own seed or
  /// mask), e.g. `Stack<Coupling>(8, [](Index i) { return Coupling(mask(i), {.seed = i}); })`.
  /// @throws ParameterError if n is negative or the blocks' dimensions disagree.
  template <typename F>
  requires std::invocable<F&, Index> &&
      std::constructible_from<Block, std::invoke_result_t<F&, Index>>
      Stack(Index n, F make) {
    if (n < 0) {
      throw ParameterError("nflow::Stack: the number of blocks must not be negative, got " +
                           std::to_string(n));
    }
    steps_.reserve(std::size_t(n));
    for (Index i = 0; i < n; ++i) push_back(Block(make(i)));
  }

  /// Appends a block (applied after the others in forward). @throws ParameterError if its
  /// dimension differs from block 0's, or it is conditional with another context dimension than
  /// the conditional blocks before it; the stack is then unchanged.
  void push_back(Block block) {
    check_step(block);
    steps_.push_back(std::move(block));
  }
  /// Appends Block(args...), e.g. `emplace_back(MAF<double>(4), "maf")` for AnyBijector blocks,
  /// with the checks of push_back; returns the new block.
  template <typename... Args>
  Block& emplace_back(Args&&... args) {
    push_back(Block(std::forward<Args>(args)...));
    return steps_.back();
  }

  /// The number of blocks.
  Index size() const { return Index(steps_.size()); }
  bool empty() const { return steps_.empty(); }
  /// Block i (0-based, forward order). @throws std::out_of_range if i is not below size().
  const Block& step(Index i) const { return steps_[checked(i)]; }
  Block& step(Index i) { return steps_[checked(i)]; }
  const Block& operator[](Index i) const { return step(i); }
  Block& operator[](Index i) { return step(i); }

  /// Block 0's dimension. @throws UnsupportedError if the stack has no blocks.
  Index dim() const {
    if (steps_.empty()) {
      throw UnsupportedError(
          "nflow::Stack: the stack has no steps (an empty stack has no dimension; add a step "
          "with push_back or emplace_back before calling it)");
    }
    return steps_.front().dim();
  }
  /// The conditional blocks' context dimension (0 if no block is conditional).
  Index context_dim() const {
    if constexpr (ContextDim == Dynamic) {
      for (const Block& b : steps_) {
        if (b.context_dim() > 0) return b.context_dim();
      }
      return 0;
    } else {
      return ContextDim;
    }
  }
  /// Whether every block may split batch calls into tiles (nflow/core/tiling.hpp).
  bool splits_batches() const {
    if constexpr (requires(const Block& b) { b.splits_batches(); }) {
      for (const Block& b : steps_) {
        if (!b.splits_batches()) return false;
      }
    }
    return true;
  }
  /// Whether every block has a forward (resp. inverse) vjp: Block's compile-time capability, and
  /// for a Block that answers at run time, every block's answer.
  bool has_forward_vjp() const { return ForwardDifferentiable<Block> && first_without(false) < 0; }
  bool has_inverse_vjp() const { return InverseDifferentiable<Block> && first_without(true) < 0; }
  /// The blocks' traits at run time (Block's static traits when it has no run-time queries):
  /// constant log-det if every block's is; each direction costs what its most expensive block
  /// costs.
  bool is_constant_log_det() const {
    if constexpr (requires(const Block& b) { b.is_constant_log_det(); }) {
      for (const Block& b : steps_) {
        if (!b.is_constant_log_det()) return false;
      }
      return true;
    } else {
      return IsConstantLogDet;
    }
  }
  Cost forward_cost() const { return run_time_cost<false>(); }
  Cost inverse_cost() const { return run_time_cost<true>(); }

  /// One line per block, "<i>: <description>", each ending in a newline; the description is the
  /// block's describe() when it has one (AnyBijector), else its dimension and parameter count.
  std::string summary() const {
    std::string out;
    for (std::size_t i = 0; i < steps_.size(); ++i) {
      const Block& b = steps_[i];
      out += std::to_string(i) + ": ";
      if constexpr (requires { b.describe(); }) {
        out += b.describe();
      } else {
        out += "block (dim " + std::to_string(b.dim());
        if (block_context_dim(b) > 0) out += ", context " + std::to_string(block_context_dim(b));
        out += ", " + std::to_string(detail::part_parameter_count(b)) + " parameters)";
      }
      out += "\n";
    }
    return out;
  }

  /// The parameters of every block, in block order, named "<index>.<name>" as in Flow (the hook
  /// BijectorBase derives the visits and the count from).
  template <typename Self, typename F>
  static void parameters_impl(Self& self, F&& f) {
    for (std::size_t i = 0; i < self.steps_.size(); ++i)
      detail::visit_part_parameters(self.steps_[i], std::to_string(i) + ".", f);
  }
  /// The buffers of every block, named "<index>.<name>" as in Flow. A block that rejects a new
  /// value throws; the blocks before it keep theirs.
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
  ResultFor<Scalar, Dim, X> forward_impl(const X& x, const C& ctx) const {
    return fold<false>(x, ctx);
  }
  template <typename Z, typename C>
  ResultFor<Scalar, Dim, Z> inverse_impl(const Z& z, const C& ctx) const {
    return fold<true>(z, ctx);
  }

  // ---- hooks for BijectorBase: gradients ------------------------------------------------------
  /// What forward_recorded() keeps: each block's tape (nflow::tape_t).
  struct Tape {
    std::vector<tape_t<Block>> steps;
    /// The number of samples recorded.
    Index cols() const { return steps.empty() ? 0 : steps.front().cols(); }
  };
  template <typename C>
  ValueAndLogDet<Scalar, Dim, Dynamic> record_forward_impl(const Mat& x, const C& ctx,
                                                           Tape& tape) const {
    const auto& c = evaluated_context(ctx);
    tape.steps.resize(steps_.size());
    ValueAndLogDet<Scalar, Dim, Dynamic> out;
    for (std::size_t i = 0; i < steps_.size(); ++i) {
      const Mat& in = i == 0 ? x : out.value;
      accumulate(i,
                 on_step(steps_[i], c,
                         [&](const auto& sc) {
                           return detail::step_record(steps_[i], in, tape.steps[i], sc);
                         }),
                 out);
    }
    return out;
  }
  /// (gc: where every conditional block adds its part of ∂L/∂c, or nullptr.)
  template <typename GV, typename GL, typename C>
  Mat taped_vjp_impl(const Tape& tape, const GV& gv, const GL& gl, Eigen::Ref<Vector<Scalar>> gp,
                     const C& ctx, ContextGradient<Scalar>* gc = nullptr) const {
    require_vjp(false, "forward_vjp_recorded");
    if (tape.steps.size() != steps_.size()) {
      throw ShapeError("nflow::Stack: forward_vjp_recorded: the tape holds " +
                       std::to_string(tape.steps.size()) + " steps, the stack has " +
                       std::to_string(steps_.size()));
    }
    const auto& c = evaluated_context(ctx);
    const std::vector<Index> offsets = parameter_offsets();
    const auto& gls = detail::as_batch<Scalar, 1>(gl);
    Mat g = gv;
    for (std::size_t k = steps_.size(); k-- > 0;) {
      g = on_step(steps_[k], c, [&](const auto& sc) {
        return detail::step_vjp_recorded(steps_[k], tape.steps[k], g, gls,
                                         gp.segment(offsets[k], offsets[k + 1] - offsets[k]), sc,
                                         gc);
      });
    }
    return g;
  }
  template <typename X, typename GV, typename GL, typename C>
  requires ForwardDifferentiable<Block> BatchFor<Scalar, Dim, X> forward_vjp_impl(
      const X& x, const GV& gv, const GL& gl, Eigen::Ref<Vector<Scalar>> gp, const C& ctx,
      ContextGradient<Scalar>* gc = nullptr)
  const {
    return BatchFor<Scalar, Dim, X>(
        recorded_vjp(detail::as_batch<Scalar, Dim>(x), gv, gl, gp, evaluated_context(ctx), gc));
  }
  template <typename Z, typename GV, typename GL, typename C>
  requires InverseDifferentiable<Block> BatchFor<Scalar, Dim, Z> inverse_vjp_impl(
      const Z& z, const GV& gv, const GL& gl, Eigen::Ref<Vector<Scalar>> gp, const C& ctx,
      ContextGradient<Scalar>* gc = nullptr)
  const {
    return BatchFor<Scalar, Dim, Z>(inverse_chain_vjp(z, gv, gl, gp, evaluated_context(ctx), gc));
  }

 private:
  /// forward_vjp: a recorded forward pass, then the blocks' vjps from their tapes.
  template <typename GV, typename GL, typename C>
  Mat recorded_vjp(const Mat& x, const GV& gv, const GL& gl, Eigen::Ref<Vector<Scalar>> gp,
                   const C& c, ContextGradient<Scalar>* gc) const {
    require_vjp(false, "forward_vjp");
    Tape tape;
    record_forward_impl(x, c, tape);
    return taped_vjp_impl(tape, gv, gl, gp, c, gc);
  }
  /// inverse_vjp: the inverse pass (last block first) keeping what each block's inverse
  /// receives, then the blocks' inverse vjps from block 0 up.
  template <typename Z, typename GV, typename GL, typename C>
  Mat inverse_chain_vjp(const Z& z, const GV& gv, const GL& gl, Eigen::Ref<Vector<Scalar>> gp,
                        const C& c, ContextGradient<Scalar>* gc) const {
    require_vjp(true, "inverse_vjp");
    const std::size_t n = steps_.size();
    std::vector<Mat> inputs(n);  // inputs[i]: what block i's inverse receives
    inputs[n - 1] = z;
    for (std::size_t i = n - 1; i > 0; --i) {
      inputs[i - 1] = on_step(steps_[i], c, [&](const auto& sc) {
                        return with_context<Block>(sc, [&](const auto&... cs) {
                          return steps_[i].inverse_and_log_det(inputs[i], cs...);
                        });
                      }).value;
    }
    const std::vector<Index> offsets = parameter_offsets();
    const auto& gls = detail::as_batch<Scalar, 1>(gl);
    Mat g = gv;
    for (std::size_t i = 0; i < n; ++i) {
      g = on_step(steps_[i], c, [&](const auto& sc) {
        return detail::step_vjp_in_context<true>(
            steps_[i], inputs[i], g, gls, gp.segment(offsets[i], offsets[i + 1] - offsets[i]), sc,
            gc);
      });
    }
    return g;
  }

  /// Forward: blocks 0 … n−1; inverse: blocks n−1 … 0. The context is evaluated once; the input
  /// is copied only when it is not already a batch of the result's type.
  template <bool Inverse, typename X, typename C>
  ResultFor<Scalar, Dim, X> fold(const X& x, const C& ctx) const {
    using V = BatchFor<Scalar, Dim, X>;
    const auto& c = evaluated_context(ctx);
    const auto& x0 = as_value<V>(x);
    const std::size_t n = steps_.size();
    ResultFor<Scalar, Dim, X> out;
    for (std::size_t k = 0; k < n; ++k) {
      const Block& b = steps_[Inverse ? n - 1 - k : k];
      const V& in = k == 0 ? x0 : out.value;
      accumulate(k,
                 on_step(b, c,
                         [&](const auto& sc) {
                           return with_context<Block>(sc, [&](const auto&... cs) {
                             if constexpr (Inverse) {
                               return b.inverse_and_log_det(in, cs...);
                             } else {
                               return b.forward_and_log_det(in, cs...);
                             }
                           });
                         }),
                 out);
    }
    return out;
  }

  /// x itself when it is a V, else x evaluated into one.
  template <typename V, typename X>
  static decltype(auto) as_value(const X& x) {
    if constexpr (std::is_same_v<X, V>) {
      return (x);
    } else {
      return V(x);
    }
  }
  /// The context as a plain matrix (a reference when it is one), or NoContext.
  template <typename C>
  static decltype(auto) evaluated_context(const C& ctx) {
    if constexpr (is_no_context_v<C>) {
      return NoContext{};
    } else {
      return ctx.eval();
    }
  }
  /// Calls f(context) for a block that takes it, f(NoContext{}) for the others: decided by
  /// Block's ContextDim, or at run time by the block's context_dim() when that is Dynamic.
  /// (BijectorBase has checked that a context is given exactly when the stack is conditional.)
  template <typename C, typename F>
  static auto on_step(const Block& b, const C& ctx, F&& f) {
    if constexpr (is_no_context_v<C> || !is_conditional_v<Block>) {
      return f(NoContext{});
    } else if constexpr (ContextDim == Dynamic) {
      if (b.context_dim() > 0) return f(ctx);
      return f(NoContext{});
    } else {
      return f(ctx);
    }
  }
  /// Block k's result into the running value and log-det sum.
  template <typename R, typename Out>
  static void accumulate(std::size_t k, R&& r, Out& out) {
    out.value = std::move(r.value);
    if (k == 0) {
      out.log_det = std::move(r.log_det);
    } else {
      out.log_det += r.log_det;
    }
  }

  template <bool Inverse>
  Cost run_time_cost() const {
    if constexpr (requires(const Block& b) { b.forward_cost(); }) {
      Cost c = Cost::OnePass;
      for (const Block& b : steps_) c = max_cost(c, Inverse ? b.inverse_cost() : b.forward_cost());
      return c;
    } else {
      return Inverse ? InverseCost : ForwardCost;
    }
  }

  /// Where each block's slice of the flat parameter vector starts (and, last, the total).
  std::vector<Index> parameter_offsets() const {
    std::vector<Index> off(steps_.size() + 1, 0);
    for (std::size_t i = 0; i < steps_.size(); ++i)
      off[i + 1] = off[i] + detail::part_parameter_count(steps_[i]);
    return off;
  }
  /// The index of the first block that says at run time it has no vjp of that direction (−1 if
  /// none does, or Block has no run-time capability queries).
  Index first_without(bool inverse) const {
    if constexpr (requires(const Block& b) {
                    b.has_forward_vjp();
                    b.has_inverse_vjp();
                  }) {
      for (std::size_t i = 0; i < steps_.size(); ++i) {
        if (!(inverse ? steps_[i].has_inverse_vjp() : steps_[i].has_forward_vjp())) return Index(i);
      }
    }
    return -1;
  }
  void require_vjp(bool inverse, const char* call) const {
    const Index i = first_without(inverse);
    if (i < 0) return;
    const std::string dir = inverse ? "inverse" : "forward";
    throw UnsupportedError(std::string("nflow::Stack: ") + call + ": " +
                           step_label(steps_[std::size_t(i)], i) + " has no " + dir +
                           " vjp; ask has_" + dir + "_vjp() first");
  }
  /// A block's context rows (0 for an unconditional Block type).
  static Index block_context_dim(const Block& b) {
    if constexpr (is_conditional_v<Block>) {
      return b.context_dim();
    } else {
      return 0;
    }
  }
  /// "step i ('name')" (the name when Block has one: AnyBijector's description).
  static std::string step_label(const Block& b, Index i) {
    std::string s = "step " + std::to_string(i);
    if constexpr (requires { b.name(); }) s += " ('" + std::string(b.name()) + "')";
    return s;
  }
  std::size_t checked(Index i) const {
    if (i < 0 || i >= size()) {
      throw std::out_of_range("nflow::Stack: step(" + std::to_string(i) + "): the stack has " +
                              std::to_string(size()) + " steps");
    }
    return std::size_t(i);
  }
  void check_step(const Block& b) const {
    const std::string which = "nflow::Stack: " + step_label(b, size());
    if (!steps_.empty() && b.dim() != steps_.front().dim()) {
      throw ParameterError(which + " has dimension " + std::to_string(b.dim()) + ", but " +
                           step_label(steps_.front(), 0) + " has dimension " +
                           std::to_string(steps_.front().dim()));
    }
    const Index cd = context_dim();
    const Index bcd = block_context_dim(b);
    if (bcd > 0 && cd > 0 && bcd != cd) {
      throw ParameterError(which + " takes a context of " + std::to_string(bcd) +
                           " rows, but an earlier conditional step takes " + std::to_string(cd));
    }
  }

  std::vector<Block> steps_;
};

}  // namespace nflow
