#pragma once
/// @file
/// @brief nflow::nn::DenseNetwork, the one dense-network core: a stack of dense layers with an
/// optional context input, a hand-written reverse-mode backward pass, tapes and an analytic input
/// Jacobian, over a weight policy. nn::MLP (policy Unmasked, nflow/nn/mlp.hpp) and nn::MADE
/// (policy Masked, nflow/nn/made.hpp) are its two public faces.

#include <Eigen/Core>
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "nflow/core/errors.hpp"
#include "nflow/core/scratch.hpp"
#include "nflow/core/types.hpp"
#include "nflow/nn/activations.hpp"
#include "nflow/nn/dense.hpp"

namespace nflow::nn {

namespace detail {

/// A non-owning reference to a callable with signature R(A...): the network's block loops call a
/// structure's per-block code through it, so that the loops are compiled once per network and
/// column count rather than once per caller (this keeps compile times of tests and users down).
/// The callable must outlive the reference (it is only used during the call that receives it).
template <typename Signature>
class FunctionRef;
template <typename R, typename... A>
class FunctionRef<R(A...)> {
 public:
  template <typename F>
  requires(!std::is_same_v<std::remove_cvref_t<F>, FunctionRef> &&
           std::is_invocable_r_v<R, F&, A...>)
      FunctionRef(
          F&& f)  // NOLINT(google-explicit-constructor): implicit by design, like std::function_ref
      : object_(const_cast<void*>(static_cast<const void*>(std::addressof(f)))),
        call_([](void* object, A... args) -> R {
          return (*static_cast<std::remove_reference_t<F>*>(object))(std::forward<A>(args)...);
        }) {}
  R operator()(A... args) const { return call_(object_, std::forward<A>(args)...); }

 private:
  void* object_;
  R (*call_)(void*, A...);
};

}  // namespace detail

/// @brief The weight policy of a plain multilayer perceptron: every weight is used as stored.
///
/// A weight policy tells nn::DenseNetwork which weights its layers use. It names the public face
/// (`Name`, for messages), the smallest input dimension and number of hidden layers it accepts,
/// and provides a `State<Scalar>` held by the network with:
/// - `weight(stored, l)`: the weight layer l uses (here: the stored one, no copy);
/// - `refresh(stored, context_weight, l)`: re-derives what the layers use after layer l's stored
///   weight (or, for l = −1, the context weight) was written;
/// - `clear_unused(stored)`: sets stored entries that the layers never use to 0 (initialisation);
/// - `MasksGradients` and `mask(l)`: whether weight gradients are multiplied by a 0/1 mask.
struct Unmasked {
  static constexpr const char* Name = "nn::MLP";
  static constexpr Index MinInDim = 0;
  static constexpr Index MinHiddenLayers = 1;

  template <typename Scalar>
  struct State {
    static constexpr bool MasksGradients = false;
    const ParameterMatrix<Scalar>& weight(const std::vector<ParameterMatrix<Scalar>>& stored,
                                          Index l) const {
      return stored[std::size_t(l)];
    }
    void refresh(const std::vector<ParameterMatrix<Scalar>>&, const ParameterMatrix<Scalar>&,
                 Index) {}
    void clear_unused(std::vector<ParameterMatrix<Scalar>>&) const {}
  };
};

/// @brief A stack of dense layers with an optional context input, exact gradients, tapes and an
/// analytic input Jacobian; masked or not according to its weight policy.
///
/// With x the input (in × N, one sample per column), c the optional context (context_dim × N),
/// f the activation, L = hidden_layers and W̃ₖ the weight layer k uses (the stored Wₖ for
/// Unmasked, Wₖ ⊙ Mₖ for Masked):
///
///     h₀ = f(W̃₀·x + C₀·c + b₀)              (the C₀·c term only when context_dim > 0)
///     hₖ = f(W̃ₖ·hₖ₋₁ + bₖ),  k = 1 … L−1
///     y  = W̃_L·h_{L−1} + b_L                 (no activation on the output layer)
///
/// and with L = 0 (Masked only): y = W̃₀·x + C₀·c + b₀. W₀ is rows × in, C₀ rows × context_dim
/// (rows = hidden, or out when L = 0), Wₖ hidden × hidden, W_L out × hidden (PyTorch's nn.Linear
/// layout: rows are outputs); biases are column vectors. The context enters through its own
/// weight, so no concatenated copy [x; c] is made.
///
/// Backward (reverse mode): given G = ∂L/∂y, with δ_L = G and aₖ the pre-activations,
///     ∂L/∂Wₖ = (δₖ·hₖ₋₁ᵀ) [⊙ Mₖ],  ∂L/∂bₖ = δₖ·1,  δₖ₋₁ = (W̃ₖᵀ·δₖ) ⊙ f′(aₖ₋₁),
///     ∂L/∂C₀ = δ₀·cᵀ,  ∂L/∂x = W̃₀ᵀ·δ₀,  ∂L/∂c = C₀ᵀ·δ₀.
/// Input Jacobian of one point: ∂y/∂x = W̃_L·D_{L−1}·W̃_{L−1} ⋯ D₀·W̃₀ with Dₖ = diag f′(aₖ).
///
/// Parameters, in visit order (each flattened column-major in the flat gradient):
/// "layers.0.weight", "layers.0.context_weight" (only when context_dim > 0), "layers.0.bias",
/// "layers.1.weight", "layers.1.bias", …, "layers.L.weight", "layers.L.bias". The weights are
/// visited as stored; a non-const visit re-derives the used weights from what was written.
///
/// Context: every member that evaluates the network takes the context as its last argument,
/// either nflow::NoContext (the default; only for context_dim = 0) or a matrix expression with
/// context_dim rows and one column per sample.
///
/// Column independence: column j of every output depends on column j of the inputs only, so a
/// NaN or Inf in one sample never reaches another (parameter gradients, which sum over samples,
/// are of course affected).
///
/// Allocation and blocking: a batch is processed in blocks of columns sized so that a block's
/// activations (about 256 KiB) stay in cache; a call allocates its output and a few block-sized
/// temporaries, never anything per sample. A single point (an input whose ColsAtCompileTime is 1)
/// with fixed `Hidden` and `Out` allocates nothing in forward and forward_point_into: the
/// activations live in fixed-size stack matrices. Every member except visit_parameters and
/// initialize is const and touches no mutable state, so a const network is safe to share between
/// threads.
///
/// Class invariant: the sizes given to the constructor never change; the weights the layers use
/// are derived from the stored ones by the policy after every write through visit_parameters
/// (write parameters through it or nflow::set_parameters, not through a reference kept after the
/// visit returns).
///
/// References: Rumelhart, Hinton, Williams 1986 (back-propagation); PyTorch nn.Linear for the
/// weight layout and the default initialisation.
///
/// @tparam Scalar_ float or double.
/// @tparam In_ input dimension, or Eigen::Dynamic.
/// @tparam Out_ output dimension, or Eigen::Dynamic.
/// @tparam Hidden_ width of every hidden layer, or Eigen::Dynamic. Weights are always heap-held
///   dynamic matrices; a fixed width only makes the per-call activations fixed-size.
/// @tparam Activation_ an nflow::nn::ActivationPolicy (Identity, ReLU, Tanh, SiLU, ELU).
/// @tparam Policy_ the weight policy: nn::Unmasked or nn::Masked<ParamsPerDim>.
template <typename Scalar_, int In_, int Out_, int Hidden_, typename Activation_, typename Policy_>
class DenseNetwork {
  static_assert(std::is_same_v<Scalar_, float> || std::is_same_v<Scalar_, double>,
                "nflow::nn::MLP / MADE <Scalar, ...>: Scalar must be float or double");
  static_assert(In_ == Eigen::Dynamic || In_ >= 0,
                "nflow::nn::MLP / MADE <Scalar, In, ...>: In must be >= 0 or Eigen::Dynamic");
  static_assert(Out_ == Eigen::Dynamic || Out_ >= 1,
                "nflow::nn::MLP / MADE <Scalar, In, Out, ...>: Out must be >= 1 or Eigen::Dynamic");
  static_assert(Hidden_ == Eigen::Dynamic || Hidden_ >= 1,
                "nflow::nn::MLP / MADE <..., Hidden>: Hidden must be >= 1 or Eigen::Dynamic");
  static_assert(
      ActivationPolicy<Activation_>,
      "nflow::nn::MLP / MADE <..., Activation>: Activation must model nflow::nn::ActivationPolicy"
      " (static name, BackwardFromOutput, apply(x) and backward(value, grad); see"
      " nflow/nn/activations.hpp)");

 public:
  using Scalar = Scalar_;
  using Activation = Activation_;
  using Policy = Policy_;
  static constexpr int In = In_;
  static constexpr int Out = Out_;
  static constexpr int Hidden = Hidden_;

  /// A batch of inputs (in × Cols).
  template <int Cols>
  using InputBatch = Eigen::Matrix<Scalar, In, Cols>;
  /// A batch of outputs (out × Cols).
  template <int Cols>
  using OutputBatch = Eigen::Matrix<Scalar, Out, Cols>;
  /// A batch of contexts (context_dim × Cols).
  template <int Cols>
  using ContextBatch = Eigen::Matrix<Scalar, Eigen::Dynamic, Cols>;
  template <int Cols>
  using InputRef = Eigen::Ref<const InputBatch<Cols>>;
  template <int Cols>
  using ContextRef = Eigen::Ref<const ContextBatch<Cols>>;
  /// Read-only view of a block of outputs or parameters (rows × m), as callbacks receive it.
  using ConstBlockRef = Eigen::Ref<const ParameterMatrix<Scalar>>;
  /// Writable view of a block (rows × m).
  using BlockRef = Eigen::Ref<ParameterMatrix<Scalar>>;
  using ForwardConsumer = detail::FunctionRef<void(Index, const ConstBlockRef&)>;
  using BackwardGrad = detail::FunctionRef<void(Index, const ConstBlockRef&, BlockRef)>;

 private:
  static constexpr std::size_t StackBytes = 64 * 1024;
  static constexpr bool JacobianIsFixed =
      In != Eigen::Dynamic && Out != Eigen::Dynamic &&
      std::size_t(In) * std::size_t(Out) * sizeof(Scalar) <= StackBytes;

 public:
  /// Bytes of activations a block of a batch is sized for.
  static constexpr std::size_t BlockBytes = 256 * 1024;

  /// The input Jacobian of one point, out × in (fixed-size when both are, and small).
  using Jacobian = Eigen::Matrix<Scalar, JacobianIsFixed ? Out : Eigen::Dynamic,
                                 JacobianIsFixed ? In : Eigen::Dynamic>;

  /// What backward_with_context_grad() returns: ∂L/∂x and ∂L/∂c.
  template <int Cols>
  struct InputAndContextGradient {
    InputBatch<Cols> input;
    ContextBatch<Cols> context;
  };

  /// @brief Builds the network with every parameter 0 (call initialize() to draw them).
  ///
  /// @param in_dim input dimension (>= Policy::MinInDim; `in_dim + context_dim >= 1`), equal to
  ///   `In` if fixed.
  /// @param out_dim output dimension (>= 1), equal to `Out` if fixed.
  /// @param hidden_width width of each hidden layer (>= 1), equal to `Hidden` if fixed.
  /// @param hidden_layers number of hidden layers (>= Policy::MinHiddenLayers).
  /// @param context_dim context dimension (>= 0; 0 means unconditional).
  /// @throws nflow::ParameterError naming the offending argument.
  DenseNetwork(Index in_dim, Index out_dim, Index hidden_width, Index hidden_layers,
               Index context_dim = 0)
      : in_dim_(in_dim),
        out_dim_(out_dim),
        hidden_width_(hidden_width),
        hidden_layers_(hidden_layers),
        context_dim_(context_dim) {
    check_size_argument("in_dim", in_dim, Policy::MinInDim, In);
    check_size_argument("out_dim", out_dim, 1, Out);
    check_size_argument("hidden_width", hidden_width, 1, Hidden);
    check_size_argument("hidden_layers", hidden_layers, Policy::MinHiddenLayers, Eigen::Dynamic);
    check_size_argument("context_dim", context_dim, 0, Eigen::Dynamic);
    if (in_dim + context_dim < 1) {
      throw ParameterError(std::string("nflow: ") + Policy::Name +
                           ": in_dim + context_dim must be >= 1 (the network needs an input), got "
                           "in_dim = 0 and context_dim = 0");
    }
    const Index L = hidden_layers;
    weights_.reserve(std::size_t(L + 1));
    biases_.reserve(std::size_t(L + 1));
    for (Index k = 0; k <= L; ++k) {
      const Index rows = k == L ? out_dim : hidden_width;
      const Index cols = k == 0 ? in_dim : hidden_width;
      weights_.push_back(Work::Zero(rows, cols));
      biases_.push_back(Vector<Scalar>::Zero(rows));
    }
    context_weight_ = Work::Zero(L > 0 ? hidden_width : out_dim, context_dim);
    // Offsets of each tensor in the flat parameter vector, in visit order.
    Index offset = 0;
    for (Index k = 0; k <= L; ++k) {
      weight_offset_.push_back(offset);
      offset += weights_[std::size_t(k)].size();
      if (k == 0) {
        context_offset_ = offset;
        offset += context_weight_.size();
      }
      bias_offset_.push_back(offset);
      offset += biases_[std::size_t(k)].size();
    }
    parameter_count_ = offset;
  }

  /// @brief Draws all parameters like PyTorch's nn.Linear default: uniform on
  /// (−1/√fan_in, 1/√fan_in) for weights and biases, with fan_in = in_dim + context_dim for the
  /// first layer and hidden_width after it. Tensors are filled in visit order, each column-major,
  /// from std::mt19937_64(seed) through nflow::uniform_open01, so the values are the same on
  /// every compiler. Stored weight entries the policy never uses (masked ones) are then set to 0.
  /// @param zero_last_layer set the output layer's weight and bias (and the context weight when
  ///   there is no hidden layer) to exactly 0, so that the network outputs 0 for every finite
  ///   input (a fresh coupling or autoregressive layer is then the identity).
  void initialize(std::uint64_t seed, bool zero_last_layer = true) {
    std::mt19937_64 gen(seed);
    initialize(gen, zero_last_layer);
  }

  /// @brief As initialize(seed, zero_last_layer), drawing from a caller's generator (so that the
  /// layers of a flow can be seeded from one stream).
  template <std::uniform_random_bit_generator G>
  void initialize(G& gen, bool zero_last_layer = true) {
    const Index L = hidden_layers_;
    for (Index k = 0; k <= L; ++k) {
      const double bound = default_init_bound(k == 0 ? in_dim_ + context_dim_ : hidden_width_);
      fill_uniform_symmetric(weights_[std::size_t(k)], bound, gen);
      if (k == 0) fill_uniform_symmetric(context_weight_, bound, gen);
      fill_uniform_symmetric(biases_[std::size_t(k)], bound, gen);
    }
    if (zero_last_layer) {
      weights_.back().setZero();
      biases_.back().setZero();
      if (L == 0) context_weight_.setZero();
    }
    state_.clear_unused(weights_);
    refresh_all();
  }

  // ---- forward ----------------------------------------------------------------------------

  /// @brief y = f(x, c) for a batch x (in × N) or one point (in × 1).
  /// @param context nflow::NoContext (unconditional networks) or context_dim × N.
  /// @throws nflow::ShapeError if x or the context has the wrong shape, or if the network needs a
  ///   context and none was given.
  template <typename XD, typename C = NoContext>
  OutputBatch<XD::ColsAtCompileTime> forward(const Eigen::MatrixBase<XD>& x,
                                             const C& context = C{}) const {
    constexpr int Cols = XD::ColsAtCompileTime;
    check_input("forward", x);
    OutputBatch<Cols> y;
    with_checked_context<Cols>("forward", context, x.cols(), [&](const ContextRef<Cols>* c) {
      y = forward_impl<Cols>(InputRef<Cols>(x.derived()), c);
    });
    return y;
  }

  /// @brief forward() of one point (in × 1) written into `y`, which is resized to out × 1: with a
  /// fixed `Hidden` nothing is allocated when `y` has room on the stack (a fixed-size vector, or
  /// one with a fixed maximum size such as `Eigen::Matrix<S, Dynamic, 1, 0, MaxOut, 1>`). The
  /// context is NoContext or a context_dim × 1 column. Same checks and exceptions as forward().
  template <typename XD, typename YD, typename C = NoContext>
  void forward_point_into(const Eigen::MatrixBase<XD>& x, Eigen::PlainObjectBase<YD>& y,
                          const C& context = C{}) const {
    check_input("forward_point_into", x);
    check_cols("forward_point_into", "the input point x", 1, x.rows(), x.cols());
    y.resize(out_dim_, 1);
    const InputRef<1> xr(x.derived());
    HiddenBuffer<1> a;
    HiddenBuffer<1> b;
    a.resize(hidden_width_, 1);
    if (hidden_layers_ > 1) b.resize(hidden_width_, 1);
    with_checked_context<1>("forward_point_into", context, 1,
                            [&](const ContextRef<1>* c) { forward_columns(xr, c, a, b, y); });
  }

  // ---- backward ---------------------------------------------------------------------------

  /// @brief Reverse-mode gradient: returns ∂L/∂x (in × N) and ADDS ∂L/∂θ into `grad_params`.
  ///
  /// @param x the input at which to differentiate (the forward pass is recomputed).
  /// @param grad_out ∂L/∂y, out × N.
  /// @param grad_params flat gradient of length parameter_count(), laid out in visit order, each
  ///   tensor column-major; it is accumulated into, not overwritten (masked weight entries get
  ///   exactly 0).
  /// @param context NoContext or context_dim × N.
  /// @throws nflow::ShapeError on a shape mismatch.
  template <typename XD, typename GD, typename C = NoContext>
  InputBatch<XD::ColsAtCompileTime> backward(const Eigen::MatrixBase<XD>& x,
                                             const Eigen::MatrixBase<GD>& grad_out,
                                             Eigen::Ref<Vector<Scalar>> grad_params,
                                             const C& context = C{}) const {
    check_grad_params("backward", grad_params);
    return backward_public<XD::ColsAtCompileTime>("backward", x, grad_out, grad_params.data(),
                                                  context, nullptr);
  }

  /// @brief As backward(x, grad_out, grad_params, c), also returning ∂L/∂c = C₀ᵀ·δ₀
  /// (context_dim × N).
  template <typename XD, typename GD, typename CD>
  InputAndContextGradient<XD::ColsAtCompileTime> backward_with_context_grad(
      const Eigen::MatrixBase<XD>& x, const Eigen::MatrixBase<GD>& grad_out,
      Eigen::Ref<Vector<Scalar>> grad_params, const Eigen::MatrixBase<CD>& context) const {
    constexpr int Cols = XD::ColsAtCompileTime;
    check_grad_params("backward_with_context_grad", grad_params);
    InputAndContextGradient<Cols> out;
    out.context.setZero(context_dim_, x.cols());
    out.input = backward_public<Cols>("backward_with_context_grad", x, grad_out, grad_params.data(),
                                      context.derived(), &out.context);
    return out;
  }

  /// @brief ∂L/∂x only (a vector-Jacobian product), skipping the parameter gradients: about a
  /// third cheaper than backward(). This is what a score ∇ₓ log p needs.
  template <typename XD, typename GD, typename C = NoContext>
  InputBatch<XD::ColsAtCompileTime> backward_input(const Eigen::MatrixBase<XD>& x,
                                                   const Eigen::MatrixBase<GD>& grad_out,
                                                   const C& context = C{}) const {
    return backward_public<XD::ColsAtCompileTime>("backward_input", x, grad_out, nullptr, context,
                                                  nullptr);
  }

  // ---- recorded forward and backward -----------------------------------------------------

  /// @brief What backward_recorded() needs from one forward_recorded() pass: the input and
  /// every hidden layer's output (and pre-activation when the activation's derivative needs it),
  /// hidden × hidden_layers·N values in all. A tape holds values, not references: it stays valid
  /// when the input goes away, and describes the parameters as they were when it was recorded.
  /// Recording into a tape again reuses its buffers.
  struct Tape {
    InputBatch<Eigen::Dynamic> input;
    ParameterMatrix<Scalar> post;  ///< hidden × (layers·N): layer k's output in columns k·N …
    ParameterMatrix<Scalar> pre;   ///< the same for the pre-activations (when f′ needs them)
    /// Scratch of backward_recorded(), kept so that a tape reused from one training step to the
    /// next allocates nothing (not part of the record; a tape is used by one thread at a time).
    mutable ParameterMatrix<Scalar> delta;
    mutable ParameterMatrix<Scalar> below;
    mutable std::vector<ParameterMatrix<Scalar>> grad_weights;  ///< masked policies only
    /// The number of samples recorded.
    Index cols() const { return input.cols(); }
  };

  /// @brief forward(x, c) for a batch, keeping in `tape` what backward_recorded() needs, so
  /// that a backward pass after it does not run the network forward again (backward() does).
  /// Same checks and exceptions as forward(); a call that throws leaves the tape unchanged.
  template <typename XD, typename C = NoContext>
  OutputBatch<Eigen::Dynamic> forward_recorded(const Eigen::MatrixBase<XD>& x, Tape& tape,
                                               const C& context = C{}) const {
    check_input("forward_recorded", x);
    const Index n = x.cols();
    OutputBatch<Eigen::Dynamic> y(out_dim_, n);
    // Every check before the tape is written: a call that throws leaves the tape as it was.
    with_checked_context<Eigen::Dynamic>(
        "forward_recorded", context, n, [&](const ContextRef<Eigen::Dynamic>* c) {
          const Index layers = hidden_layers_;
          tape.input = x;
          tape.post.resize(hidden_width_, layers * n);
          if constexpr (!Activation::BackwardFromOutput) tape.pre.resize(hidden_width_, layers * n);
          record_columns(InputRef<Eigen::Dynamic>(tape.input), c, tape.post, tape.pre, y);
        });
    return y;
  }

  /// @brief backward() at the point a forward_recorded() call recorded into `tape`, without
  /// recomputing the forward pass: returns ∂L/∂x (in × N) and ADDS ∂L/∂θ into `grad_params`.
  /// The context must be the one given to forward_recorded(). With `grad_context` (a
  /// context_dim × N matrix, given with the context) ∂L/∂c = C₀ᵀ·δ₀ is ADDED into it.
  /// @throws nflow::ShapeError if grad_out, grad_params, the context or grad_context do not match
  ///   the tape, or if the tape was not recorded by a network of this shape.
  template <typename GD, typename C = NoContext>
  InputBatch<Eigen::Dynamic> backward_recorded(
      const Tape& tape, const Eigen::MatrixBase<GD>& grad_out,
      Eigen::Ref<Vector<Scalar>> grad_params, const C& context = C{},
      ContextBatch<Eigen::Dynamic>* grad_context = nullptr) const {
    const Index n = tape.cols();
    if (tape.input.rows() != in_dim_ || tape.post.rows() != hidden_width_ ||
        tape.post.cols() != hidden_layers_ * n ||
        (!Activation::BackwardFromOutput && tape.pre.cols() != tape.post.cols())) {
      throw ShapeError(
          "nflow: " + where("backward_recorded") +
          ": the tape was not recorded by forward_recorded() of a network of this shape");
    }
    check_grad_out("backward_recorded", grad_out, n);
    check_grad_params("backward_recorded", grad_params);
    check_grad_context<C>("backward_recorded", grad_context, n);
    InputBatch<Eigen::Dynamic> gx(in_dim_, n);
    with_checked_context<Eigen::Dynamic>(
        "backward_recorded", context, n, [&](const ContextRef<Eigen::Dynamic>* c) {
          Workspace ws;  // borrows the tape's scratch (moved back at the end)
          ws.delta.swap(tape.delta);
          ws.below.swap(tape.below);
          ws.grad_weights.swap(tape.grad_weights);
          ws.delta.resize(hidden_width_, hidden_layers_ > 0 ? n : 0);
          ws.below.resize(hidden_width_, hidden_layers_ > 1 ? n : 0);
          start_weight_gradients(ws);
          std::optional<Eigen::Ref<ContextBatch<Eigen::Dynamic>>> gc;
          if (grad_context != nullptr) gc.emplace(*grad_context);
          backward_from_hidden(InputRef<Eigen::Dynamic>(tape.input), c,
                               ConstBlockRef(grad_out.derived()), grad_params.data(), gx, false,
                               gc ? &*gc : nullptr, tape.post, tape.pre, ws);
          finish_weight_gradients(ws, grad_params.data());
          tape.delta.swap(ws.delta);
          tape.below.swap(ws.below);
          tape.grad_weights.swap(ws.grad_weights);
        });
    return gx;
  }

  // ---- Jacobian ---------------------------------------------------------------------------

  /// @brief The Jacobian ∂y/∂x (out × in) at one point x (in × 1) and context c (NoContext or
  /// context_dim × 1), computed analytically as W̃_L·D_{L−1}⋯D₀·W̃₀ (forward accumulation, or
  /// reverse when out < in).
  /// @throws nflow::ShapeError if x is not one point of the right dimension.
  template <typename XD, typename C = NoContext>
  Jacobian input_jacobian(const Eigen::MatrixBase<XD>& x, const C& context = C{}) const {
    static_assert(XD::ColsAtCompileTime == 1 || XD::ColsAtCompileTime == Eigen::Dynamic,
                  "nflow::nn::MLP::input_jacobian: x must be one point (in x 1)");
    check_input("input_jacobian", x);
    check_cols("input_jacobian", "the input point x", 1, x.rows(), x.cols());
    Jacobian jac;
    with_checked_context<1>("input_jacobian", context, 1, [&](const ContextRef<1>* c) {
      jac = jacobian_impl(InputRef<1>(x.derived()), c);
    });
    return jac;
  }

  // ---- building blocks for structures (shapes are not checked here) ---------------------

  /// @brief Calls `f(c)` with `c` a `const ContextRef<Cols>*` viewing the context, or nullptr for
  /// nflow::NoContext: the one context dispatch of the network and of the structures that own
  /// one (no check; the caller has checked the shapes).
  template <int Cols, typename C, typename F>
  static void with_context(const C& context, F&& f) {
    if constexpr (is_no_context_v<C>) {
      f(static_cast<const ContextRef<Cols>*>(nullptr));
    } else if constexpr (C::ColsAtCompileTime != Eigen::Dynamic && Cols != Eigen::Dynamic &&
                         int(C::ColsAtCompileTime) != Cols) {
      // Unreachable after the callers' column checks; keeps a mismatched fixed size compiling.
      throw ShapeError("nflow: nn network: the context must have one column per sample");
    } else {
      const ContextRef<Cols> c(context.derived());
      f(&c);
    }
  }

  /// @brief A block with its row count a run-time value. Products take In-row operands through
  /// this: a compile-time In adds nothing to a GEMM, and with it GCC 12 at -O3 constant-propagates
  /// In into Eigen's GEMV fallback and warns (-Waggressive-loop-optimizations) about dead code.
  template <typename XB>
  static auto dynamic_rows(XB&& x) {
    return x.topRows(x.rows());
  }

  /// @brief Columns per block of a batch when a column needs `scalars_per_column` values of
  /// scratch and the block `bytes` (between 16 and 4096).
  static Index block_columns(Index scalars_per_column, std::size_t bytes = BlockBytes) {
    const Index fit =
        Index(bytes / (std::size_t(std::max<Index>(1, scalars_per_column)) * sizeof(Scalar)));
    return std::clamp<Index>(fit, 16, 4096);
  }

  /// @brief The forward pass, block of columns by block: calls `consume(first, y)` for
  /// consecutive blocks, `y` (out × m) holding the outputs of columns first … first+m−1. One
  /// point (Cols fixed) is one block, in stack buffers when Hidden and Out are fixed.
  template <int Cols, typename C>
  void forward_blocks(const InputRef<Cols>& x, const C& context, ForwardConsumer consume) const {
    with_context<Cols>(
        context, [&](const ContextRef<Cols>* c) { forward_blocks_impl<Cols>(x, c, consume); });
  }

  /// @brief The backward pass, block of columns by block. For each block it recomputes the
  /// activations and y, calls `grad_fn(first, y, g)` which must write ∂L/∂y for those columns
  /// into `g` (out × m), then back-propagates: ADDS ∂L/∂θ into `grad_params` (masked weight
  /// entries get exactly 0) and ADDS the network's ∂L/∂x into those columns of `grad_x`
  /// (in × N, sized by the caller; grad_fn may write into it first). With `grad_context`
  /// (context_dim × N, given with the context; not checked here) ∂L/∂c is ADDED into it.
  template <int Cols, typename C>
  void backward_blocks(const InputRef<Cols>& x, const C& context, BackwardGrad grad_fn,
                       Eigen::Ref<Vector<Scalar>> grad_params,
                       Eigen::Ref<InputBatch<Eigen::Dynamic>> grad_x,
                       ContextBatch<Eigen::Dynamic>* grad_context = nullptr) const {
    with_context<Eigen::Dynamic>(context, [&](const ContextRef<Eigen::Dynamic>* c) {
      std::optional<Eigen::Ref<ContextBatch<Eigen::Dynamic>>> gc;
      if (grad_context != nullptr && c != nullptr) gc.emplace(*grad_context);
      backward_loop(InputRef<Eigen::Dynamic>(x), c, nullptr, &grad_fn, grad_params.data(), grad_x,
                    true, gc ? &*gc : nullptr);
    });
  }

  // ---- parameters -------------------------------------------------------------------------

  /// @brief Total number of scalar parameters (the length of the flat gradient).
  Index parameter_count() const { return parameter_count_; }

  /// @brief Calls `f(name, Eigen::Ref<ParameterMatrix<Scalar>> tensor)` for every tensor, in the
  /// order "layers.0.weight", ["layers.0.context_weight",] "layers.0.bias", "layers.1.weight", …
  /// Biases are seen as n × 1 matrices. Names are relative; a caller prefixes its own. After each
  /// weight is visited, the weights the layers use are re-derived from what `f` wrote.
  template <typename F>
  void visit_parameters(F&& f) {
    for (Index k = 0; k <= hidden_layers_; ++k) {
      const std::string prefix = "layers." + std::to_string(k) + ".";
      {
        const RefreshOnExit guard{this, k};
        f(prefix + "weight", Eigen::Ref<Work>(weights_[std::size_t(k)]));
      }
      if (k == 0 && context_dim_ > 0) {
        const RefreshOnExit guard{this, ContextLayer};
        f(prefix + "context_weight", Eigen::Ref<Work>(context_weight_));
      }
      f(prefix + "bias", Eigen::Ref<Work>(biases_[std::size_t(k)]));
    }
  }

  /// @brief Read-only visit: `f(name, Eigen::Ref<const ParameterMatrix<Scalar>> tensor)`; the
  /// weights are the stored ones (masked entries as written).
  template <typename F>
  void visit_parameters(F&& f) const {
    for (Index k = 0; k <= hidden_layers_; ++k) {
      const std::string prefix = "layers." + std::to_string(k) + ".";
      f(prefix + "weight", Eigen::Ref<const Work>(weights_[std::size_t(k)]));
      if (k == 0 && context_dim_ > 0)
        f(prefix + "context_weight", Eigen::Ref<const Work>(context_weight_));
      f(prefix + "bias", Eigen::Ref<const Work>(biases_[std::size_t(k)]));
    }
  }

  // ---- accessors --------------------------------------------------------------------------

  Index in_dim() const { return in_dim_; }
  Index out_dim() const { return out_dim_; }
  Index context_dim() const { return context_dim_; }
  Index hidden_width() const { return hidden_width_; }
  Index hidden_layers() const { return hidden_layers_; }
  /// Number of dense layers, hidden_layers() + 1.
  Index layer_count() const { return hidden_layers_ + 1; }

  /// Stored weight of layer k (0 ≤ k ≤ hidden_layers()); throws std::out_of_range otherwise.
  const ParameterMatrix<Scalar>& weight(Index k) const { return weights_.at(std::size_t(k)); }
  /// The weight layer k uses (the stored one, or it ⊙ its mask); k must be a valid layer.
  const ParameterMatrix<Scalar>& used_weight(Index k) const { return state_.weight(weights_, k); }
  /// Bias of layer k (0 ≤ k ≤ hidden_layers()); throws std::out_of_range otherwise.
  const Vector<Scalar>& bias(Index k) const { return biases_.at(std::size_t(k)); }
  /// C₀, (hidden_width, or out_dim without hidden layers) × context_dim.
  const ParameterMatrix<Scalar>& context_weight() const { return context_weight_; }

 protected:
  using Work = ParameterMatrix<Scalar>;
  /// A batch pass's temporary block, in the thread's scratch memory (nflow/core/scratch.hpp).
  using Scratch = nflow::detail::ScratchMatrix<Scalar>;
  using PolicyState = typename Policy::template State<Scalar>;
  static constexpr Index ContextLayer = -1;

  /// Re-derives what the layers use from every stored weight (after the policy's state changed).
  void refresh_all() {
    for (Index k = 0; k <= hidden_layers_; ++k) state_.refresh(weights_, context_weight_, k);
    state_.refresh(weights_, context_weight_, ContextLayer);
  }
  PolicyState& policy_state() { return state_; }
  const PolicyState& policy_state() const { return state_; }
  std::vector<Work>& stored_weights() { return weights_; }

 private:
  template <int Cols>
  using OutputRef = Eigen::Ref<const OutputBatch<Cols>>;

  /// Per-call activations: fixed-size (on the stack) when Hidden and the column count are fixed
  /// and small, dynamic otherwise.
  static constexpr int hidden_buffer_cols(int cols) {
    if (Hidden == Eigen::Dynamic) return cols;
    if (cols == Eigen::Dynamic) return Eigen::Dynamic;
    return std::size_t(Hidden) * std::size_t(cols) * sizeof(Scalar) <= StackBytes ? cols
                                                                                  : Eigen::Dynamic;
  }
  template <int Cols>
  using HiddenBuffer = Eigen::Matrix<Scalar, Hidden, hidden_buffer_cols(Cols)>;
  static constexpr bool small_fixed(int rows, int cols) {
    return rows != Eigen::Dynamic && cols != Eigen::Dynamic &&
           std::size_t(rows) * std::size_t(cols) * sizeof(Scalar) <= StackBytes;
  }
  template <int Cols>
  using OutBuffer =
      std::conditional_t<small_fixed(Out, Cols), Eigen::Matrix<Scalar, Out, Cols>, Work>;

  /// Scratch space of the backward pass, sized for one block of columns.
  struct Workspace {
    Work post;   ///< hidden × (layers·m): each hidden layer's output, layer by layer
    Work pre;    ///< the same for the pre-activations, when f′ needs them
    Work delta;  ///< hidden × m
    Work below;  ///< hidden × m
    Work y;      ///< out × m (when a callback computes ∂L/∂y from y)
    Work g;      ///< out × m: ∂L/∂y
    std::vector<Work> grad_weights;  ///< unmasked ∂L/∂Wₖ of masked policies, masked once at the end
  };

  struct RefreshOnExit {
    DenseNetwork* self;
    Index layer;
    ~RefreshOnExit() { self->state_.refresh(self->weights_, self->context_weight_, layer); }
  };

  // -- argument checks --

  /// "nn::MLP::forward" and the like, for messages (built only when a check fails, so that the
  /// one-point paths allocate nothing).
  static std::string where(const char* member) { return std::string(Policy::Name) + "::" + member; }
  static void check_rows(const char* member, const char* what, Index expected, Index rows,
                         Index cols) {
    if (rows != expected)
      nflow::detail::check_rows(where(member).c_str(), what, expected, rows, cols);
  }
  static void check_cols(const char* member, const char* what, Index expected, Index rows,
                         Index cols) {
    if (cols != expected)
      nflow::detail::check_cols(where(member).c_str(), what, expected, rows, cols);
  }

  static void check_size_argument(const char* what, Index value, Index minimum, int fixed) {
    if (value < minimum) {
      throw ParameterError(std::string("nflow: ") + Policy::Name + ": " + what + " must be >= " +
                           std::to_string(minimum) + ", got " + std::to_string(value));
    }
    if (fixed != Eigen::Dynamic && value != fixed) {
      throw ParameterError(std::string("nflow: ") + Policy::Name + ": " + what + " = " +
                           std::to_string(value) + " differs from the compile-time size " +
                           std::to_string(fixed) + " given as a template argument");
    }
  }

  template <typename XD>
  void check_input(const char* member, const Eigen::MatrixBase<XD>& x) const {
    static_assert(
        std::is_same_v<typename XD::Scalar, Scalar>,
        "nflow::nn::MLP / MADE: the input's scalar type must be the network's Scalar (convert "
        "with x.template cast<Scalar>())");
    static_assert(
        In == Eigen::Dynamic || XD::RowsAtCompileTime == Eigen::Dynamic ||
            XD::RowsAtCompileTime == In,
        "nflow::nn::MLP / MADE: the input has a compile-time row count different from In");
    check_rows(member, "the input x", in_dim_, x.rows(), x.cols());
  }

  template <typename GD>
  void check_grad_out(const char* member, const Eigen::MatrixBase<GD>& g, Index n) const {
    static_assert(std::is_same_v<typename GD::Scalar, Scalar>,
                  "nflow::nn::MLP / MADE: grad_out's scalar type must be the network's Scalar");
    check_rows(member, "grad_out", out_dim_, g.rows(), g.cols());
    check_cols(member, "grad_out", n, g.rows(), g.cols());
  }

  /// A grad_context (when given) needs a context, and is context_dim × n.
  template <typename C>
  void check_grad_context(const char* member, const ContextBatch<Eigen::Dynamic>* g,
                          Index n) const {
    if (g == nullptr) return;
    if (is_no_context_v<C> || context_dim_ == 0) {
      throw ShapeError("nflow: " + where(member) +
                       ": grad_context was given without a context (the network has "
                       "context_dim = " +
                       std::to_string(context_dim_) + "): there is no context to differentiate");
    }
    check_rows(member, "grad_context", context_dim_, g->rows(), g->cols());
    check_cols(member, "grad_context", n, g->rows(), g->cols());
  }

  void check_grad_params(const char* member, const Eigen::Ref<Vector<Scalar>>& g) const {
    if (g.size() != parameter_count_) {
      nflow::detail::check_size(where(member).c_str(), "grad_params", parameter_count_, g.size());
    }
  }

  /// Checks the context against the network and n samples, then calls f as with_context() does.
  template <int Cols, typename C, typename F>
  void with_checked_context(const char* member, const C& context, Index n, F&& f) const {
    if constexpr (is_no_context_v<C>) {
      if (context_dim_ > 0) {
        throw ShapeError("nflow: " + where(member) + ": the network has context_dim = " +
                         std::to_string(context_dim_) + " and needs a context of " +
                         std::to_string(context_dim_) + " rows (one column per sample); got none");
      }
    } else {
      static_assert(std::is_base_of_v<Eigen::MatrixBase<C>, C>,
                    "nflow::nn::MLP / MADE: the context must be nflow::NoContext or an Eigen "
                    "matrix expression");
      static_assert(
          std::is_same_v<typename C::Scalar, Scalar>,
          "nflow::nn::MLP / MADE: the context's scalar type must be the network's Scalar");
      check_rows(member, "the context", context_dim_, context.rows(), context.cols());
      check_cols(member, "the context", n, context.rows(), context.cols());
    }
    with_context<Cols>(context, std::forward<F>(f));
  }

  // -- kernels --

  /// out = W̃₀·x + C₀·c + b₀ (no activation).
  template <typename XB, typename CB, typename O>
  void first_layer(const XB& x, const CB* context, O& out) const {
    fill_columns(out, biases_[0]);
    gemm<false, false>(out, state_.weight(weights_, 0), dynamic_rows(x), true);
    if (context != nullptr && context_dim_ > 0) out.noalias() += context_weight_ * (*context);
  }

  /// The forward pass of the columns of x into y, with two hidden buffers a and b of the same
  /// type (matrices, or blocks of them) already shaped hidden × x.cols() (b only read with two
  /// or more hidden layers, neither without hidden layers).
  template <typename XB, typename CB, typename Buffer, typename YB>
  void forward_columns(const XB& x, const CB* context, Buffer& a, Buffer& b, YB& y) const {
    const Index L = hidden_layers_;
    if (L == 0) {
      first_layer(x, context, y);
      return;
    }
    first_layer(x, context, a);
    Activation::apply(a);
    Buffer* current = &a;
    Buffer* next = &b;
    for (Index k = 1; k < L; ++k) {
      dense_forward(*next, state_.weight(weights_, k), *current, biases_[std::size_t(k)]);
      Activation::apply(*next);
      std::swap(current, next);
    }
    dense_forward(y, state_.weight(weights_, L), *current, biases_[std::size_t(L)]);
  }

  template <int Cols>
  OutputBatch<Cols> forward_impl(const InputRef<Cols>& x, const ContextRef<Cols>* context) const {
    const Index n = x.cols();
    const Index h = hidden_width_;
    OutputBatch<Cols> y;
    y.resize(out_dim_, n);
    if constexpr (Cols != Eigen::Dynamic) {
      // One point (or a few, fixed): fixed-size buffers, on the stack when Hidden is fixed.
      HiddenBuffer<Cols> a;
      HiddenBuffer<Cols> b;
      if (hidden_layers_ > 0) a.resize(h, n);
      if (hidden_layers_ > 1) b.resize(h, n);
      forward_columns(x, context, a, b, y);
    } else {
      const Index block = std::min(n, block_columns(h));
      Scratch a(h, hidden_layers_ > 0 ? block : 0);
      Scratch b(h, hidden_layers_ > 1 ? block : 0);
      for (Index j = 0; j < n; j += block) {
        const Index m = std::min(block, n - j);
        auto a_block = a.leftCols(hidden_layers_ > 0 ? m : 0);
        auto b_block = b.leftCols(hidden_layers_ > 1 ? m : 0);
        const InputRef<Cols> x_block(x.middleCols(j, m));
        auto y_block = y.middleCols(j, m);
        if (context != nullptr) {
          const ContextRef<Cols> c_block(context->middleCols(j, m));
          forward_columns(x_block, &c_block, a_block, b_block, y_block);
        } else {
          forward_columns(x_block, context, a_block, b_block, y_block);
        }
      }
    }
    return y;
  }

  template <int Cols>
  void forward_blocks_impl(const InputRef<Cols>& x, const ContextRef<Cols>* context,
                           ForwardConsumer consume) const {
    const Index n = x.cols();
    const Index h = hidden_width_;
    if constexpr (Cols != Eigen::Dynamic) {
      HiddenBuffer<Cols> a;
      HiddenBuffer<Cols> b;
      OutBuffer<Cols> y;
      if (hidden_layers_ > 0) a.resize(h, n);
      if (hidden_layers_ > 1) b.resize(h, n);
      y.resize(out_dim_, n);
      forward_columns(x, context, a, b, y);
      consume(Index(0), ConstBlockRef(y));
    } else {
      const Index block = std::min(n, block_columns(2 * h + out_dim_));
      Scratch a(h, hidden_layers_ > 0 ? block : 0);
      Scratch b(h, hidden_layers_ > 1 ? block : 0);
      Scratch y(out_dim_, block);
      for (Index j = 0; j < n; j += block) {
        const Index m = std::min(block, n - j);
        auto ab = a.leftCols(hidden_layers_ > 0 ? m : 0);
        auto bb = b.leftCols(hidden_layers_ > 1 ? m : 0);
        auto yb = y.leftCols(m);
        const InputRef<Cols> x_block(x.middleCols(j, m));
        if (context != nullptr) {
          const ContextRef<Cols> c_block(context->middleCols(j, m));
          forward_columns(x_block, &c_block, ab, bb, yb);
        } else {
          forward_columns(x_block, context, ab, bb, yb);
        }
        consume(j, ConstBlockRef(yb));
      }
    }
  }

  /// Forward through the hidden layers for the columns of x, keeping layer k's output in
  /// columns k·n … k·n+n−1 of `post` (hidden × layers·n, n = x.cols()) and, when f′ needs it,
  /// its pre-activation in the same columns of `pre`.
  void record_hidden(const InputRef<Eigen::Dynamic>& x, const ContextRef<Eigen::Dynamic>* context,
                     Work& post, Work& pre) const {
    const Index n = x.cols();
    for (Index k = 0; k < hidden_layers_; ++k) {
      auto out_k = post.middleCols(k * n, n);
      if (k == 0) {
        first_layer(x, context, out_k);
      } else {
        dense_forward(out_k, state_.weight(weights_, k), post.middleCols((k - 1) * n, n),
                      biases_[std::size_t(k)]);
      }
      if constexpr (!Activation::BackwardFromOutput) pre.middleCols(k * n, n) = out_k;
      Activation::apply(out_k);
    }
  }

  /// record_hidden(), then the outputs into `y` (out × n).
  template <typename Y>
  void record_columns(const InputRef<Eigen::Dynamic>& x, const ContextRef<Eigen::Dynamic>* context,
                      Work& post, Work& pre, Y&& y) const {
    const Index n = x.cols();
    const Index L = hidden_layers_;
    record_hidden(x, context, post, pre);
    if (L == 0) {
      first_layer(x, context, y);
    } else {
      dense_forward(y, state_.weight(weights_, L), post.middleCols((L - 1) * n, n),
                    biases_[std::size_t(L)]);
    }
  }

  /// Where the weight gradient of layer k accumulates: the flat gradient, or (masked policies)
  /// the workspace's accumulator, masked once at the end by finish_weight_gradients().
  Eigen::Map<Work> weight_gradient(Scalar* grad_params, Workspace& ws, Index k) const {
    const auto& w = weights_[std::size_t(k)];
    if constexpr (PolicyState::MasksGradients) {
      return Eigen::Map<Work>(ws.grad_weights[std::size_t(k)].data(), w.rows(), w.cols());
    } else {
      return Eigen::Map<Work>(grad_params + weight_offset_[std::size_t(k)], w.rows(), w.cols());
    }
  }

  Eigen::Map<Vector<Scalar>> bias_gradient(Scalar* grad_params, Index k) const {
    return Eigen::Map<Vector<Scalar>>(grad_params + bias_offset_[std::size_t(k)],
                                      biases_[std::size_t(k)].size());
  }

  /// Zeroed weight-gradient accumulators, one per layer (masked policies only).
  void start_weight_gradients(Workspace& ws) const {
    if constexpr (PolicyState::MasksGradients) {
      ws.grad_weights.resize(std::size_t(hidden_layers_ + 1));
      for (Index k = 0; k <= hidden_layers_; ++k) {
        const auto& w = weights_[std::size_t(k)];
        ws.grad_weights[std::size_t(k)].setZero(w.rows(), w.cols());
      }
    }
  }
  /// Adds the masked accumulators into the flat gradient (masked entries get exactly 0).
  void finish_weight_gradients(const Workspace& ws, Scalar* grad_params) const {
    if constexpr (PolicyState::MasksGradients) {
      if (grad_params == nullptr) return;
      for (Index k = 0; k <= hidden_layers_; ++k) {
        const auto& w = weights_[std::size_t(k)];
        Eigen::Map<Work> gw(grad_params + weight_offset_[std::size_t(k)], w.rows(), w.cols());
        gw += ws.grad_weights[std::size_t(k)].cwiseProduct(state_.mask(k));
      }
    }
  }

  /// The backward pass over the columns first … first + x.cols() − 1 of a batch (x, context and
  /// g = ∂L/∂y are those columns), from their hidden activations recorded by record_hidden():
  /// writes (or, with add_to_grad_x, adds) ∂L/∂x into grad_x (those columns), adds ∂L/∂c into
  /// grad_context if given, and adds the parameter gradients if grad_params is given.
  void backward_from_hidden(const InputRef<Eigen::Dynamic>& x,
                            const ContextRef<Eigen::Dynamic>* context, const ConstBlockRef& g,
                            Scalar* grad_params, Eigen::Ref<InputBatch<Eigen::Dynamic>> grad_x,
                            bool add_to_grad_x,
                            Eigen::Ref<ContextBatch<Eigen::Dynamic>>* grad_context,
                            const Work& post, const Work& pre, Workspace& ws) const {
    const Index n = x.cols();
    const Index L = hidden_layers_;
    constexpr bool from_output = Activation::BackwardFromOutput;

    // ∂L/∂x, ∂L/∂W₀, ∂L/∂C₀, ∂L/∂b₀ from δ₀.
    auto input_layer = [&](const auto& delta) {
      if (grad_params != nullptr) {
        dense_accumulate_parameter_gradients(delta, dynamic_rows(x),
                                             weight_gradient(grad_params, ws, 0),
                                             bias_gradient(grad_params, 0));
        if (context != nullptr && context_dim_ > 0) {
          Eigen::Map<Work> grad_c(grad_params + context_offset_, context_weight_.rows(),
                                  context_dim_);
          grad_c.noalias() += delta * context->transpose();
        }
      }
      if (grad_context != nullptr && context_dim_ > 0)
        grad_context->noalias() += context_weight_.transpose() * delta;
      if (add_to_grad_x) {
        gemm<true, false>(dynamic_rows(grad_x), state_.weight(weights_, 0), delta, true);
      } else {
        gemm<true, false>(dynamic_rows(grad_x), state_.weight(weights_, 0), delta, false);
      }
    };
    if (L == 0) {
      input_layer(g);
      return;
    }

    // Output layer.
    if (grad_params != nullptr) {
      dense_accumulate_parameter_gradients(g, post.middleCols((L - 1) * n, n),
                                           weight_gradient(grad_params, ws, L),
                                           bias_gradient(grad_params, L));
    }
    Work* delta_full = &ws.delta;
    Work* below_full = &ws.below;
    gemm<true, false>(delta_full->leftCols(n), state_.weight(weights_, L), g, false);

    // Hidden layers, last to first: delta enters as ∂L/∂hₖ and leaves as ∂L/∂hₖ₋₁.
    for (Index k = L - 1; k >= 0; --k) {
      auto delta = delta_full->leftCols(n);
      if constexpr (from_output) {
        Activation::backward(post.middleCols(k * n, n), delta);
      } else {
        Activation::backward(pre.middleCols(k * n, n), delta);
      }
      if (k == 0) {
        input_layer(delta);
        break;
      }
      if (grad_params != nullptr) {
        dense_accumulate_parameter_gradients(delta, post.middleCols((k - 1) * n, n),
                                             weight_gradient(grad_params, ws, k),
                                             bias_gradient(grad_params, k));
      }
      gemm<true, false>(below_full->leftCols(n), state_.weight(weights_, k), delta, false);
      std::swap(delta_full, below_full);
    }
  }

  /// The shared backward pass, block by block. ∂L/∂y is either `grad_out` (then y is not
  /// computed) or written by `grad_fn` from y; `grad_params == nullptr` skips the parameter
  /// gradients, `grad_context == nullptr` skips ∂L/∂c.
  void backward_loop(const InputRef<Eigen::Dynamic>& x, const ContextRef<Eigen::Dynamic>* context,
                     const ConstBlockRef* grad_out, const BackwardGrad* grad_fn,
                     Scalar* grad_params, Eigen::Ref<InputBatch<Eigen::Dynamic>> grad_x,
                     bool add_to_grad_x,
                     Eigen::Ref<ContextBatch<Eigen::Dynamic>>* grad_context) const {
    const Index n = x.cols();
    const Index h = hidden_width_;
    const Index L = hidden_layers_;
    constexpr bool from_output = Activation::BackwardFromOutput;
    const Index per_col =
        (from_output ? 1 : 2) * L * h + 2 * h + (grad_fn != nullptr ? 2 * out_dim_ : 0);
    const Index block = std::max<Index>(1, std::min(n, block_columns(per_col)));
    Workspace ws;
    ws.post.resize(h, L * block);
    if constexpr (!from_output) ws.pre.resize(h, L * block);
    ws.delta.resize(h, L > 0 ? block : 0);
    ws.below.resize(h, L > 1 ? block : 0);
    if (grad_fn != nullptr) {
      ws.y.resize(out_dim_, block);
      ws.g.resize(out_dim_, block);
    }
    if (grad_params != nullptr) start_weight_gradients(ws);
    for (Index j = 0; j < n; j += block) {
      const Index m = std::min(block, n - j);
      const InputRef<Eigen::Dynamic> x_block(x.middleCols(j, m));
      std::optional<ContextRef<Eigen::Dynamic>> c_block;
      if (context != nullptr) c_block.emplace(context->middleCols(j, m));
      const ContextRef<Eigen::Dynamic>* cb = context != nullptr ? &*c_block : nullptr;
      std::optional<Eigen::Ref<ContextBatch<Eigen::Dynamic>>> gc_block;
      if (grad_context != nullptr) gc_block.emplace(grad_context->middleCols(j, m));
      if (grad_fn != nullptr) {
        auto y = ws.y.leftCols(m);
        auto g = ws.g.leftCols(m);
        record_columns(x_block, cb, ws.post, ws.pre, y);
        (*grad_fn)(j, ConstBlockRef(y), BlockRef(g));
        backward_from_hidden(x_block, cb, ConstBlockRef(g), grad_params, grad_x.middleCols(j, m),
                             add_to_grad_x, gc_block ? &*gc_block : nullptr, ws.post, ws.pre, ws);
      } else {
        record_hidden(x_block, cb, ws.post, ws.pre);
        backward_from_hidden(x_block, cb, ConstBlockRef(grad_out->middleCols(j, m)), grad_params,
                             grad_x.middleCols(j, m), add_to_grad_x,
                             gc_block ? &*gc_block : nullptr, ws.post, ws.pre, ws);
      }
    }
    if (grad_params != nullptr) finish_weight_gradients(ws, grad_params);
  }

  /// The checked entry of backward(), backward_input() and backward_with_context_grad().
  template <int Cols, typename XD, typename GD, typename C>
  InputBatch<Cols> backward_public(const char* member, const Eigen::MatrixBase<XD>& x,
                                   const Eigen::MatrixBase<GD>& grad_out, Scalar* grad_params,
                                   const C& context, ContextBatch<Cols>* grad_context) const {
    check_input(member, x);
    check_grad_out(member, grad_out, x.cols());
    InputBatch<Cols> grad_x;
    grad_x.resize(in_dim_, x.cols());
    with_checked_context<Eigen::Dynamic>(
        member, context, x.cols(), [&](const ContextRef<Eigen::Dynamic>* c) {
          const ConstBlockRef g(grad_out.derived());
          if (grad_context != nullptr) {
            Eigen::Ref<ContextBatch<Eigen::Dynamic>> gc(*grad_context);
            backward_loop(InputRef<Eigen::Dynamic>(x.derived()), c, &g, nullptr, grad_params,
                          grad_x, false, &gc);
          } else {
            backward_loop(InputRef<Eigen::Dynamic>(x.derived()), c, &g, nullptr, grad_params,
                          grad_x, false, nullptr);
          }
        });
    return grad_x;
  }

  Jacobian jacobian_impl(const InputRef<1>& x, const ContextRef<1>* context) const {
    const Index h = hidden_width_;
    const Index layers = hidden_layers_;
    Jacobian jac;
    jac.resize(out_dim_, in_dim_);
    if (layers == 0) {
      jac = state_.weight(weights_, 0);
      return jac;
    }
    // Forward pass for the one point, keeping f'(aₖ) as column k of `slopes`.
    Work slopes(h, layers);
    Vector<Scalar> a(h);
    Vector<Scalar> z(h);
    for (Index k = 0; k < layers; ++k) {
      if (k == 0) {
        first_layer(x, context, z);
      } else {
        dense_forward(z, state_.weight(weights_, k), a, biases_[std::size_t(k)]);
      }
      a = z;
      Activation::apply(a);
      slopes.col(k).setOnes();
      if constexpr (Activation::BackwardFromOutput) {
        Activation::backward(a, slopes.col(k));
      } else {
        Activation::backward(z, slopes.col(k));
      }
    }

    Work acc;
    Work tmp;
    if (out_dim_ < in_dim_) {
      // Reverse accumulation: rows of J, out × hidden until the last step.
      acc = state_.weight(weights_, layers);
      for (Index k = layers - 1; k > 0; --k) {
        acc.array().rowwise() *= slopes.col(k).transpose().array();
        tmp.noalias() = acc * state_.weight(weights_, k);
        acc.swap(tmp);
      }
      acc.array().rowwise() *= slopes.col(0).transpose().array();
      jac.noalias() = acc * state_.weight(weights_, 0);
    } else {
      // Forward accumulation: columns of J, hidden × in until the last step.
      acc = slopes.col(0).asDiagonal() * state_.weight(weights_, 0);
      for (Index k = 1; k < layers; ++k) {
        tmp.noalias() = state_.weight(weights_, k) * acc;
        acc = slopes.col(k).asDiagonal() * tmp;
      }
      jac.noalias() = state_.weight(weights_, layers) * acc;
    }
    return jac;
  }

  Index in_dim_;
  Index out_dim_;
  Index hidden_width_;
  Index hidden_layers_;
  Index context_dim_;
  std::vector<Work> weights_;           ///< hidden_layers_ + 1 of them, as stored
  std::vector<Vector<Scalar>> biases_;  ///< hidden_layers_ + 1 of them
  Work context_weight_;                 ///< rows of layer 0 × context_dim
  std::vector<Index> weight_offset_;
  std::vector<Index> bias_offset_;
  Index context_offset_ = 0;
  Index parameter_count_ = 0;
  [[no_unique_address]] PolicyState state_;
};

}  // namespace nflow::nn
