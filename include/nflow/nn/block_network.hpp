#pragma once
/// @file
/// @brief nflow::nn::BlockNetwork, the conditioner network of imported models: an initial layer,
/// residual or feed-forward blocks (optionally with eval-mode batch norm and per-block context),
/// a final layer, optional 0/1 masks on every weight of the input path; exact gradients, tapes
/// and a structural connectivity. nflows' ResidualNet and MADE (residual or feed-forward blocks)
/// and zuko's MLP and MaskedMLP are its profiles.

#include <Eigen/Core>
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "nflow/core/buffers.hpp"
#include "nflow/core/errors.hpp"
#include "nflow/core/types.hpp"
#include "nflow/math/functions.hpp"
#include "nflow/nn/activations.hpp"
#include "nflow/nn/dense.hpp"

namespace nflow::nn {

/// @brief How the context c enters the start of a BlockNetwork.
enum class BlockContext {
  None,          ///< not at the start (only through the blocks, or not at all)
  InitialLayer,  ///< h = W_in·x + C_in·c + b_in, as if the input were [x; c] (nflows ResidualNet,
                 ///< zuko MLP and MaskedMLP)
  MadeInput,     ///< h = W_in·x + b_in + f(C·c + b_c) (nflows MADE)
};

/// @brief How the context enters each residual block of a BlockNetwork.
enum class BlockContextMode {
  None,      ///< not in the blocks
  Additive,  ///< t += C_b·c + b_b after the block's first linear (nflows MaskedResidualBlock)
  Gated,  ///< t ← t ⊙ σ(C_b·c + b_b) after the block's second linear, before the residual add
          ///< (nflows ResidualBlock: F.glu(cat(t, context_layer(c))))
};

/// @brief The architecture of a BlockNetwork (use designated initialisers).
struct BlockNetworkOptions {
  Index in_dim = 0;        ///< rows of x (>= 0; in_dim + context_dim >= 1)
  Index out_dim = 0;       ///< rows of y (>= 1)
  Index hidden_width = 0;  ///< H, the width of every hidden layer (>= 1; see hidden_widths)
  /// Feed-forward only: the width of each hidden layer, H_0 (the initial layer's output), then
  /// H_{b+1} (block b's output) for b < blocks: blocks + 1 entries, each >= 1 (zuko's
  /// hidden_features of different widths, e.g. (64, 128, 32)). Empty: every hidden layer is
  /// hidden_width. When given, hidden_width must be 0 (unset) or H_0.
  std::vector<Index> hidden_widths = {};
  Index blocks = 0;         ///< number of blocks (>= 0)
  Index context_dim = 0;    ///< rows of the context (>= 0; 0 = unconditional)
  bool residual = false;    ///< residual blocks (true) or feed-forward blocks (false)
  bool batch_norm = false;  ///< eval-mode batch norm in the blocks
  bool masked = false;      ///< 0/1 masks on the weights of the input path (buffers)
  BlockContext context = BlockContext::InitialLayer;        ///< the context at the start
  BlockContextMode block_context = BlockContextMode::None;  ///< the context in residual blocks
  double batch_norm_eps = 1e-3;  ///< ε of every batch norm (nflows' blocks use 1e-3); > 0
};

/// @brief A network of blocks with an optional context, exact gradients, tapes and a structural
/// connectivity: the one conditioner type that nflows' ResidualNet and MADE and zuko's MLP and
/// MaskedMLP become, so that imported models train.
///
/// With x the input (in × N, one sample per column), c the context (context_dim × N), f the
/// activation, σ the logistic sigmoid, B = blocks, every linear y = W·x + b with W out × in
/// (PyTorch's nn.Linear layout) and, when `masked`, W̃ = W ⊙ M the weight in use (W̃ = W else):
///
///     h = W̃_in·x [+ C̃_in·c] + b_in             (C̃_in·c when context = InitialLayer)
///     [h += f(C·c + b_c)]                       (context = MadeInput; C is never masked)
///     residual:      for each block b:  t = f(BN0(h));  t = W̃1·t + b1;  [t += C_b·c + b_b]
///                    t = f(BN1(t));  t = W̃2·t + b2;  [t = t ⊙ σ(C_b·c + b_b)];  h = h + t
///     feed-forward:  h = f(h);  for each block b:  h = f(W̃·BN(h) + b)
///     y = W̃_out·h + b_out
///
/// Every hidden layer has H = hidden_width units, except that a feed-forward network may give
/// each its own width (options hidden_widths = {H_0, …, H_B}): the initial layer (and MadeInput's
/// context layer) has H_0 outputs, block b's batch norm has H_b units and its linear is
/// H_{b+1} × H_b, and the final layer is out × H_B.
///
/// ([t += …] with block_context = Additive, [t ⊙ σ(…)] with Gated; the per-block context layers
/// are never masked; a block without batch_norm has BN = identity). Eval-mode batch norm, per
/// unit: BN(u) = (u − μ)·γ/√(v + ε) + β, computed as u·a + (β − μ·a) with a = γ/√(v + ε) like
/// PyTorch; γ (weight) and β (bias) are trained, the running mean μ and variance v are buffers.
/// zuko's MLP with hidden_features [H, H] is feed-forward with blocks = 1; nflows' ResidualNet is
/// residual with context InitialLayer and block_context Gated; nflows' MADE is MadeInput with
/// residual blocks (block_context Additive) or feed-forward ones.
///
/// Backward (reverse mode), given G = ∂L/∂y: ∂L/∂W = (δ·inᵀ) [⊙ M], ∂L/∂b = δ·1 and
/// δ_in = W̃ᵀ·δ per linear; through f, δ ⊙ f′; through BN, ∂L/∂γ = Σ δ ⊙ (u − μ)/√(v + ε),
/// ∂L/∂β = Σ δ and δ ⊙ a; through the gate g = σ(z), ∂L/∂t = δ ⊙ g and ∂L/∂z = δ ⊙ t ⊙ g(1 − g);
/// a residual add passes δ to both branches. Masked weight entries have exactly zero gradient.
///
/// **Parameters**, in visit order (each flattened column-major in the flat gradient; biases seen
/// as n × 1): "initial.weight", "initial.context_weight" (InitialLayer with context_dim > 0; the
/// columns of nflows' and zuko's first weight that multiply c), "initial.bias", "context.weight",
/// "context.bias" (MadeInput), then for each residual block b "blocks.<b>.linear0.weight",
/// "blocks.<b>.linear0.bias", "blocks.<b>.linear1.weight", "blocks.<b>.linear1.bias",
/// "blocks.<b>.context.weight", "blocks.<b>.context.bias" (block_context ≠ None),
/// "blocks.<b>.norm0.weight", "blocks.<b>.norm0.bias", "blocks.<b>.norm1.weight",
/// "blocks.<b>.norm1.bias" (batch_norm), or for each feed-forward block "blocks.<b>.linear.weight",
/// "blocks.<b>.linear.bias", "blocks.<b>.norm.weight", "blocks.<b>.norm.bias" (batch_norm); then
/// "final.weight", "final.bias".
///
/// **Buffers** (nflow/core/buffers.hpp), in the same order: "<layer>.mask" after each masked
/// weight ("initial.mask", "initial.context_mask", "blocks.<b>.linear0.mask", …, "final.mask";
/// 0/1, the weight's entries column-major) and "<norm>.running_mean", "<norm>.running_var" after
/// each norm's weight. nflow's buffers are 64-bit integers, so a running statistic is stored as
/// the bit pattern of its value in IEEE binary64 (statistic_to_buffer(), statistic_from_buffer()):
/// exact, and the same in a file for float and double networks. A write is validated (masks of
/// the right size with entries 0 or 1; statistics finite, variances >= 0) before anything changes.
///
/// Context: every member that evaluates the network takes the context as its last argument,
/// nflow::NoContext (only for context_dim = 0) or a matrix expression with context_dim rows and
/// one column per sample.
///
/// Column independence: column j of every output depends on column j of the inputs only, so a
/// NaN in one sample stays in its column. Batches are processed in blocks of columns (about 256
/// KiB of activations each); nothing is allocated per sample. Every const member touches no
/// mutable state, so a const network is safe to share between threads (a Tape is used by one
/// thread at a time).
///
/// Class invariant: the options never change after construction; the weights in use equal the
/// stored weights ⊙ masks and the batch-norm affine terms follow γ, β, μ, v after every write
/// through visit_parameters, visit_buffers or set_masks (write through those, not through a
/// reference kept after the visit returns).
///
/// References: He, Zhang, Ren, Sun 2016 (residual networks, arXiv:1512.03385); Ioffe, Szegedy
/// 2015 (batch normalisation, arXiv:1502.03167); Germain et al. 2015 (MADE, arXiv:1502.03509);
/// Durkan et al. 2019 (nflows' ResidualNet, arXiv:1906.04032); Dauphin et al. 2017 (gated linear
/// units, arXiv:1612.08083).
///
/// @tparam Scalar_ float or double.
/// @tparam Activation_ an nflow::nn::ActivationPolicy (Identity, ReLU, Tanh, SiLU, ELU).
template <typename Scalar_, typename Activation_ = ReLU>
class BlockNetwork {
  static_assert(std::is_same_v<Scalar_, float> || std::is_same_v<Scalar_, double>,
                "nflow::nn::BlockNetwork<Scalar, ...>: Scalar must be float or double");
  static_assert(ActivationPolicy<Activation_>,
                "nflow::nn::BlockNetwork<Scalar, Activation>: Activation must model "
                "nflow::nn::ActivationPolicy (see nflow/nn/activations.hpp)");

 public:
  using Scalar = Scalar_;
  using Activation = Activation_;
  /// Batches, parameters and gradients: a dynamic column-major matrix.
  using Matrix = ParameterMatrix<Scalar>;
  /// What connectivity() returns: out × in.
  using Connectivity = Eigen::Matrix<bool, Eigen::Dynamic, Eigen::Dynamic>;

  /// Bytes of activations a block of a batch is sized for.
  static constexpr std::size_t BlockBytes = 256 * 1024;

  /// @brief What backward_recorded() needs from one forward_recorded() pass (values, not
  /// references: it stays valid when the input goes away). Recording again reuses its buffers.
  struct Tape {
    /// One block's values (unused members stay empty).
    struct Block {
      Matrix a0;    ///< residual: f(BN0(h)); feed-forward: BN(h) (with batch_norm)
      Matrix pre0;  ///< residual: BN0(h), when f′ needs the pre-activation
      Matrix t1;    ///< residual: the first linear's output (with the additive context)
      Matrix a1;    ///< residual: f(BN1(t1))
      Matrix pre1;  ///< BN1(t1) (residual) or W·BN(h) + b (feed-forward), when f′ needs it
      Matrix t2;    ///< residual, Gated: the second linear's output before the gate
      Matrix gate;  ///< residual, Gated: σ(C_b·c + b_b)
    };
    Matrix input;                ///< x
    std::vector<Matrix> hidden;  ///< h entering block b (b < B) and the final layer (b = B)
    Matrix made;                 ///< MadeInput: f(C·c + b_c)
    Matrix made_pre;             ///< MadeInput: C·c + b_c, when f′ needs it
    Matrix initial_pre;          ///< feed-forward: the initial layer's output before f, if needed
    std::vector<Block> blocks;
    /// The number of samples recorded.
    Index cols() const { return input.cols(); }
  };

  /// @brief Builds the network with every parameter 0, batch-norm weights 1, running means 0,
  /// running variances 1 and masks of ones (call initialize() to draw the parameters, set_masks()
  /// or visit_buffers() to set the masks).
  /// @throws nflow::ParameterError naming the offending option.
  explicit BlockNetwork(const BlockNetworkOptions& options) : options_(options) {
    check_options();
    widths_ = options_.hidden_widths.empty()
                  ? std::vector<Index>(std::size_t(options_.blocks + 1), options_.hidden_width)
                  : options_.hidden_widths;
    build();
    reset_statistics();
    refresh();
  }

  /// @brief Draws every parameter like PyTorch's nn.Linear default: uniform on
  /// (−1/√fan_in, 1/√fan_in) for the weights and biases of a linear, with fan_in = in_dim +
  /// context_dim for the initial layer under InitialLayer (in_dim otherwise), context_dim for the
  /// context layers and the width of their input for the others; batch-norm weights 1, biases 0,
  /// running means 0, variances 1. Tensors are filled in visit order, each column-major, from
  /// std::mt19937_64(seed) through nflow::uniform_open01 (the same values on every compiler);
  /// masked entries are then set to 0. Masks are kept.
  /// @param zero_last_layer set "final.weight" and "final.bias" to 0, so that the network outputs
  ///   0 for every finite input.
  void initialize(std::uint64_t seed, bool zero_last_layer = true) {
    std::mt19937_64 gen(seed);
    initialize(gen, zero_last_layer);
  }

  /// @brief As initialize(seed, zero_last_layer), drawing from a caller's generator.
  template <std::uniform_random_bit_generator G>
  void initialize(G& gen, bool zero_last_layer = true) {
    for (const Tensor& t : tensors_) {
      auto m = stored(t);
      switch (t.kind) {
        case Kind::NormWeight:
          m.setOnes();
          break;
        case Kind::NormBias:
          m.setZero();
          break;
        default:
          fill_uniform_symmetric(m, default_init_bound(t.fan_in), gen);
      }
    }
    if (zero_last_layer) {
      stored(tensors_[std::size_t(final_.weight)]).setZero();
      stored(tensors_[std::size_t(final_.bias)]).setZero();
    }
    params_ = params_.cwiseProduct(mask_);
    reset_statistics();
    refresh();
  }

  // ---- forward ----------------------------------------------------------------------------

  /// @brief y = f(x, c) for a batch x (in × N) or one point (in × 1); returns out × N.
  /// @throws nflow::ShapeError if x or the context has the wrong shape, or a needed context is
  ///   missing.
  template <typename XD, typename C = NoContext>
  Matrix forward(const Eigen::MatrixBase<XD>& x, const C& context = C{}) const {
    check_input("forward", x);
    Matrix y(out_dim(), x.cols());
    with_checked_context("forward", context, x.cols(), [&](const ConstRef* c) {
      const ConstRef xr(x.derived());
      Tape scratch;
      for_each_block(xr.cols(), record_scalars(), [&](Index j, Index m) {
        const ConstRef xb(xr.middleCols(j, m));
        if (c != nullptr) {
          const ConstRef cb(c->middleCols(j, m));
          record(xb, &cb, scratch, y.middleCols(j, m));
        } else {
          record(xb, nullptr, scratch, y.middleCols(j, m));
        }
      });
    });
    return y;
  }

  /// @brief forward() of one point (in × 1) written into `y` (resized to out × 1). Unlike
  /// nn::DenseNetwork's, it allocates its activations.
  template <typename XD, typename YD, typename C = NoContext>
  void forward_point_into(const Eigen::MatrixBase<XD>& x, Eigen::PlainObjectBase<YD>& y,
                          const C& context = C{}) const {
    check_input("forward_point_into", x);
    check_cols("forward_point_into", "the input point x", 1, x.rows(), x.cols());
    y = forward(x, context);
  }

  /// @brief forward(x, c) for a batch, keeping in `tape` what backward_recorded() needs. Same
  /// checks and exceptions as forward(); a call that throws leaves the tape unchanged.
  template <typename XD, typename C = NoContext>
  Matrix forward_recorded(const Eigen::MatrixBase<XD>& x, Tape& tape,
                          const C& context = C{}) const {
    check_input("forward_recorded", x);
    Matrix y(out_dim(), x.cols());
    with_checked_context("forward_recorded", context, x.cols(),
                         [&](const ConstRef* c) { record(ConstRef(x.derived()), c, tape, y); });
    return y;
  }

  // ---- backward ---------------------------------------------------------------------------

  /// @brief backward() at the point recorded in `tape`, without recomputing the forward pass:
  /// returns ∂L/∂x (in × N) and ADDS ∂L/∂θ into `grad_params` (flat, visit order, each tensor
  /// column-major; masked weight entries get exactly 0). The context must be the recorded one.
  /// With `grad_context` (context_dim × N, given with the context) ∂L/∂c is ADDED into it,
  /// through every place the context enters (the initial layer, MadeInput's context layer, the
  /// residual blocks' additive or gated context layers).
  /// @throws nflow::ShapeError if grad_out, grad_params, the context or grad_context do not match
  ///   the tape, or the tape was not recorded by a network of this shape.
  template <typename GD, typename C = NoContext>
  Matrix backward_recorded(const Tape& tape, const Eigen::MatrixBase<GD>& grad_out,
                           Eigen::Ref<Vector<Scalar>> grad_params, const C& context = C{},
                           Matrix* grad_context = nullptr) const {
    const Index n = tape.cols();
    if (!tape_fits(tape)) {
      throw ShapeError("nflow: " + where("backward_recorded") +
                       ": the tape was not recorded by forward_recorded() of a network of this "
                       "shape");
    }
    check_grad_out("backward_recorded", grad_out, n);
    check_grad_params("backward_recorded", grad_params);
    check_grad_context<C>("backward_recorded", grad_context, n);
    Matrix gx(in_dim(), n);
    with_checked_context("backward_recorded", context, n, [&](const ConstRef* c) {
      GradientTarget g(*this, grad_params);
      std::optional<Eigen::Ref<Matrix>> gc;
      if (grad_context != nullptr) gc.emplace(*grad_context);
      back_propagate(tape, c, ConstRef(grad_out.derived()), g.data(), gx, gc ? &*gc : nullptr);
      g.finish();
    });
    return gx;
  }

  /// @brief Reverse-mode gradient at x: returns ∂L/∂x (in × N) and ADDS ∂L/∂θ into
  /// `grad_params` (as backward_recorded(); the forward pass is recomputed, block by block), and
  /// ∂L/∂c into `grad_context` when given.
  /// @throws nflow::ShapeError on a shape mismatch.
  template <typename XD, typename GD, typename C = NoContext>
  Matrix backward(const Eigen::MatrixBase<XD>& x, const Eigen::MatrixBase<GD>& grad_out,
                  Eigen::Ref<Vector<Scalar>> grad_params, const C& context = C{},
                  Matrix* grad_context = nullptr) const {
    check_input("backward", x);
    check_grad_out("backward", grad_out, x.cols());
    check_grad_params("backward", grad_params);
    check_grad_context<C>("backward", grad_context, x.cols());
    Matrix gx(in_dim(), x.cols());
    with_checked_context("backward", context, x.cols(), [&](const ConstRef* c) {
      const ConstRef xr(x.derived());
      const ConstRef gr(grad_out.derived());
      GradientTarget g(*this, grad_params);
      Tape scratch;
      Matrix y;
      for_each_block(xr.cols(), 2 * record_scalars(), [&](Index j, Index m) {
        y.resize(out_dim(), m);
        std::optional<ConstRef> cb;
        if (c != nullptr) cb.emplace(c->middleCols(j, m));
        const ConstRef* cp = cb ? &*cb : nullptr;
        record(ConstRef(xr.middleCols(j, m)), cp, scratch, y);
        std::optional<Eigen::Ref<Matrix>> gc;
        if (grad_context != nullptr) gc.emplace(grad_context->middleCols(j, m));
        back_propagate(scratch, cp, ConstRef(gr.middleCols(j, m)), g.data(), gx.middleCols(j, m),
                       gc ? &*gc : nullptr);
      });
      g.finish();
    });
    return gx;
  }

  // ---- structure --------------------------------------------------------------------------

  /// @brief out × in: entry (o, i) is true iff output o can depend on input i through the
  /// (masked) weights, whatever their values: boolean products of the masks' patterns (all ones
  /// when unmasked) through the layers, a residual block OR-ing its skip path. Activations, batch
  /// norm and the context do not change the pattern.
  Connectivity connectivity() const {
    using Pattern = Eigen::MatrixXi;
    const auto pattern = [&](Index id) -> Pattern {
      const Tensor& t = tensors_[std::size_t(id)];
      return (Eigen::Map<const Matrix>(mask_.data() + t.offset, t.rows, t.cols).array() !=
              Scalar(0))
          .template cast<int>();
    };
    const auto clamp = [](const Pattern& p) -> Pattern {
      return (p.array() > 0).template cast<int>();
    };
    Pattern reach = pattern(initial_.weight);  // H × in: hidden unit ← input
    for (const Block& k : blocks_) {
      if (options_.residual) {
        const Pattern t =
            clamp(pattern(k.linear1.weight) * clamp(pattern(k.linear0.weight) * reach));
        reach = clamp(reach + t);
      } else {
        reach = clamp(pattern(k.linear0.weight) * reach);
      }
    }
    return ((pattern(final_.weight) * reach).array() > 0).matrix();
  }

  // ---- parameters -------------------------------------------------------------------------

  /// @brief Total number of scalar parameters (the length of the flat gradient).
  Index parameter_count() const { return params_.size(); }

  /// @brief Calls `f(name, Eigen::Ref<ParameterMatrix<Scalar>> tensor)` for every tensor in visit
  /// order (see the class comment); the weights are the stored ones (masked entries as written).
  /// When the visit ends (normally or by an exception), what the layers use is re-derived.
  template <typename F>
  void visit_parameters(F&& f) {
    const RefreshOnExit guard{this};
    for (const Tensor& t : tensors_) f(t.name, Eigen::Ref<Matrix>(stored(t)));
  }

  /// @brief Read-only visit: `f(name, Eigen::Ref<const ParameterMatrix<Scalar>> tensor)`.
  template <typename F>
  void visit_parameters(F&& f) const {
    for (const Tensor& t : tensors_) f(t.name, Eigen::Ref<const Matrix>(stored(t)));
  }

  // ---- buffers ----------------------------------------------------------------------------

  /// @brief Calls `f(name, const BufferVector&)` for every mask and running statistic (see the
  /// class comment for the names, the order and the encoding of statistics).
  template <typename F>
  void visit_buffers(F&& f) const {
    for (const BufferEntry& e : buffer_values()) f(e.name, std::as_const(e.value));
  }

  /// @brief Writable visit: `f(name, BufferVector&)` with each current value; then every new
  /// value is validated (a mask: rows·cols entries, each 0 or 1; a running mean: one finite
  /// value per unit of its norm; a running variance: one finite value >= 0 per unit) and all are
  /// applied together, or nflow::ParameterError names the first bad buffer and the network is
  /// unchanged.
  template <typename F>
  void visit_buffers(F&& f) {
    std::vector<BufferEntry> entries = buffer_values();
    for (BufferEntry& e : entries) f(e.name, e.value);
    Vector<Scalar> mask = mask_;
    std::vector<Norm> norms = norms_;
    for (const BufferEntry& e : entries) {
      if (e.norm < 0) {
        decode_mask(e, mask);
      } else {
        decode_statistic(e, norms[std::size_t(e.norm)]);
      }
    }
    mask_.swap(mask);
    norms_.swap(norms);
    refresh();
  }

  /// @brief Sets every mask, in buffer order ("initial.mask", ["initial.context_mask",] the
  /// blocks' linears, "final.mask"), each the shape of its weight with entries 0 or 1.
  /// @throws nflow::ParameterError if the network is not masked, or on a wrong count, shape or
  ///   entry (the network is then unchanged).
  void set_masks(const std::vector<Matrix>& masks) {
    if (!options_.masked) {
      throw ParameterError("nflow: " + where("set_masks") +
                           ": the network was built with masked = false");
    }
    Vector<Scalar> mask = mask_;
    std::size_t next = 0;
    for (const Tensor& t : tensors_) {
      if (t.mask_name.empty()) continue;
      if (next == masks.size()) break;
      const Matrix& m = masks[next++];
      if (m.rows() != t.rows || m.cols() != t.cols) {
        throw ParameterError("nflow: " + where("set_masks") + ": mask '" + t.mask_name +
                             "' must be " + nflow::detail::shape_string(t.rows, t.cols) + ", got " +
                             nflow::detail::shape_string(m.rows(), m.cols()));
      }
      if (!((m.array() == Scalar(0)) || (m.array() == Scalar(1))).all()) {
        throw ParameterError("nflow: " + where("set_masks") + ": mask '" + t.mask_name +
                             "' has an entry that is neither 0 nor 1");
      }
      Eigen::Map<Matrix>(mask.data() + t.offset, t.rows, t.cols) = m;
    }
    if (next != masks.size() || next != std::size_t(mask_count_)) {
      throw ParameterError("nflow: " + where("set_masks") + ": expected " +
                           std::to_string(mask_count_) + " masks, got " +
                           std::to_string(masks.size()));
    }
    mask_.swap(mask);
    refresh();
  }

  /// @brief The buffer value of a running statistic: the bit pattern of double(value).
  static std::int64_t statistic_to_buffer(double value) {
    return std::bit_cast<std::int64_t>(value);
  }
  /// @brief The value a running-statistic buffer entry holds.
  static double statistic_from_buffer(std::int64_t bits) { return std::bit_cast<double>(bits); }

  // ---- accessors --------------------------------------------------------------------------

  Index in_dim() const { return options_.in_dim; }
  Index out_dim() const { return options_.out_dim; }
  Index context_dim() const { return options_.context_dim; }
  /// @brief H_0, the initial layer's output width: the width of every hidden layer unless the
  /// options give hidden_widths of different values (then see hidden_widths()).
  Index hidden_width() const { return widths_.front(); }
  /// @brief The width of each hidden layer, H_0 … H_B (blocks + 1 entries; all hidden_width
  /// when the options give no hidden_widths).
  const std::vector<Index>& hidden_widths() const { return widths_; }
  Index blocks() const { return options_.blocks; }
  const BlockNetworkOptions& options() const { return options_; }

 private:
  using ConstRef = Eigen::Ref<const Matrix>;

  enum class Kind { Weight, Bias, NormWeight, NormBias };
  /// One parameter tensor: where it lives in the flat vector and how it is drawn.
  struct Tensor {
    std::string name;
    std::string mask_name;  ///< its mask buffer's name (masked weights only)
    Kind kind;
    Index rows;
    Index cols;
    Index offset;
    Index fan_in;
    Index norm;  ///< for a NormWeight: its index in norms_ (its statistics follow it)
  };
  /// A linear layer by tensor ids (−1: absent).
  struct Linear {
    Index weight = -1;
    Index context_weight = -1;  ///< the initial layer's C_in
    Index bias = -1;
  };
  /// An eval-mode batch norm: its tensors, its statistics and its affine form u·scale + shift.
  struct Norm {
    std::string name;
    Index weight = -1;
    Index bias = -1;
    Vector<Scalar> mean;
    Vector<Scalar> var;
    Vector<Scalar> inv_std;  ///< 1/√(v + ε)
    Vector<Scalar> scale;    ///< γ/√(v + ε)
    Vector<Scalar> shift;    ///< β − μ·scale
  };
  /// A block: residual (linear0, linear1, context, norm0, norm1) or feed-forward (linear0 =
  /// "linear", norm0 = "norm").
  struct Block {
    Linear linear0;
    Linear linear1;
    Linear context;
    Index norm0 = -1;
    Index norm1 = -1;
  };
  struct BufferEntry {
    std::string name;
    BufferVector value;
    Index tensor;  ///< the masked weight, or the norm's weight
    Index norm;    ///< −1 for a mask
    bool is_var;
  };

  struct RefreshOnExit {
    BlockNetwork* self;
    ~RefreshOnExit() { self->refresh(); }
  };

  /// Where backward adds parameter gradients: straight into the caller's vector, or (masked)
  /// into a zeroed accumulator that finish() adds masked, so that masked entries get exactly 0.
  class GradientTarget {
   public:
    GradientTarget(const BlockNetwork& net, Eigen::Ref<Vector<Scalar>> out)
        : masked_(net.options_.masked), mask_(net.mask_), out_(out) {
      if (masked_) local_.setZero(out_.size());
    }
    Scalar* data() { return masked_ ? local_.data() : out_.data(); }
    void finish() {
      if (masked_) out_ += local_.cwiseProduct(mask_);
    }

   private:
    bool masked_;
    const Vector<Scalar>& mask_;
    Eigen::Ref<Vector<Scalar>> out_;
    Vector<Scalar> local_;
  };

  // -- construction --

  static std::string where(const char* member) {
    return std::string("nn::BlockNetwork::") + member;
  }

  void fail_option(const std::string& message) const {
    throw ParameterError("nflow: nn::BlockNetwork: " + message);
  }

  void check_options() const {
    const auto& o = options_;
    const auto at_least = [&](const std::string& what, Index value, Index minimum) {
      if (value < minimum) {
        fail_option(what + " must be >= " + std::to_string(minimum) + ", got " +
                    std::to_string(value));
      }
    };
    at_least("in_dim", o.in_dim, 0);
    at_least("out_dim", o.out_dim, 1);
    at_least("blocks", o.blocks, 0);
    if (o.hidden_widths.empty()) {
      at_least("hidden_width", o.hidden_width, 1);
    } else {
      if (o.residual)
        fail_option("hidden_widths must be empty for residual blocks (residual = true)");
      if (Index(o.hidden_widths.size()) != o.blocks + 1) {
        fail_option("hidden_widths must have blocks + 1 = " + std::to_string(o.blocks + 1) +
                    " entries, got " + std::to_string(o.hidden_widths.size()));
      }
      for (std::size_t i = 0; i < o.hidden_widths.size(); ++i)
        at_least("hidden_widths[" + std::to_string(i) + "]", o.hidden_widths[i], 1);
      if (o.hidden_width != 0 && o.hidden_width != o.hidden_widths.front()) {
        fail_option("hidden_width must be 0 or hidden_widths[0] = " +
                    std::to_string(o.hidden_widths.front()) + " when hidden_widths is given, got " +
                    std::to_string(o.hidden_width));
      }
    }
    at_least("context_dim", o.context_dim, 0);
    if (o.in_dim + (o.context == BlockContext::InitialLayer ? o.context_dim : 0) < 1)
      fail_option("the initial layer has no input (in_dim = 0 without an InitialLayer context)");
    if (!(o.batch_norm_eps > 0.0) || !std::isfinite(o.batch_norm_eps))
      fail_option("batch_norm_eps must be finite and > 0, got " + std::to_string(o.batch_norm_eps));
    if (o.block_context != BlockContextMode::None && !o.residual)
      fail_option("block_context must be None for feed-forward blocks (residual = false)");
    const bool uses_context =
        (o.context == BlockContext::InitialLayer || o.context == BlockContext::MadeInput ||
         o.block_context != BlockContextMode::None);
    if (o.context_dim == 0 &&
        (o.context == BlockContext::MadeInput || o.block_context != BlockContextMode::None))
      fail_option("context MadeInput and a block_context need context_dim > 0");
    if (o.context_dim > 0 && !uses_context)
      fail_option("context_dim > 0 but neither context nor block_context uses the context");
  }

  Index add_tensor(const std::string& name, Kind kind, Index rows, Index cols, Index fan_in,
                   bool masked = false, Index norm = -1) {
    const Index offset =
        tensors_.empty() ? 0 : tensors_.back().offset + tensors_.back().rows * tensors_.back().cols;
    std::string mask_name;
    if (masked) {
      const std::string stem = name.substr(0, name.size() - std::string("weight").size());
      mask_name = stem + "mask";  // "initial.weight" → "initial.mask"
      ++mask_count_;
    }
    tensors_.push_back(Tensor{name, std::move(mask_name), kind, rows, cols, offset, fan_in, norm});
    return Index(tensors_.size()) - 1;
  }

  Linear add_linear(const std::string& prefix, Index rows, Index cols, Index fan_in, bool masked) {
    Linear l;
    l.weight = add_tensor(prefix + "weight", Kind::Weight, rows, cols, fan_in, masked);
    l.bias = add_tensor(prefix + "bias", Kind::Bias, rows, 1, fan_in);
    return l;
  }

  Index add_norm(const std::string& prefix, Index width) {
    const Index id = Index(norms_.size());
    Norm n;
    n.name = prefix.substr(0, prefix.size() - 1);
    n.weight = add_tensor(prefix + "weight", Kind::NormWeight, width, 1, 0, false, id);
    n.bias = add_tensor(prefix + "bias", Kind::NormBias, width, 1, 0);
    norms_.push_back(std::move(n));
    return id;
  }

  /// The tensor table, in visit order.
  void build() {
    const auto& o = options_;
    const std::vector<Index>& W = widths_;
    const Index H = W.front();
    const Index C = o.context_dim;
    const bool context_in_initial = o.context == BlockContext::InitialLayer && C > 0;
    const Index initial_fan_in = o.in_dim + (context_in_initial ? C : 0);
    initial_.weight =
        add_tensor("initial.weight", Kind::Weight, H, o.in_dim, initial_fan_in, o.masked);
    if (context_in_initial) {
      initial_.context_weight =
          add_tensor("initial.context_weight", Kind::Weight, H, C, initial_fan_in, false);
      if (o.masked) {
        tensors_.back().mask_name = "initial.context_mask";
        ++mask_count_;
      }
    }
    initial_.bias = add_tensor("initial.bias", Kind::Bias, H, 1, initial_fan_in);
    if (o.context == BlockContext::MadeInput) made_ = add_linear("context.", H, C, C, false);
    blocks_.resize(std::size_t(o.blocks));
    for (Index b = 0; b < o.blocks; ++b) {
      Block& k = blocks_[std::size_t(b)];
      const std::string p = "blocks." + std::to_string(b) + ".";
      if (o.residual) {  // every width is H
        k.linear0 = add_linear(p + "linear0.", H, H, H, o.masked);
        k.linear1 = add_linear(p + "linear1.", H, H, H, o.masked);
        if (o.block_context != BlockContextMode::None)
          k.context = add_linear(p + "context.", H, C, C, false);
        if (o.batch_norm) {
          k.norm0 = add_norm(p + "norm0.", H);
          k.norm1 = add_norm(p + "norm1.", H);
        }
      } else {
        const Index in = W[std::size_t(b)];
        k.linear0 = add_linear(p + "linear.", W[std::size_t(b + 1)], in, in, o.masked);
        if (o.batch_norm) k.norm0 = add_norm(p + "norm.", in);
      }
    }
    final_ = add_linear("final.", o.out_dim, W.back(), W.back(), o.masked);
    const Tensor& last = tensors_.back();
    params_.setZero(last.offset + last.rows * last.cols);
    mask_.setOnes(params_.size());
  }

  void reset_statistics() {
    for (Norm& n : norms_) {
      n.mean.setZero(tensors_[std::size_t(n.weight)].rows);
      n.var.setOnes(tensors_[std::size_t(n.weight)].rows);
    }
  }

  /// Re-derives the masked weights and the batch norms' affine terms from the stored values.
  void refresh() {
    if (options_.masked) used_ = params_.cwiseProduct(mask_);
    const Scalar eps = Scalar(options_.batch_norm_eps);
    for (Norm& n : norms_) {
      n.inv_std = (n.var.array() + eps).sqrt().inverse().matrix();
      n.scale = n.inv_std.cwiseProduct(vector(n.weight));
      n.shift = vector(n.bias) - n.mean.cwiseProduct(n.scale);
    }
  }

  // -- tensor access --

  Eigen::Map<Matrix> stored(const Tensor& t) {
    return Eigen::Map<Matrix>(params_.data() + t.offset, t.rows, t.cols);
  }
  Eigen::Map<const Matrix> stored(const Tensor& t) const {
    return Eigen::Map<const Matrix>(params_.data() + t.offset, t.rows, t.cols);
  }
  /// The weight in use (masked when the network is).
  Eigen::Map<const Matrix> weight(Index id) const {
    const Tensor& t = tensors_[std::size_t(id)];
    const Scalar* base = options_.masked ? used_.data() : params_.data();
    return Eigen::Map<const Matrix>(base + t.offset, t.rows, t.cols);
  }
  Eigen::Map<const Vector<Scalar>> vector(Index id) const {
    const Tensor& t = tensors_[std::size_t(id)];
    return Eigen::Map<const Vector<Scalar>>(params_.data() + t.offset, t.rows);
  }
  Eigen::Map<Matrix> gradient(Scalar* g, Index id) const {
    const Tensor& t = tensors_[std::size_t(id)];
    return Eigen::Map<Matrix>(g + t.offset, t.rows, t.cols);
  }
  Eigen::Map<Vector<Scalar>> gradient_vector(Scalar* g, Index id) const {
    const Tensor& t = tensors_[std::size_t(id)];
    return Eigen::Map<Vector<Scalar>>(g + t.offset, t.rows);
  }

  // -- buffers --

  std::vector<BufferEntry> buffer_values() const {
    std::vector<BufferEntry> out;
    for (Index id = 0; id < Index(tensors_.size()); ++id) {
      const Tensor& t = tensors_[std::size_t(id)];
      if (!t.mask_name.empty()) {
        const Eigen::Map<const Vector<Scalar>> m(mask_.data() + t.offset, t.rows * t.cols);
        out.push_back(BufferEntry{t.mask_name, m.template cast<std::int64_t>(), id, -1, false});
      }
      if (t.kind == Kind::NormWeight) {
        const Norm& n = norms_[std::size_t(t.norm)];
        for (const bool is_var : {false, true}) {
          const Vector<Scalar>& v = is_var ? n.var : n.mean;
          BufferVector b(v.size());
          for (Index i = 0; i < v.size(); ++i) b(i) = statistic_to_buffer(double(v(i)));
          out.push_back(BufferEntry{n.name + (is_var ? ".running_var" : ".running_mean"),
                                    std::move(b), id, t.norm, is_var});
        }
      }
    }
    return out;
  }

  void fail_buffer(const std::string& name, const std::string& what) const {
    throw ParameterError("nflow: nn::BlockNetwork: buffer '" + name + "' " + what);
  }

  void decode_mask(const BufferEntry& e, Vector<Scalar>& mask) const {
    const Tensor& t = tensors_[std::size_t(e.tensor)];
    if (e.value.size() != t.rows * t.cols) {
      fail_buffer(e.name, "has " + std::to_string(e.value.size()) + " entries, expected " +
                              std::to_string(t.rows * t.cols) + " (" +
                              nflow::detail::shape_string(t.rows, t.cols) + ", column-major)");
    }
    for (Index i = 0; i < e.value.size(); ++i) {
      if (e.value(i) != 0 && e.value(i) != 1) {
        fail_buffer(e.name, "entry " + std::to_string(i) + " is " + std::to_string(e.value(i)) +
                                ", not 0 or 1");
      }
      mask(t.offset + i) = Scalar(e.value(i));
    }
  }

  void decode_statistic(const BufferEntry& e, Norm& n) const {
    const Index units = tensors_[std::size_t(n.weight)].rows;
    if (e.value.size() != units) {
      fail_buffer(e.name, "has " + std::to_string(e.value.size()) + " entries, expected " +
                              std::to_string(units));
    }
    Vector<Scalar>& out = e.is_var ? n.var : n.mean;
    for (Index i = 0; i < e.value.size(); ++i) {
      const double v = statistic_from_buffer(e.value(i));
      if (!std::isfinite(v) || (e.is_var && v < 0.0)) {
        fail_buffer(e.name, "entry " + std::to_string(i) + " is " + std::to_string(v) +
                                (e.is_var ? ", not a finite value >= 0" : ", not finite"));
      }
      out(i) = Scalar(v);
    }
  }

  // -- argument checks --

  static void check_cols(const char* member, const char* what, Index expected, Index rows,
                         Index cols) {
    if (cols != expected)
      nflow::detail::check_cols(where(member).c_str(), what, expected, rows, cols);
  }

  /// A grad_context (when given) needs a context, and is context_dim × n.
  template <typename C>
  void check_grad_context(const char* member, const Matrix* g, Index n) const {
    if (g == nullptr) return;
    if (is_no_context_v<C> || context_dim() == 0) {
      throw ShapeError("nflow: " + where(member) +
                       ": grad_context was given without a context (the network has "
                       "context_dim = " +
                       std::to_string(context_dim()) + "): there is no context to differentiate");
    }
    if (g->rows() != context_dim()) {
      nflow::detail::check_rows(where(member).c_str(), "grad_context", context_dim(), g->rows(),
                                g->cols());
    }
    check_cols(member, "grad_context", n, g->rows(), g->cols());
  }

  template <typename XD>
  void check_input(const char* member, const Eigen::MatrixBase<XD>& x) const {
    static_assert(std::is_same_v<typename XD::Scalar, Scalar>,
                  "nflow::nn::BlockNetwork: the input's scalar type must be the network's Scalar "
                  "(convert with x.template cast<Scalar>())");
    if (x.rows() != in_dim())
      nflow::detail::check_rows(where(member).c_str(), "the input x", in_dim(), x.rows(), x.cols());
  }

  template <typename GD>
  void check_grad_out(const char* member, const Eigen::MatrixBase<GD>& g, Index n) const {
    static_assert(std::is_same_v<typename GD::Scalar, Scalar>,
                  "nflow::nn::BlockNetwork: grad_out's scalar type must be the network's Scalar");
    if (g.rows() != out_dim())
      nflow::detail::check_rows(where(member).c_str(), "grad_out", out_dim(), g.rows(), g.cols());
    check_cols(member, "grad_out", n, g.rows(), g.cols());
  }

  void check_grad_params(const char* member, const Eigen::Ref<Vector<Scalar>>& g) const {
    if (g.size() != parameter_count())
      nflow::detail::check_size(where(member).c_str(), "grad_params", parameter_count(), g.size());
  }

  /// Checks the context against the network and n samples, then calls f(const ConstRef* c)
  /// (nullptr for NoContext).
  template <typename C, typename F>
  void with_checked_context(const char* member, const C& context, Index n, F&& f) const {
    if constexpr (is_no_context_v<C>) {
      if (context_dim() > 0) {
        throw ShapeError("nflow: " + where(member) + ": the network has context_dim = " +
                         std::to_string(context_dim()) + " and needs a context of " +
                         std::to_string(context_dim()) + " rows (one column per sample); got none");
      }
      f(static_cast<const ConstRef*>(nullptr));
    } else {
      static_assert(std::is_base_of_v<Eigen::MatrixBase<C>, C>,
                    "nflow::nn::BlockNetwork: the context must be nflow::NoContext or an Eigen "
                    "matrix expression");
      static_assert(std::is_same_v<typename C::Scalar, Scalar>,
                    "nflow::nn::BlockNetwork: the context's scalar type must be the network's "
                    "Scalar");
      if (context.rows() != context_dim()) {
        nflow::detail::check_rows(where(member).c_str(), "the context", context_dim(),
                                  context.rows(), context.cols());
      }
      check_cols(member, "the context", n, context.rows(), context.cols());
      const ConstRef c(context.derived());
      f(&c);
    }
  }

  /// Whether `t` holds every value back_propagate() reads, at this network's sizes (a tape
  /// recorded by a network of other sizes or options does not).
  bool tape_fits(const Tape& t) const {
    const Index n = t.cols();
    constexpr bool from_output = Activation::BackwardFromOutput;
    // Whether m is H_l × n, when needed.
    const auto fits = [&](const Matrix& m, Index l, bool needed) {
      return !needed || (m.rows() == widths_[std::size_t(l)] && m.cols() == n);
    };
    if (t.input.rows() != in_dim() || t.hidden.size() != std::size_t(blocks() + 1) ||
        t.blocks.size() != std::size_t(blocks()))
      return false;
    bool ok = fits(t.made, 0, made_.weight >= 0) &&
              fits(t.made_pre, 0, made_.weight >= 0 && !from_output) &&
              fits(t.initial_pre, 0, !options_.residual && !from_output);
    for (Index l = 0; l <= blocks(); ++l) ok = ok && fits(t.hidden[std::size_t(l)], l, true);
    const bool gated = options_.block_context == BlockContextMode::Gated;
    for (Index b = 0; b < blocks(); ++b) {
      const typename Tape::Block& r = t.blocks[std::size_t(b)];
      if (options_.residual) {
        ok = ok && fits(r.a0, b, true) && fits(r.pre0, b, !from_output) && fits(r.t1, b, true) &&
             fits(r.a1, b, true) && fits(r.pre1, b, !from_output) && fits(r.t2, b, gated) &&
             fits(r.gate, b, gated);
      } else {
        ok = ok && fits(r.a0, b, options_.batch_norm) && fits(r.pre1, b + 1, !from_output);
      }
    }
    return ok;
  }

  // -- kernels --

  /// Scalars of activations one column of a recorded pass holds (to size blocks of a batch).
  Index record_scalars() const {
    Index blocks_scalars = 0;
    for (Index b = 1; b <= blocks(); ++b) blocks_scalars += 7 * widths_[std::size_t(b)];
    return in_dim() + out_dim() + 3 * widths_.front() + blocks_scalars;
  }

  /// Calls f(first, m) over consecutive blocks of columns of a batch of n.
  template <typename F>
  static void for_each_block(Index n, Index scalars_per_column, F&& f) {
    const Index fit =
        Index(BlockBytes / (std::size_t(std::max<Index>(1, scalars_per_column)) * sizeof(Scalar)));
    const Index block = std::clamp<Index>(fit, 16, 4096);
    for (Index j = 0; j < n; j += block) f(j, std::min(block, n - j));
  }

  /// m ← f(m) in place, keeping a copy of the pre-activation in `pre` when f′ needs it.
  static void activate(Matrix& m, Matrix& pre) {
    if constexpr (!Activation::BackwardFromOutput) pre = m;
    Activation::apply(m);
  }
  /// grad ← grad ⊙ f′(a), from the output `post` or the pre-activation `pre`.
  static void activation_backward(const Matrix& post, const Matrix& pre, Matrix& grad) {
    if constexpr (Activation::BackwardFromOutput) {
      Activation::backward(post, grad);
    } else {
      Activation::backward(pre, grad);
    }
  }

  /// out = BN(in) for norm id (a copy of in when id < 0).
  void normalize(Index id, const Matrix& in, Matrix& out) const {
    if (id < 0) {
      out = in;
      return;
    }
    const Norm& n = norms_[std::size_t(id)];
    out.resize(in.rows(), in.cols());
    for (Index j = 0; j < in.cols(); ++j) out.col(j) = in.col(j).cwiseProduct(n.scale) + n.shift;
  }

  /// Through the batch norm id backwards: adds ∂L/∂γ and ∂L/∂β (u is the norm's input) and
  /// turns d = ∂L/∂BN(u) into ∂L/∂u.
  void normalize_backward(Index id, const Matrix& u, Matrix& d, Scalar* g) const {
    if (id < 0) return;
    const Norm& n = norms_[std::size_t(id)];
    auto gw = gradient_vector(g, n.weight);
    for (Index j = 0; j < u.cols(); ++j)
      gw += d.col(j).cwiseProduct((u.col(j) - n.mean).cwiseProduct(n.inv_std));
    gradient_vector(g, n.bias) += d.rowwise().sum();
    d.array().colwise() *= n.scale.array();
  }

  /// out = W̃·in + b for a linear l.
  template <typename In, typename Out>
  void linear(const Linear& l, const In& in, Out&& out) const {
    dense_forward(out, weight(l.weight), in, vector(l.bias));
  }
  /// Adds the gradients of linear l's weight and bias for δ and its input.
  template <typename In>
  void linear_gradient(const Linear& l, const Matrix& delta, const In& in, Scalar* g) const {
    dense_accumulate_parameter_gradients(delta, in, gradient(g, l.weight),
                                         gradient_vector(g, l.bias));
  }

  /// The forward pass of the columns of x (context c or nullptr) into y, recorded into t.
  void record(const ConstRef& x, const ConstRef* c, Tape& t, Eigen::Ref<Matrix> y) const {
    const Index n = x.cols();
    const Index H = hidden_width();  // H_0; every width of a residual network
    const Index B = blocks();
    const bool residual = options_.residual;
    t.input = x;
    t.hidden.resize(std::size_t(B + 1));
    t.blocks.resize(std::size_t(B));
    Matrix& h0 = t.hidden[0];
    h0.resize(H, n);
    linear(initial_, x, h0);
    if (initial_.context_weight >= 0) h0.noalias() += weight(initial_.context_weight) * (*c);
    if (made_.weight >= 0) {
      t.made.resize(H, n);
      linear(made_, *c, t.made);
      activate(t.made, t.made_pre);
      h0 += t.made;
    }
    if (!residual) activate(h0, t.initial_pre);
    for (Index b = 0; b < B; ++b) {
      const Block& k = blocks_[std::size_t(b)];
      typename Tape::Block& r = t.blocks[std::size_t(b)];
      const Matrix& h = t.hidden[std::size_t(b)];
      Matrix& next = t.hidden[std::size_t(b + 1)];
      next.resize(widths_[std::size_t(b + 1)], n);
      if (residual) {
        normalize(k.norm0, h, r.a0);
        activate(r.a0, r.pre0);
        r.t1.resize(H, n);
        linear(k.linear0, r.a0, r.t1);
        if (options_.block_context == BlockContextMode::Additive) {
          r.t1.noalias() += weight(k.context.weight) * (*c);
          r.t1.colwise() += vector(k.context.bias);
        }
        normalize(k.norm1, r.t1, r.a1);
        activate(r.a1, r.pre1);
        linear(k.linear1, r.a1, next);
        if (options_.block_context == BlockContextMode::Gated) {
          r.gate.resize(H, n);
          linear(k.context, *c, r.gate);
          r.gate = nflow::sigmoid(r.gate.array()).matrix();
          r.t2 = next;
          next.array() *= r.gate.array();
        }
        next += h;
      } else {
        if (k.norm0 >= 0) {
          normalize(k.norm0, h, r.a0);
          linear(k.linear0, r.a0, next);
        } else {
          linear(k.linear0, h, next);
        }
        activate(next, r.pre1);
      }
    }
    linear(final_, t.hidden[std::size_t(B)], y);
  }

  /// The backward pass from a record: ADDS the parameter gradients into g (flat, unmasked),
  /// writes ∂L/∂x into gx, and ADDS ∂L/∂c into gc when not null, for G = ∂L/∂y.
  void back_propagate(const Tape& t, const ConstRef* c, const ConstRef& grad_out, Scalar* g,
                      Eigen::Ref<Matrix> gx, Eigen::Ref<Matrix>* gc) const {
    const Index B = blocks();
    const bool residual = options_.residual;
    dense_accumulate_parameter_gradients(grad_out, t.hidden[std::size_t(B)],
                                         gradient(g, final_.weight),
                                         gradient_vector(g, final_.bias));
    Matrix d = weight(final_.weight).transpose() * grad_out;  // ∂L/∂h
    Matrix da;
    Matrix db;
    for (Index b = B - 1; b >= 0; --b) {
      const Block& k = blocks_[std::size_t(b)];
      const typename Tape::Block& r = t.blocks[std::size_t(b)];
      const Matrix& h = t.hidden[std::size_t(b)];
      if (residual) {
        // h_next = h + t: d is ∂L/∂t as well as (one term of) ∂L/∂h.
        if (options_.block_context == BlockContextMode::Gated) {
          db = (d.array() * r.t2.array() * r.gate.array() * (Scalar(1) - r.gate.array())).matrix();
          linear_gradient(k.context, db, *c, g);
          if (gc != nullptr) gc->noalias() += weight(k.context.weight).transpose() * db;
          db = (d.array() * r.gate.array()).matrix();  // ∂L/∂t2
        } else {
          db = d;
        }
        linear_gradient(k.linear1, db, r.a1, g);
        da.noalias() = weight(k.linear1.weight).transpose() * db;  // ∂L/∂a1
        activation_backward(r.a1, r.pre1, da);
        normalize_backward(k.norm1, r.t1, da, g);  // ∂L/∂t1
        if (options_.block_context == BlockContextMode::Additive) {
          linear_gradient(k.context, da, *c, g);
          if (gc != nullptr) gc->noalias() += weight(k.context.weight).transpose() * da;
        }
        linear_gradient(k.linear0, da, r.a0, g);
        db.noalias() = weight(k.linear0.weight).transpose() * da;  // ∂L/∂a0
        activation_backward(r.a0, r.pre0, db);
        normalize_backward(k.norm0, h, db, g);
        d += db;
      } else {
        activation_backward(t.hidden[std::size_t(b + 1)], r.pre1, d);
        linear_gradient(k.linear0, d, k.norm0 >= 0 ? r.a0 : h, g);
        da.noalias() = weight(k.linear0.weight).transpose() * d;
        normalize_backward(k.norm0, h, da, g);
        d.swap(da);
      }
    }
    if (!residual) activation_backward(t.hidden[0], t.initial_pre, d);
    if (made_.weight >= 0) {
      da = d;
      activation_backward(t.made, t.made_pre, da);
      linear_gradient(made_, da, *c, g);
      if (gc != nullptr) gc->noalias() += weight(made_.weight).transpose() * da;
    }
    linear_gradient(initial_, d, t.input, g);
    if (initial_.context_weight >= 0) {
      gradient(g, initial_.context_weight).noalias() += d * c->transpose();
      if (gc != nullptr) gc->noalias() += weight(initial_.context_weight).transpose() * d;
    }
    gx.noalias() = weight(initial_.weight).transpose() * d;
  }

  BlockNetworkOptions options_;
  std::vector<Tensor> tensors_;  ///< visit order
  std::vector<Norm> norms_;
  std::vector<Block> blocks_;
  Linear initial_;
  Linear made_;  ///< MadeInput's context layer (weight −1 otherwise)
  Linear final_;
  Index mask_count_ = 0;
  std::vector<Index> widths_;  ///< H_0 … H_B
  Vector<Scalar> params_;      ///< every tensor, in visit order, column-major
  Vector<Scalar> mask_;        ///< 0/1 per parameter (1 for everything not masked)
  Vector<Scalar> used_;        ///< params_ ⊙ mask_ (masked networks only)
};

}  // namespace nflow::nn
