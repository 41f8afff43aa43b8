#pragma once
/// @file
/// @brief MaskedAutoregressive<Transformer, ...>: the autoregressive structure (a MADE conditioner,
/// or any nn::Conditioner that states its connectivity, and an elementwise transformer) with its
/// autoregressive solve, and the user-facing aliases MAF (masked autoregressive flow) and IAF
/// (inverse autoregressive flow).

#include <Eigen/Core>
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "nflow/bijectors/transformers/affine.hpp"
#include "nflow/bijectors/transformers/rational_quadratic.hpp"
#include "nflow/core/bijector_base.hpp"
#include "nflow/core/buffers.hpp"
#include "nflow/core/concepts.hpp"
#include "nflow/core/errors.hpp"
#include "nflow/core/inverted.hpp"
#include "nflow/core/parameters.hpp"
#include "nflow/core/scratch.hpp"
#include "nflow/core/types.hpp"
#include "nflow/nn/activations.hpp"
#include "nflow/nn/conditioner.hpp"
#include "nflow/nn/made.hpp"
#include "nflow/nn/masks.hpp"

namespace nflow {

/// @brief How to build the MADE conditioner of an autoregressive layer. Aggregate; designated
/// initialisers only (a positional list is a compile error), e.g.
/// `{.hidden_width = 128, .seed = 3, .order = nn::InputOrder::Reversed}`. The first four fields
/// are ConditionerOptions' (same names, meanings and order); the MADE's own follow.
struct AutoregressiveOptions {
  /// hidden_width, hidden_layers (>= 0; 0 makes μ and α affine in the earlier inputs),
  /// context_dim, seed: see ConditionerOptions. The seed seeds std::mt19937_64, which draws the
  /// random order (if any), then the seed of the MADE (its random degrees, if any, and its
  /// weights); the same seed gives the same layer on every compiler. The default seed is 0 for
  /// every layer, so layers built without one start alike: give each layer its own.
  NFLOW_CONDITIONER_OPTIONS_FIELDS;
  /// The autoregressive order: Natural, Reversed or Random (seeded).
  nn::InputOrder order = nn::InputOrder::Natural;
  /// If non-empty, a permutation of 0 … D−1 that overrides `order`.
  Eigen::VectorXi custom_order = Eigen::VectorXi();
  /// Sequential or Random (seeded) hidden degrees.
  nn::HiddenDegrees hidden_degrees = nn::HiddenDegrees::Sequential;
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
/// **Another conditioner** (an imported library's masked network, say): any
/// nn::ConnectedConditioner θ = net(x, c) with in_dim D and out_dim P·D, its rows blocked as the
/// transformer contract says (row p·D + i is parameter p of feature i). Feature i depends on
/// feature j when any of its P rows connects to input j; that graph must have no self-loop and
/// no cycle (ParameterError naming 'conditioner' otherwise). With `passes` = 1 + the length of
/// the longest dependency chain (1 when no feature depends on another):
///
///     forward:  θ = net(x, c),  zᵢ = τ(xᵢ; θᵢ)                                   (one pass)
///     inverse:  x⁽⁰⁾ = 0;  for k = 1 … passes: x⁽ᵏ⁾ = τ⁻¹(z; net(x⁽ᵏ⁻¹⁾, c)),  log-det of the last
///
/// (nflows and zuko invert with D such passes). After pass k every feature whose longest chain
/// below it has length < k is exact, so x⁽ᵖᵃˢˢᵉˢ⁾ = x exactly. Each pass runs the whole network:
/// the inverse costs `passes` forward passes. Parameters and buffers are the conditioner's,
/// prefixed "conditioner."; context_dim() is the conditioner's.
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
/// @tparam Conditioner_ the MADE that Hidden and Activation describe (the default: the fast
///   degree-grouped inverse), or any nn::ConnectedConditioner of the transformer's Scalar (then
///   Hidden and Activation mean nothing).
template <typename Transformer_, int Dim_ = Dynamic, int Hidden_ = Dynamic,
          typename Activation_ = nn::ReLU, int ContextDim_ = 0,
          typename Conditioner_ = nn::MADE<typename Transformer_::Scalar, Dim_, Hidden_,
                                           Activation_, Transformer_::ParamsPerDim>>
class MaskedAutoregressive
    : public BijectorBase<MaskedAutoregressive<Transformer_, Dim_, Hidden_, Activation_,
                                               ContextDim_, Conditioner_>> {
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
  using Conditioner = Conditioner_;
  /// True when the conditioner is the layer's MADE (built from AutoregressiveOptions, inverted by
  /// the degree-grouped solve); false for any other conditioner (inverted in passes()).
  static constexpr bool HasMade = std::is_same_v<Conditioner_, Made>;
  static_assert(HasMade || nn::ConnectedConditioner<Conditioner_>,
                "nflow::MaskedAutoregressive<..., Conditioner>: a Conditioner other than the "
                "layer's MADE must model nflow::nn::ConnectedConditioner (an nn::Conditioner with "
                "connectivity(); see nflow/nn/conditioner.hpp)");
  static_assert(std::is_same_v<typename Conditioner_::Scalar, Scalar>,
                "nflow::MaskedAutoregressive<..., Conditioner>: the Conditioner's Scalar must be "
                "the Transformer's");
  static constexpr int Dim = Dim_;
  static constexpr int Hidden = Hidden_;
  static constexpr int ContextDim = ContextDim_;
  static constexpr bool IsConstantLogDet = false;
  static constexpr Cost ForwardCost = Cost::OnePass;
  static constexpr Cost InverseCost = Cost::DimPasses;

  /// @brief A layer of dimension `dim` (equal to Dim when fixed).
  /// @throws nflow::ParameterError on an invalid size, order or context dimension.
  explicit MaskedAutoregressive(Index dim, const AutoregressiveOptions& options = {},
                                Transformer transformer = Transformer()) requires HasMade
      : net_(make_made(dim, options, params_per_dim(transformer))),
        transformer_(std::move(transformer)) {}

  /// @brief A layer of the compile-time dimension Dim.
  explicit MaskedAutoregressive(const AutoregressiveOptions& options = {},
                                Transformer transformer = Transformer()) requires(Dim_ != Dynamic &&
                                                                                  HasMade)
      : MaskedAutoregressive(Index(Dim_), options, std::move(transformer)) {}

  /// @brief A layer with a given conditioner (parameters as they are): in_dim() = D (equal to Dim
  /// when fixed), out_dim() = P·D, context_dim() equal to ContextDim when fixed, and, unless it is
  /// the layer's MADE, a connectivity() without self-loop or cycle (see the class comment), which
  /// fixes passes().
  /// @throws nflow::ParameterError naming 'conditioner' otherwise.
  explicit MaskedAutoregressive(Conditioner net, Transformer transformer = Transformer())
      : net_(checked_conditioner(std::move(net), params_per_dim(transformer))),
        transformer_(std::move(transformer)),
        passes_(count_passes(net_, params_per_dim(transformer_))) {}

  Index dim() const { return net_.in_dim(); }
  Index context_dim() const { return net_.context_dim(); }
  /// The generation order: dimension order(k) is the (k+1)-th to be generated.
  const Eigen::VectorXi& order() const requires HasMade { return net_.order(); }
  const Made& made() const requires HasMade { return net_; }
  const Conditioner& conditioner() const { return net_; }
  const Transformer& transformer() const { return transformer_; }
  /// Network evaluations of the inverse: the longest dependency chain + 1 for another
  /// conditioner; D for the MADE (whose solve evaluates each unit once over its D steps).
  Index passes() const {
    if constexpr (HasMade) {
      return dim();
    } else {
      return passes_;
    }
  }

  /// The parameters: those of the conditioner, prefixed "made." (the MADE) or "conditioner.".
  template <typename Self, typename F>
  static void parameters_impl(Self& self, F&& f) {
    self.net_.visit_parameters(detail::prefixed_visitor(Prefix, f));
  }
  /// The conditioner's buffers, prefixed likewise: for the MADE "made.order" and
  /// "made.hidden_degrees.<l>" (see nn::MADE). (Only when the conditioner has buffers.) A new
  /// value that changes another conditioner's connectivity is checked as the constructor does.
  template <typename F>
  void visit_buffers(F&& f) const requires nn::BufferedConditioner<Conditioner> {
    net_.visit_buffers(detail::prefixed_visitor(Prefix, f));
  }
  template <typename F>
  void visit_buffers(F&& f) requires nn::BufferedConditioner<Conditioner> {
    net_.visit_buffers(detail::prefixed_visitor(Prefix, f));
    if constexpr (!HasMade) passes_ = count_passes(net_, params_per_dim(transformer_));
  }

  // ---- hooks for BijectorBase ------------------------------------------------------------------
  // The hooks are defined after the class (not inline), so that a program linking
  // nflow::instances (NFLOW_PRECOMPILED_INSTANCES) can take the common layers' instances from
  // the library instead of compiling them (nflow/bijectors/masked_autoregressive_instances.hpp).
  template <typename X, typename C>
  ValueAndLogDet<Scalar, Dim, X::ColsAtCompileTime> forward_impl(const X& x, const C& ctx) const;

  template <typename Z, typename C>
  ValueAndLogDet<Scalar, Dim, Z::ColsAtCompileTime> inverse_impl(const Z& z, const C& ctx) const;

  /// ∂L/∂x through both paths: the transformer's direct ∂z/∂x and the conditioner's θ(x) (the
  /// MADE block by block; another conditioner through its tape); ∂L/∂c (added into gc when not
  /// null) through the conditioner.
  template <typename X, typename GV, typename GL, typename C>
  Batch<Scalar, Dim, X::ColsAtCompileTime> forward_vjp_impl(
      const X& x, const GV& gv, const GL& gl, Eigen::Ref<Vector<Scalar>> gp, const C& ctx,
      ContextGradient<Scalar>* gc = nullptr) const;

  /// What forward_recorded() keeps for forward_vjp_recorded(): the conditioner's tape (the
  /// MADE's holds its input and activations), the input x when the conditioner's tape need not
  /// hold it, and the conditioner's outputs (the transformer's parameters), for the whole batch.
  struct Tape {
    typename Conditioner::Tape net;
    Batch<Scalar, Dim, Dynamic> input;  ///< x (another conditioner; the MADE's tape holds it)
    ParameterMatrix<Scalar> params;     ///< the conditioner's outputs, out × N
    /// The transformer's own (RecordingTransformer: the spline's knots), else empty.
    [[no_unique_address]] typename detail::TransformerTapeOf<Transformer>::type transformer;
    /// The number of samples recorded.
    Index cols() const { return params.cols(); }
    /// The recorded x.
    const auto& x() const {
      if constexpr (HasMade) {
        return net.input;
      } else {
        return input;
      }
    }
  };

  template <typename C>
  ValueAndLogDet<Scalar, Dim, Dynamic> record_forward_impl(const Batch<Scalar, Dim, Dynamic>& x,
                                                           const C& ctx, Tape& tape) const;

  template <typename GV, typename GL, typename C>
  Batch<Scalar, Dim, Dynamic> taped_vjp_impl(const Tape& tape, const GV& gv, const GL& gl,
                                             Eigen::Ref<Vector<Scalar>> gp, const C& ctx,
                                             ContextGradient<Scalar>* gc = nullptr) const;

 private:
  static constexpr const char* Prefix = HasMade ? "made." : "conditioner.";

  static Conditioner checked_conditioner(Conditioner net, Index P) {
    const Index d = net.in_dim();
    std::string problem;
    if (d <= 0 || (Dim_ != Dynamic && d != Dim_)) {
      problem = "has in_dim " + std::to_string(d) + " (it must be positive, and equal Dim when " +
                "fixed)";
    } else if (net.out_dim() != P * d) {
      problem = "has out_dim " + std::to_string(net.out_dim()) + "; the transformer needs " +
                std::to_string(P) + " per feature, " + std::to_string(P * d);
    } else if (ContextDim_ != Dynamic && net.context_dim() != ContextDim_) {
      problem = "has context_dim " + std::to_string(net.context_dim()) +
                " but the layer's ContextDim is " + std::to_string(ContextDim_);
    }
    if (!problem.empty()) {
      throw ParameterError("nflow::MaskedAutoregressive: parameter 'conditioner' " + problem);
    }
    return net;
  }

  /// 1 + the longest chain of the feature dependency graph (another conditioner than the MADE) of `net` (feature i depends on j when
  /// a row p·D + i connects to input j), by longest-path layering in topological order.
  static Index count_passes(const Conditioner& net, Index P) {
    if constexpr (HasMade) {
      (void)net;
      (void)P;
      return 0;  // unused: passes() is D
    } else {
      return count_dependency_passes(net, P);
    }
  }
  static Index count_dependency_passes(const Conditioner& net, Index P) {
    const Index d = net.in_dim();
    const nn::Connectivity c = net.connectivity();
    const auto fail = [](const std::string& problem) {
      return ParameterError("nflow::MaskedAutoregressive: parameter 'conditioner' " + problem);
    };
    if (c.rows() != P * d || c.cols() != d) {
      throw fail(
          "has a connectivity() of " + std::to_string(c.rows()) + " x " + std::to_string(c.cols()) +
          "; expected out_dim x in_dim = " + std::to_string(P * d) + " x " + std::to_string(d));
    }
    nn::Connectivity depends = nn::Connectivity::Constant(d, d, false);  // (i, j): i needs j
    for (Index p = 0; p < P; ++p) depends = depends.array() || c.middleRows(p * d, d).array();
    std::vector<Index> waiting(std::size_t(d), 0);  // unresolved dependencies of each feature
    std::vector<Index> depth(std::size_t(d), 0);    // its longest chain
    std::vector<Index> ready;
    for (Index i = 0; i < d; ++i) {
      if (depends(i, i)) {
        throw fail("is not autoregressive: feature " + std::to_string(i) + " depends on itself");
      }
      waiting[std::size_t(i)] = depends.row(i).count();
      if (waiting[std::size_t(i)] == 0) ready.push_back(i);
    }
    Index longest = 0;
    for (std::size_t k = 0; k < ready.size(); ++k) {  // `ready` grows as features resolve
      const Index j = ready[k];
      longest = std::max(longest, depth[std::size_t(j)]);
      for (Index i = 0; i < d; ++i) {
        if (!depends(i, j)) continue;
        depth[std::size_t(i)] = std::max(depth[std::size_t(i)], depth[std::size_t(j)] + 1);
        if (--waiting[std::size_t(i)] == 0) ready.push_back(i);
      }
    }
    if (Index(ready.size()) != d) {
      for (Index i = 0; i < d; ++i) {
        if (waiting[std::size_t(i)] > 0) {
          throw fail("is not autoregressive: feature " + std::to_string(i) +
                     " lies on or after a dependency cycle");
        }
      }
    }
    return longest + 1;
  }

  static Made make_made(Index dim, const AutoregressiveOptions& o, Index params_per_dim) {
    if (dim <= 0 || (Dim_ != Dynamic && dim != Dim_)) {
      throw ParameterError(
          "nflow::MaskedAutoregressive: dim must be positive (and equal Dim when fixed), got " +
          std::to_string(dim));
    }
    const char* who = "nflow::MaskedAutoregressive";
    const Index cd = detail::resolve_context_dim<ContextDim_>(who, o.context_dim);
    const Index width = detail::resolve_hidden_width<Hidden_>(who, o.hidden_width);
    std::mt19937_64 gen(o.seed);
    Eigen::VectorXi order =
        o.custom_order.size() > 0 ? o.custom_order : nn::make_order(o.order, dim, gen);
    return Made(dim, width, o.hidden_layers, cd, std::move(order), o.hidden_degrees,
                random_bits64(gen), params_per_dim);
  }

  // ---- the Dim-pass autoregressive solve (MAF's inverse, IAF's forward) ----------------------

  using Work = ParameterMatrix<Scalar>;
  /// Writable view of the columns first … first+m−1 of one row of a D × N matrix.
  using RowRef = Eigen::Ref<Eigen::Matrix<Scalar, 1, Dynamic>, 0, Eigen::InnerStride<>>;
  /// The transformer's parameters per feature when fixed (else Dynamic).
  static constexpr int FixedP = Transformer::ParamsPerDim;
  static constexpr std::size_t StackBytes = 64 * 1024;
  static constexpr std::size_t SolveBlockBytes = 512 * 1024;
  static constexpr Index MaxStackLayers = 8;
  static constexpr bool small_fixed(int rows, int cols) {
    return rows != Dynamic && cols != Dynamic &&
           std::size_t(rows) * std::size_t(cols) * sizeof(Scalar) <= StackBytes;
  }
  template <int Cols>
  using ParamBuffer =
      std::conditional_t<small_fixed(FixedP, Cols), Eigen::Matrix<Scalar, FixedP, Cols>, Work>;
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
    const Index h = net_.hidden_width();
    const Index L = net_.hidden_layers();
    const Index P = params_per_dim(transformer_);
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
      detail::ScratchMatrix<Scalar> store(h, L * block);
      detail::ScratchMatrix<Scalar> params(P, block);
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
    const Index D = net_.dim();
    const Index L = net_.hidden_layers();
    const Index cd = net_.context_dim();
    const Index P = params_per_dim(transformer_);
    const Work& grouped_out = net_.grouped_output_weight();
    const Vector<Scalar>& out_bias = net_.bias(L);
    for (Index k = 1; k <= D; ++k) {
      const std::size_t g = std::size_t(k - 1);  // the degree that becomes computable
      const Index i = net_.order()(k - 1);
      for (Index l = 0; l < L; ++l) {
        const auto& start = net_.degree_starts(l);
        const Index s = start[g];
        const Index e = start[g + 1];
        if (e == s) continue;
        auto rows = store.block(s, l * m, e - s, m);
        if (l == 0) {
          rows.noalias() = net_.masked_weight(0).middleRows(s, e - s) * Made::dynamic_rows(x);
          if (c != nullptr && cd > 0)
            rows.noalias() += net_.context_weight().middleRows(s, e - s) * (*c);
        } else {
          const Index K = net_.degree_starts(l - 1)[g + 1];  // units below of degree ≤ k−1
          if (K > 0) {
            rows.noalias() =
                net_.masked_weight(l).block(s, 0, e - s, K) * store.block(0, (l - 1) * m, K, m);
          } else {
            rows.setZero();
          }
        }
        rows.colwise() += net_.bias(l).segment(s, e - s);
        Activation::apply(rows);
      }
      // The P outputs of dimension i: one product with the rows grouped by dimension.
      const Index r0 = i * P;
      if (L == 0) {
        params.noalias() = grouped_out.middleRows(r0, P) * Made::dynamic_rows(x);
        if (c != nullptr && cd > 0)
          params.noalias() += net_.grouped_context_weight().middleRows(r0, P) * (*c);
      } else {
        const Index K = net_.degree_starts(L - 1)[g + 1];  // units of degree < k
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

  Conditioner net_;
  Transformer transformer_;
  Index passes_ = 0;  ///< another conditioner's passes (see passes())
};

// ---- MaskedAutoregressive's hooks (declared in the class) --------------------------------

template <typename Transformer_, int Dim_, int Hidden_, typename Activation_, int ContextDim_,
          typename Conditioner_>
template <typename X, typename C>
auto MaskedAutoregressive<Transformer_, Dim_, Hidden_, Activation_, ContextDim_,
                          Conditioner_>::forward_impl(const X& x, const C& ctx) const
    -> ValueAndLogDet<Scalar, Dim, X::ColsAtCompileTime> {
  detail::ResultFor<Scalar, Dim, X> r;
  r.value.resize(x.rows(), x.cols());
  r.log_det.setZero(1, x.cols());
  if constexpr (HasMade) {
    constexpr int Cols = X::ColsAtCompileTime;
    const typename Made::template InputRef<Cols> xr(x);
    net_.template forward_blocks<Cols>(
        xr, ctx, [&](Index first, const typename Made::ConstBlockRef& params) {
          const Index m = params.cols();
          transformer_.forward(xr.middleCols(first, m), params, r.value.middleCols(first, m),
                               r.log_det.middleCols(first, m));
        });
  } else {
    transformer_.forward(x, net_.forward(x, ctx), r.value, r.log_det);
  }
  return r;
}

template <typename Transformer_, int Dim_, int Hidden_, typename Activation_, int ContextDim_,
          typename Conditioner_>
template <typename Z, typename C>
auto MaskedAutoregressive<Transformer_, Dim_, Hidden_, Activation_, ContextDim_,
                          Conditioner_>::inverse_impl(const Z& z, const C& ctx) const
    -> ValueAndLogDet<Scalar, Dim, Z::ColsAtCompileTime> {
  constexpr int Cols = Z::ColsAtCompileTime;
  ValueAndLogDet<Scalar, Dim, Cols> r;
  r.value.resize(z.rows(), z.cols());
  r.log_det.setZero(1, z.cols());
  if constexpr (HasMade) {
    const typename Made::template InputRef<Cols> zr(z);
    Made::template with_context<Cols>(ctx, [&](const typename Made::template ContextRef<Cols>* c) {
      solve_autoregressive<Cols>(zr, c, r);
    });
  } else {
    r.value.setZero();
    for (Index k = 0; k < passes_; ++k) {
      const auto params = net_.forward(r.value, ctx);
      r.log_det.setZero();
      transformer_.inverse(z, params, r.value, r.log_det);
    }
  }
  return r;
}

template <typename Transformer_, int Dim_, int Hidden_, typename Activation_, int ContextDim_,
          typename Conditioner_>
template <typename X, typename GV, typename GL, typename C>
auto MaskedAutoregressive<Transformer_, Dim_, Hidden_, Activation_, ContextDim_,
                          Conditioner_>::forward_vjp_impl(const X& x, const GV& gv, const GL& gl,
                                                          Eigen::Ref<Vector<Scalar>> gp,
                                                          const C& ctx,
                                                          ContextGradient<Scalar>* gc) const
    -> Batch<Scalar, Dim, X::ColsAtCompileTime> {
  detail::BatchFor<Scalar, Dim, X> gx;
  if constexpr (HasMade) {
    constexpr int Cols = X::ColsAtCompileTime;
    const typename Made::template InputRef<Cols> xr(x);
    gx.resize(x.rows(), x.cols());
    net_.template backward_blocks<Cols>(
        xr, ctx,
        [&](Index first, const typename Made::ConstBlockRef& params,
            typename Made::BlockRef grad_params) {
          const Index m = params.cols();
          transformer_.forward_backward(xr.middleCols(first, m), params, gv.middleCols(first, m),
                                        gl.middleCols(first, m), gx.middleCols(first, m),
                                        grad_params);
        },
        gp, gx, gc);
  } else {
    Tape tape;
    record_forward_impl(detail::as_batch<Scalar, Dim>(x), ctx, tape);
    gx = taped_vjp_impl(tape, gv, gl, gp, ctx, gc);
  }
  return gx;
}

template <typename Transformer_, int Dim_, int Hidden_, typename Activation_, int ContextDim_,
          typename Conditioner_>
template <typename C>
auto MaskedAutoregressive<Transformer_, Dim_, Hidden_, Activation_, ContextDim_,
                          Conditioner_>::record_forward_impl(const Batch<Scalar, Dim, Dynamic>& x,
                                                             const C& ctx, Tape& tape) const
    -> ValueAndLogDet<Scalar, Dim, Dynamic> {
  ValueAndLogDet<Scalar, Dim, Dynamic> r;
  r.value.resize(x.rows(), x.cols());
  r.log_det.setZero(1, x.cols());
  if constexpr (!HasMade) tape.input = x;
  tape.params = net_.forward_recorded(x, tape.net, ctx);
  detail::forward_recorded(transformer_, x, tape.params, r.value, r.log_det, tape.transformer);
  return r;
}

template <typename Transformer_, int Dim_, int Hidden_, typename Activation_, int ContextDim_,
          typename Conditioner_>
template <typename GV, typename GL, typename C>
auto MaskedAutoregressive<Transformer_, Dim_, Hidden_, Activation_, ContextDim_,
                          Conditioner_>::taped_vjp_impl(const Tape& tape, const GV& gv,
                                                        const GL& gl, Eigen::Ref<Vector<Scalar>> gp,
                                                        const C& ctx,
                                                        ContextGradient<Scalar>* gc) const
    -> Batch<Scalar, Dim, Dynamic> {
  Batch<Scalar, Dim, Dynamic> gx(dim(), tape.cols());
  ParameterMatrix<Scalar> grad_params(tape.params.rows(), tape.cols());
  detail::forward_backward_recorded(transformer_, tape.transformer, tape.x(), tape.params, gv, gl,
                                    gx, grad_params);
  gx += nn::backward_recorded_into(net_, tape.net, grad_params, gp, ctx, gc);
  return gx;
}

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

// The compiled instances of the common layers (used when NFLOW_PRECOMPILED_INSTANCES is set).
#include "nflow/bijectors/masked_autoregressive_instances.hpp"
