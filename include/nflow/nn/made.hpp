#pragma once
/// @file
/// @brief nflow::nn::MADE, the masked autoencoder for distribution estimation: an MLP whose
/// masks make output i depend only on the inputs that come before i in a chosen order, with an
/// unmasked context input, a hand-written backward pass and the Dim-pass autoregressive solve
/// that MAF sampling and IAF density evaluation need.

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "nflow/core/buffers.hpp"
#include "nflow/core/errors.hpp"
#include "nflow/core/random.hpp"
#include "nflow/core/types.hpp"
#include "nflow/nn/activations.hpp"
#include "nflow/nn/dense.hpp"

namespace nflow::nn {

/// @brief The autoregressive order of a MADE's inputs.
enum class InputOrder {
  Natural,   ///< 0, 1, …, D−1
  Reversed,  ///< D−1, …, 1, 0 (alternate it between the layers of a flow)
  Random,    ///< a seeded uniformly random permutation (nflow::random_permutation)
};

/// @brief How hidden units receive their degrees.
enum class HiddenDegrees {
  Sequential,  ///< cycle through the allowed range (deterministic; Germain et al.'s default)
  Random,      ///< seeded uniform draws in the allowed range
};

/// @brief The order 0, 1, …, dim−1.
inline Eigen::VectorXi natural_order(Index dim) {
  Eigen::VectorXi o(dim);
  for (Index i = 0; i < dim; ++i) o(i) = int(i);
  return o;
}

/// @brief The order dim−1, …, 1, 0.
inline Eigen::VectorXi reversed_order(Index dim) {
  Eigen::VectorXi o(dim);
  for (Index i = 0; i < dim; ++i) o(i) = int(dim - 1 - i);
  return o;
}

/// @brief An order of the given kind; Random draws from `gen` (nflow::random_permutation).
template <std::uniform_random_bit_generator G>
Eigen::VectorXi make_order(InputOrder kind, Index dim, G& gen) {
  switch (kind) {
    case InputOrder::Reversed:
      return reversed_order(dim);
    case InputOrder::Random:
      return random_permutation(dim, gen);
    case InputOrder::Natural:
    default:
      return natural_order(dim);
  }
}

namespace made_detail {

/// A non-owning reference to a callable with signature R(A...): the MADE's block loops call the
/// structure's per-block code through it, so that the loops are compiled once per column count
/// rather than once per caller (this keeps compile times of tests and users down). The callable
/// must outlive the reference (it is only used during the call that receives it).
template <typename Signature>
class Callback;
template <typename R, typename... A>
class Callback<R(A...)> {
 public:
  template <typename F>
    requires(!std::is_same_v<std::remove_cvref_t<F>, Callback> && std::is_invocable_r_v<R, F&, A...>)
  Callback(F&& f)  // NOLINT(google-explicit-constructor): implicit by design, like std::function_ref
      : object_(const_cast<void*>(static_cast<const void*>(std::addressof(f)))),
        call_([](void* object, A... args) -> R {
          return (*static_cast<std::remove_reference_t<F>*>(object))(std::forward<A>(args)...);
        }) {}
  R operator()(A... args) const { return call_(object_, std::forward<A>(args)...); }

 private:
  void* object_;
  R (*call_)(void*, A...);
};

}  // namespace made_detail

/// @brief A masked autoencoder for distribution estimation (MADE) with `ParamsPerDim` outputs
/// per input dimension, an optional unmasked context, exact gradients, and the autoregressive
/// solve of a Dim-pass inverse.
///
/// **Order and degrees.** `order` is the sequence in which the D input dimensions are generated:
/// dimension `order(k)` has degree k + 1, so degrees run 1 … D. Hidden unit u of layer ℓ has a
/// degree m_ℓ(u) in [lo_ℓ, D − 1], where lo_0 = 1 for an unconditional network and 0 for a
/// conditional one (degree-0 units see only the context, so that every output — the first in
/// the order included — can depend on the context nonlinearly), and lo_ℓ = min_u m_{ℓ−1}(u)
/// after the first layer (Germain et al.). With D = 1 and no context every hidden degree is 0.
/// `Sequential` degrees cycle lo, lo+1, …, D−1, lo, …; `Random` ones are seeded uniform draws.
/// Within a layer the units are stored in ascending degree (a permutation of units is the same
/// network): each degree is then a contiguous block of rows, which solve_autoregressive() uses
/// to compute every hidden unit exactly once over all D passes.
///
/// **Masks** (1 = connected). Hidden ← input: m_0(u) ≥ deg(j). Hidden ← hidden:
/// m_ℓ(u) ≥ m_{ℓ−1}(v). Output ← hidden: deg(i) > m_{L−1}(v) (strict), for each of the
/// ParamsPerDim outputs of dimension i; with no hidden layers, output ← input: deg(i) > deg(j).
/// The context feeds every unit of the first layer, unmasked. Hence **output i depends only on
/// the inputs j with deg(j) < deg(i)** (and on the context) — exactly, since a masked weight
/// enters as an exact 0.
///
/// **Network.** With x (D × N, one sample per column), c (context_dim × N), f the activation,
/// W̃ℓ = Wℓ ⊙ Mℓ and L = hidden_layers:
///
///     h₀ = f(W̃₀·x + C₀·c + b₀),   hₗ = f(W̃ₗ·hₗ₋₁ + bₗ),   y = W̃_L·h_{L−1} + b_L
///
/// (with L = 0: y = W̃₀·x + C₀·c + b₀). The output is blocked: rows [k·D, (k+1)·D) hold
/// parameter k of dimensions 0 … D−1 (for the affine transformer: all shifts, then all raw
/// log-scales).
///
/// **Parameters**, in visit order: "layers.0.weight" (W₀, out × in like PyTorch's nn.Linear),
/// "layers.0.context_weight" (C₀, only when context_dim > 0), "layers.0.bias", "layers.1.weight",
/// "layers.1.bias", …, "layers.L.weight", "layers.L.bias". The mask is applied at use, so stored
/// weights may hold anything at masked entries; their gradient is exactly 0. (Internally the
/// masked products W̃ℓ — and the output rows regrouped by dimension for the solve — are kept,
/// refreshed by every non-const visit_parameters(): write parameters through visit_parameters /
/// nflow::set_parameters, not through a reference kept after the visit returns.)
///
/// **Backward.** With δ_L = ∂L/∂y and aₗ the pre-activations:
///     ∂L/∂Wₗ = (δₗ·hₗ₋₁ᵀ) ⊙ Mₗ,  ∂L/∂bₗ = δₗ·1,  δₗ₋₁ = (W̃ₗᵀ·δₗ) ⊙ f′(aₗ₋₁),
///     ∂L/∂C₀ = δ₀·cᵀ,  ∂L/∂x = W̃₀ᵀ·δ₀.
///
/// **Cost and allocation.** A batch is processed in blocks of columns (a GEMM per layer and
/// block; the block's activations stay in cache); no per-sample allocation. One point (an input
/// whose ColsAtCompileTime is 1) with fixed Dim and Hidden is evaluated with stack buffers only:
/// forward() and solve_autoregressive() (up to 8 hidden layers) allocate nothing on the heap.
/// backward() allocates per call (weight-gradient accumulators and activations of one block).
/// Every member function except visit_parameters and initialize is const and touches no mutable
/// state, so a const MADE is safe to share between threads.
///
/// Class invariant: sizes never change after construction; order, degrees and masks change only
/// together, through the writable visit_buffers (which validates them, as a file load does); the
/// masked weights equal weight ⊙ mask, and the grouped output rows equal their rows.
///
/// References: Germain, Gregor, Murray, Larochelle 2015, "MADE: Masked Autoencoder for
/// Distribution Estimation", arXiv:1502.03509.
///
/// @tparam Scalar_ float or double.
/// @tparam Dim_ input dimension D, or Eigen::Dynamic.
/// @tparam Hidden_ width of every hidden layer, or Eigen::Dynamic (weights are always heap-held;
///   a fixed width makes one point's activations fixed-size).
/// @tparam Activation_ an nflow::nn::ActivationPolicy (Identity, ReLU, Tanh, SiLU, ELU).
/// @tparam ParamsPerDim_ outputs per input dimension (2 for an affine transformer), ≥ 1.
template <typename Scalar_, int Dim_ = Eigen::Dynamic, int Hidden_ = Eigen::Dynamic, typename Activation_ = ReLU,
          int ParamsPerDim_ = 2>
class MADE {
  static_assert(std::is_same_v<Scalar_, float> || std::is_same_v<Scalar_, double>,
                "nflow::nn::MADE<Scalar, ...>: Scalar must be float or double");
  static_assert(Dim_ == Eigen::Dynamic || Dim_ >= 1,
                "nflow::nn::MADE<Scalar, Dim, ...>: Dim must be >= 1 or Eigen::Dynamic");
  static_assert(Hidden_ == Eigen::Dynamic || Hidden_ >= 1,
                "nflow::nn::MADE<Scalar, Dim, Hidden>: Hidden must be >= 1 or Eigen::Dynamic");
  static_assert(ParamsPerDim_ >= 1, "nflow::nn::MADE<..., ParamsPerDim>: ParamsPerDim must be >= 1");
  static_assert(ActivationPolicy<Activation_>,
                "nflow::nn::MADE<..., Activation>: Activation must model nflow::nn::ActivationPolicy"
                " (see nflow/nn/activations.hpp)");

 public:
  using Scalar = Scalar_;
  using Activation = Activation_;
  static constexpr int Dim = Dim_;
  static constexpr int Hidden = Hidden_;
  static constexpr int ParamsPerDim = ParamsPerDim_;
  static constexpr int Out = Dim_ == Eigen::Dynamic ? Eigen::Dynamic : Dim_ * ParamsPerDim_;

  template <int Cols>
  using InputBatch = Eigen::Matrix<Scalar, Dim, Cols>;
  template <int Cols>
  using OutputBatch = Eigen::Matrix<Scalar, Out, Cols>;
  template <int Cols>
  using InputRef = Eigen::Ref<const InputBatch<Cols>>;
  template <int Cols>
  using ContextRef = Eigen::Ref<const Eigen::Matrix<Scalar, Eigen::Dynamic, Cols>>;

  /// @brief Builds the network, its degrees and masks, and draws its weights.
  ///
  /// @param dim D (>= 1; equal to Dim when fixed).
  /// @param hidden_width units per hidden layer (>= 1; equal to Hidden when fixed).
  /// @param hidden_layers number of hidden layers (>= 0).
  /// @param context_dim rows of the context (>= 0; 0 = unconditional).
  /// @param order the generation order, a permutation of 0 … D−1 (empty: natural order).
  /// @param hidden_degrees Sequential or Random.
  /// @param seed seeds std::mt19937_64, which draws the random degrees (if any) and then the
  ///   weights (initialize(gen, true): a fresh network outputs exactly 0).
  /// @throws nflow::ParameterError naming the offending argument.
  MADE(Index dim, Index hidden_width, Index hidden_layers, Index context_dim = 0,
       Eigen::VectorXi order = Eigen::VectorXi(), HiddenDegrees hidden_degrees = HiddenDegrees::Sequential,
       std::uint64_t seed = 0)
      : dim_(dim), hidden_width_(hidden_width), hidden_layers_(hidden_layers), context_dim_(context_dim) {
    check_size_argument("dim", dim, 1, Dim);
    check_size_argument("hidden_width", hidden_width, 1, Hidden);
    check_size_argument("hidden_layers", hidden_layers, 0, Eigen::Dynamic);
    check_size_argument("context_dim", context_dim, 0, Eigen::Dynamic);
    order_ = order.size() == 0 ? natural_order(dim) : std::move(order);
    check_order();
    std::mt19937_64 gen(seed);
    build_structure(hidden_degrees, gen);
    initialize(gen, true);
  }

  /// @brief Redraws every parameter like PyTorch's nn.Linear default: uniform on
  /// (−1/√fan_in, 1/√fan_in), fan_in = columns of the weight (+ context_dim for layer 0),
  /// tensors in visit order, each column-major, through nflow::uniform_open01 (the same values
  /// on every compiler). Masked weight entries are then set to 0. With `zero_last_layer` the
  /// output layer (weight, bias, and context weight when there are no hidden layers) is 0, so a
  /// fresh MADE outputs exactly 0 (a fresh MAF layer is the identity).
  template <std::uniform_random_bit_generator G>
  void initialize(G& gen, bool zero_last_layer = true) {
    const Index L = hidden_layers_;
    for (Index l = 0; l <= L; ++l) {
      auto& w = weights_[std::size_t(l)];
      const double bound = 1.0 / std::sqrt(double(w.cols() + (l == 0 ? context_dim_ : 0)));
      fill_symmetric(w, bound, gen);
      if (l == 0) fill_symmetric(context_weight_, bound, gen);
      fill_symmetric(biases_[std::size_t(l)], bound, gen);
    }
    if (zero_last_layer) {
      weights_.back().setZero();
      biases_.back().setZero();
      if (L == 0) context_weight_.setZero();
    }
    for (Index l = 0; l <= L; ++l) {
      weights_[std::size_t(l)] = weights_[std::size_t(l)].cwiseProduct(masks_[std::size_t(l)]);
      refresh(l);
    }
    refresh(ContextLayer);
  }
  /// @brief initialize() from std::mt19937_64(seed).
  void initialize(std::uint64_t seed, bool zero_last_layer = true) {
    std::mt19937_64 gen(seed);
    initialize(gen, zero_last_layer);
  }

  // ---- forward ------------------------------------------------------------------------------

  /// @brief y = MADE(x) (out × N) for an unconditional network.
  /// @throws nflow::ShapeError on a wrong shape or if the network needs a context.
  template <typename XD>
  OutputBatch<XD::ColsAtCompileTime> forward(const Eigen::MatrixBase<XD>& x) const {
    check_input<XD>("nn::MADE::forward", x);
    require_no_context("nn::MADE::forward");
    constexpr int Cols = XD::ColsAtCompileTime;
    return forward_impl<Cols>(InputRef<Cols>(x.derived()), nullptr);
  }
  /// @brief y = MADE(x, c) with a context c (context_dim × N).
  template <typename XD, typename CD>
  OutputBatch<XD::ColsAtCompileTime> forward(const Eigen::MatrixBase<XD>& x,
                                             const Eigen::MatrixBase<CD>& context) const {
    check_input<XD>("nn::MADE::forward", x);
    check_context<CD>("nn::MADE::forward", context, x.cols());
    constexpr int Cols = XD::ColsAtCompileTime;
    const ContextRef<Cols> c(context.derived());
    return forward_impl<Cols>(InputRef<Cols>(x.derived()), &c);
  }
  template <typename XD>
  OutputBatch<XD::ColsAtCompileTime> forward(const Eigen::MatrixBase<XD>& x, NoContext) const {
    return forward(x);
  }

  // ---- backward -----------------------------------------------------------------------------

  /// @brief Reverse mode: returns ∂L/∂x (D × N) and ADDS ∂L/∂θ into `grad_params` (length
  /// parameter_count(), visit order, column-major). Masked weight entries receive exactly 0.
  template <typename XD, typename GD>
  InputBatch<XD::ColsAtCompileTime> backward(const Eigen::MatrixBase<XD>& x, const Eigen::MatrixBase<GD>& grad_out,
                                             Eigen::Ref<Vector<Scalar>> grad_params) const {
    check_input<XD>("nn::MADE::backward", x);
    require_no_context("nn::MADE::backward");
    return backward_public<XD::ColsAtCompileTime>(InputRef<XD::ColsAtCompileTime>(x.derived()), nullptr,
                                                  grad_out, grad_params);
  }
  /// @brief backward() with a context c (context_dim × N).
  template <typename XD, typename CD, typename GD>
  InputBatch<XD::ColsAtCompileTime> backward(const Eigen::MatrixBase<XD>& x, const Eigen::MatrixBase<CD>& context,
                                             const Eigen::MatrixBase<GD>& grad_out,
                                             Eigen::Ref<Vector<Scalar>> grad_params) const {
    check_input<XD>("nn::MADE::backward", x);
    check_context<CD>("nn::MADE::backward", context, x.cols());
    constexpr int Cols = XD::ColsAtCompileTime;
    const ContextRef<Cols> c(context.derived());
    return backward_public<Cols>(InputRef<Cols>(x.derived()), &c, grad_out, grad_params);
  }
  template <typename XD, typename GD>
  InputBatch<XD::ColsAtCompileTime> backward(const Eigen::MatrixBase<XD>& x, NoContext,
                                             const Eigen::MatrixBase<GD>& grad_out,
                                             Eigen::Ref<Vector<Scalar>> grad_params) const {
    return backward(x, grad_out, grad_params);
  }

  // ---- building blocks for autoregressive layers (shapes are not checked here) --------------

  /// Read-only view of a block of outputs or parameters (rows × m), as the callbacks receive it.
  using ConstBlockRef = Eigen::Ref<const ParameterMatrix<Scalar>>;
  /// Writable view of a block (rows × m).
  using BlockRef = Eigen::Ref<ParameterMatrix<Scalar>>;
  /// Writable view of the columns first … first+m−1 of one row of a D × N matrix.
  using RowRef = Eigen::Ref<Eigen::Matrix<Scalar, 1, Eigen::Dynamic>, 0, Eigen::InnerStride<>>;
  using ForwardConsumer = made_detail::Callback<void(Index, const ConstBlockRef&)>;
  using BackwardGrad = made_detail::Callback<void(Index, const ConstBlockRef&, BlockRef)>;
  using SolveStep = made_detail::Callback<void(Index, Index, const ConstBlockRef&, RowRef)>;

  /// @brief The forward pass, block of columns by block: calls `consume(first, y)` for
  /// consecutive blocks, `y` (out × m, a ConstBlockRef) holding the outputs of columns
  /// first … first+m−1. One point (Cols fixed) is one block, in stack buffers when Dim and
  /// Hidden are fixed.
  template <int Cols>
  void forward_blocks(const InputRef<Cols>& x, const ContextRef<Cols>* context, ForwardConsumer consume) const {
    const Index n = x.cols();
    const Index h = hidden_width_;
    if constexpr (Cols != Eigen::Dynamic) {
      HiddenBuffer<Cols> a;
      HiddenBuffer<Cols> b;
      OutBuffer<Cols> y;
      shape(a, h, hidden_layers_ > 0 ? n : 0);
      shape(b, h, hidden_layers_ > 1 ? n : 0);
      shape(y, out_dim(), n);
      run_forward(x, context, a, b, y);
      consume(Index(0), ConstBlockRef(y));
    } else {
      const Index block = std::min(n, block_columns(2 * h + out_dim(), BlockBytes));
      Work a(h, hidden_layers_ > 0 ? block : 0);
      Work b(h, hidden_layers_ > 1 ? block : 0);
      Work y(out_dim(), block);
      for (Index j = 0; j < n; j += block) {
        const Index m = std::min(block, n - j);
        auto ab = a.leftCols(hidden_layers_ > 0 ? m : 0);
        auto bb = b.leftCols(hidden_layers_ > 1 ? m : 0);
        auto yb = y.leftCols(m);
        with_context_block<Cols>(context, j, m, [&](const auto* cb) { run_forward(x.middleCols(j, m), cb, ab, bb, yb); });
        consume(j, ConstBlockRef(yb));
      }
    }
  }

  /// @brief The backward pass, block of columns by block. For each block it recomputes the
  /// activations and y, calls `grad_fn(first, y, g)` which must write ∂L/∂y for those columns
  /// into `g` (out × m), then back-propagates: ADDS ∂L/∂θ into `grad_params` (masked weight
  /// entries get exactly 0) and ADDS the network's ∂L/∂x into those columns of `grad_x`
  /// (D × N, sized by the caller).
  template <int Cols, typename GX>
  void backward_blocks(const InputRef<Cols>& x, const ContextRef<Cols>* context, BackwardGrad grad_fn,
                       Eigen::Ref<Vector<Scalar>> grad_params, GX& grad_x) const {
    const Index n = x.cols();
    const Index h = hidden_width_;
    const Index L = hidden_layers_;
    constexpr bool from_output = Activation::BackwardFromOutput;
    const Index per_col = (from_output ? 1 : 2) * L * h + 2 * h + 2 * out_dim();
    const Index block = std::max<Index>(1, std::min(n, block_columns(per_col, BlockBytes)));
    BackwardWorkspace ws;
    ws.post.resize(h, L * block);
    if constexpr (!from_output) ws.pre.resize(h, L * block);
    ws.delta.resize(h, L > 0 ? block : 0);
    ws.below.resize(h, L > 1 ? block : 0);
    ws.y.resize(out_dim(), block);
    ws.g.resize(out_dim(), block);
    start_weight_gradients(ws);
    for (Index j = 0; j < n; j += block) {
      const Index m = std::min(block, n - j);
      with_context_block<Cols>(context, j, m, [&](const auto* cb) {
        backward_block(x.middleCols(j, m), cb, j, grad_fn, grad_params, grad_x, ws);
      });
    }
    finish_weight_gradients(ws, grad_params);
  }

  /// What backward_recorded() needs from forward_recorded(): the input, every hidden layer's
  /// output (and pre-activation when f′ needs it) and the outputs, for the whole batch
  /// (h × L·N + out × N values). Values, not references; recording again reuses the buffers.
  struct Tape {
    ParameterMatrix<Scalar> input;
    ParameterMatrix<Scalar> post;
    ParameterMatrix<Scalar> pre;
    ParameterMatrix<Scalar> y;  ///< the outputs, out × N
    /// Scratch of backward_recorded(), kept so that a reused tape allocates nothing (not part of
    /// the record; a tape is used by one thread at a time).
    mutable ParameterMatrix<Scalar> delta;
    mutable ParameterMatrix<Scalar> below;
    mutable std::vector<ParameterMatrix<Scalar>> grad_weights;
    /// The number of samples recorded.
    Index cols() const { return input.cols(); }
  };

  /// @brief The forward pass of a batch (D × N; shapes not checked here), recording into `tape`;
  /// the outputs are `tape.y` (out × N).
  template <typename XD>
  void forward_recorded(const Eigen::MatrixBase<XD>& x, const ContextRef<Eigen::Dynamic>* context, Tape& tape) const {
    const Index n = x.cols();
    const Index L = hidden_layers_;
    tape.input = x;
    tape.post.resize(hidden_width_, L * n);
    if constexpr (!Activation::BackwardFromOutput) tape.pre.resize(hidden_width_, L * n);
    tape.y.resize(out_dim(), n);
    record_block(tape.input, context, tape.post, tape.pre, tape.y);
  }

  /// @brief The backward pass from a tape, for g = ∂L/∂y (out × N): ADDS ∂L/∂θ into
  /// `grad_params` (masked weight entries get exactly 0) and ADDS the network's ∂L/∂x into
  /// `grad_x` (D × N, sized by the caller). The context must be the recorded one.
  template <typename G, typename GX>
  void backward_recorded(const Tape& tape, const ContextRef<Eigen::Dynamic>* context, const G& g,
                         Eigen::Ref<Vector<Scalar>> grad_params, GX& grad_x) const {
    const Index n = tape.cols();
    BackwardWorkspace ws;  // borrows the tape's scratch (moved back at the end)
    ws.delta.swap(tape.delta);
    ws.below.swap(tape.below);
    ws.grad_weights.swap(tape.grad_weights);
    ws.delta.resize(hidden_width_, hidden_layers_ > 0 ? n : 0);
    ws.below.resize(hidden_width_, hidden_layers_ > 1 ? n : 0);
    start_weight_gradients(ws);
    backward_from_block(tape.input, context, 0, g, grad_params, grad_x, tape.post, tape.pre, ws);
    finish_weight_gradients(ws, grad_params);
    tape.delta.swap(ws.delta);
    tape.below.swap(ws.below);
    tape.grad_weights.swap(ws.grad_weights);
  }

  /// @brief The Dim sequential passes of an autoregressive inverse. Sets `x` (D × N, sized by
  /// the caller) to 0, then for k = 1 … D, with i = order(k−1): computes the hidden units of
  /// degree k−1 (each unit exactly once over the D passes; the units of lower degree are
  /// already final), then the ParamsPerDim outputs of dimension i, and calls
  /// `solve(i, first, params, x_row)`: `params` (ParamsPerDim × m) are those outputs for
  /// columns first … first+m−1 and the solver must write x_i of those columns into `x_row`
  /// (1 × m). Output i depends only on the x_j of lower degree, all final by then.
  template <int Cols, typename XM>
  void solve_autoregressive(XM& x, const ContextRef<Cols>* context, SolveStep solve) const {
    const Index n = x.cols();
    const Index h = hidden_width_;
    const Index L = hidden_layers_;
    x.setZero();
    if constexpr (Cols != Eigen::Dynamic) {
      ParamBuffer<Cols> params;
      shape(params, ParamsPerDim, n);
      if constexpr (StackStoreFits<Cols>) {
        if (L <= MaxStackLayers) {
          StackStore<Cols> store(h, L * n);
          solve_block(x, context, store, params, Index(0), solve);
          return;
        }
      }
      Work store(h, L * n);
      solve_block(x, context, store, params, Index(0), solve);
    } else {
      const Index block = std::min(n, block_columns(L * h + ParamsPerDim, SolveBlockBytes));
      Work store(h, L * block);
      Work params(ParamsPerDim, block);
      for (Index j = 0; j < n; j += block) {
        const Index m = std::min(block, n - j);
        auto sb = store.leftCols(L * m);
        auto pb = params.leftCols(m);
        auto xb = x.middleCols(j, m);
        with_context_block<Cols>(context, j, m, [&](const auto* cb) { solve_block(xb, cb, sb, pb, j, solve); });
      }
    }
  }

  // ---- parameters ---------------------------------------------------------------------------

  Index parameter_count() const { return parameter_count_; }

  /// @brief Calls `f(name, Eigen::Ref<ParameterMatrix<Scalar>>)` for every tensor in visit order
  /// (see the class comment), then refreshes the masked weights from what `f` wrote.
  template <typename F>
  void visit_parameters(F&& f) {
    for (Index l = 0; l <= hidden_layers_; ++l) {
      const std::string prefix = "layers." + std::to_string(l) + ".";
      {
        const RefreshOnExit guard{this, l};
        f(prefix + "weight", Eigen::Ref<ParameterMatrix<Scalar>>(weights_[std::size_t(l)]));
      }
      if (l == 0 && context_dim_ > 0) {
        const RefreshOnExit guard{this, ContextLayer};
        f(prefix + "context_weight", Eigen::Ref<ParameterMatrix<Scalar>>(context_weight_));
      }
      f(prefix + "bias", Eigen::Ref<ParameterMatrix<Scalar>>(biases_[std::size_t(l)]));
    }
  }
  /// @brief Read-only visit: `f(name, Eigen::Ref<const ParameterMatrix<Scalar>>)`; the weights
  /// are the stored ones (masked entries as written).
  template <typename F>
  void visit_parameters(F&& f) const {
    for (Index l = 0; l <= hidden_layers_; ++l) {
      const std::string prefix = "layers." + std::to_string(l) + ".";
      f(prefix + "weight", Eigen::Ref<const ParameterMatrix<Scalar>>(weights_[std::size_t(l)]));
      if (l == 0 && context_dim_ > 0) {
        f(prefix + "context_weight", Eigen::Ref<const ParameterMatrix<Scalar>>(context_weight_));
      }
      f(prefix + "bias", Eigen::Ref<const ParameterMatrix<Scalar>>(biases_[std::size_t(l)]));
    }
  }

  /// @brief The buffers (see nflow/core/buffers.hpp): "order" (D entries, the generation
  /// order) and "hidden_degrees.<l>" for each hidden layer l (H entries, ascending).
  template <typename F>
  void visit_buffers(F&& f) const {
    const BufferVector o = nflow::detail::to_buffer(order_);
    f(std::string("order"), o);
    for (Index l = 0; l < hidden_layers_; ++l) {
      const BufferVector h = nflow::detail::to_buffer(hidden_degrees_[std::size_t(l)]);
      f("hidden_degrees." + std::to_string(l), h);
    }
  }
  /// @brief Writable visit. New values must be: "order" a permutation of 0 … D−1; each
  /// "hidden_degrees.<l>" H entries in ascending order, within [lo, D − 1], where lo is
  /// min(1, D − 1) for the first layer of an unconditional network, 0 for a conditional one,
  /// and the smallest degree of the layer before for later layers (the degrees this class
  /// assigns satisfy this). Then the masks are rebuilt from them and re-applied to the stored
  /// weights. Otherwise ParameterError naming the buffer, and the network is unchanged.
  template <typename F>
  void visit_buffers(F&& f) {
    const char* owner = "nflow::nn::MADE";
    BufferVector o = nflow::detail::to_buffer(order_);
    f(std::string("order"), o);
    std::vector<BufferVector> h(static_cast<std::size_t>(hidden_layers_));
    for (Index l = 0; l < hidden_layers_; ++l) {
      h[std::size_t(l)] = nflow::detail::to_buffer(hidden_degrees_[std::size_t(l)]);
      f("hidden_degrees." + std::to_string(l), h[std::size_t(l)]);
    }
    Eigen::VectorXi order = nflow::detail::buffer_to_permutation(owner, "order", o, dim_);
    std::vector<Eigen::VectorXi> degrees(static_cast<std::size_t>(hidden_layers_));
    Index lo = lowest_first_degree();
    for (Index l = 0; l < hidden_layers_; ++l) {
      const std::string name = "hidden_degrees." + std::to_string(l);
      Eigen::VectorXi& deg = degrees[std::size_t(l)];
      deg = nflow::detail::buffer_to_indices(owner, name, h[std::size_t(l)], hidden_width_, lo, dim_ - 1);
      for (Index u = 1; u < deg.size(); ++u) {
        if (deg(u) < deg(u - 1)) {
          throw ParameterError(std::string(owner) + ": buffer '" + name + "' is not in ascending order (entry " +
                               std::to_string(u) + ")");
        }
      }
      lo = deg(0);
    }
    order_ = std::move(order);
    hidden_degrees_ = std::move(degrees);
    build_masks();
    for (Index l = 0; l <= hidden_layers_; ++l) refresh(l);
    refresh(ContextLayer);
  }

  // ---- accessors ----------------------------------------------------------------------------

  Index dim() const { return dim_; }
  Index out_dim() const { return dim_ * ParamsPerDim; }
  Index hidden_width() const { return hidden_width_; }
  Index hidden_layers() const { return hidden_layers_; }
  Index context_dim() const { return context_dim_; }
  /// The generation order: dimension order(k) has degree k + 1.
  const Eigen::VectorXi& order() const { return order_; }
  /// deg(j) ∈ 1 … D of input j.
  const Eigen::VectorXi& input_degrees() const { return input_degrees_; }
  /// Degrees of hidden layer l (ascending), 0 ≤ l < hidden_layers().
  const Eigen::VectorXi& hidden_degrees(Index l) const { return hidden_degrees_.at(std::size_t(l)); }
  /// Degree of output row r: the degree of dimension r mod D.
  int output_degree(Index r) const { return input_degrees_(r % dim_); }
  /// Stored weight of layer l (0 ≤ l ≤ hidden_layers()), mask not applied.
  const ParameterMatrix<Scalar>& weight(Index l) const { return weights_.at(std::size_t(l)); }
  /// Mask of layer l (entries 0 or 1), the shape of weight(l).
  const ParameterMatrix<Scalar>& mask(Index l) const { return masks_.at(std::size_t(l)); }
  /// weight(l) ⊙ mask(l), what the network uses.
  const ParameterMatrix<Scalar>& masked_weight(Index l) const { return masked_.at(std::size_t(l)); }
  const Vector<Scalar>& bias(Index l) const { return biases_.at(std::size_t(l)); }
  /// C₀ (rows of layer 0 × context_dim; 0 columns without a context).
  const ParameterMatrix<Scalar>& context_weight() const { return context_weight_; }

 private:
  using Work = ParameterMatrix<Scalar>;
  static constexpr std::size_t StackBytes = 64 * 1024;
  static constexpr std::size_t BlockBytes = 256 * 1024;
  static constexpr std::size_t SolveBlockBytes = 512 * 1024;
  static constexpr Index MaxStackLayers = 8;

  static constexpr bool small_fixed(int rows, int cols) {
    return rows != Eigen::Dynamic && cols != Eigen::Dynamic &&
           std::size_t(rows) * std::size_t(cols) * sizeof(Scalar) <= StackBytes;
  }
  template <int Rows, int Cols>
  using Buffer = std::conditional_t<small_fixed(Rows, Cols), Eigen::Matrix<Scalar, Rows, Cols>, Work>;
  template <int Cols>
  using HiddenBuffer = Buffer<Hidden, Cols>;
  template <int Cols>
  using OutBuffer = Buffer<Out, Cols>;
  template <int Cols>
  using ParamBuffer = Buffer<ParamsPerDim, Cols>;
  template <int Cols>
  static constexpr bool StackStoreFits = Hidden != Eigen::Dynamic && Hidden >= 2 && Cols != Eigen::Dynamic &&
                                         small_fixed(Hidden, int(MaxStackLayers) * Cols);
  template <int Cols>
  using StackStore = Eigen::Matrix<Scalar, Hidden, Eigen::Dynamic, Eigen::ColMajor, Hidden,
                                   StackStoreFits<Cols> ? int(MaxStackLayers) * Cols : 1>;

  struct BackwardWorkspace {
    Work post;   ///< h × (L·m): each hidden layer's output
    Work pre;    ///< the same before the activation, when f′ needs it
    Work delta;  ///< h × m
    Work below;  ///< h × m
    Work y;      ///< out × m
    Work g;      ///< out × m: ∂L/∂y
    std::vector<Work> grad_weights;  ///< unmasked ∂L/∂Wₗ, masked once at the end
  };

  struct RefreshOnExit {
    MADE* self;
    Index layer;
    ~RefreshOnExit() { self->refresh(layer); }
  };

  static constexpr Index ContextLayer = -1;

  /// Re-derives what the network uses from the stored weight of layer l (or, for ContextLayer,
  /// from the context weight): the masked weight and, for the output layer, its rows regrouped
  /// by dimension (row i·P + p = output row p·D + i), so that the P outputs of one dimension are
  /// one contiguous block for the Dim-pass solve.
  void refresh(Index l) {
    const Index L = hidden_layers_;
    const Index D = dim_;
    if (l != ContextLayer) {
      masked_[std::size_t(l)] = weights_[std::size_t(l)].cwiseProduct(masks_[std::size_t(l)]);
    }
    if (l == L || (l == ContextLayer && L == 0)) {
      const Work& w = masked_[std::size_t(L)];
      grouped_out_.resize(w.rows(), w.cols());
      grouped_context_.resize(L == 0 ? context_weight_.rows() : 0, context_dim_);
      for (Index i = 0; i < D; ++i) {
        for (Index p = 0; p < ParamsPerDim; ++p) {
          grouped_out_.row(i * ParamsPerDim + p) = w.row(p * D + i);
          if (L == 0 && context_dim_ > 0) grouped_context_.row(i * ParamsPerDim + p) = context_weight_.row(p * D + i);
        }
      }
    }
  }

  template <typename Derived, std::uniform_random_bit_generator G>
  static void fill_symmetric(Eigen::PlainObjectBase<Derived>& m, double bound, G& gen) {
    for (Index j = 0; j < m.cols(); ++j) {
      for (Index i = 0; i < m.rows(); ++i) m(i, j) = Scalar(bound * (2.0 * uniform_open01(gen) - 1.0));
    }
  }

  /// An unbiased integer in [0, bound) from 64 random bits (rejection, never plain modulo).
  template <std::uniform_random_bit_generator G>
  static Index uniform_below(G& gen, Index bound) {
    const std::uint64_t b = std::uint64_t(bound);
    const std::uint64_t max = ~std::uint64_t(0);
    const std::uint64_t reject_from = max - max % b;
    std::uint64_t r = 0;
    do {
      r = random_bits64(gen);
    } while (r >= reject_from);
    return Index(r % b);
  }

  /// Sizes a dynamic buffer; a fixed-size one already has its size.
  template <typename B>
  static void shape(B& buffer, Index rows, Index cols) {
    if constexpr (B::SizeAtCompileTime == Eigen::Dynamic) {
      buffer.resize(rows, cols);
    } else {
      eigen_assert(cols == 0 || (buffer.rows() == rows && buffer.cols() == cols));
    }
  }

  static Index block_columns(Index scalars_per_column, std::size_t bytes) {
    const Index fit = Index(bytes / (std::size_t(std::max<Index>(1, scalars_per_column)) * sizeof(Scalar)));
    return std::clamp<Index>(fit, 16, 4096);
  }

  // -- construction --

  static void check_size_argument(const char* what, Index value, Index minimum, int fixed) {
    if (value < minimum) {
      throw ParameterError(std::string("nflow: nn::MADE: ") + what + " must be >= " + std::to_string(minimum) +
                           ", got " + std::to_string(value));
    }
    if (fixed != Eigen::Dynamic && value != fixed) {
      throw ParameterError(std::string("nflow: nn::MADE: ") + what + " = " + std::to_string(value) +
                           " differs from the compile-time size " + std::to_string(fixed));
    }
  }

  void check_order() const {
    bool ok = order_.size() == dim_;
    std::vector<bool> seen(std::size_t(dim_), false);
    for (Index k = 0; ok && k < order_.size(); ++k) {
      const int v = order_(k);
      ok = v >= 0 && v < dim_ && !seen[std::size_t(v)];
      if (ok) seen[std::size_t(v)] = true;
    }
    if (!ok) {
      throw ParameterError("nflow: nn::MADE: order must be a permutation of 0 ... " + std::to_string(dim_ - 1) +
                           " (" + std::to_string(dim_) + " entries), got " + std::to_string(order_.size()) +
                           " entries that are not");
    }
  }

  template <std::uniform_random_bit_generator G>
  void build_structure(HiddenDegrees kind, G& gen) {
    const Index D = dim_;
    const Index H = hidden_width_;
    const Index L = hidden_layers_;
    Index lo = lowest_first_degree();
    hidden_degrees_.assign(std::size_t(L), Eigen::VectorXi());
    for (Index l = 0; l < L; ++l) {
      Eigen::VectorXi deg(H);
      const Index range = D - lo;
      for (Index u = 0; u < H; ++u) {
        deg(u) = int(lo + (kind == HiddenDegrees::Sequential ? u % range : uniform_below(gen, range)));
      }
      std::sort(deg.data(), deg.data() + H);
      lo = deg(0);
      hidden_degrees_[std::size_t(l)] = std::move(deg);
    }
    build_masks();

    weights_.clear();
    biases_.clear();
    for (Index l = 0; l <= L; ++l) {
      weights_.push_back(Work::Zero(masks_[std::size_t(l)].rows(), masks_[std::size_t(l)].cols()));
      biases_.push_back(Vector<Scalar>::Zero(masks_[std::size_t(l)].rows()));
    }
    masked_ = weights_;
    context_weight_ = Work::Zero(L > 0 ? H : out_dim(), context_dim_);

    Index offset = 0;
    weight_offset_.clear();
    bias_offset_.clear();
    for (Index l = 0; l <= L; ++l) {
      weight_offset_.push_back(offset);
      offset += weights_[std::size_t(l)].size();
      if (l == 0) {
        context_offset_ = offset;
        offset += context_weight_.size();
      }
      bias_offset_.push_back(offset);
      offset += biases_[std::size_t(l)].size();
    }
    parameter_count_ = offset;
  }

  /// The smallest degree a unit of the first hidden layer may have (see the class comment).
  Index lowest_first_degree() const { return std::min<Index>(context_dim_ > 0 ? 0 : 1, dim_ - 1); }

  /// Input degrees, per-degree row ranges and masks from order_ and hidden_degrees_.
  void build_masks() {
    const Index D = dim_;
    const Index H = hidden_width_;
    const Index L = hidden_layers_;
    input_degrees_.resize(D);
    for (Index k = 0; k < D; ++k) input_degrees_(order_(k)) = int(k + 1);
    starts_.assign(std::size_t(L), std::vector<Index>(std::size_t(D + 1), 0));
    for (Index l = 0; l < L; ++l) {
      const Eigen::VectorXi& deg = hidden_degrees_[std::size_t(l)];
      for (Index g = 0; g <= D; ++g) {
        starts_[std::size_t(l)][std::size_t(g)] = Index(std::lower_bound(deg.data(), deg.data() + H, int(g)) - deg.data());
      }
    }
    masks_.clear();
    for (Index l = 0; l <= L; ++l) {
      const Index rows = l == L ? out_dim() : H;
      const Index cols = l == 0 ? D : H;
      Work mask(rows, cols);
      for (Index c = 0; c < cols; ++c) {
        const int in_deg = l == 0 ? input_degrees_(c) : hidden_degrees_[std::size_t(l - 1)](c);
        for (Index r = 0; r < rows; ++r) {
          const bool connected = l == L ? output_degree(r) > in_deg : hidden_degrees_[std::size_t(l)](r) >= in_deg;
          mask(r, c) = connected ? Scalar(1) : Scalar(0);
        }
      }
      masks_.push_back(std::move(mask));
    }
  }

  // -- checks --

  template <typename XD>
  void check_input(const char* where, const Eigen::MatrixBase<XD>& x) const {
    static_assert(std::is_same_v<typename XD::Scalar, Scalar>,
                  "nflow::nn::MADE: the input's Scalar must be the network's Scalar (convert with "
                  "x.template cast<Scalar>())");
    static_assert(Dim == Eigen::Dynamic || XD::RowsAtCompileTime == Eigen::Dynamic || XD::RowsAtCompileTime == Dim,
                  "nflow::nn::MADE: the input must have Dim rows (one sample per column)");
    detail::check_rows(where, "the input x", dim_, x.rows(), x.cols());
  }
  template <typename CD>
  void check_context(const char* where, const Eigen::MatrixBase<CD>& c, Index n) const {
    static_assert(std::is_same_v<typename CD::Scalar, Scalar>,
                  "nflow::nn::MADE: the context's Scalar must be the network's Scalar");
    if (context_dim_ == 0) {
      throw ShapeError(std::string("nflow: ") + where + ": the network takes no context, but a context of " +
                       detail::shape_string(c.rows(), c.cols()) + " was given");
    }
    detail::check_rows(where, "the context", context_dim_, c.rows(), c.cols());
    detail::check_cols(where, "the context", n, c.rows(), c.cols());
  }
  void require_no_context(const char* where) const {
    if (context_dim_ > 0) {
      throw ShapeError(std::string("nflow: ") + where + ": the network has context_dim = " +
                       std::to_string(context_dim_) + " and needs a context of " + std::to_string(context_dim_) +
                       " rows (one column per sample); got none");
    }
  }

  // -- kernels --

  /// Calls f(pointer to the context of columns j … j+m−1, or nullptr without a context).
  template <int Cols, typename F>
  static void with_context_block(const ContextRef<Cols>* context, Index j, Index m, F&& f) {
    if (context == nullptr) {
      f(static_cast<const ContextRef<Cols>*>(nullptr));
    } else if constexpr (Cols != Eigen::Dynamic) {
      f(context);
    } else {
      const ContextRef<Eigen::Dynamic> cb(context->middleCols(j, m));
      f(&cb);
    }
  }

  /// out = W̃₀·x + C₀·c + b₀ (rows of `out` = rows of layer 0).
  /// The same block with its row count a run-time value. Products take D-row operands through
  /// this: a compile-time D adds nothing to a GEMM, and with it GCC 12 at -O3 constant-propagates
  /// D into Eigen's GEMV fallback and warns (-Waggressive-loop-optimizations) about dead code.
  template <typename XB>
  static auto dynamic_rows(XB&& x) {
    return x.topRows(x.rows());
  }

  template <typename XB, typename CB, typename O>
  void first_layer(const XB& x, const CB* c, O& out) const {
    fill_columns(out, biases_[0]);
    out.noalias() += masked_[0] * dynamic_rows(x);
    if (c != nullptr && context_dim_ > 0) out.noalias() += context_weight_ * (*c);
  }

  template <typename XB, typename CB, typename A, typename Y>
  void run_forward(const XB& x, const CB* c, A& a, A& b, Y& y) const {
    const Index L = hidden_layers_;
    if (L == 0) {
      first_layer(x, c, y);
      return;
    }
    first_layer(x, c, a);
    Activation::apply(a);
    A* current = &a;
    A* next = &b;
    for (Index l = 1; l < L; ++l) {
      dense_forward(*next, masked_[std::size_t(l)], *current, biases_[std::size_t(l)]);
      Activation::apply(*next);
      std::swap(current, next);
    }
    dense_forward(y, masked_[std::size_t(L)], *current, biases_[std::size_t(L)]);
  }

  template <int Cols>
  OutputBatch<Cols> forward_impl(const InputRef<Cols>& x, const ContextRef<Cols>* c) const {
    OutputBatch<Cols> y;
    y.resize(out_dim(), x.cols());
    forward_blocks<Cols>(x, c, [&](Index first, const ConstBlockRef& yb) { y.middleCols(first, yb.cols()) = yb; });
    return y;
  }

  template <int Cols, typename GD>
  InputBatch<Cols> backward_public(const InputRef<Cols>& x, const ContextRef<Cols>* c,
                                   const Eigen::MatrixBase<GD>& grad_out, Eigen::Ref<Vector<Scalar>> grad_params) const {
    static_assert(std::is_same_v<typename GD::Scalar, Scalar>,
                  "nflow::nn::MADE: grad_out's Scalar must be the network's Scalar");
    detail::check_rows("nn::MADE::backward", "grad_out", out_dim(), grad_out.rows(), grad_out.cols());
    detail::check_cols("nn::MADE::backward", "grad_out", x.cols(), grad_out.rows(), grad_out.cols());
    detail::check_size("nn::MADE::backward", "grad_params", parameter_count_, grad_params.size());
    InputBatch<Cols> gx = InputBatch<Cols>::Zero(dim_, x.cols());
    backward_blocks<Cols>(
        x, c, [&](Index first, const ConstBlockRef& yb, BlockRef gb) { gb = grad_out.middleCols(first, yb.cols()); },
        grad_params, gx);
    return gx;
  }

  template <typename XB, typename CB, typename GX>
  void backward_block(const XB& x, const CB* c, Index first, const BackwardGrad& grad_fn, Eigen::Ref<Vector<Scalar>>& gp,
                      GX& grad_x, BackwardWorkspace& ws) const {
    const Index m = x.cols();
    auto y = ws.y.leftCols(m);
    auto g = ws.g.leftCols(m);
    record_block(x, c, ws.post, ws.pre, y);
    grad_fn(first, ConstBlockRef(y), BlockRef(g));
    backward_from_block(x, c, first, g, gp, grad_x, ws.post, ws.pre, ws);
  }

  /// The forward pass of a block of columns keeping every hidden layer's output in `post`
  /// (layer l in columns l·m …, m = x.cols()) and, if f′ needs it, its pre-activation in `pre`;
  /// the outputs go to `y` (out × m).
  template <typename XB, typename CB, typename Y>
  void record_block(const XB& x, const CB* c, Work& post, Work& pre, Y& y) const {
    const Index m = x.cols();
    const Index L = hidden_layers_;
    for (Index l = 0; l < L; ++l) {
      auto o = post.middleCols(l * m, m);
      if (l == 0) {
        first_layer(x, c, o);
      } else {
        dense_forward(o, masked_[std::size_t(l)], post.middleCols((l - 1) * m, m), biases_[std::size_t(l)]);
      }
      if constexpr (!Activation::BackwardFromOutput) pre.middleCols(l * m, m) = o;
      Activation::apply(o);
    }
    if (L == 0) {
      first_layer(x, c, y);
    } else {
      dense_forward(y, masked_[std::size_t(L)], post.middleCols((L - 1) * m, m), biases_[std::size_t(L)]);
    }
  }

  /// The backward pass of a block from what record_block() kept, for g = ∂L/∂y (out × m): adds
  /// the bias gradients into gp, the unmasked weight gradients into ws.grad_weights (masked once
  /// at the end, by finish_weight_gradients) and ∂L/∂x into columns first … of grad_x.
  template <typename XB, typename CB, typename G, typename GX>
  void backward_from_block(const XB& x, const CB* c, Index first, const G& g, Eigen::Ref<Vector<Scalar>>& gp,
                           GX& grad_x, const Work& post, const Work& pre, BackwardWorkspace& ws) const {
    const Index m = x.cols();
    const Index L = hidden_layers_;
    constexpr bool from_output = Activation::BackwardFromOutput;
    Scalar* const gpd = gp.data();
    auto bias_grad = [&](Index l) {
      return Eigen::Map<Vector<Scalar>>(gpd + bias_offset_[std::size_t(l)], biases_[std::size_t(l)].size());
    };
    auto input_layer_grads = [&](const auto& delta) {
      ws.grad_weights[0].noalias() += delta * dynamic_rows(x).transpose();
      if (c != nullptr && context_dim_ > 0) {
        Eigen::Map<Work> gc(gpd + context_offset_, context_weight_.rows(), context_dim_);
        gc.noalias() += delta * c->transpose();
      }
      dynamic_rows(grad_x.middleCols(first, m)).noalias() += masked_[0].transpose() * delta;
    };

    bias_grad(L) += g.rowwise().sum();
    if (L == 0) {
      input_layer_grads(g);
      return;
    }
    ws.grad_weights[std::size_t(L)].noalias() += g * post.middleCols((L - 1) * m, m).transpose();
    Work* delta_full = &ws.delta;
    Work* below_full = &ws.below;
    delta_full->leftCols(m).noalias() = masked_[std::size_t(L)].transpose() * g;
    for (Index l = L - 1; l >= 0; --l) {
      auto delta = delta_full->leftCols(m);
      if constexpr (from_output) {
        Activation::backward(post.middleCols(l * m, m), delta);
      } else {
        Activation::backward(pre.middleCols(l * m, m), delta);
      }
      bias_grad(l) += delta.rowwise().sum();
      if (l > 0) {
        ws.grad_weights[std::size_t(l)].noalias() += delta * post.middleCols((l - 1) * m, m).transpose();
        below_full->leftCols(m).noalias() = masked_[std::size_t(l)].transpose() * delta;
        std::swap(delta_full, below_full);
      } else {
        input_layer_grads(delta);
      }
    }
  }

  /// Zeroed unmasked weight-gradient accumulators, one per layer.
  void start_weight_gradients(BackwardWorkspace& ws) const {
    ws.grad_weights.resize(std::size_t(hidden_layers_ + 1));
    for (Index l = 0; l <= hidden_layers_; ++l) {
      const auto& w = weights_[std::size_t(l)];
      ws.grad_weights[std::size_t(l)].setZero(w.rows(), w.cols());
    }
  }
  /// Adds the masked accumulators into the flat gradient (masked entries get exactly 0).
  void finish_weight_gradients(const BackwardWorkspace& ws, Eigen::Ref<Vector<Scalar>>& grad_params) const {
    for (Index l = 0; l <= hidden_layers_; ++l) {
      const auto& w = weights_[std::size_t(l)];
      Eigen::Map<Work> gw(grad_params.data() + weight_offset_[std::size_t(l)], w.rows(), w.cols());
      gw += ws.grad_weights[std::size_t(l)].cwiseProduct(masks_[std::size_t(l)]);
    }
  }

  template <typename XB, typename CB, typename Store, typename Params>
  void solve_block(XB&& x, const CB* c, Store& store, Params& params, Index first, const SolveStep& solve) const {
    const Index m = x.cols();
    const Index D = dim_;
    const Index L = hidden_layers_;
    for (Index k = 1; k <= D; ++k) {
      const std::size_t g = std::size_t(k - 1);  // the degree that becomes computable
      const Index i = order_(k - 1);
      for (Index l = 0; l < L; ++l) {
        const auto& start = starts_[std::size_t(l)];
        const Index s = start[g];
        const Index e = start[g + 1];
        if (e == s) continue;
        auto rows = store.block(s, l * m, e - s, m);
        if (l == 0) {
          rows.noalias() = masked_[0].middleRows(s, e - s) * dynamic_rows(x);
          if (c != nullptr && context_dim_ > 0) rows.noalias() += context_weight_.middleRows(s, e - s) * (*c);
        } else {
          const Index K = starts_[std::size_t(l - 1)][g + 1];  // units below of degree ≤ k−1
          if (K > 0) {
            rows.noalias() = masked_[std::size_t(l)].block(s, 0, e - s, K) * store.block(0, (l - 1) * m, K, m);
          } else {
            rows.setZero();
          }
        }
        rows.colwise() += biases_[std::size_t(l)].segment(s, e - s);
        Activation::apply(rows);
      }
      // The P outputs of dimension i: one product with the rows grouped by dimension.
      const Index r0 = i * ParamsPerDim;
      if (L == 0) {
        params.noalias() = grouped_out_.middleRows(r0, ParamsPerDim) * dynamic_rows(x);
        if (c != nullptr && context_dim_ > 0) {
          params.noalias() += grouped_context_.middleRows(r0, ParamsPerDim) * (*c);
        }
      } else {
        const Index K = starts_[std::size_t(L - 1)][g + 1];  // units of degree < k
        if (K > 0) {
          params.noalias() = grouped_out_.block(r0, 0, ParamsPerDim, K) * store.block(0, (L - 1) * m, K, m);
        } else {
          params.setZero();
        }
      }
      for (Index p = 0; p < ParamsPerDim; ++p) params.row(p).array() += biases_[std::size_t(L)](p * D + i);
      auto x_row = x.row(i);
      solve(i, first, ConstBlockRef(params), RowRef(x_row));
    }
  }

  Index dim_;
  Index hidden_width_;
  Index hidden_layers_;
  Index context_dim_;
  Eigen::VectorXi order_;
  Eigen::VectorXi input_degrees_;
  std::vector<Eigen::VectorXi> hidden_degrees_;  ///< L of them, ascending
  std::vector<std::vector<Index>> starts_;       ///< starts_[l][g]: units of layer l with degree < g
  std::vector<Work> weights_;                    ///< L + 1 of them, as stored
  std::vector<Work> masks_;
  std::vector<Work> masked_;                     ///< weights_ ⊙ masks_
  Work grouped_out_;                             ///< masked_[L] with rows grouped by dimension
  Work grouped_context_;                         ///< the same for context_weight_ when L = 0
  std::vector<Vector<Scalar>> biases_;
  Work context_weight_;
  std::vector<Index> weight_offset_;
  std::vector<Index> bias_offset_;
  Index context_offset_ = 0;
  Index parameter_count_ = 0;
};

}  // namespace nflow::nn
