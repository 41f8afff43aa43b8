#pragma once
/// @file
/// @brief MaskedAutoregressive<Transformer, ...>: the autoregressive structure (a MADE conditioner
/// and an elementwise transformer), with the user-facing aliases MAF (masked autoregressive flow)
/// and IAF (inverse autoregressive flow).

#include <Eigen/Core>

#include <cstdint>
#include <random>
#include <string>
#include <type_traits>
#include <utility>

#include "nflow/bijectors/transformers/affine.hpp"
#include "nflow/core/bijector_base.hpp"
#include "nflow/core/buffers.hpp"
#include "nflow/core/concepts.hpp"
#include "nflow/core/errors.hpp"
#include "nflow/core/inverted.hpp"
#include "nflow/core/parameters.hpp"
#include "nflow/core/types.hpp"
#include "nflow/nn/activations.hpp"
#include "nflow/nn/made.hpp"

namespace nflow {

/// @brief How to build the MADE conditioner of an autoregressive layer. Aggregate: use designated
/// initialisers, e.g. `{.hidden_width = 128, .order = nn::InputOrder::Reversed, .seed = 3}`.
struct AutoregressiveOptions {
  /// Units per hidden layer; 0 means the compile-time Hidden, or 64 when Hidden is Dynamic.
  Index hidden_width = 0;
  /// Hidden layers of the MADE (>= 0; 0 makes μ and α affine in the earlier inputs).
  Index hidden_layers = 2;
  /// Rows of the context; 0 means the compile-time ContextDim (0 when it is Dynamic).
  Index context_dim = 0;
  /// The autoregressive order: Natural, Reversed or Random (seeded).
  nn::InputOrder order = nn::InputOrder::Natural;
  /// If non-empty, a permutation of 0 … D−1 that overrides `order`.
  Eigen::VectorXi custom_order = Eigen::VectorXi();
  /// Sequential or Random (seeded) hidden degrees.
  nn::HiddenDegrees hidden_degrees = nn::HiddenDegrees::Sequential;
  /// Seeds std::mt19937_64, which draws the random order (if any), then the seed of the MADE
  /// (its random degrees, if any, and its weights). The same seed gives the same layer on every
  /// compiler.
  std::uint64_t seed = 0;
};

/// @brief An autoregressive layer: a MADE conditioner produces, for each dimension i, the
/// parameters θᵢ(x_{<i}, c) of an elementwise transformer τ, which maps xᵢ to zᵢ.
///
///     forward (data → latent, one pass):   θ = MADE(x, c),  zᵢ = τ(xᵢ; θᵢ),
///                                           log|det ∂z/∂x| = Σᵢ log|τ′(xᵢ; θᵢ)|
///     inverse (latent → data, Dim passes): for k = 1 … D, i = order(k−1):
///                                           θᵢ = MADE(x, c)ᵢ,  xᵢ = τ⁻¹(zᵢ; θᵢ)
///
/// where x_{<i} are the dimensions before i in the order. The Jacobian ∂z/∂x is triangular in
/// that order (exactly: a masked weight is an exact 0), so its log-det is the sum of the
/// diagonal terms. With the AffineTransformer (MAF, Papamakarios et al. 2017):
///
///     zᵢ = (xᵢ − μᵢ) · exp(−αᵢ),   αᵢ = B·tanh(rᵢ/B),   log|det| = −Σᵢ αᵢ,
///     xᵢ = μᵢ + exp(αᵢ) · zᵢ  (inverse),                log|det| = +Σᵢ αᵢ.
///
/// Costs (compile-time traits): ForwardCost = OnePass, InverseCost = DimPasses. The inverse
/// computes each MADE hidden unit exactly once over its D passes (units of degree k−1 at pass
/// k), so it costs about one forward pass of arithmetic, in D dependent steps. Only the forward
/// direction has a vjp (ForwardDifferentiable; not InverseDifferentiable). Inverted<…> swaps
/// all of this: that is IAF.
///
/// Parameters: the MADE's, prefixed "made." ("made.layers.0.weight",
/// "made.layers.0.context_weight", "made.layers.0.bias", …); the transformer has none. A fresh
/// layer is the identity (the MADE's last layer is 0). Context: ContextDim fixed > 0, Dynamic
/// (run-time `context_dim`, possibly 0) or 0; it feeds every first-layer unit of the MADE.
///
/// Domain: all of R^D. NaN or Inf in a sample makes that sample's outputs non-finite only.
/// Thread safety: every evaluation is const and uses only local buffers.
///
/// References: Papamakarios, Pavlakou, Murray 2017, "Masked Autoregressive Flow for Density
/// Estimation", arXiv:1705.07057; Kingma et al. 2016, "Improved Variational Inference with
/// Inverse Autoregressive Flow", arXiv:1606.04934; Germain et al. 2015, arXiv:1502.03509.
///
/// @tparam Transformer_ an elementwise transformer (see bijectors/transformers/affine.hpp for the
///   contract), e.g. AffineTransformer<double>; it fixes Scalar.
/// @tparam Dim_ D, fixed or Eigen::Dynamic.
/// @tparam Hidden_ MADE hidden width, fixed or Eigen::Dynamic.
/// @tparam Activation_ the MADE's activation (nn::ReLU, nn::Tanh, nn::Identity, …).
/// @tparam ContextDim_ 0 (unconditional), a fixed context size, or Eigen::Dynamic.
template <typename Transformer_, int Dim_ = Dynamic, int Hidden_ = Dynamic, typename Activation_ = nn::ReLU,
          int ContextDim_ = 0>
class MaskedAutoregressive
    : public BijectorBase<MaskedAutoregressive<Transformer_, Dim_, Hidden_, Activation_, ContextDim_>> {
  static_assert(Transformer<Transformer_>,
                "nflow::MaskedAutoregressive<Transformer, ...>: Transformer must model nflow::Transformer "
                "(see nflow/core/concepts.hpp and the contract in bijectors/transformers/affine.hpp)");
  static_assert(ContextDim_ == Dynamic || ContextDim_ >= 0,
                "nflow::MaskedAutoregressive<..., ContextDim>: ContextDim must be >= 0 or Eigen::Dynamic");

 public:
  using Transformer = Transformer_;
  using Scalar = typename Transformer::Scalar;
  using Activation = Activation_;
  using Made = nn::MADE<Scalar, Dim_, Hidden_, Activation_, Transformer::ParamsPerDim>;
  static constexpr int Dim = Dim_;
  static constexpr int Hidden = Hidden_;
  static constexpr int ContextDim = ContextDim_;
  static constexpr bool IsConstantLogDet = false;
  static constexpr Cost ForwardCost = Cost::OnePass;
  static constexpr Cost InverseCost = Cost::DimPasses;

  /// @brief A layer of dimension `dim` (equal to Dim when fixed).
  /// @throws nflow::ParameterError on an invalid size, order or context dimension.
  explicit MaskedAutoregressive(Index dim, const AutoregressiveOptions& options = {},
                                Transformer transformer = Transformer())
      : made_(make_made(dim, options)), transformer_(std::move(transformer)) {}

  /// @brief A layer of the compile-time dimension Dim.
  explicit MaskedAutoregressive(const AutoregressiveOptions& options = {}, Transformer transformer = Transformer())
    requires(Dim_ != Dynamic)
      : MaskedAutoregressive(Index(Dim_), options, std::move(transformer)) {}

  Index dim() const { return made_.dim(); }
  Index context_dim() const { return made_.context_dim(); }
  /// The generation order: dimension order(k) is the (k+1)-th to be generated.
  const Eigen::VectorXi& order() const { return made_.order(); }
  const Made& made() const { return made_; }
  const Transformer& transformer() const { return transformer_; }

  /// The parameters: those of the made, prefixed "made.".
  template <typename Self, typename F>
  static void parameters_impl(Self& self, F&& f) {
    self.made_.visit_parameters(detail::prefixed_visitor("made.", f));
  }
  /// The MADE's buffers, "made.order" and "made.hidden_degrees.<l>" (see nn::MADE).
  template <typename F>
  void visit_buffers(F&& f) const {
    made_.visit_buffers(detail::prefixed_visitor("made.", f));
  }
  template <typename F>
  void visit_buffers(F&& f) {
    made_.visit_buffers(detail::prefixed_visitor("made.", f));
  }

  // ---- hooks for BijectorBase ------------------------------------------------------------------
  template <typename X, typename C>
  auto forward_impl(const X& x, const C& ctx) const {
    constexpr int Cols = X::ColsAtCompileTime;
    const typename Made::template InputRef<Cols> xr(x);
    detail::ResultFor<Scalar, Dim, X> r;
    r.value.resize(x.rows(), x.cols());
    r.log_det.setZero(1, x.cols());
    with_context<Cols>(ctx, [&](const auto* c) {
      made_.template forward_blocks<Cols>(xr, c, [&](Index first, const typename Made::ConstBlockRef& params) {
        const Index m = params.cols();
        transformer_.forward(xr.middleCols(first, m), params, r.value.middleCols(first, m),
                             r.log_det.middleCols(first, m));
      });
    });
    return r;
  }

  template <typename Z, typename C>
  auto inverse_impl(const Z& z, const C& ctx) const {
    constexpr int Cols = Z::ColsAtCompileTime;
    detail::ResultFor<Scalar, Dim, Z> r;
    r.value.resize(z.rows(), z.cols());
    r.log_det.setZero(1, z.cols());
    with_context<Cols>(ctx, [&](const auto* c) {
      made_.template solve_autoregressive<Cols>(r.value, c, [&](Index i, Index first,
                                                                const typename Made::ConstBlockRef& params,
                                                                typename Made::RowRef x_row) {
        const Index m = params.cols();
        transformer_.inverse(z.row(i).middleCols(first, m), params, x_row, r.log_det.middleCols(first, m));
      });
    });
    return r;
  }

  /// ∂L/∂x through both paths: the transformer's direct ∂z/∂x and the MADE's θ(x).
  template <typename X, typename GV, typename GL, typename C>
  auto forward_vjp_impl(const X& x, const GV& gv, const GL& gl, Eigen::Ref<Vector<Scalar>> gp, const C& ctx) const {
    constexpr int Cols = X::ColsAtCompileTime;
    const typename Made::template InputRef<Cols> xr(x);
    detail::BatchFor<Scalar, Dim, X> gx;
    gx.resize(x.rows(), x.cols());
    with_context<Cols>(ctx, [&](const auto* c) {
      made_.template backward_blocks<Cols>(
          xr, c,
          [&](Index first, const typename Made::ConstBlockRef& params, typename Made::BlockRef grad_params) {
            const Index m = params.cols();
            transformer_.forward_backward(xr.middleCols(first, m), params, gv.middleCols(first, m),
                                          gl.middleCols(first, m), gx.middleCols(first, m), grad_params);
          },
          gp, gx);
    });
    return gx;
  }

  /// What forward_recorded() keeps for forward_vjp_recorded(): the MADE's input, activations
  /// and outputs (the transformer's parameters), for the whole batch.
  struct Tape {
    typename Made::Tape net;
    /// The number of samples recorded.
    Index cols() const { return net.cols(); }
  };

  template <typename C>
  auto record_forward_impl(const Batch<Scalar, Dim, Dynamic>& x, const C& ctx, Tape& tape) const {
    ValueAndLogDet<Scalar, Dim, Dynamic> r;
    r.value.resize(x.rows(), x.cols());
    r.log_det.setZero(1, x.cols());
    with_context<Dynamic>(ctx, [&](const auto* c) { made_.forward_recorded(x, c, tape.net); });
    transformer_.forward(x, tape.net.y, r.value, r.log_det);
    return r;
  }

  template <typename GV, typename GL, typename C>
  auto taped_vjp_impl(const Tape& tape, const GV& gv, const GL& gl, Eigen::Ref<Vector<Scalar>> gp, const C& ctx) const {
    Batch<Scalar, Dim, Dynamic> gx(dim(), tape.cols());
    ParameterMatrix<Scalar> grad_params(tape.net.y.rows(), tape.cols());
    transformer_.forward_backward(tape.net.input, tape.net.y, gv, gl, gx, grad_params);
    with_context<Dynamic>(ctx, [&](const auto* c) { made_.backward_recorded(tape.net, c, grad_params, gp, gx); });
    return gx;
  }

 private:
  static Made make_made(Index dim, const AutoregressiveOptions& o) {
    if (dim <= 0 || (Dim_ != Dynamic && dim != Dim_)) {
      throw ParameterError("nflow::MaskedAutoregressive: dim must be positive (and equal Dim when fixed), got " +
                           std::to_string(dim));
    }
    Index cd = o.context_dim;
    if constexpr (ContextDim_ == 0) {
      if (cd != 0) {
        throw ParameterError("nflow::MaskedAutoregressive: context_dim = " + std::to_string(cd) +
                             " given to a layer whose ContextDim is 0 (use ContextDim = Eigen::Dynamic or a "
                             "fixed size for a conditional layer)");
      }
    } else if constexpr (ContextDim_ != Dynamic) {
      if (cd == 0) cd = ContextDim_;
      if (cd != ContextDim_) {
        throw ParameterError("nflow::MaskedAutoregressive: context_dim = " + std::to_string(cd) +
                             " differs from the compile-time ContextDim " + std::to_string(ContextDim_));
      }
    } else if (cd < 0) {
      throw ParameterError("nflow::MaskedAutoregressive: context_dim must be >= 0, got " + std::to_string(cd));
    }
    const Index width = o.hidden_width != 0 ? o.hidden_width : (Hidden_ != Dynamic ? Index(Hidden_) : Index(64));
    std::mt19937_64 gen(o.seed);
    Eigen::VectorXi order = o.custom_order.size() > 0 ? o.custom_order : nn::make_order(o.order, dim, gen);
    return Made(dim, width, o.hidden_layers, cd, std::move(order), o.hidden_degrees, random_bits64(gen));
  }

  /// Calls f(pointer to the context as a Ref, or nullptr for NoContext).
  template <int Cols, typename C, typename F>
  static void with_context(const C& ctx, F&& f) {
    using Ref = typename Made::template ContextRef<Cols>;
    if constexpr (is_no_context_v<C>) {
      f(static_cast<const Ref*>(nullptr));
    } else if constexpr (C::ColsAtCompileTime != Dynamic && Cols != Dynamic && int(C::ColsAtCompileTime) != Cols) {
      // Unreachable: BijectorBase has already thrown ShapeError for the column mismatch.
      throw ShapeError("nflow::MaskedAutoregressive: the context must have one column per sample");
    } else {
      const Ref c(ctx);
      f(&c);
    }
  }

  Made made_;
  Transformer transformer_;
};

/// @brief Masked autoregressive flow layer (Papamakarios et al. 2017): density in one pass
/// (forward), sampling in Dim passes (inverse). See MaskedAutoregressive.
/// @tparam Scalar float or double. @tparam Dim fixed or Eigen::Dynamic. @tparam Hidden MADE width.
/// @tparam Activation MADE activation. @tparam ContextDim 0, fixed, or Eigen::Dynamic.
template <typename Scalar, int Dim = Dynamic, int Hidden = Dynamic, typename Activation = nn::ReLU, int ContextDim = 0>
using MAF = MaskedAutoregressive<AffineTransformer<Scalar>, Dim, Hidden, Activation, ContextDim>;

/// @brief Inverse autoregressive flow layer (Kingma et al. 2016): a MAF layer used the other way
/// round, so sampling (its inverse = the MAF's forward) is one pass and has a vjp, and density
/// evaluation (its forward) takes Dim passes. Build it from a MAF layer:
/// `IAF<double, 4>{MAF<double, 4>(4, options)}`. The order applies to the latent dimensions:
/// sample xᵢ depends on z_j for j not after i.
template <typename Scalar, int Dim = Dynamic, int Hidden = Dynamic, typename Activation = nn::ReLU, int ContextDim = 0>
using IAF = Inverted<MAF<Scalar, Dim, Hidden, Activation, ContextDim>>;

}  // namespace nflow
