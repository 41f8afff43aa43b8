#pragma once
/// @file
/// @brief MaskedAutoregressive<Transformer, ...>: the autoregressive structure (a MADE conditioner
/// and an elementwise transformer) with its Dim-pass autoregressive solve, and the user-facing
/// aliases MAF (masked autoregressive flow) and IAF (inverse autoregressive flow).

#include <Eigen/Core>
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <type_traits>
#include <utility>

#include "nflow/bijectors/transformers/affine.hpp"
#include "nflow/bijectors/transformers/rational_quadratic.hpp"
#include "nflow/core/bijector_base.hpp"
#include "nflow/core/buffers.hpp"
#include "nflow/core/concepts.hpp"
#include "nflow/core/errors.hpp"
#include "nflow/core/inverted.hpp"
#include "nflow/core/parameters.hpp"
#include "nflow/core/types.hpp"
#include "nflow/nn/activations.hpp"
#include "nflow/nn/made.hpp"
#include "nflow/nn/masks.hpp"

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
template <typename Transformer_, int Dim_ = Dynamic, int Hidden_ = Dynamic,
          typename Activation_ = nn::ReLU, int ContextDim_ = 0>
class MaskedAutoregressive
    : public BijectorBase<
          MaskedAutoregressive<Transformer_, Dim_, Hidden_, Activation_, ContextDim_>> {
  static_assert(
      Transformer<Transformer_>,
      "nflow::MaskedAutoregressive<Transformer, ...>: Transformer must model nflow::Transformer "
      "(see nflow/core/concepts.hpp and the contract in bijectors/transformers/affine.hpp)");
  static_assert(
      ContextDim_ == Dynamic || ContextDim_ >= 0,
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
  explicit MaskedAutoregressive(const AutoregressiveOptions& options = {},
                                Transformer transformer = Transformer()) requires(Dim_ != Dynamic)
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
    made_.template forward_blocks<Cols>(
        xr, ctx, [&](Index first, const typename Made::ConstBlockRef& params) {
          const Index m = params.cols();
          transformer_.forward(xr.middleCols(first, m), params, r.value.middleCols(first, m),
                               r.log_det.middleCols(first, m));
        });
    return r;
  }

  template <typename Z, typename C>
  auto inverse_impl(const Z& z, const C& ctx) const {
    constexpr int Cols = Z::ColsAtCompileTime;
    ValueAndLogDet<Scalar, Dim, Cols> r;
    r.value.resize(z.rows(), z.cols());
    r.log_det.setZero(1, z.cols());
    const typename Made::template InputRef<Cols> zr(z);
    Made::template with_context<Cols>(ctx, [&](const typename Made::template ContextRef<Cols>* c) {
      solve_autoregressive<Cols>(zr, c, r);
    });
    return r;
  }

  /// ∂L/∂x through both paths: the transformer's direct ∂z/∂x and the MADE's θ(x).
  template <typename X, typename GV, typename GL, typename C>
  auto forward_vjp_impl(const X& x, const GV& gv, const GL& gl, Eigen::Ref<Vector<Scalar>> gp,
                        const C& ctx) const {
    constexpr int Cols = X::ColsAtCompileTime;
    const typename Made::template InputRef<Cols> xr(x);
    detail::BatchFor<Scalar, Dim, X> gx;
    gx.resize(x.rows(), x.cols());
    made_.template backward_blocks<Cols>(
        xr, ctx,
        [&](Index first, const typename Made::ConstBlockRef& params,
            typename Made::BlockRef grad_params) {
          const Index m = params.cols();
          transformer_.forward_backward(xr.middleCols(first, m), params, gv.middleCols(first, m),
                                        gl.middleCols(first, m), gx.middleCols(first, m),
                                        grad_params);
        },
        gp, gx);
    return gx;
  }

  /// What forward_recorded() keeps for forward_vjp_recorded(): the MADE's input and activations,
  /// and its outputs (the transformer's parameters), for the whole batch.
  struct Tape {
    typename Made::Tape net;
    ParameterMatrix<Scalar> params;  ///< the MADE's outputs, out × N
    /// The number of samples recorded.
    Index cols() const { return net.cols(); }
  };

  template <typename C>
  auto record_forward_impl(const Batch<Scalar, Dim, Dynamic>& x, const C& ctx, Tape& tape) const {
    ValueAndLogDet<Scalar, Dim, Dynamic> r;
    r.value.resize(x.rows(), x.cols());
    r.log_det.setZero(1, x.cols());
    tape.params = made_.forward_recorded(x, tape.net, ctx);
    transformer_.forward(x, tape.params, r.value, r.log_det);
    return r;
  }

  template <typename GV, typename GL, typename C>
  auto taped_vjp_impl(const Tape& tape, const GV& gv, const GL& gl, Eigen::Ref<Vector<Scalar>> gp,
                      const C& ctx) const {
    Batch<Scalar, Dim, Dynamic> gx(dim(), tape.cols());
    ParameterMatrix<Scalar> grad_params(tape.params.rows(), tape.cols());
    transformer_.forward_backward(tape.net.input, tape.params, gv, gl, gx, grad_params);
    gx += made_.backward_recorded(tape.net, grad_params, gp, ctx);
    return gx;
  }

 private:
  static Made make_made(Index dim, const AutoregressiveOptions& o) {
    if (dim <= 0 || (Dim_ != Dynamic && dim != Dim_)) {
      throw ParameterError(
          "nflow::MaskedAutoregressive: dim must be positive (and equal Dim when fixed), got " +
          std::to_string(dim));
    }
    Index cd = o.context_dim;
    if constexpr (ContextDim_ == 0) {
      if (cd != 0) {
        throw ParameterError(
            "nflow::MaskedAutoregressive: context_dim = " + std::to_string(cd) +
            " given to a layer whose ContextDim is 0 (use ContextDim = Eigen::Dynamic or a "
            "fixed size for a conditional layer)");
      }
    } else if constexpr (ContextDim_ != Dynamic) {
      if (cd == 0) cd = ContextDim_;
      if (cd != ContextDim_) {
        throw ParameterError("nflow::MaskedAutoregressive: context_dim = " + std::to_string(cd) +
                             " differs from the compile-time ContextDim " +
                             std::to_string(ContextDim_));
      }
    } else if (cd < 0) {
      throw ParameterError("nflow::MaskedAutoregressive: context_dim must be >= 0, got " +
                           std::to_string(cd));
    }
    const Index width =
        o.hidden_width != 0 ? o.hidden_width : (Hidden_ != Dynamic ? Index(Hidden_) : Index(64));
    std::mt19937_64 gen(o.seed);
    Eigen::VectorXi order =
        o.custom_order.size() > 0 ? o.custom_order : nn::make_order(o.order, dim, gen);
    return Made(dim, width, o.hidden_layers, cd, std::move(order), o.hidden_degrees,
                random_bits64(gen));
  }

  // ---- the Dim-pass autoregressive solve (MAF's inverse, IAF's forward) ----------------------

  using Work = ParameterMatrix<Scalar>;
  /// Writable view of the columns first … first+m−1 of one row of a D × N matrix.
  using RowRef = Eigen::Ref<Eigen::Matrix<Scalar, 1, Dynamic>, 0, Eigen::InnerStride<>>;
  static constexpr int P = Transformer::ParamsPerDim;
  static constexpr std::size_t StackBytes = 64 * 1024;
  static constexpr std::size_t SolveBlockBytes = 512 * 1024;
  static constexpr Index MaxStackLayers = 8;
  static constexpr bool small_fixed(int rows, int cols) {
    return rows != Dynamic && cols != Dynamic &&
           std::size_t(rows) * std::size_t(cols) * sizeof(Scalar) <= StackBytes;
  }
  template <int Cols>
  using ParamBuffer =
      std::conditional_t<small_fixed(P, Cols), Eigen::Matrix<Scalar, P, Cols>, Work>;
  template <int Cols>
  static constexpr bool StackStoreFits = Hidden_ != Dynamic&& Hidden_ >= 2 &&
                                         Cols != Dynamic&& small_fixed(Hidden_,
                                                                       int(MaxStackLayers) * Cols);
  template <int Cols>
  using StackStore = Eigen::Matrix<Scalar, Hidden_, Dynamic, Eigen::ColMajor, Hidden_,
                                   StackStoreFits<Cols> ? int(MaxStackLayers) * Cols : 1>;

  /// x = τ⁻¹(z; θ(x, c)) in D sequential passes: for k = 1 … D, with i = order(k−1), the MADE's
  /// hidden units of degree k−1 are computed (each unit exactly once over the D passes; the units
  /// of lower degree are already final), then the P outputs of dimension i (one product with the
  /// output rows grouped by dimension), then xᵢ = τ⁻¹(zᵢ; θᵢ). Output i depends only on the x_j
  /// of lower degree, all final by then. One point (Cols fixed) with fixed Dim and Hidden uses
  /// stack buffers only (up to MaxStackLayers hidden layers); a batch goes by blocks of columns.
  template <int Cols>
  void solve_autoregressive(const typename Made::template InputRef<Cols>& z,
                            const typename Made::template ContextRef<Cols>* context,
                            ValueAndLogDet<Scalar, Dim, Cols>& r) const {
    const Index n = z.cols();
    const Index h = made_.hidden_width();
    const Index L = made_.hidden_layers();
    r.value.setZero();
    if constexpr (Cols != Dynamic) {
      ParamBuffer<Cols> params;
      params.resize(P, n);
      if constexpr (StackStoreFits<Cols>) {
        if (L <= MaxStackLayers) {
          StackStore<Cols> store(h, L * n);
          solve_block(z, r.value, context, store, params, Index(0), r.log_det);
          return;
        }
      }
      Work store(h, L * n);
      solve_block(z, r.value, context, store, params, Index(0), r.log_det);
    } else {
      const Index block = std::min(n, Made::block_columns(L * h + P, SolveBlockBytes));
      Work store(h, L * block);
      Work params(P, block);
      for (Index j = 0; j < n; j += block) {
        const Index m = std::min(block, n - j);
        auto sb = store.leftCols(L * m);
        auto pb = params.leftCols(m);
        auto xb = r.value.middleCols(j, m);
        if (context != nullptr) {
          const typename Made::template ContextRef<Dynamic> cb(context->middleCols(j, m));
          solve_block(z, xb, &cb, sb, pb, j, r.log_det);
        } else {
          solve_block(z, xb, context, sb, pb, j, r.log_det);
        }
      }
    }
  }

  /// The D passes over the columns first … first + x.cols() − 1 (x and the context are those
  /// columns; z and log_det the whole batch).
  template <typename ZR, typename XB, typename CB, typename Store, typename Params, typename LD>
  void solve_block(const ZR& z, XB&& x, const CB* c, Store& store, Params& params, Index first,
                   LD& log_det) const {
    const Index m = x.cols();
    const Index D = made_.dim();
    const Index L = made_.hidden_layers();
    const Index cd = made_.context_dim();
    const Work& grouped_out = made_.grouped_output_weight();
    const Vector<Scalar>& out_bias = made_.bias(L);
    for (Index k = 1; k <= D; ++k) {
      const std::size_t g = std::size_t(k - 1);  // the degree that becomes computable
      const Index i = made_.order()(k - 1);
      for (Index l = 0; l < L; ++l) {
        const auto& start = made_.degree_starts(l);
        const Index s = start[g];
        const Index e = start[g + 1];
        if (e == s) continue;
        auto rows = store.block(s, l * m, e - s, m);
        if (l == 0) {
          rows.noalias() = made_.masked_weight(0).middleRows(s, e - s) * Made::dynamic_rows(x);
          if (c != nullptr && cd > 0)
            rows.noalias() += made_.context_weight().middleRows(s, e - s) * (*c);
        } else {
          const Index K = made_.degree_starts(l - 1)[g + 1];  // units below of degree ≤ k−1
          if (K > 0) {
            rows.noalias() =
                made_.masked_weight(l).block(s, 0, e - s, K) * store.block(0, (l - 1) * m, K, m);
          } else {
            rows.setZero();
          }
        }
        rows.colwise() += made_.bias(l).segment(s, e - s);
        Activation::apply(rows);
      }
      // The P outputs of dimension i: one product with the rows grouped by dimension.
      const Index r0 = i * P;
      if (L == 0) {
        params.noalias() = grouped_out.middleRows(r0, P) * Made::dynamic_rows(x);
        if (c != nullptr && cd > 0)
          params.noalias() += made_.grouped_context_weight().middleRows(r0, P) * (*c);
      } else {
        const Index K = made_.degree_starts(L - 1)[g + 1];  // units of degree < k
        if (K > 0) {
          params.noalias() = grouped_out.block(r0, 0, P, K) * store.block(0, (L - 1) * m, K, m);
        } else {
          params.setZero();
        }
      }
      for (Index p = 0; p < P; ++p) params.row(p).array() += out_bias(p * D + i);
      auto x_row = x.row(i);
      transformer_.inverse(z.row(i).middleCols(first, m), typename Made::ConstBlockRef(params),
                           RowRef(x_row), log_det.middleCols(first, m));
    }
  }

  Made made_;
  Transformer transformer_;
};

/// @brief Masked autoregressive flow layer (Papamakarios et al. 2017): density in one pass
/// (forward), sampling in Dim passes (inverse). See MaskedAutoregressive.
/// @tparam Scalar float or double. @tparam Dim fixed or Eigen::Dynamic. @tparam Hidden MADE width.
/// @tparam Activation MADE activation. @tparam ContextDim 0, fixed, or Eigen::Dynamic.
template <typename Scalar, int Dim = Dynamic, int Hidden = Dynamic, typename Activation = nn::ReLU,
          int ContextDim = 0>
using MAF = MaskedAutoregressive<AffineTransformer<Scalar>, Dim, Hidden, Activation, ContextDim>;

/// @brief Inverse autoregressive flow layer (Kingma et al. 2016): a MAF layer used the other way
/// round, so sampling (its inverse = the MAF's forward) is one pass and has a vjp, and density
/// evaluation (its forward) takes Dim passes. Build it from a MAF layer:
/// `IAF<double, 4>{MAF<double, 4>(4, options)}`. The order applies to the latent dimensions:
/// sample xᵢ depends on z_j for j not after i.
template <typename Scalar, int Dim = Dynamic, int Hidden = Dynamic, typename Activation = nn::ReLU,
          int ContextDim = 0>
using IAF = Inverted<MAF<Scalar, Dim, Hidden, Activation, ContextDim>>;

/// @brief Autoregressive neural spline flow layer (Durkan et al. 2019): a MADE conditioner and a
/// rational-quadratic spline of `Bins` bins on [−5, 5], the identity outside (density in one pass,
/// sampling in Dim passes; Inverted<SplineAutoregressive<...>> is its inverse-autoregressive form).
template <typename Scalar, int Dim = Dynamic, int Hidden = Dynamic, int Bins = 8,
          typename Activation = nn::ReLU, int ContextDim = 0>
using SplineAutoregressive = MaskedAutoregressive<RationalQuadraticSpline<Scalar, Bins>, Dim,
                                                  Hidden, Activation, ContextDim>;

}  // namespace nflow
