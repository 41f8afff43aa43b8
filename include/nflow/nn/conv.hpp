#pragma once
/// @file
/// @brief nflow::nn::PeriodicConvNet, a convolutional conditioner with circular (periodic)
/// padding for coupling layers on fields over a rows × cols periodic lattice, and the one-line
/// The conv-conditioned couplings built on it (nflow::ConvAffineCoupling,
/// nflow::ConvScaleShiftCoupling, nflow::conv_checkerboard_coupling) are in
/// nflow/bijectors/coupling.hpp.

#include <Eigen/Core>
#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "nflow/core/errors.hpp"
#include "nflow/core/types.hpp"
#include "nflow/nn/activations.hpp"
#include "nflow/nn/conditioner.hpp"
#include "nflow/nn/dense.hpp"

namespace nflow::nn {

/// @brief The sizes of an nn::PeriodicConvNet besides the lattice and the mask. Aggregate,
/// designated initialisers only: `{.hidden_channels = 16, .seed = 3}`.
///
/// - `channels`: field components per site (1: a scalar field). Features are site-major with the
///   channels innermost: feature (site s, channel c) is s·channels + c, site (i, j) is i·cols + j.
/// - `hidden_channels`: channels of every hidden convolution (default 16).
/// - `hidden_layers`: hidden convolutions, each followed by the activation (default 2; 0 means one
///   convolution straight to the outputs).
/// - `kernel_size`: K, odd, at most the lattice's smaller extent (default 3).
/// - `context_dim`: rows of the context (0: unconditional). The context enters as that many
///   constant input channels of the first convolution (the same value at every site).
/// - `seed`: initialisation (initialize(seed, true): a fresh network outputs exactly 0).
struct PeriodicConvOptions {
  [[no_unique_address]] ::nflow::detail::UseDesignatedInitializers designated_initializers_only{};
  Index channels = 1;
  Index hidden_channels = 16;
  Index hidden_layers = 2;
  Index kernel_size = 3;
  Index context_dim = 0;
  std::uint64_t seed = 0;
};

/// @brief A convolutional conditioner for one coupling layer on a rows × cols periodic lattice
/// (a torus): it maps the conditioning features x_A to the transformer's parameters of the
/// transformed features B, with weights shared over the sites, so that it commutes with every
/// lattice translation that maps the mask onto itself (for a checkerboard: shifts (a, b) with
/// a + b even).
///
/// Forward, for a batch x_A (|A| × N) and a context c (context_dim × N, optional):
/// 1. Scatter: a field a₀ of C₀ = channels + 1 + context_dim channels per site: the field's
///    channels (x_A on the conditioning sites, 0 on the transformed ones), a constant mask channel
///    (1 on conditioning sites, 0 on transformed ones), and c repeated at every site.
/// 2. `hidden_layers` convolutions to `hidden_channels` channels, each followed by the activation,
///    then one convolution to P·channels channels (P = the transformer's ParamsPerDim). Each is a
///    cross-correlation with circular padding ("same" size, as PyTorch's
///    Conv2d(padding_mode='circular')):
///        out(o, i, j) = b(o) + Σ_{c, u, v} W(o, (u·K + v)·C + c) · a(c, (i + u − K/2) mod rows,
///                                                                     (j + v − K/2) mod cols)
///    with u, v in [0, K).
/// 3. Gather: output row p·|B| + b (the transformers' blocked layout: parameter p of transformed
///    feature b, in mask.transformed() order) is channel p·channels + c at site s, for transformed
///    feature b = (s, c).
///
/// The mask must be per site: all channels of a site condition, or all are transformed
/// (CouplingMask::per_site repeats a site mask such as CouplingMask::checkerboard over the
/// channels). The mask is a CouplingMask, or any type with dim(), is_transformed(i),
/// conditioning() and transformed() (nn/ sits below bijectors/).
///
/// Batches run in blocks of samples: each block's convolutions are one im2col copy (K²·C × block
/// columns) and one GEMM per layer, in buffers kept per thread (nothing is allocated per sample,
/// nor per call once they have grown to the block size). The tape holds the input only: the
/// backward pass recomputes each block's activations (a forward pass more, about a third of
/// the backward pass's cost) instead of keeping C × sites × N values per layer.
///
/// Parameters, in visit order: "layers.k.weight" (C_out × K²·C_in, the layout above) and
/// "layers.k.bias" (C_out × 1) for k = 0 … hidden_layers. Not a PointConditioner: one point goes
/// through forward() (a coupling with a dynamic Dim does so anyway).
/// References: Albergo, Kanwar, Shanahan, PRD 100 (2019) 034515, arXiv:1904.12072 (convolutional
/// coupling conditioners for lattice fields).
/// @tparam Scalar_ float or double.
/// @tparam Activation_ the hidden layers' activation (nn::ReLU, nn::Tanh, ...).
template <typename Scalar_, typename Activation_ = ReLU>
class PeriodicConvNet {
  static_assert(std::is_same_v<Scalar_, float> || std::is_same_v<Scalar_, double>,
                "nflow::nn::PeriodicConvNet<Scalar>: Scalar must be float or double");

 public:
  using Scalar = Scalar_;
  using Activation = Activation_;
  using Matrix = ParameterMatrix<Scalar>;

  /// @brief What backward_recorded() needs from forward_recorded(): the input x_A and the
  /// context (context_dim × N, empty without one), as values. The backward pass recomputes the
  /// activations block by block, so a tape is as small as its input.
  struct Tape {
    Matrix input;
    Matrix context;
    /// The number of samples recorded.
    Index cols() const { return input.cols(); }
  };

  /// @brief A network for the lattice `rows` × `cols` (× options.channels per site) and `mask`,
  /// producing `params_per_feature` parameters per transformed feature (the transformer's
  /// ParamsPerDim), initialised with initialize(options.seed, true) (it outputs exactly 0).
  /// @throws nflow::ParameterError with a sentence for a non-positive size (rows, cols, channels,
  ///   params_per_feature, hidden_channels; negative hidden_layers or context_dim), an even kernel,
  ///   a kernel larger than the lattice, a mask whose size is not rows·cols·channels, or a mask that
  ///   splits the channels of a site.
  template <typename Mask>
  PeriodicConvNet(Index rows, Index cols, const Mask& mask, Index params_per_feature,
                  PeriodicConvOptions options = {})
      : rows_(rows),
        cols_(cols),
        channels_(options.channels),
        kernel_(options.kernel_size),
        hidden_(options.hidden_channels),
        layers_(options.hidden_layers),
        context_dim_(options.context_dim),
        params_(params_per_feature) {
    positive("rows", rows);
    positive("cols", cols);
    positive("channels", channels_);
    positive("params_per_feature", params_per_feature);
    positive("hidden_channels", hidden_);
    if (layers_ < 0 || context_dim_ < 0) {
      throw ParameterError(std::string(Who) + ": hidden_layers and context_dim must be >= 0, got " +
                           std::to_string(layers_) + " and " + std::to_string(context_dim_));
    }
    if (kernel_ < 1 || kernel_ % 2 == 0) {
      throw ParameterError(std::string(Who) + ": kernel_size must be a positive odd number (a " +
                           "centred kernel), got " + std::to_string(kernel_));
    }
    if (kernel_ > rows || kernel_ > cols) {
      throw ParameterError(std::string(Who) + ": kernel_size " + std::to_string(kernel_) +
                           " is larger than the " + std::to_string(rows) + " x " +
                           std::to_string(cols) +
                           " lattice (it would wrap onto itself); use a kernel at most the "
                           "lattice's smaller extent");
    }
    sites_ = rows * cols;
    if (mask.dim() != sites_ * channels_) {
      throw ParameterError(std::string(Who) + ": the mask has " + std::to_string(mask.dim()) +
                           " features but the lattice has " + std::to_string(rows) + " x " +
                           std::to_string(cols) + " sites x " + std::to_string(channels_) +
                           " channels = " + std::to_string(sites_ * channels_));
    }
    site_conditions_.assign(std::size_t(sites_), Scalar(0));
    for (Index s = 0; s < sites_; ++s) {
      const bool t = mask.is_transformed(s * channels_);
      for (Index c = 1; c < channels_; ++c) {
        if (mask.is_transformed(s * channels_ + c) != t) {
          throw ParameterError(std::string(Who) + ": the mask splits the " +
                               std::to_string(channels_) + " channels of site " +
                               std::to_string(s) +
                               "; a convolutional conditioner needs a per-site mask (all "
                               "channels of a site condition or all are transformed)");
        }
      }
      site_conditions_[std::size_t(s)] = t ? Scalar(0) : Scalar(1);
    }
    for (int f : mask.conditioning()) conditioning_.push_back(Index(f));
    for (int f : mask.transformed()) transformed_.push_back(Index(f));
    // Neighbour table: tap k = u·K + v of site (i, j) reads site (i + u − K/2, j + v − K/2) mod.
    const Index h = kernel_ / 2;
    neighbour_.resize(std::size_t(kernel_ * kernel_ * sites_));
    for (Index u = 0; u < kernel_; ++u)
      for (Index v = 0; v < kernel_; ++v)
        for (Index i = 0; i < rows; ++i)
          for (Index j = 0; j < cols; ++j) {
            const Index ii = ((i + u - h) % rows + rows) % rows;
            const Index jj = ((j + v - h) % cols + cols) % cols;
            neighbour_[std::size_t((u * kernel_ + v) * sites_ + i * cols + j)] = ii * cols + jj;
          }
    Index offset = 0;
    for (Index k = 0; k <= layers_; ++k) {
      weights_.push_back(Matrix::Zero(out_channels(k), kernel_ * kernel_ * in_channels(k)));
      biases_.push_back(Matrix::Zero(out_channels(k), 1));
      weight_offset_.push_back(offset);
      offset += weights_.back().size();
      bias_offset_.push_back(offset);
      offset += biases_.back().size();
    }
    parameter_count_ = offset;
    initialize(options.seed, true);
  }

  /// @brief Draws the parameters like nn::MLP (PyTorch's default): uniform on (−1/√fan_in,
  /// 1/√fan_in) with fan_in = K²·C_in, tensor by tensor in visit order from
  /// std::mt19937_64(seed) through nflow::uniform_open01 (the same values on every compiler).
  /// @param zero_last_layer set the last convolution's weight and bias to exactly 0: the network
  ///   outputs 0 for every finite input (a fresh coupling layer is the identity).
  void initialize(std::uint64_t seed, bool zero_last_layer = true) {
    std::mt19937_64 gen(seed);
    for (Index k = 0; k <= layers_; ++k) {
      const double bound = default_init_bound(kernel_ * kernel_ * in_channels(k));
      fill_uniform_symmetric(weights_[std::size_t(k)], bound, gen);
      fill_uniform_symmetric(biases_[std::size_t(k)], bound, gen);
    }
    if (zero_last_layer) {
      weights_.back().setZero();
      biases_.back().setZero();
    }
  }

  // ---- forward ----------------------------------------------------------------------------

  /// @brief y = f(x_A, c): x (in_dim() × N) to out_dim() × N.
  /// @throws nflow::ShapeError if x or the context has the wrong shape, or a context is missing.
  template <typename XD, typename C = NoContext>
  Matrix forward(const Eigen::MatrixBase<XD>& x, const C& context = C{}) const {
    check_input("forward", x);
    const Index n = x.cols();
    Matrix cbuf;
    const Matrix* c = checked_context("forward", context, n, cbuf);
    Matrix y(out_dim(), n);
    Scratch& s = scratch();
    const Index block = block_samples();
    for (Index n0 = 0; n0 < n; n0 += block) {
      const Index nb = std::min(block, n - n0);
      forward_block(x.derived(), c, n0, nb, s);
      gather_output(s.act.back().view(out_channels(layers_), nb * sites_), n0, nb, y);
    }
    return y;
  }

  /// @brief forward(x, c), keeping in `tape` what backward_recorded() needs (x and c). Same
  /// checks; a call that throws leaves the tape unchanged.
  template <typename XD, typename C = NoContext>
  Matrix forward_recorded(const Eigen::MatrixBase<XD>& x, Tape& tape,
                          const C& context = C{}) const {
    Matrix y = forward(x, context);
    tape.input = x;
    if constexpr (is_no_context_v<C>) {
      tape.context.resize(0, x.cols());
    } else {
      tape.context = context;
    }
    return y;
  }

  // ---- backward ---------------------------------------------------------------------------

  /// @brief At the point recorded in `tape`: returns ∂L/∂x_A (in_dim() × N) and ADDS ∂L/∂θ into
  /// `grad_params` (visit order, each tensor column-major). With `grad_context` (context_dim × N,
  /// given with the context) ∂L/∂c, the sum over sites of the first layer's input gradient on
  /// the context channels, is ADDED into it. Block by block it recomputes the block's activations
  /// from the tape's x and c (a third of the pass's cost; it keeps the tape as small as the input).
  /// @throws nflow::ShapeError if grad_out, grad_params, the context or grad_context do not match
  ///   the tape, or the tape was not recorded by a network of this shape.
  template <typename GD, typename C = NoContext>
  Matrix backward_recorded(const Tape& tape, const Eigen::MatrixBase<GD>& grad_out,
                           Eigen::Ref<Vector<Scalar>> grad_params, const C& context = C{},
                           ContextGradient<Scalar>* grad_context = nullptr) const {
    const Index n = tape.cols();
    if (tape.input.rows() != in_dim() || tape.context.rows() != context_dim_ ||
        tape.context.cols() != n) {
      throw ShapeError(std::string(Who) +
                       "::backward_recorded: the tape was not recorded by forward_recorded() of a "
                       "network of this shape");
    }
    if (grad_out.rows() != out_dim() || grad_out.cols() != n) {
      throw ShapeError(std::string(Who) + "::backward_recorded: grad_out must be " +
                       std::to_string(out_dim()) + " x " + std::to_string(n) + ", got " +
                       std::to_string(grad_out.rows()) + " x " + std::to_string(grad_out.cols()));
    }
    if (grad_params.size() != parameter_count_) {
      throw ShapeError(std::string(Who) + "::backward_recorded: grad_params must have " +
                       std::to_string(parameter_count_) + " entries, got " +
                       std::to_string(grad_params.size()));
    }
    Matrix cbuf;
    checked_context("backward_recorded", context, n, cbuf);
    if (grad_context != nullptr &&
        (grad_context->rows() != context_dim_ || grad_context->cols() != n)) {
      throw ShapeError(std::string(Who) + "::backward_recorded: grad_context must be " +
                       std::to_string(context_dim_) + " x " + std::to_string(n) + ", got " +
                       std::to_string(grad_context->rows()) + " x " +
                       std::to_string(grad_context->cols()));
    }
    const Matrix* c = context_dim_ > 0 ? &tape.context : nullptr;
    Matrix gx(in_dim(), n);
    Scratch& s = scratch();
    const Index block = block_samples();
    for (Index n0 = 0; n0 < n; n0 += block) {
      const Index nb = std::min(block, n - n0);
      const Index m = nb * sites_;
      forward_block(tape.input, c, n0, nb, s);
      Buffer* delta_buf = &s.delta;
      Buffer* below_buf = &s.below;
      auto delta = delta_buf->view(out_channels(layers_), m);
      delta.setZero();
      scatter_output_gradient(grad_out.derived(), n0, nb, delta);
      for (Index k = layers_; k >= 0; --k) {
        const std::size_t ks = std::size_t(k);
        auto d = delta_buf->view(out_channels(k), m);
        if (k < layers_) {
          if constexpr (!Activation::BackwardFromOutput) {
            Activation::backward(s.pre[ks].view(hidden_, m), d);
          } else {
            Activation::backward(s.act[ks + 1].view(hidden_, m), d);
          }
        }
        const Index rows = kernel_ * kernel_ * in_channels(k);
        auto patches = s.patches.view(rows, m);
        im2col(s.act[ks].view(in_channels(k), m), in_channels(k), nb, patches);
        Eigen::Map<Matrix> gw(grad_params.data() + weight_offset_[ks], weights_[ks].rows(),
                              weights_[ks].cols());
        Eigen::Map<Matrix> gb(grad_params.data() + bias_offset_[ks], biases_[ks].rows(), 1);
        gw.noalias() += d * patches.transpose();
        gb += d.rowwise().sum();
        patches.noalias() = weights_[ks].transpose() * d;
        auto below = below_buf->view(in_channels(k), m);
        col2im(patches, in_channels(k), nb, below);
        std::swap(delta_buf, below_buf);
      }
      // ∂L/∂a₀ for this block (C₀ × m).
      const auto g0 = delta_buf->view(in_channels(0), m);
      for (Index j = 0; j < nb; ++j) {
        for (std::size_t a = 0; a < conditioning_.size(); ++a) {
          const Index f = conditioning_[a];
          gx(Index(a), n0 + j) = g0(f % channels_, j * sites_ + f / channels_);
        }
        if (grad_context != nullptr && context_dim_ > 0) {
          grad_context->col(n0 + j) += g0.middleRows(channels_ + 1, context_dim_)
                                           .middleCols(j * sites_, sites_)
                                           .rowwise()
                                           .sum();
        }
      }
    }
    return gx;
  }

  // ---- parameters -------------------------------------------------------------------------

  Index parameter_count() const { return parameter_count_; }

  /// @brief `f(name, Eigen::Ref<Matrix>)` for "layers.k.weight" and "layers.k.bias", k = 0 …
  /// hidden_layers (see the class comment for the weight's layout).
  template <typename F>
  void visit_parameters(F&& f) {
    for (Index k = 0; k <= layers_; ++k) {
      const std::string prefix = "layers." + std::to_string(k) + ".";
      f(prefix + "weight", Eigen::Ref<Matrix>(weights_[std::size_t(k)]));
      f(prefix + "bias", Eigen::Ref<Matrix>(biases_[std::size_t(k)]));
    }
  }
  template <typename F>
  void visit_parameters(F&& f) const {
    for (Index k = 0; k <= layers_; ++k) {
      const std::string prefix = "layers." + std::to_string(k) + ".";
      f(prefix + "weight", Eigen::Ref<const Matrix>(weights_[std::size_t(k)]));
      f(prefix + "bias", Eigen::Ref<const Matrix>(biases_[std::size_t(k)]));
    }
  }

  // ---- accessors --------------------------------------------------------------------------

  /// |A|, the conditioning features.
  Index in_dim() const { return Index(conditioning_.size()); }
  /// P·|B|.
  Index out_dim() const { return params_ * Index(transformed_.size()); }
  Index context_dim() const { return context_dim_; }
  Index rows() const { return rows_; }
  Index cols() const { return cols_; }
  Index channels() const { return channels_; }
  Index kernel_size() const { return kernel_; }
  Index hidden_channels() const { return hidden_; }
  Index hidden_layers() const { return layers_; }
  /// Input channels of convolution k: channels + 1 (mask) + context_dim for k = 0.
  Index in_channels(Index k) const { return k == 0 ? channels_ + 1 + context_dim_ : hidden_; }
  /// Output channels of convolution k: P·channels for the last one.
  Index out_channels(Index k) const { return k == layers_ ? params_ * channels_ : hidden_; }
  const Matrix& weight(Index k) const { return weights_.at(std::size_t(k)); }
  const Matrix& bias(Index k) const { return biases_.at(std::size_t(k)); }

 private:
  static constexpr const char* Who = "nflow::nn::PeriodicConvNet";

  static void positive(const char* name, Index v) {
    if (v < 1) {
      throw ParameterError(std::string(Who) + ": " + name + " must be >= 1, got " +
                           std::to_string(v));
    }
  }

  /// Block-sized buffers of the forward and backward passes: one set per thread and network type,
  /// kept for the thread's lifetime (they grow to the largest block seen and are then reused, so
  /// a training loop allocates none after its first step; fresh large buffers every call cost
  /// more in page faults than the convolutions themselves).
  /// A buffer that grows and never shrinks, seen as a matrix of any shape that fits (a resized
  /// Eigen matrix would reallocate at every change of shape, e.g. the last, smaller block).
  struct Buffer {
    std::vector<Scalar> data;
    Eigen::Map<Matrix> view(Index rows, Index cols) {
      if (data.size() < std::size_t(rows * cols)) data.resize(std::size_t(rows * cols));
      return Eigen::Map<Matrix>(data.data(), rows, cols);
    }
  };
  struct Scratch {
    std::vector<Buffer> act;  ///< act[k]: layer k's input; act[L + 1]: the last layer's output
    std::vector<Buffer> pre;  ///< pre-activations of the hidden layers (when f' needs them)
    Buffer patches, delta, below;
  };
  static Scratch& scratch() {
    thread_local Scratch s;
    return s;
  }

  /// The forward pass of samples n0 … n0+nb−1 into s.act (and s.pre).
  template <typename X>
  void forward_block(const X& x, const Matrix* c, Index n0, Index nb, Scratch& s) const {
    const Index m = nb * sites_;
    s.act.resize(std::size_t(layers_ + 2));
    if constexpr (!Activation::BackwardFromOutput) s.pre.resize(std::size_t(layers_));
    scatter_input(x, c, n0, nb, s.act[0].view(in_channels(0), m));
    for (Index k = 0; k <= layers_; ++k) {
      const std::size_t ks = std::size_t(k);
      auto patches = s.patches.view(kernel_ * kernel_ * in_channels(k), m);
      im2col(s.act[ks].view(in_channels(k), m), in_channels(k), nb, patches);
      auto out = s.act[ks + 1].view(out_channels(k), m);
      dense_forward(out, weights_[ks], patches, biases_[ks].col(0));
      if (k < layers_) {
        if constexpr (!Activation::BackwardFromOutput) s.pre[ks].view(hidden_, m) = out;
        Activation::apply(out);
      }
    }
  }

  /// Samples per block: the im2col copy of the widest layer stays near 2¹⁸ scalars.
  Index block_samples() const {
    Index widest = 0;
    for (Index k = 0; k <= layers_; ++k) widest = std::max(widest, in_channels(k));
    const Index per_sample = kernel_ * kernel_ * widest * sites_;
    return std::max<Index>(1, (Index(1) << 18) / per_sample);
  }

  template <typename XD>
  void check_input(const char* member, const Eigen::MatrixBase<XD>& x) const {
    if (x.rows() != in_dim()) {
      throw ShapeError(std::string(Who) + "::" + member + ": the input must have " +
                       std::to_string(in_dim()) + " rows (the mask's conditioning features), got " +
                       std::to_string(x.rows()));
    }
  }

  /// The context as a matrix (nullptr for NoContext), checked against the network and n samples.
  template <typename C>
  const Matrix* checked_context(const char* member, const C& context, Index n, Matrix& buf) const {
    if constexpr (is_no_context_v<C>) {
      if (context_dim_ > 0) {
        throw ShapeError(std::string(Who) + "::" + member + ": the network takes a context of " +
                         std::to_string(context_dim_) + " rows and none was given");
      }
      return nullptr;
    } else {
      if (context.rows() != context_dim_ || context.cols() != n) {
        throw ShapeError(std::string(Who) + "::" + member + ": the context must be " +
                         std::to_string(context_dim_) + " x " + std::to_string(n) + ", got " +
                         std::to_string(context.rows()) + " x " + std::to_string(context.cols()));
      }
      if (context_dim_ == 0) return nullptr;
      buf = context;
      return &buf;
    }
  }

  /// a₀ for samples n0 … n0+nb−1 (a: C₀ × nb·sites).
  template <typename X, typename A>
  void scatter_input(const X& x, const Matrix* c, Index n0, Index nb, A&& a) const {
    a.setZero();
    for (Index j = 0; j < nb; ++j) {
      const Index base = j * sites_;
      for (std::size_t i = 0; i < conditioning_.size(); ++i) {
        const Index f = conditioning_[i];
        a(f % channels_, base + f / channels_) = x(Index(i), n0 + j);
      }
      for (Index s = 0; s < sites_; ++s) a(channels_, base + s) = site_conditions_[std::size_t(s)];
      if (c != nullptr) {
        for (Index s = 0; s < sites_; ++s)
          a.col(base + s).segment(channels_ + 1, context_dim_) = c->col(n0 + j);
      }
    }
  }

  /// The output rows of samples n0 … n0+nb−1 from the last layer's field h (P·channels × nb·sites).
  template <typename H>
  void gather_output(const H& h, Index n0, Index nb, Matrix& y) const {
    const Index nt = Index(transformed_.size());
    for (Index j = 0; j < nb; ++j)
      for (Index b = 0; b < nt; ++b) {
        const Index f = transformed_[std::size_t(b)];
        const Index site = f / channels_, ch = f % channels_;
        for (Index p = 0; p < params_; ++p)
          y(p * nt + b, n0 + j) = h(p * channels_ + ch, j * sites_ + site);
      }
  }

  /// The transpose of gather_output: ∂L/∂y into the last layer's field gradient (zeroed by the
  /// caller).
  template <typename G, typename D>
  void scatter_output_gradient(const G& g, Index n0, Index nb, D& delta) const {
    const Index nt = Index(transformed_.size());
    for (Index j = 0; j < nb; ++j)
      for (Index b = 0; b < nt; ++b) {
        const Index f = transformed_[std::size_t(b)];
        const Index site = f / channels_, ch = f % channels_;
        for (Index p = 0; p < params_; ++p)
          delta(p * channels_ + ch, j * sites_ + site) = g(p * nt + b, n0 + j);
      }
  }

  /// patches (K²·C × nb·sites, sized by the caller): column (j, s), rows [k·C, (k+1)·C) hold a's column of sample j at
  /// the site tap k of s reads.
  template <typename A, typename P>
  void im2col(const A& a, Index channels, Index nb, P& patches) const {
    // Raw copies of `channels` contiguous values (Eigen's dynamic segments cost more than the
    // copy for a few channels); a and patches are column-major with no gaps between columns.
    const Index taps = kernel_ * kernel_;
    const Scalar* src = a.data();
    Scalar* dst = patches.data();
    const Index as = a.outerStride(), ps = patches.outerStride();
    for (Index j = 0; j < nb; ++j) {
      const Index base = j * sites_;
      for (Index s = 0; s < sites_; ++s) {
        Scalar* col = dst + (base + s) * ps;
        const Index* nbr = neighbour_.data() + s;
        for (Index k = 0; k < taps; ++k, col += channels) {
          std::copy_n(src + (base + nbr[k * sites_]) * as, channels, col);
        }
      }
    }
  }

  /// The transpose of im2col: out (C × nb·sites, sized by the caller) = the sum of every patch
  /// entry into the site it was copied from.
  template <typename P, typename O>
  void col2im(const P& patches, Index channels, Index nb, O& out) const {
    const Index taps = kernel_ * kernel_;
    out.setZero();
    const Scalar* src = patches.data();
    Scalar* dst = out.data();
    const Index ps = patches.outerStride(), os = out.outerStride();
    for (Index j = 0; j < nb; ++j) {
      const Index base = j * sites_;
      for (Index s = 0; s < sites_; ++s) {
        const Scalar* col = src + (base + s) * ps;
        const Index* nbr = neighbour_.data() + s;
        for (Index k = 0; k < taps; ++k, col += channels) {
          Scalar* o = dst + (base + nbr[k * sites_]) * os;
          for (Index c = 0; c < channels; ++c) o[c] += col[c];
        }
      }
    }
  }

  Index rows_, cols_, channels_, kernel_, hidden_, layers_, context_dim_, params_;
  Index sites_ = 0;
  Index parameter_count_ = 0;
  std::vector<Scalar> site_conditions_;  ///< the mask channel: 1 where a site conditions
  std::vector<Index> conditioning_;      ///< the mask's conditioning features
  std::vector<Index> transformed_;       ///< the mask's transformed features
  std::vector<Index> neighbour_;         ///< (tap · sites + site) → the site it reads
  std::vector<Matrix> weights_;
  std::vector<Matrix> biases_;
  std::vector<Index> weight_offset_;
  std::vector<Index> bias_offset_;
};

}  // namespace nflow::nn
