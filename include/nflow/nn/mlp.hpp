#pragma once
/// @file
/// @brief nflow::nn::MLP, the multilayer perceptron used as the conditioner of coupling and
/// autoregressive layers and as the vector field of continuous flows, with a hand-written
/// reverse-mode backward pass and an analytic input Jacobian.

#include <Eigen/Core>
#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "nflow/core/errors.hpp"
#include "nflow/core/types.hpp"
#include "nflow/nn/activations.hpp"
#include "nflow/nn/dense.hpp"

namespace nflow::nn {

/// @brief A multilayer perceptron with `hidden_layers` hidden layers of equal width, an optional
/// context input, exact gradients and an analytic input Jacobian.
///
/// With x the input (in × N, one sample per column), c the optional context (context_dim × N),
/// f the activation and L = hidden_layers:
///
///     h₀ = f(W₀·x + C₀·c + b₀)              (the C₀·c term only when context_dim > 0)
///     hₖ = f(Wₖ·hₖ₋₁ + bₖ),  k = 1 … L−1
///     y  = W_L·h_{L−1} + b_L                 (no activation on the output layer)
///
/// W₀ is hidden × in, C₀ hidden × context_dim, Wₖ hidden × hidden, W_L out × hidden (PyTorch's
/// nn.Linear layout: rows are outputs); biases are column vectors. The context enters through its
/// own weight, so no concatenated copy [x; c] is made; the network equals one whose first layer
/// reads [x; c] with weight [W₀ C₀].
///
/// Backward (reverse mode, no stored tape): given G = ∂L/∂y, with δ_{L} = G,
///     ∂L/∂W_L = G·h_{L−1}ᵀ,  ∂L/∂b_L = G·1,  δ_{L−1} = (W_Lᵀ·δ_L) ⊙ f′(a_{L−1}),
///     ∂L/∂Wₖ = δₖ·hₖ₋₁ᵀ,  ∂L/∂bₖ = δₖ·1,  δₖ₋₁ = (Wₖᵀ·δₖ) ⊙ f′(aₖ₋₁),
///     ∂L/∂W₀ = δ₀·xᵀ,  ∂L/∂C₀ = δ₀·cᵀ,  ∂L/∂x = W₀ᵀ·δ₀,  ∂L/∂c = C₀ᵀ·δ₀,
/// where aₖ is the pre-activation of layer k. The activations are recomputed on every call, so
/// every member function is `const` apart from parameter access, and a const MLP is safe to share
/// between threads.
///
/// Input Jacobian of one point: ∂y/∂x = W_L·D_{L−1}·W_{L−1} ⋯ D₀·W₀ with Dₖ = diag f′(aₖ).
///
/// Parameters, in visit order (each flattened column-major in the flat gradient):
/// "layers.0.weight", "layers.0.context_weight" (only when context_dim > 0), "layers.0.bias",
/// "layers.1.weight", "layers.1.bias", …, "layers.L.weight", "layers.L.bias".
///
/// Column independence: column j of every output depends on column j of the inputs only, so a
/// NaN or Inf in one sample never reaches another (parameter gradients, which sum over samples,
/// are of course affected). A sample with a NaN input gets NaN outputs.
///
/// Allocation and blocking: a batch is processed in blocks of columns sized so that a block's
/// activations (hidden × block, about 256 KiB) stay in cache; a call allocates its output and a
/// few block-sized temporaries, never anything per sample. A single point (an input whose
/// ColsAtCompileTime is 1) with fixed `Hidden` and `Out` allocates nothing in `forward`: the
/// activations live in fixed-size stack matrices. With a dynamic `Hidden`, a point costs one
/// small heap buffer per call.
///
/// Class invariant: the sizes given to the constructor never change; `weight(k)`, `bias(k)` and
/// `context_weight()` keep their shapes (parameters are only written through Eigen::Ref).
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
template <typename Scalar_, int In_, int Out_, int Hidden_ = Eigen::Dynamic,
          typename Activation_ = ReLU>
class MLP {
  static_assert(std::is_same_v<Scalar_, float> || std::is_same_v<Scalar_, double>,
                "nflow::nn::MLP<Scalar, ...>: Scalar must be float or double");
  static_assert(In_ == Eigen::Dynamic || In_ >= 0,
                "nflow::nn::MLP<Scalar, In, ...>: In must be >= 0 or Eigen::Dynamic");
  static_assert(Out_ == Eigen::Dynamic || Out_ >= 1,
                "nflow::nn::MLP<Scalar, In, Out, ...>: Out must be >= 1 or Eigen::Dynamic");
  static_assert(Hidden_ == Eigen::Dynamic || Hidden_ >= 1,
                "nflow::nn::MLP<Scalar, In, Out, Hidden>: Hidden must be >= 1 or Eigen::Dynamic");
  static_assert(ActivationPolicy<Activation_>,
                "nflow::nn::MLP<..., Activation>: Activation must model nflow::nn::ActivationPolicy"
                " (static name, BackwardFromOutput, apply(x) and backward(value, grad); see"
                " nflow/nn/activations.hpp)");

 public:
  using Scalar = Scalar_;
  using Activation = Activation_;
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

 private:
  static constexpr std::size_t StackBytes = 64 * 1024;
  static constexpr std::size_t BlockBytes = 256 * 1024;  // activations of one block of a batch
  static constexpr Index MinBlockColumns = 64;
  static constexpr Index MaxBlockColumns = 4096;
  static constexpr bool JacobianIsFixed =
      In != Eigen::Dynamic && Out != Eigen::Dynamic &&
      std::size_t(In) * std::size_t(Out) * sizeof(Scalar) <= StackBytes;

 public:
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
  /// @param in_dim input dimension (>= 0; `in_dim + context_dim >= 1`), equal to `In` if fixed.
  /// @param out_dim output dimension (>= 1), equal to `Out` if fixed.
  /// @param hidden_width width of each hidden layer (>= 1), equal to `Hidden` if fixed.
  /// @param hidden_layers number of hidden layers (>= 1).
  /// @param context_dim context dimension (>= 0; 0 means unconditional).
  /// @throws nflow::ParameterError naming the offending argument.
  MLP(Index in_dim, Index out_dim, Index hidden_width, Index hidden_layers, Index context_dim = 0)
      : in_dim_(in_dim),
        out_dim_(out_dim),
        hidden_width_(hidden_width),
        hidden_layers_(hidden_layers),
        context_dim_(context_dim) {
    check_size_argument("in_dim", in_dim, 0, In);
    check_size_argument("out_dim", out_dim, 1, Out);
    check_size_argument("hidden_width", hidden_width, 1, Hidden);
    check_size_argument("hidden_layers", hidden_layers, 1, Eigen::Dynamic);
    check_size_argument("context_dim", context_dim, 0, Eigen::Dynamic);
    if (in_dim + context_dim < 1) {
      throw ParameterError(
          "nflow: nn::MLP: in_dim + context_dim must be >= 1 (the network needs an input), got "
          "in_dim = 0 and context_dim = 0");
    }
    weights_.reserve(std::size_t(hidden_layers + 1));
    biases_.reserve(std::size_t(hidden_layers + 1));
    for (Index k = 0; k <= hidden_layers; ++k) {
      const Index rows = k == hidden_layers ? out_dim : hidden_width;
      const Index cols = k == 0 ? in_dim : hidden_width;
      weights_.push_back(ParameterMatrix<Scalar>::Zero(rows, cols));
      biases_.push_back(Vector<Scalar>::Zero(rows));
    }
    context_weight_ =
        ParameterMatrix<Scalar>::Zero(context_dim > 0 ? hidden_width : 0, context_dim);
    // Offsets of each tensor in the flat parameter vector, in visit order.
    Index offset = 0;
    for (Index k = 0; k <= hidden_layers; ++k) {
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
  /// every compiler.
  /// @param zero_last_layer set the output layer's weight and bias to exactly 0, so that the
  ///   network outputs 0 for every finite input (a fresh coupling layer is then the identity).
  void initialize(std::uint64_t seed, bool zero_last_layer = true) {
    std::mt19937_64 gen(seed);
    initialize(gen, zero_last_layer);
  }

  /// @brief As initialize(seed, zero_last_layer), drawing from a caller's generator (so that the
  /// layers of a flow can be seeded from one stream).
  template <std::uniform_random_bit_generator G>
  void initialize(G& gen, bool zero_last_layer = true) {
    for (Index k = 0; k <= hidden_layers_; ++k) {
      const double bound = default_init_bound(k == 0 ? in_dim_ + context_dim_ : hidden_width_);
      fill_uniform_symmetric(weights_[std::size_t(k)], bound, gen);
      if (k == 0) fill_uniform_symmetric(context_weight_, bound, gen);
      fill_uniform_symmetric(biases_[std::size_t(k)], bound, gen);
    }
    if (zero_last_layer) {
      weights_.back().setZero();
      biases_.back().setZero();
    }
  }

  // ---- forward ----------------------------------------------------------------------------

  /// @brief y = MLP(x) for a batch x (in × N) or one point (in × 1), unconditional networks only.
  /// @throws nflow::ShapeError if x has the wrong number of rows, or if the network has a context.
  template <typename XD>
  OutputBatch<XD::ColsAtCompileTime> forward(const Eigen::MatrixBase<XD>& x) const {
    check_input_type<XD>();
    check_input_shape("nn::MLP::forward", x);
    require_no_context("nn::MLP::forward");
    constexpr int Cols = XD::ColsAtCompileTime;
    return forward_impl<Cols>(InputRef<Cols>(x.derived()), nullptr);
  }

  /// @brief y = MLP(x, c) with a context c (context_dim × N, one column per sample).
  /// @throws nflow::ShapeError if x or c has the wrong shape.
  template <typename XD, typename CD>
  OutputBatch<XD::ColsAtCompileTime> forward(const Eigen::MatrixBase<XD>& x,
                                             const Eigen::MatrixBase<CD>& context) const {
    check_input_type<XD>();
    check_context_type<CD>();
    check_input_shape("nn::MLP::forward", x);
    check_context_shape("nn::MLP::forward", context, x.cols());
    constexpr int Cols = XD::ColsAtCompileTime;
    const ContextRef<Cols> c(context.derived());
    return forward_impl<Cols>(InputRef<Cols>(x.derived()), &c);
  }

  /// @brief forward(x) for the nflow::NoContext tag.
  template <typename XD>
  OutputBatch<XD::ColsAtCompileTime> forward(const Eigen::MatrixBase<XD>& x, NoContext) const {
    return forward(x);
  }

  /// @brief forward() of one point (in × 1) written into `y`, which is resized to out × 1: with a
  /// fixed `Hidden` nothing is allocated when `y` has room on the stack (a fixed-size vector, or
  /// one with a fixed maximum size such as `Eigen::Matrix<S, Dynamic, 1, 0, MaxOut, 1>`). The
  /// context is NoContext or a context_dim × 1 column. Same checks and exceptions as forward().
  template <typename XD, typename YD, typename C = NoContext>
  void forward_point_into(const Eigen::MatrixBase<XD>& x, Eigen::PlainObjectBase<YD>& y, const C& context = C{}) const {
    check_input_type<XD>();
    check_input_shape("nn::MLP::forward_point_into", x);
    detail::check_cols("nn::MLP::forward_point_into", "the input point x", 1, x.rows(), x.cols());
    y.resize(out_dim_, 1);
    const InputRef<1> xr(x.derived());
    HiddenBuffer<1> a;
    HiddenBuffer<1> b;
    a.resize(hidden_width_, 1);
    if (hidden_layers_ > 1) b.resize(hidden_width_, 1);
    if constexpr (is_no_context_v<C>) {
      require_no_context("nn::MLP::forward_point_into");
      forward_columns<1>(xr, nullptr, a, b, y);
    } else {
      check_context_type<C>();
      check_context_shape("nn::MLP::forward_point_into", context, 1);
      const ContextRef<1> c(context.derived());
      forward_columns<1>(xr, &c, a, b, y);
    }
  }

  // ---- backward ---------------------------------------------------------------------------

  /// @brief Reverse-mode gradient: returns ∂L/∂x (in × N) and ADDS ∂L/∂θ into `grad_params`.
  ///
  /// @param x the input at which to differentiate (the forward pass is recomputed).
  /// @param grad_out ∂L/∂y, out × N.
  /// @param grad_params flat gradient of length parameter_count(), laid out in visit order, each
  ///   tensor column-major; it is accumulated into, not overwritten.
  /// @throws nflow::ShapeError on a shape mismatch.
  template <typename XD, typename GD>
  InputBatch<XD::ColsAtCompileTime> backward(const Eigen::MatrixBase<XD>& x,
                                             const Eigen::MatrixBase<GD>& grad_out,
                                             Eigen::Ref<Vector<Scalar>> grad_params) const {
    check_input_type<XD>();
    check_input_shape("nn::MLP::backward", x);
    require_no_context("nn::MLP::backward");
    check_grad_out("nn::MLP::backward", grad_out, x.cols());
    check_grad_params("nn::MLP::backward", grad_params);
    constexpr int Cols = XD::ColsAtCompileTime;
    return backward_impl<Cols>(InputRef<Cols>(x.derived()), nullptr,
                               OutputRef<Cols>(grad_out.derived()), grad_params.data(), nullptr);
  }

  /// @brief backward() for a network with a context c (context_dim × N).
  template <typename XD, typename CD, typename GD>
  InputBatch<XD::ColsAtCompileTime> backward(const Eigen::MatrixBase<XD>& x,
                                             const Eigen::MatrixBase<CD>& context,
                                             const Eigen::MatrixBase<GD>& grad_out,
                                             Eigen::Ref<Vector<Scalar>> grad_params) const {
    check_input_type<XD>();
    check_context_type<CD>();
    check_input_shape("nn::MLP::backward", x);
    check_context_shape("nn::MLP::backward", context, x.cols());
    check_grad_out("nn::MLP::backward", grad_out, x.cols());
    check_grad_params("nn::MLP::backward", grad_params);
    constexpr int Cols = XD::ColsAtCompileTime;
    const ContextRef<Cols> c(context.derived());
    return backward_impl<Cols>(InputRef<Cols>(x.derived()), &c, OutputRef<Cols>(grad_out.derived()),
                               grad_params.data(), nullptr);
  }

  /// @brief backward(x, grad_out, grad_params) for the nflow::NoContext tag.
  template <typename XD, typename GD>
  InputBatch<XD::ColsAtCompileTime> backward(const Eigen::MatrixBase<XD>& x, NoContext,
                                             const Eigen::MatrixBase<GD>& grad_out,
                                             Eigen::Ref<Vector<Scalar>> grad_params) const {
    return backward(x, grad_out, grad_params);
  }

  /// @brief As backward(x, c, grad_out, grad_params), also returning ∂L/∂c = C₀ᵀ·δ₀
  /// (context_dim × N).
  template <typename XD, typename CD, typename GD>
  InputAndContextGradient<XD::ColsAtCompileTime> backward_with_context_grad(
      const Eigen::MatrixBase<XD>& x, const Eigen::MatrixBase<CD>& context,
      const Eigen::MatrixBase<GD>& grad_out, Eigen::Ref<Vector<Scalar>> grad_params) const {
    check_input_type<XD>();
    check_context_type<CD>();
    check_input_shape("nn::MLP::backward_with_context_grad", x);
    check_context_shape("nn::MLP::backward_with_context_grad", context, x.cols());
    check_grad_out("nn::MLP::backward_with_context_grad", grad_out, x.cols());
    check_grad_params("nn::MLP::backward_with_context_grad", grad_params);
    constexpr int Cols = XD::ColsAtCompileTime;
    const ContextRef<Cols> c(context.derived());
    InputAndContextGradient<Cols> out;
    out.input =
        backward_impl<Cols>(InputRef<Cols>(x.derived()), &c, OutputRef<Cols>(grad_out.derived()),
                            grad_params.data(), &out.context);
    return out;
  }

  /// @brief ∂L/∂x only (a vector-Jacobian product), skipping the parameter gradients: about a
  /// third cheaper than backward(). This is what a score ∇ₓ log p needs.
  template <typename XD, typename GD>
  InputBatch<XD::ColsAtCompileTime> backward_input(const Eigen::MatrixBase<XD>& x,
                                                   const Eigen::MatrixBase<GD>& grad_out) const {
    check_input_type<XD>();
    check_input_shape("nn::MLP::backward_input", x);
    require_no_context("nn::MLP::backward_input");
    check_grad_out("nn::MLP::backward_input", grad_out, x.cols());
    constexpr int Cols = XD::ColsAtCompileTime;
    return backward_impl<Cols>(InputRef<Cols>(x.derived()), nullptr,
                               OutputRef<Cols>(grad_out.derived()), nullptr, nullptr);
  }

  /// @brief backward_input() for a network with a context.
  template <typename XD, typename CD, typename GD>
  InputBatch<XD::ColsAtCompileTime> backward_input(const Eigen::MatrixBase<XD>& x,
                                                   const Eigen::MatrixBase<CD>& context,
                                                   const Eigen::MatrixBase<GD>& grad_out) const {
    check_input_type<XD>();
    check_context_type<CD>();
    check_input_shape("nn::MLP::backward_input", x);
    check_context_shape("nn::MLP::backward_input", context, x.cols());
    check_grad_out("nn::MLP::backward_input", grad_out, x.cols());
    constexpr int Cols = XD::ColsAtCompileTime;
    const ContextRef<Cols> c(context.derived());
    return backward_impl<Cols>(InputRef<Cols>(x.derived()), &c, OutputRef<Cols>(grad_out.derived()),
                               nullptr, nullptr);
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
    /// The number of samples recorded.
    Index cols() const { return input.cols(); }
  };

  /// @brief forward(x[, c]) for a batch, keeping in `tape` what backward_recorded() needs, so
  /// that a backward pass after it does not run the network forward again (backward() does).
  /// Same checks and exceptions as forward(); a call that throws leaves the tape unchanged.
  template <typename XD, typename C = NoContext>
  OutputBatch<Eigen::Dynamic> forward_recorded(const Eigen::MatrixBase<XD>& x, Tape& tape,
                                               const C& context = C{}) const {
    check_input_type<XD>();
    check_input_shape("nn::MLP::forward_recorded", x);
    const Index n = x.cols();
    // Every check before the tape is written: a call that throws leaves the tape as it was.
    if constexpr (is_no_context_v<C>) {
      require_no_context("nn::MLP::forward_recorded");
    } else {
      check_context_type<C>();
      check_context_shape("nn::MLP::forward_recorded", context, n);
    }
    const Index layers = hidden_layers_;
    tape.input = x;
    tape.post.resize(hidden_width_, layers * n);
    if constexpr (!Activation::BackwardFromOutput) tape.pre.resize(hidden_width_, layers * n);
    const InputRef<Eigen::Dynamic> xr(tape.input);
    if constexpr (is_no_context_v<C>) {
      record_hidden(xr, nullptr, tape.post, tape.pre);
    } else {
      const ContextRef<Eigen::Dynamic> c(context.derived());
      record_hidden(xr, &c, tape.post, tape.pre);
    }
    OutputBatch<Eigen::Dynamic> y(out_dim_, n);
    dense_forward(y, weights_.back(), tape.post.middleCols((layers - 1) * n, n), biases_.back());
    return y;
  }

  /// @brief backward() at the point a forward_recorded() call recorded into `tape`, without
  /// recomputing the forward pass: returns ∂L/∂x (in × N) and ADDS ∂L/∂θ into `grad_params`.
  /// The context must be the one given to forward_recorded().
  /// @throws nflow::ShapeError if grad_out, grad_params or the context do not match the tape, or
  ///   if the tape was not recorded by a network of this shape.
  template <typename GD, typename C = NoContext>
  InputBatch<Eigen::Dynamic> backward_recorded(const Tape& tape, const Eigen::MatrixBase<GD>& grad_out,
                                               Eigen::Ref<Vector<Scalar>> grad_params,
                                               const C& context = C{}) const {
    const Index n = tape.cols();
    if (tape.input.rows() != in_dim_ || tape.post.rows() != hidden_width_ || tape.post.cols() != hidden_layers_ * n ||
        (!Activation::BackwardFromOutput && tape.pre.cols() != tape.post.cols())) {
      throw ShapeError("nflow: nn::MLP::backward_recorded: the tape was not recorded by "
                       "forward_recorded() of a network of this shape");
    }
    check_grad_out("nn::MLP::backward_recorded", grad_out, n);
    check_grad_params("nn::MLP::backward_recorded", grad_params);
    Work& delta = tape.delta;
    Work& below = tape.below;
    delta.resize(hidden_width_, n);
    below.resize(hidden_width_, hidden_layers_ > 1 ? n : 0);
    InputBatch<Eigen::Dynamic> gx(in_dim_, n);
    const InputRef<Eigen::Dynamic> xr(tape.input);
    const OutputRef<Eigen::Dynamic> g(grad_out.derived());
    if constexpr (is_no_context_v<C>) {
      require_no_context("nn::MLP::backward_recorded");
      backward_from_hidden<Eigen::Dynamic>(xr, nullptr, g, grad_params.data(), 0, gx, nullptr,
                                           tape.post, tape.pre, delta, below);
    } else {
      check_context_type<C>();
      check_context_shape("nn::MLP::backward_recorded", context, n);
      const ContextRef<Eigen::Dynamic> c(context.derived());
      backward_from_hidden<Eigen::Dynamic>(xr, &c, g, grad_params.data(), 0, gx, nullptr,
                                           tape.post, tape.pre, delta, below);
    }
    return gx;
  }

  // ---- Jacobian ---------------------------------------------------------------------------

  /// @brief The Jacobian ∂y/∂x (out × in) at one point x (in × 1), computed analytically as
  /// W_L·D_{L−1}⋯D₀·W₀ (forward accumulation, or reverse when out < in).
  /// @throws nflow::ShapeError if x is not one point of the right dimension.
  template <typename XD>
  Jacobian input_jacobian(const Eigen::MatrixBase<XD>& x) const {
    check_input_type<XD>();
    check_point_shape("nn::MLP::input_jacobian", x);
    require_no_context("nn::MLP::input_jacobian");
    return jacobian_impl(PointRef(x.derived()), nullptr);
  }

  /// @brief The Jacobian ∂y/∂x at one point x (in × 1) and context c (context_dim × 1).
  template <typename XD, typename CD>
  Jacobian input_jacobian(const Eigen::MatrixBase<XD>& x,
                          const Eigen::MatrixBase<CD>& context) const {
    check_input_type<XD>();
    check_context_type<CD>();
    check_point_shape("nn::MLP::input_jacobian", x);
    check_context_shape("nn::MLP::input_jacobian", context, 1);
    const ContextRef<1> c(context.derived());
    return jacobian_impl(PointRef(x.derived()), &c);
  }

  // ---- parameters -------------------------------------------------------------------------

  /// @brief Total number of scalar parameters (the length of the flat gradient).
  Index parameter_count() const { return parameter_count_; }

  /// @brief Calls `f(name, Eigen::Ref<ParameterMatrix<Scalar>> tensor)` for every tensor, in the
  /// order "layers.0.weight", ["layers.0.context_weight",] "layers.0.bias", "layers.1.weight", …
  /// Biases are seen as n × 1 matrices. Names are relative; a caller prefixes its own.
  template <typename F>
  void visit_parameters(F&& f) {
    visit_impl<Eigen::Ref<ParameterMatrix<Scalar>>>(*this, f);
  }

  /// @brief Read-only visit: `f(name, Eigen::Ref<const ParameterMatrix<Scalar>> tensor)`.
  template <typename F>
  void visit_parameters(F&& f) const {
    visit_impl<Eigen::Ref<const ParameterMatrix<Scalar>>>(*this, f);
  }

  // ---- accessors --------------------------------------------------------------------------

  Index in_dim() const { return in_dim_; }
  Index out_dim() const { return out_dim_; }
  Index context_dim() const { return context_dim_; }
  Index hidden_width() const { return hidden_width_; }
  Index hidden_layers() const { return hidden_layers_; }
  /// Number of dense layers, hidden_layers() + 1.
  Index layer_count() const { return hidden_layers_ + 1; }

  /// Weight of layer k (0 ≤ k ≤ hidden_layers()); throws std::out_of_range otherwise.
  const ParameterMatrix<Scalar>& weight(Index k) const { return weights_.at(std::size_t(k)); }
  /// Bias of layer k (0 ≤ k ≤ hidden_layers()); throws std::out_of_range otherwise.
  const Vector<Scalar>& bias(Index k) const { return biases_.at(std::size_t(k)); }
  /// C₀, hidden_width × context_dim (0 × 0 without a context).
  const ParameterMatrix<Scalar>& context_weight() const { return context_weight_; }

 private:
  template <int Cols>
  using InputRef = Eigen::Ref<const InputBatch<Cols>>;
  template <int Cols>
  using OutputRef = Eigen::Ref<const OutputBatch<Cols>>;
  template <int Cols>
  using ContextRef = Eigen::Ref<const ContextBatch<Cols>>;
  using PointRef = InputRef<1>;

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
  using Work = ParameterMatrix<Scalar>;

  // -- argument checks --

  static void check_size_argument(const char* what, Index value, Index minimum, int fixed) {
    if (value < minimum) {
      throw ParameterError(std::string("nflow: nn::MLP: ") + what + " must be >= " +
                           std::to_string(minimum) + ", got " + std::to_string(value));
    }
    if (fixed != Eigen::Dynamic && value != fixed) {
      throw ParameterError(std::string("nflow: nn::MLP: ") + what + " = " + std::to_string(value) +
                           " differs from the compile-time size " + std::to_string(fixed) +
                           " given as a template argument");
    }
  }

  template <typename XD>
  static constexpr void check_input_type() {
    static_assert(std::is_same_v<typename XD::Scalar, Scalar>,
                  "nflow::nn::MLP: the input's scalar type must be the network's Scalar (convert "
                  "with x.template cast<Scalar>())");
    static_assert(In == Eigen::Dynamic || XD::RowsAtCompileTime == Eigen::Dynamic ||
                      XD::RowsAtCompileTime == In,
                  "nflow::nn::MLP: the input has a compile-time row count different from In");
  }

  template <typename CD>
  static constexpr void check_context_type() {
    static_assert(std::is_same_v<typename CD::Scalar, Scalar>,
                  "nflow::nn::MLP: the context's scalar type must be the network's Scalar");
  }

  template <typename XD>
  void check_input_shape(const char* where, const Eigen::MatrixBase<XD>& x) const {
    detail::check_rows(where, "the input x", in_dim_, x.rows(), x.cols());
  }

  template <typename XD>
  void check_point_shape(const char* where, const Eigen::MatrixBase<XD>& x) const {
    static_assert(XD::ColsAtCompileTime == 1 || XD::ColsAtCompileTime == Eigen::Dynamic,
                  "nflow::nn::MLP::input_jacobian: x must be one point (in x 1)");
    detail::check_rows(where, "the input point x", in_dim_, x.rows(), x.cols());
    detail::check_cols(where, "the input point x", 1, x.rows(), x.cols());
  }

  template <typename CD>
  void check_context_shape(const char* where, const Eigen::MatrixBase<CD>& c, Index n) const {
    detail::check_rows(where, "the context", context_dim_, c.rows(), c.cols());
    detail::check_cols(where, "the context", n, c.rows(), c.cols());
  }

  template <typename GD>
  void check_grad_out(const char* where, const Eigen::MatrixBase<GD>& g, Index n) const {
    static_assert(std::is_same_v<typename GD::Scalar, Scalar>,
                  "nflow::nn::MLP: grad_out's scalar type must be the network's Scalar");
    detail::check_rows(where, "grad_out", out_dim_, g.rows(), g.cols());
    detail::check_cols(where, "grad_out", n, g.rows(), g.cols());
  }

  void check_grad_params(const char* where, const Eigen::Ref<Vector<Scalar>>& g) const {
    detail::check_size(where, "grad_params", parameter_count_, g.size());
  }

  void require_no_context(const char* where) const {
    if (context_dim_ > 0) {
      throw ShapeError(std::string("nflow: ") + where + ": the network has context_dim = " +
                       std::to_string(context_dim_) + " and needs a context of " +
                       std::to_string(context_dim_) + " rows (one column per sample); got none");
    }
  }

  // -- kernels --

  /// pre = W₀·x + C₀·c + b₀ (no activation).
  template <int Cols, typename PreDerived>
  void first_layer(const InputRef<Cols>& x, const ContextRef<Cols>* context,
                   Eigen::MatrixBase<PreDerived>& pre) const {
    fill_columns(pre, biases_[0]);
    pre.noalias() += weights_[0] * x;
    if (context != nullptr && context_dim_ > 0) pre.noalias() += context_weight_ * (*context);
  }

  /// Columns per block of a large batch. A batch is processed block by block so that a block's
  /// activations (hidden × columns) stay in cache between the GEMM, the bias add and the
  /// activation, and no batch-sized hidden buffer is ever allocated.
  Index block_columns() const {
    const Index fit = Index(BlockBytes / (std::size_t(hidden_width_) * sizeof(Scalar)));
    return fit < MinBlockColumns ? MinBlockColumns
                                 : (fit > MaxBlockColumns ? MaxBlockColumns : fit);
  }

  /// The forward pass of the columns of x into y, with two hidden buffers a and b of the same
  /// type (matrices, or blocks of them) already shaped hidden × x.cols().
  template <int Cols, typename Buffer, typename YDerived>
  void forward_columns(const InputRef<Cols>& x, const ContextRef<Cols>* context, Buffer& a,
                       Buffer& b, Eigen::MatrixBase<YDerived>& y) const {
    first_layer<Cols>(x, context, a);
    Activation::apply(a);
    Buffer* current = &a;
    Buffer* next = &b;
    for (Index k = 1; k < hidden_layers_; ++k) {
      dense_forward(*next, weights_[std::size_t(k)], *current, biases_[std::size_t(k)]);
      Activation::apply(*next);
      std::swap(current, next);
    }
    dense_forward(y, weights_.back(), *current, biases_.back());
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
      a.resize(h, n);
      if (hidden_layers_ > 1) b.resize(h, n);
      forward_columns<Cols>(x, context, a, b, y);
    } else {
      const Index block = n < block_columns() ? n : block_columns();
      HiddenBuffer<Eigen::Dynamic> a(h, block);
      HiddenBuffer<Eigen::Dynamic> b(h, hidden_layers_ > 1 ? block : 0);
      for (Index j = 0; j < n; j += block) {
        const Index m = n - j < block ? n - j : block;
        auto a_block = a.leftCols(m);
        auto b_block = b.leftCols(hidden_layers_ > 1 ? m : 0);
        const InputRef<Cols> x_block(x.middleCols(j, m));
        auto y_block = y.middleCols(j, m);
        if (context != nullptr) {
          const ContextRef<Cols> c_block(context->middleCols(j, m));
          forward_columns<Cols>(x_block, &c_block, a_block, b_block, y_block);
        } else {
          forward_columns<Cols>(x_block, nullptr, a_block, b_block, y_block);
        }
      }
    }
    return y;
  }

  /// Scratch space of the backward pass, sized for one block of columns.
  struct BackwardWorkspace {
    Work post;         ///< hidden × (layers·m): each hidden layer's output, layer by layer
    Work pre;          ///< the same for the pre-activations, when f' needs them
    Work delta;        ///< hidden × m
    Work delta_below;  ///< hidden × m
  };

  /// Forward through the hidden layers for the columns of x, keeping layer k's output in
  /// columns k·n … k·n+n−1 of `post` (hidden × layers·n, n = x.cols()) and, when f′ needs it,
  /// its pre-activation in the same columns of `pre`.
  void record_hidden(const InputRef<Eigen::Dynamic>& x, const ContextRef<Eigen::Dynamic>* context,
                     Work& post, Work& pre) const {
    const Index n = x.cols();
    for (Index k = 0; k < hidden_layers_; ++k) {
      auto out_k = post.middleCols(k * n, n);
      if (k == 0) {
        first_layer<Eigen::Dynamic>(x, context, out_k);
      } else {
        dense_forward(out_k, weights_[std::size_t(k)], post.middleCols((k - 1) * n, n),
                      biases_[std::size_t(k)]);
      }
      if constexpr (!Activation::BackwardFromOutput) pre.middleCols(k * n, n) = out_k;
      Activation::apply(out_k);
    }
  }

  /// The backward pass over the columns first … first + x.cols() − 1 of a batch (x, context and
  /// grad_out are those columns), from their hidden activations recorded by record_hidden():
  /// writes ∂L/∂x into those columns of grad_x (and ∂L/∂c into grad_context if given) and adds
  /// the parameter gradients into grad_params if given. `delta` and `below` are hidden × n
  /// scratch (`below` only read when there are two or more hidden layers).
  template <int Cols>
  void backward_from_hidden(const InputRef<Eigen::Dynamic>& x,
                            const ContextRef<Eigen::Dynamic>* context,
                            const OutputRef<Eigen::Dynamic>& grad_out, Scalar* grad_params,
                            Index first, InputBatch<Cols>& grad_x,
                            ContextBatch<Cols>* grad_context, const Work& post, const Work& pre,
                            Work& delta_scratch, Work& below_scratch) const {
    const Index n = x.cols();
    const Index layers = hidden_layers_;
    constexpr bool from_output = Activation::BackwardFromOutput;

    // Output layer.
    if (grad_params != nullptr) {
      dense_accumulate_parameter_gradients(grad_out, post.middleCols((layers - 1) * n, n),
                                           weight_gradient(grad_params, layers),
                                           bias_gradient(grad_params, layers));
    }
    Work* delta_full = &delta_scratch;
    Work* below_full = &below_scratch;
    delta_full->leftCols(n).noalias() = weights_.back().transpose() * grad_out;

    // Hidden layers, last to first: delta enters as ∂L/∂hₖ and leaves as ∂L/∂hₖ₋₁.
    for (Index k = layers - 1; k >= 0; --k) {
      auto delta = delta_full->leftCols(n);
      if constexpr (from_output) {
        Activation::backward(post.middleCols(k * n, n), delta);
      } else {
        Activation::backward(pre.middleCols(k * n, n), delta);
      }
      if (grad_params != nullptr) {
        if (k > 0) {
          dense_accumulate_parameter_gradients(delta, post.middleCols((k - 1) * n, n),
                                               weight_gradient(grad_params, k),
                                               bias_gradient(grad_params, k));
        } else {
          dense_accumulate_parameter_gradients(delta, x, weight_gradient(grad_params, 0),
                                               bias_gradient(grad_params, 0));
          if (context != nullptr && context_dim_ > 0) {
            Eigen::Map<Work> grad_c(grad_params + context_offset_, hidden_width_, context_dim_);
            grad_c.noalias() += delta * context->transpose();
          }
        }
      }
      if (k > 0) {
        below_full->leftCols(n).noalias() = weights_[std::size_t(k)].transpose() * delta;
        std::swap(delta_full, below_full);
      }
    }

    const auto delta0 = delta_full->leftCols(n);
    if (grad_context != nullptr) {
      grad_context->middleCols(first, n).noalias() = context_weight_.transpose() * delta0;
    }
    grad_x.middleCols(first, n).noalias() = weights_[0].transpose() * delta0;
  }

  /// The forward pass of a block of columns, then its backward pass (see backward_from_hidden).
  template <int Cols>
  void backward_columns(const InputRef<Eigen::Dynamic>& x,
                        const ContextRef<Eigen::Dynamic>* context,
                        const OutputRef<Eigen::Dynamic>& grad_out, Scalar* grad_params, Index first,
                        InputBatch<Cols>& grad_x, ContextBatch<Cols>* grad_context,
                        BackwardWorkspace& ws) const {
    record_hidden(x, context, ws.post, ws.pre);
    backward_from_hidden<Cols>(x, context, grad_out, grad_params, first, grad_x, grad_context,
                               ws.post, ws.pre, ws.delta, ws.delta_below);
  }

  /// The shared backward pass, block by block; `grad_params == nullptr` skips the parameter
  /// gradients, `grad_context == nullptr` skips ∂L/∂c.
  template <int Cols>
  InputBatch<Cols> backward_impl(const InputRef<Cols>& x, const ContextRef<Cols>* context,
                                 const OutputRef<Cols>& grad_out, Scalar* grad_params,
                                 ContextBatch<Cols>* grad_context) const {
    const Index n = x.cols();
    const Index h = hidden_width_;
    const Index block = n < block_columns() ? n : block_columns();
    BackwardWorkspace ws;
    ws.post.resize(h, hidden_layers_ * block);
    if constexpr (!Activation::BackwardFromOutput) ws.pre.resize(h, hidden_layers_ * block);
    ws.delta.resize(h, block);
    if (hidden_layers_ > 1) ws.delta_below.resize(h, block);

    InputBatch<Cols> grad_x;
    grad_x.resize(in_dim_, n);
    if (grad_context != nullptr) grad_context->resize(context_dim_, n);
    for (Index j = 0; j < n; j += block) {
      const Index m = n - j < block ? n - j : block;
      const InputRef<Eigen::Dynamic> x_block(x.middleCols(j, m));
      const OutputRef<Eigen::Dynamic> g_block(grad_out.middleCols(j, m));
      if (context != nullptr) {
        const ContextRef<Eigen::Dynamic> c_block(context->middleCols(j, m));
        backward_columns<Cols>(x_block, &c_block, g_block, grad_params, j, grad_x, grad_context,
                               ws);
      } else {
        backward_columns<Cols>(x_block, nullptr, g_block, grad_params, j, grad_x, grad_context, ws);
      }
    }
    return grad_x;
  }

  Eigen::Map<Work> weight_gradient(Scalar* grad_params, Index k) const {
    const auto& w = weights_[std::size_t(k)];
    return Eigen::Map<Work>(grad_params + weight_offset_[std::size_t(k)], w.rows(), w.cols());
  }

  Eigen::Map<Vector<Scalar>> bias_gradient(Scalar* grad_params, Index k) const {
    return Eigen::Map<Vector<Scalar>>(grad_params + bias_offset_[std::size_t(k)],
                                      biases_[std::size_t(k)].size());
  }

  Jacobian jacobian_impl(const PointRef& x, const ContextRef<1>* context) const {
    const Index h = hidden_width_;
    const Index layers = hidden_layers_;
    // Forward pass for the one point, keeping f'(aₖ) as column k of `slopes`.
    Work slopes(h, layers);
    Vector<Scalar> a(h);
    Vector<Scalar> z(h);
    for (Index k = 0; k < layers; ++k) {
      if (k == 0) {
        first_layer<1>(x, context, z);
      } else {
        dense_forward(z, weights_[std::size_t(k)], a, biases_[std::size_t(k)]);
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

    Jacobian jac;
    jac.resize(out_dim_, in_dim_);
    Work acc;
    Work tmp;
    if (out_dim_ < in_dim_) {
      // Reverse accumulation: rows of J, out × hidden until the last step.
      acc = weights_.back();
      for (Index k = layers - 1; k > 0; --k) {
        acc.array().rowwise() *= slopes.col(k).transpose().array();
        tmp.noalias() = acc * weights_[std::size_t(k)];
        acc.swap(tmp);
      }
      acc.array().rowwise() *= slopes.col(0).transpose().array();
      jac.noalias() = acc * weights_[0];
    } else {
      // Forward accumulation: columns of J, hidden × in until the last step.
      acc = slopes.col(0).asDiagonal() * weights_[0];
      for (Index k = 1; k < layers; ++k) {
        tmp.noalias() = weights_[std::size_t(k)] * acc;
        acc = slopes.col(k).asDiagonal() * tmp;
      }
      jac.noalias() = weights_.back() * acc;
    }
    return jac;
  }

  template <typename RefType, typename Self, typename F>
  static void visit_impl(Self& self, F& f) {
    for (Index k = 0; k <= self.hidden_layers_; ++k) {
      const std::string prefix = "layers." + std::to_string(k) + ".";
      f(prefix + "weight", RefType(self.weights_[std::size_t(k)]));
      if (k == 0 && self.context_dim_ > 0) {
        f(prefix + "context_weight", RefType(self.context_weight_));
      }
      f(prefix + "bias", RefType(self.biases_[std::size_t(k)]));
    }
  }

  Index in_dim_;
  Index out_dim_;
  Index hidden_width_;
  Index hidden_layers_;
  Index context_dim_;
  std::vector<ParameterMatrix<Scalar>> weights_;  ///< hidden_layers_ + 1 of them
  std::vector<Vector<Scalar>> biases_;            ///< hidden_layers_ + 1 of them
  ParameterMatrix<Scalar> context_weight_;        ///< hidden × context_dim, or 0 × 0
  std::vector<Index> weight_offset_;
  std::vector<Index> bias_offset_;
  Index context_offset_ = 0;
  Index parameter_count_ = 0;
};

}  // namespace nflow::nn
