#pragma once
/// @file
/// @brief Coupling<Transformer>: the coupling structure of NICE and Real NVP, with an MLP (or any
/// nn::Conditioner) conditioner, any elementwise transformer, masks, and an optional context.

#include <Eigen/Core>
#include <concepts>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "nflow/bijectors/transformers/additive.hpp"
#include "nflow/bijectors/transformers/affine.hpp"
#include "nflow/bijectors/transformers/rational_quadratic.hpp"
#include "nflow/bijectors/transformers/scale_shift.hpp"
#include "nflow/core/bijector_base.hpp"
#include "nflow/core/buffers.hpp"
#include "nflow/core/concepts.hpp"
#include "nflow/core/errors.hpp"
#include "nflow/core/parameters.hpp"
#include "nflow/nn/conditioner.hpp"
#include "nflow/nn/conv.hpp"
#include "nflow/nn/mlp.hpp"

namespace nflow {

/// @brief Which features a coupling layer leaves unchanged (and conditions on) and which it
/// transforms. A buffer of the layer ("mask"), set at construction or loaded from a file.
class CouplingMask {
 public:
  /// The first ⌊d/2⌋ features condition, the rest are transformed (`flip` swaps the roles).
  static CouplingMask half(Index dim, bool flip = false) {
    std::vector<bool> t(std::size_t(check_dim(dim)), false);
    for (Index i = dim / 2; i < dim; ++i) t[std::size_t(i)] = true;
    if (flip) t.flip();
    return CouplingMask(std::move(t));
  }
  /// Even features condition, odd ones are transformed (`flip` swaps the roles).
  static CouplingMask alternating(Index dim, bool flip = false) {
    std::vector<bool> t(std::size_t(check_dim(dim)), false);
    for (Index i = 0; i < dim; ++i) t[std::size_t(i)] = (i % 2 == 1) != flip;
    return CouplingMask(std::move(t));
  }
  /// A checkerboard on a `rows` × `cols` lattice stored row by row (site (i, j) is feature
  /// i·cols + j): sites with i + j even condition, those with i + j odd are transformed (`flip`
  /// swaps the roles), so every transformed site's four nearest neighbours condition it. On a
  /// periodic lattice (a torus) this holds across the boundary too exactly when `rows` and `cols`
  /// are both even; `periodic = true` (the default) asks for that and throws otherwise. Two
  /// couplings with flipped checkerboards transform every site.
  /// @throws ParameterError for rows or cols < 1, fewer than 2 sites, or an odd extent on a
  ///   periodic lattice.
  static CouplingMask checkerboard(Index rows, Index cols, bool flip = false,
                                   bool periodic = true) {
    if (rows < 1 || cols < 1) {
      throw ParameterError(
          "nflow::CouplingMask::checkerboard: the lattice must be at least 1 x 1, got " +
          std::to_string(rows) + " x " + std::to_string(cols));
    }
    if (periodic && (rows % 2 != 0 || cols % 2 != 0)) {
      throw ParameterError(
          "nflow::CouplingMask::checkerboard: a periodic lattice needs even extents for the "
          "colouring to alternate across the boundary, got " +
          std::to_string(rows) + " x " + std::to_string(cols) +
          " (pass periodic = false for an "
          "open lattice)");
    }
    std::vector<bool> t(std::size_t(check_dim(rows * cols)), false);
    for (Index i = 0; i < rows; ++i)
      for (Index j = 0; j < cols; ++j) t[std::size_t(i * cols + j)] = ((i + j) % 2 == 1) != flip;
    return CouplingMask(std::move(t));
  }
  /// The mask of a field with `channels` components per site (features site-major, channels
  /// innermost: feature s·channels + c) whose sites follow `sites`: every channel of site s is
  /// transformed exactly when site s is (a per-site mask, as nn::PeriodicConvNet needs).
  /// @throws ParameterError for channels < 1.
  static CouplingMask per_site(const CouplingMask& sites, Index channels) {
    if (channels < 1) {
      throw ParameterError("nflow::CouplingMask::per_site: channels must be >= 1, got " +
                           std::to_string(channels));
    }
    std::vector<bool> t(std::size_t(sites.dim() * channels));
    for (Index s = 0; s < sites.dim(); ++s)
      for (Index c = 0; c < channels; ++c)
        t[std::size_t(s * channels + c)] = sites.is_transformed(s);
    return CouplingMask(std::move(t));
  }
  /// `transformed[i]` says whether feature i is transformed. At least one feature must be
  /// transformed (else the layer is the identity) and, unless a context is given, at least one
  /// must condition. Throws ParameterError naming "mask" otherwise.
  explicit CouplingMask(std::vector<bool> transformed) : transformed_(std::move(transformed)) {
    for (std::size_t i = 0; i < transformed_.size(); ++i) {
      (transformed_[i] ? transform_ : condition_).push_back(int(i));
    }
    if (transform_.empty()) {
      throw ParameterError("nflow::CouplingMask: parameter 'mask' transforms no feature");
    }
  }

  Index dim() const { return Index(transformed_.size()); }
  const std::vector<int>& conditioning() const { return condition_; }
  const std::vector<int>& transformed() const { return transform_; }
  bool is_transformed(Index i) const { return transformed_.at(std::size_t(i)); }
  /// The same mask with the roles of the two sets swapped.
  CouplingMask flipped() const {
    std::vector<bool> t = transformed_;
    t.flip();
    return CouplingMask(std::move(t));
  }

 private:
  static Index check_dim(Index dim) {
    if (dim < 2)
      throw ParameterError("nflow::CouplingMask: a coupling layer needs dim >= 2, got " +
                           std::to_string(dim));
    return dim;
  }
  std::vector<bool> transformed_;
  std::vector<int> condition_;
  std::vector<int> transform_;
};

/// @brief How a coupling layer builds its conditioner: nflow::ConditionerOptions (hidden_width,
/// hidden_layers, context_dim, seed; designated initialisers only, e.g.
/// `{.hidden_width = 128, .seed = 3}`). The default seed is 0 for every layer: give each layer
/// of a flow its own seed.
using CouplingOptions = ConditionerOptions;

/// @brief A coupling layer: the features in the mask's conditioning set A pass through unchanged
/// and parameterise an elementwise transformer τ of the features in B.
///
///     forward:  z_A = x_A,  z_B = τ(x_B; θ(x_A, c)),   log|det| = log|det ∂τ/∂x_B|
///     inverse:  x_A = z_A,  x_B = τ⁻¹(z_B; θ(z_A, c)), one pass
///
/// θ is a conditioner network with input |A| (plus the context c, unmasked) and output
/// ParamsPerDim·|B|: by default an `nn::MLP` built from CouplingOptions, or any nn::Conditioner
/// given to the constructor (an imported library's network, say). With the AffineTransformer this is Real NVP (z_B = (x_B − μ)·e^{−α}, α
/// bounded by B·tanh(·/B)), with the AdditiveTransformer NICE (log-det exactly 0). A fresh layer
/// is the identity (the conditioner's last layer starts at zero).
///
/// Parameters: the conditioner's, prefixed "conditioner." ("conditioner.layers.0.weight", …).
/// Buffers: "mask", then the conditioner's (if it has any) prefixed "conditioner.".
/// Gradients: exact in both directions (forward for maximum likelihood, inverse for reverse KL).
/// Context: ContextDim 0 (unconditional), fixed > 0 (every call needs a context of that many
/// rows; a Flow of steps with different fixed ContextDim does not compile), or Dynamic (the
/// default: the run-time options.context_dim, possibly 0 for unconditional). The context feeds the
/// conditioner's first layer, unmasked.
/// References: Dinh et al. 2015 (NICE) arXiv:1410.8516; Dinh et al. 2017 (Real NVP)
/// arXiv:1605.08803.
/// @tparam Transformer AffineTransformer<S>, AdditiveTransformer<S>, RationalQuadraticSpline<S, K>
///   (or any type following the
///   transformer contract of transformers/affine.hpp).
/// @tparam Dim_ the dimension, fixed or Eigen::Dynamic.
/// @tparam Hidden the conditioner's hidden width, fixed or Eigen::Dynamic.
/// @tparam Activation the conditioner's activation (nn::ReLU, nn::Tanh, ...).
/// @tparam ContextDim_ 0 (unconditional), a fixed context size, or Eigen::Dynamic (the default,
///   set at run time by options.context_dim).
/// @tparam Conditioner_ the conditioner network, an nn::Conditioner of the transformer's Scalar
///   (by default the nn::MLP that Hidden and Activation describe; Hidden and Activation mean
///   nothing for another one). Its one-point path allocates nothing when it is an
///   nn::PointConditioner.
template <typename Transformer, int Dim_ = Dynamic, int Hidden = Dynamic,
          typename Activation = nn::ReLU, int ContextDim_ = Dynamic,
          typename Conditioner_ =
              nn::MLP<typename Transformer::Scalar, Dynamic, Dynamic, Hidden, Activation>>
class Coupling : public BijectorBase<
                     Coupling<Transformer, Dim_, Hidden, Activation, ContextDim_, Conditioner_>> {
  static_assert(nflow::Transformer<Transformer>,
                "nflow::Coupling<Transformer, ...>: Transformer must model nflow::Transformer (see "
                "nflow/core/concepts.hpp and the contract in bijectors/transformers/affine.hpp)");
  static_assert(nn::Conditioner<Conditioner_>,
                "nflow::Coupling<..., Conditioner>: Conditioner must model nflow::nn::Conditioner "
                "(see nflow/nn/conditioner.hpp)");
  static_assert(std::is_same_v<typename Conditioner_::Scalar, typename Transformer::Scalar>,
                "nflow::Coupling<..., Conditioner>: the Conditioner's Scalar must be the "
                "Transformer's");
  static_assert(ContextDim_ == Dynamic || ContextDim_ >= 0,
                "nflow::Coupling<..., ContextDim>: ContextDim must be >= 0 or Eigen::Dynamic");

 public:
  using Scalar = typename Transformer::Scalar;
  static constexpr int Dim = Dim_;
  static constexpr int ContextDim = ContextDim_;
  static constexpr bool IsConstantLogDet = requires { Transformer::IsVolumePreserving; };
  /// The transformer's parameters per feature (Dynamic when it has a run-time count).
  static constexpr int P = Transformer::ParamsPerDim;
  using Conditioner = Conditioner_;

  /// @brief A layer whose conditioner is built from `options` (input |A| plus the context, output
  /// P·|B|) and initialised with its last layer 0, so that the fresh layer is the identity.
  /// `options.hidden_width` 0 means Hidden (64 when Dynamic), `options.context_dim` 0 means
  /// ContextDim (0 when Dynamic); see ConditionerOptions.
  /// Available when the Conditioner is constructible as (in, out, hidden width, hidden layers,
  /// context dim) and initialisable, as nn::MLP is.
  /// @throws nflow::ParameterError naming 'mask', 'hidden_width' (a width other than a fixed
  ///   Hidden), 'context_dim' (one that contradicts ContextDim) or the network's offending size.
  Coupling(CouplingMask mask, CouplingOptions options = {},
           Transformer transformer = Transformer()) requires
      std::constructible_from<Conditioner_, Index, Index, Index, Index, Index> &&
      nn::InitializableConditioner<Conditioner_>
      : mask_(checked_mask(std::move(mask), resolved_context_dim(options))),
        transformer_(std::move(transformer)),
        conditioner_(Index(mask_.conditioning().size()),
                     transformer_params() * Index(mask_.transformed().size()),
                     detail::resolve_hidden_width<Hidden>(Who, options.hidden_width),
                     options.hidden_layers, resolved_context_dim(options)) {
    conditioner_.initialize(options.seed, /*zero_last_layer=*/true);
  }

  /// @brief A layer with a given conditioner (its parameters as they are): its in_dim() must be
  /// |A| and its out_dim() P·|B|, for the mask's sets A (conditioning) and B (transformed), and its
  /// context_dim() ContextDim when that is not Dynamic.
  /// (A template only so that a braced CouplingOptions never reads as a Conditioner.)
  /// @throws nflow::ParameterError naming 'conditioner' (or 'mask') otherwise.
  template <std::same_as<Conditioner_> Net>
  Coupling(CouplingMask mask, Net conditioner, Transformer transformer = Transformer())
      : mask_(checked_mask(std::move(mask), conditioner.context_dim())),
        transformer_(std::move(transformer)),
        conditioner_(checked_conditioner(std::move(conditioner), mask_, transformer_params())) {}

  Index dim() const { return mask_.dim(); }
  Index context_dim() const { return conditioner_.context_dim(); }
  const CouplingMask& mask() const { return mask_; }
  const Transformer& transformer() const { return transformer_; }
  const Conditioner& conditioner() const { return conditioner_; }
  Conditioner& conditioner() { return conditioner_; }

  /// The parameters: those of the conditioner, prefixed "conditioner.".
  template <typename Self, typename F>
  static void parameters_impl(Self& self, F&& f) {
    self.conditioner_.visit_parameters(detail::prefixed_visitor("conditioner.", f));
  }

  /// @brief The buffer "mask" (see nflow/core/buffers.hpp): entry i is 1 if feature i is
  /// transformed, 0 if it conditions (nflows' convention). A new value must have entries 0 or 1
  /// and the same number of each as the layer's conditioner was built for (ParameterError
  /// otherwise; the layer is then unchanged).
  /// The conditioner's buffers (an nn::BufferedConditioner's) follow, prefixed "conditioner.";
  /// it validates its own (see there).
  template <typename F>
  void visit_buffers(F&& f) const {
    const BufferVector b = mask_buffer();
    f(std::string("mask"), b);
    if constexpr (nn::BufferedConditioner<Conditioner>) {
      conditioner_.visit_buffers(detail::prefixed_visitor("conditioner.", f));
    }
  }
  template <typename F>
  void visit_buffers(F&& f) {
    BufferVector b = mask_buffer();
    f(std::string("mask"), b);
    if constexpr (nn::BufferedConditioner<Conditioner>) {
      conditioner_.visit_buffers(detail::prefixed_visitor("conditioner.", f));
    }
    const Eigen::VectorXi v = detail::buffer_to_indices("nflow::Coupling", "mask", b, dim(), 0, 1);
    std::vector<bool> t(std::size_t(v.size()));
    for (Index i = 0; i < v.size(); ++i) t[std::size_t(i)] = v(i) == 1;
    CouplingMask m = v.sum() == 0 ? mask_ : CouplingMask(std::move(t));
    if (v.sum() == 0 || m.transformed().size() != mask_.transformed().size()) {
      throw ParameterError("nflow::Coupling: buffer 'mask' transforms " + std::to_string(v.sum()) +
                           " features; the layer's conditioner was built for " +
                           std::to_string(mask_.transformed().size()));
    }
    mask_ = std::move(m);
  }

  // ---- hooks ------------------------------------------------------------------------------
  // The hooks are defined after the class (not inline), so that a program linking
  // nflow::instances (NFLOW_PRECOMPILED_INSTANCES) can take the common layers' instances from
  // the library instead of compiling them (nflow/bijectors/coupling_instances.hpp).
  template <typename X, typename C>
  ValueAndLogDet<Scalar, Dim, X::ColsAtCompileTime> forward_impl(const X& x, const C& ctx) const;

  template <typename Z, typename C>
  ValueAndLogDet<Scalar, Dim, Z::ColsAtCompileTime> inverse_impl(const Z& z, const C& ctx) const;

  /// What forward_recorded() keeps for forward_vjp_recorded(): the conditioner's input x_A and
  /// activations, x_B, and the transformer's parameters θ.
  struct Tape {
    typename Conditioner::Tape net;
    Eigen::Matrix<Scalar, Dynamic, Dynamic, Eigen::ColMajor, Dim_, Dynamic> xb;
    Eigen::Matrix<Scalar, Dynamic, Dynamic> params;
    /// The transformer's own (RecordingTransformer: the spline's knots), else empty.
    [[no_unique_address]] typename detail::TransformerTapeOf<Transformer>::type transformer;
    /// The number of samples recorded.
    Index cols() const { return xb.cols(); }
  };

  template <typename C>
  ValueAndLogDet<Scalar, Dim, Dynamic> record_forward_impl(const Batch<Scalar, Dim, Dynamic>& x,
                                                           const C& ctx, Tape& tape) const;

  /// ∂L/∂x through both paths: the transformer's direct ∂z_B/∂x_B and the conditioner's θ(x_A);
  /// ∂L/∂c (added into gc when not null) through the conditioner only.
  template <typename GV, typename GL, typename C>
  Batch<Scalar, Dim, Dynamic> taped_vjp_impl(const Tape& tape, const GV& gv, const GL& gl,
                                             Eigen::Ref<Vector<Scalar>> gp, const C& ctx,
                                             ContextGradient<Scalar>* gc = nullptr) const;

  template <typename X, typename GV, typename GL, typename C>
  Batch<Scalar, Dim, X::ColsAtCompileTime> forward_vjp_impl(
      const X& x, const GV& gv, const GL& gl, Eigen::Ref<Vector<Scalar>> gp, const C& ctx,
      ContextGradient<Scalar>* gc = nullptr) const {
    Tape tape;
    record_forward_impl(detail::as_batch<Scalar, Dim>(x), ctx, tape);
    return detail::BatchFor<Scalar, Dim, X>(taped_vjp_impl(tape, gv, gl, gp, ctx, gc));
  }

  template <typename Z, typename GV, typename GL, typename C>
  Batch<Scalar, Dim, Z::ColsAtCompileTime> inverse_vjp_impl(
      const Z& z, const GV& gv, const GL& gl, Eigen::Ref<Vector<Scalar>> gp, const C& ctx,
      ContextGradient<Scalar>* gc = nullptr) const;

 private:
  BufferVector mask_buffer() const {
    BufferVector b(dim());
    for (Index i = 0; i < dim(); ++i) b(i) = mask_.is_transformed(i) ? 1 : 0;
    return b;
  }

  static constexpr const char* Who = "nflow::Coupling";

  static Index resolved_context_dim(const CouplingOptions& options) {
    return detail::resolve_context_dim<ContextDim_>(Who, options.context_dim);
  }

  static CouplingMask checked_mask(CouplingMask mask, Index context_dim) {
    if (Dim_ != Dynamic && mask.dim() != Dim_) {
      throw ParameterError("nflow::Coupling: parameter 'mask' has dimension " +
                           std::to_string(mask.dim()) + " but the layer's Dim is " +
                           std::to_string(Dim_));
    }
    if (mask.conditioning().empty() && context_dim == 0) {
      throw ParameterError(
          "nflow::Coupling: parameter 'mask' leaves no feature to condition on and there is no "
          "context");
    }
    return mask;
  }

  /// The transformer's parameters per feature (a fixed P without reading the transformer).
  Index transformer_params() const {
    if constexpr (P == Dynamic) {
      return Index(transformer_.params_per_dim());
    } else {
      return Index(P);
    }
  }

  static Conditioner checked_conditioner(Conditioner net, const CouplingMask& mask, Index p) {
    const Index in = Index(mask.conditioning().size());
    const Index out = p * Index(mask.transformed().size());
    if (net.in_dim() != in || net.out_dim() != out) {
      throw ParameterError(
          "nflow::Coupling: parameter 'conditioner' maps " + std::to_string(net.in_dim()) +
          " inputs to " + std::to_string(net.out_dim()) + " outputs; the mask needs " +
          std::to_string(in) + " inputs (conditioning features) and " + std::to_string(out) +
          " outputs (" + std::to_string(p) + " per transformed feature)");
    }
    if (ContextDim_ != Dynamic && net.context_dim() != ContextDim_) {
      throw ParameterError("nflow::Coupling: parameter 'conditioner' takes a context of " +
                           std::to_string(net.context_dim()) + " rows; the layer's ContextDim is " +
                           std::to_string(ContextDim_));
    }
    return net;
  }

  // A subset of the features: dynamic rows, bounded by Dim when Dim is fixed (then on the stack).
  template <int Cols>
  using Part =
      Eigen::Matrix<Scalar, Dynamic, Cols, Eigen::ColMajor, Dim_, Cols == Dynamic ? Dynamic : Cols>;
  template <int Cols>
  using ParamBatch = Eigen::Matrix<Scalar, Dynamic, Cols>;

  /// z = (x_A, τ(x_B; θ)) scattered back to feature order, with log|det|.
  template <int Cols, typename PM>
  ValueAndLogDet<Scalar, Dim, Cols> forward_from(
      const Part<Cols>& xa, const Part<Cols>& xb, const PM& params,
      typename detail::TransformerTapeOf<Transformer>::type* tape = nullptr) const {
    ValueAndLogDet<Scalar, Dim, Cols> r;
    r.log_det.setZero(1, xb.cols());
    Part<Cols> zb(xb.rows(), xb.cols());
    if (tape != nullptr) {
      detail::forward_recorded(transformer_, xb, params, zb, r.log_det, *tape);
    } else {
      transformer_.forward(xb, params, zb, r.log_det);
    }
    r.value.resize(dim(), xb.cols());
    scatter(r.value, mask_.conditioning(), xa);
    scatter(r.value, mask_.transformed(), zb);
    return r;
  }

  /// The transformer's parameters θ(x_A, c). One point with a fixed Dim and an
  /// nn::PointConditioner: in a fixed-capacity vector, so that (with a fixed Hidden) the call
  /// allocates nothing.
  template <int Cols, typename XA, typename C>
  auto condition(const XA& xa, const C& ctx) const {
    if constexpr (Cols == 1 && Dim_ != Dynamic && nn::PointConditioner<Conditioner>) {
      // (A transformer with a run-time parameter count: a heap vector.)
      Eigen::Matrix<Scalar, Dynamic, 1, Eigen::ColMajor, P == Dynamic ? Dynamic : P * Dim_, 1>
          params;
      conditioner_.forward_point_into(xa, params, ctx);
      return params;
    } else {
      return conditioner_.forward(xa, ctx);
    }
  }

  template <int Cols, typename M>
  static Part<Cols> gather(const M& m, const std::vector<int>& rows) {
    Part<Cols> out(Index(rows.size()), m.cols());
    for (std::size_t i = 0; i < rows.size(); ++i) out.row(Index(i)) = m.row(rows[i]);
    return out;
  }
  template <typename Out, typename Src>
  static void scatter(Out& out, const std::vector<int>& rows, const Src& src) {
    for (std::size_t i = 0; i < rows.size(); ++i) out.row(rows[i]) = src.row(Index(i));
  }

  CouplingMask mask_;
  Transformer transformer_;
  Conditioner conditioner_;
};

// ---- Coupling's hooks (declared in the class) ----------------------------------------------

template <typename Transformer, int Dim_, int Hidden, typename Activation, int ContextDim_,
          typename Conditioner_>
template <typename X, typename C>
auto Coupling<Transformer, Dim_, Hidden, Activation, ContextDim_, Conditioner_>::forward_impl(
    const X& x, const C& ctx) const -> ValueAndLogDet<Scalar, Dim, X::ColsAtCompileTime> {
  constexpr int Cols = X::ColsAtCompileTime;
  const Part<Cols> xa = gather<Cols>(x, mask_.conditioning());
  const Part<Cols> xb = gather<Cols>(x, mask_.transformed());
  return forward_from<Cols>(xa, xb, condition<Cols>(xa, ctx));
}

template <typename Transformer, int Dim_, int Hidden, typename Activation, int ContextDim_,
          typename Conditioner_>
template <typename Z, typename C>
auto Coupling<Transformer, Dim_, Hidden, Activation, ContextDim_, Conditioner_>::inverse_impl(
    const Z& z, const C& ctx) const -> ValueAndLogDet<Scalar, Dim, Z::ColsAtCompileTime> {
  constexpr int Cols = Z::ColsAtCompileTime;
  const Part<Cols> za = gather<Cols>(z, mask_.conditioning());
  const Part<Cols> zb = gather<Cols>(z, mask_.transformed());
  const auto params = condition<Cols>(za, ctx);
  detail::ResultFor<Scalar, Dim, Z> r;
  r.log_det.setZero(1, z.cols());
  Part<Cols> xb(zb.rows(), zb.cols());
  transformer_.inverse(zb, params, xb, r.log_det);
  r.value.resize(z.rows(), z.cols());
  scatter(r.value, mask_.conditioning(), za);
  scatter(r.value, mask_.transformed(), xb);
  return r;
}

template <typename Transformer, int Dim_, int Hidden, typename Activation, int ContextDim_,
          typename Conditioner_>
template <typename C>
auto Coupling<Transformer, Dim_, Hidden, Activation, ContextDim_,
              Conditioner_>::record_forward_impl(const Batch<Scalar, Dim, Dynamic>& x, const C& ctx,
                                                 Tape& tape) const
    -> ValueAndLogDet<Scalar, Dim, Dynamic> {
  const Part<Dynamic> xa = gather<Dynamic>(x, mask_.conditioning());
  tape.xb = gather<Dynamic>(x, mask_.transformed());
  tape.params = conditioner_.forward_recorded(xa, tape.net, ctx);
  return forward_from<Dynamic>(xa, tape.xb, tape.params, &tape.transformer);
}

template <typename Transformer, int Dim_, int Hidden, typename Activation, int ContextDim_,
          typename Conditioner_>
template <typename GV, typename GL, typename C>
auto Coupling<Transformer, Dim_, Hidden, Activation, ContextDim_, Conditioner_>::taped_vjp_impl(
    const Tape& tape, const GV& gv, const GL& gl, Eigen::Ref<Vector<Scalar>> gp, const C& ctx,
    ContextGradient<Scalar>* gc) const -> Batch<Scalar, Dim, Dynamic> {
  const Index n = tape.cols();
  const Part<Dynamic> gzb = gather<Dynamic>(gv, mask_.transformed());
  Part<Dynamic> gxb(tape.xb.rows(), n);
  ParamBatch<Dynamic> gparams(tape.params.rows(), n);
  detail::forward_backward_recorded(transformer_, tape.transformer, tape.xb, tape.params, gzb, gl,
                                    gxb, gparams);
  const Part<Dynamic> gxa =
      gather<Dynamic>(gv, mask_.conditioning()) +
      nn::backward_recorded_into(conditioner_, tape.net, gparams, gp, ctx, gc);
  Batch<Scalar, Dim, Dynamic> gx(dim(), n);
  scatter(gx, mask_.conditioning(), gxa);
  scatter(gx, mask_.transformed(), gxb);
  return gx;
}

template <typename Transformer, int Dim_, int Hidden, typename Activation, int ContextDim_,
          typename Conditioner_>
template <typename Z, typename GV, typename GL, typename C>
auto Coupling<Transformer, Dim_, Hidden, Activation, ContextDim_, Conditioner_>::inverse_vjp_impl(
    const Z& z, const GV& gv, const GL& gl, Eigen::Ref<Vector<Scalar>> gp, const C& ctx,
    ContextGradient<Scalar>* gc) const -> Batch<Scalar, Dim, Z::ColsAtCompileTime> {
  constexpr int Cols = Z::ColsAtCompileTime;
  const Part<Cols> za = gather<Cols>(z, mask_.conditioning());
  const Part<Cols> zb = gather<Cols>(z, mask_.transformed());
  typename Conditioner::Tape net;
  const ParamBatch<Dynamic> params = conditioner_.forward_recorded(za, net, ctx);
  const Part<Cols> gxb = gather<Cols>(gv, mask_.transformed());
  Part<Cols> gzb(zb.rows(), zb.cols());
  ParamBatch<Dynamic> gparams(params.rows(), params.cols());
  transformer_.inverse_backward(zb, params, gxb, gl, gzb, gparams);
  const Part<Cols> gza = gather<Cols>(gv, mask_.conditioning()) +
                         nn::backward_recorded_into(conditioner_, net, gparams, gp, ctx, gc);
  detail::BatchFor<Scalar, Dim, Z> gz(z.rows(), z.cols());
  scatter(gz, mask_.conditioning(), gza);
  scatter(gz, mask_.transformed(), gzb);
  return gz;
}

/// NICE's additive coupling (log-det exactly 0).
template <typename Scalar, int Dim = Dynamic, int Hidden = Dynamic, typename Activation = nn::ReLU,
          int ContextDim = Dynamic>
using AdditiveCoupling = Coupling<AdditiveTransformer<Scalar>, Dim, Hidden, Activation, ContextDim>;
/// An affine coupling in the shift-then-scale form z_B = (x_B − μ)·e^{−α} (the shift in data
/// units; MAF's and Glow's form), the log-scale α bounded by 3·tanh(·/3) (AffineTransformer).
template <typename Scalar, int Dim = Dynamic, int Hidden = Dynamic, typename Activation = nn::ReLU,
          int ContextDim = Dynamic>
using AffineCoupling = Coupling<AffineTransformer<Scalar>, Dim, Hidden, Activation, ContextDim>;
/// An affine coupling in Real NVP's scale-then-shift form z_B = x_B·e^{s} + t (the shift in
/// latent units; Dinh et al. 2017, eq. 4 inverted), the log-scale s bounded by 3·tanh(·/3)
/// (ScaleShiftTransformer with its default options, ScaleShiftOptions::real_nvp()). The same
/// family of maps as AffineCoupling, parameterised differently; on conditional density
/// estimation it trains better (docs/training.md, "The two affine forms").
template <typename Scalar, int Dim = Dynamic, int Hidden = Dynamic, typename Activation = nn::ReLU,
          int ContextDim = Dynamic>
using ScaleShiftCoupling =
    Coupling<ScaleShiftTransformer<Scalar>, Dim, Hidden, Activation, ContextDim>;
/// A neural spline flow's coupling layer (Durkan et al. 2019): a rational-quadratic spline of
/// `Bins` bins on [−5, 5], the identity outside (RationalQuadraticSpline; for a bounded or
/// circular domain use Coupling<RationalQuadraticSpline<Scalar, Bins, Domain>, ...>).
template <typename Scalar, int Dim = Dynamic, int Hidden = Dynamic, int Bins = 8,
          typename Activation = nn::ReLU, int ContextDim = Dynamic>
using SplineCoupling =
    Coupling<RationalQuadraticSpline<Scalar, Bins>, Dim, Hidden, Activation, ContextDim>;

/// @brief A coupling layer with a periodic convolutional conditioner (nn::PeriodicConvNet) and
/// any transformer (a dynamic Dim and context).
template <typename Transformer, typename Activation = nn::ReLU>
using ConvCoupling = Coupling<Transformer, Dynamic, Dynamic, Activation, Dynamic,
                              nn::PeriodicConvNet<typename Transformer::Scalar, Activation>>;
/// @brief The affine coupling (AffineTransformer: z = (x − μ)·e^{−α}) with a periodic
/// convolutional conditioner.
template <typename Scalar, typename Activation = nn::ReLU>
using ConvAffineCoupling = ConvCoupling<AffineTransformer<Scalar>, Activation>;
/// @brief Real NVP's scale-then-shift coupling (ScaleShiftTransformer: z = x·σ + t) with a
/// periodic convolutional conditioner.
template <typename Scalar, typename Activation = nn::ReLU>
using ConvScaleShiftCoupling = ConvCoupling<ScaleShiftTransformer<Scalar>, Activation>;

/// @brief One checkerboard coupling layer on a periodic `rows` × `cols` lattice (× options.channels
/// per site) with a convolutional conditioner: the mask CouplingMask::checkerboard(rows,
/// cols, flip) repeated over the channels (CouplingMask::per_site) and a fresh network (the layer is the identity), e.g.
///
///     auto layer = conv_checkerboard_coupling<AffineTransformer<double>>(8, 8, false,
///                                                                       {.seed = 3});
///
/// @throws nflow::ParameterError as nn::PeriodicConvNet and CouplingMask::checkerboard (odd
///   extents: a periodic checkerboard needs even ones).
template <typename Transformer, typename Activation = nn::ReLU>
ConvCoupling<Transformer, Activation> conv_checkerboard_coupling(
    Index rows, Index cols, bool flip, nn::PeriodicConvOptions options = {},
    Transformer transformer = Transformer()) {
  using Net = nn::PeriodicConvNet<typename Transformer::Scalar, Activation>;
  CouplingMask mask =
      CouplingMask::per_site(CouplingMask::checkerboard(rows, cols, flip), options.channels);
  Net net(rows, cols, mask, Transformer::ParamsPerDim, options);
  return ConvCoupling<Transformer, Activation>(std::move(mask), std::move(net),
                                               std::move(transformer));
}

}  // namespace nflow

// The compiled instances of the common layers (used when NFLOW_PRECOMPILED_INSTANCES is set).
#include "nflow/bijectors/coupling_instances.hpp"
