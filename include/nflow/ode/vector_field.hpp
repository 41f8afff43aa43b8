#pragma once
/// @file
/// @brief nflow::ode::MLPVectorField, the time-dependent vector field f(z, t, c) of a continuous
/// flow: an nn::MLP with its divergence tr(∂f/∂z) (exact, or Hutchinson's estimate) and the
/// reverse-mode gradient of both, second derivatives included.

#include <Eigen/Core>
#include <array>
#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "nflow/core/errors.hpp"
#include "nflow/core/random.hpp"
#include "nflow/core/types.hpp"
#include "nflow/math/functions.hpp"
#include "nflow/nn/activations.hpp"
#include "nflow/nn/mlp.hpp"

namespace nflow::ode {

/// How the divergence tr(∂f/∂z) is computed.
enum class TraceEstimator {
  /// Σᵢ (∂f/∂z)ᵢᵢ: exact; in closed form with one or two hidden layers (value and gradient),
  /// else from Dim forward-mode passes (Dim× a forward pass)
  Exact,
  HutchinsonRademacher,  ///< εᵀ(∂f/∂z)ε with ε ∈ {−1, 1}^Dim: unbiased, one forward-mode pass
  HutchinsonGaussian,  ///< εᵀ(∂f/∂z)ε with ε ~ N(0, I): unbiased, larger variance
};

/// @brief Draws a Dim × N matrix of Hutchinson probes (column j is sample j's probe) from
/// std::mt19937_64(seed), in storage order, so column j's probe does not depend on N.
/// Rademacher: ±1 from uniform_open01 < 0.5; Gaussian: nflow::fill_standard_normal.
template <typename Scalar>
Eigen::Matrix<Scalar, Dynamic, Dynamic> hutchinson_probes(Index dim, Index n, TraceEstimator kind,
                                                          std::uint64_t seed) {
  Eigen::Matrix<Scalar, Dynamic, Dynamic> p(dim, n);
  std::mt19937_64 gen(seed);
  if (kind == TraceEstimator::HutchinsonGaussian) {
    fill_standard_normal(p, gen);
  } else {
    for (Index i = 0; i < p.size(); ++i) p(i) = uniform_open01(gen) < 0.5 ? Scalar(-1) : Scalar(1);
  }
  return p;
}

/// How MLPVectorField::vjp differentiates the exact trace.
enum class TraceGradient {
  /// the closed form (one or two hidden layers: a few H × H products per batch), else tangents
  Auto,
  /// reverse mode over the Dim tangent passes, whatever the depth (the reference)
  Tangents,
};

namespace detail {

/// f′(a) and f″(a) of an activation, from the pre-activation a and the output y = f(a).
/// Supported: Identity, ReLU (f″ = 0 almost everywhere), Tanh, SiLU, ELU.
template <typename Act>
struct SecondOrder {
  static_assert(std::is_same_v<Act, nn::Tanh> || std::is_same_v<Act, nn::SiLU> ||
                    std::is_same_v<Act, nn::ELU> || std::is_same_v<Act, nn::ReLU> ||
                    std::is_same_v<Act, nn::Identity>,
                "nflow::ode::MLPVectorField<..., Activation>: the activation must be nn::Tanh, "
                "nn::SiLU, nn::ELU, "
                "nn::ReLU or nn::Identity (its second derivative is needed for the gradient of the "
                "divergence)");
  /// f′(a) only (the one-point value path needs no f″).
  template <typename A, typename Y, typename D1>
  static void first(const A& a, const Y& y, D1& d1) {
    using S = typename std::remove_cvref_t<A>::Scalar;
    if constexpr (std::is_same_v<Act, nn::Tanh>) {
      d1 = S(1) - y.square();
    } else if constexpr (std::is_same_v<Act, nn::SiLU>) {
      const auto s = nflow::sigmoid(a).eval();
      d1 = s * (S(1) + a * (S(1) - s));
    } else if constexpr (std::is_same_v<Act, nn::ELU>) {
      d1 = (y > S(0)).select(S(1), y + S(1));
    } else if constexpr (std::is_same_v<Act, nn::ReLU>) {
      d1 = (a > S(0)).select(S(1), a * S(0));
    } else {
      d1 = a * S(0) + S(1);
    }
  }
  template <typename A, typename Y, typename D1, typename D2>
  static void eval(const A& a, const Y& y, D1& d1, D2& d2) {
    using S = typename std::remove_cvref_t<A>::Scalar;
    if constexpr (std::is_same_v<Act, nn::Tanh>) {
      d1 = S(1) - y.square();
      d2 = S(-2) * y * d1;
    } else if constexpr (std::is_same_v<Act, nn::SiLU>) {
      const auto s = nflow::sigmoid(a).eval();
      d1 = s * (S(1) + a * (S(1) - s));
      d2 = s * (S(1) - s) * (S(2) + a * (S(1) - S(2) * s));
    } else if constexpr (std::is_same_v<Act, nn::ELU>) {
      // y > 0: f′ = 1, f″ = 0; y ≤ 0: f′ = f″ = e^a = y + 1.
      d2 = (y > S(0)).select(S(0), y + S(1));
      d1 = (y > S(0)).select(S(1), y + S(1));
    } else if constexpr (std::is_same_v<Act, nn::ReLU>) {
      d1 = (a > S(0)).select(S(1), a * S(0));  // NaN stays NaN
      d2 = a * S(0);
    } else {
      d1 = a * S(0) + S(1);
      d2 = a * S(0);
    }
  }
};

}  // namespace detail

/// @brief The vector field f(z, t, c) = MLP(z; [t; c]) of a continuous flow, with its
/// divergence and their gradients.
///
/// The network is an nn::MLP with input z (Dim) and context [t; c] (1 + context_dim rows: the
/// time first, then the user's context), so its first layer reads [z; t; c] with weight
/// [W₀ C₀] (W₀ = "layers.0.weight" over z, C₀ = "layers.0.context_weight" over [t; c]).
///
/// Divergence: with J = ∂f/∂z = W_L·D_{L−1}·W_{L−1}⋯D₀·W₀ (Dₖ = diag f′(aₖ)), forward-mode
/// tangents ȧ₀ = W₀v, ḣₖ = f′(aₖ) ⊙ ȧₖ, ȧₖ₊₁ = Wₖ₊₁ḣₖ give Jv = W_L ḣ_{L−1} for a whole batch in
/// GEMMs. Exact: tr J = Σᵢ eᵢᵀ J eᵢ (Dim tangent passes). Hutchinson: εᵀJε, one pass per probe.
///
/// The exact trace with one or two hidden layers: in closed form (trace_matrix()), its gradient
/// differentiated by hand (see vjp). One point with fixed Dim and Hidden: prepare_point() and
/// point_value_and_divergence() on fixed-size vectors, no heap allocation.
///
/// Gradient of the divergence otherwise (`vjp`): reverse mode over the tangent computation; besides the
/// first-order terms it needs f″(aₖ) ⊙ ȧₖ ⊙ ∂L/∂ḣₖ, which enters the ordinary backward pass as a
/// source at each hidden layer. Activations: see detail::SecondOrder (Tanh, SiLU, ELU, ReLU,
/// Identity).
///
/// Column independence: every output column depends on its own column only.
/// @tparam Scalar_ float or double. @tparam Dim_ the dimension, or Dynamic.
/// @tparam Hidden_ the hidden width, or Dynamic. @tparam Activation_ an nn activation.
template <typename Scalar_, int Dim_ = Dynamic, int Hidden_ = Dynamic,
          typename Activation_ = nn::Tanh>
class MLPVectorField {
 public:
  using Scalar = Scalar_;
  using Activation = Activation_;
  static constexpr int Dim = Dim_;
  using Network = nn::MLP<Scalar, Dim_, Dim_, Hidden_, Activation_>;
  using Matrix = Eigen::Matrix<Scalar, Dynamic, Dynamic>;
  using Row = Eigen::Matrix<Scalar, 1, Dynamic>;

  /// @param dim dimension of z; @param hidden_width, hidden_layers the MLP's sizes;
  /// @param context_dim rows of the user's context (0: none); @param seed initialisation;
  /// @param zero_last_layer start with f ≡ 0 (the flow is then the identity).
  MLPVectorField(Index dim, Index hidden_width, Index hidden_layers, Index context_dim,
                 std::uint64_t seed, bool zero_last_layer = false)
      : net_(dim, dim, hidden_width, hidden_layers, context_dim + 1), context_dim_(context_dim) {
    net_.initialize(seed, zero_last_layer);
  }

  Index dim() const { return net_.in_dim(); }
  Index context_dim() const { return context_dim_; }
  const Network& network() const { return net_; }
  Network& network() { return net_; }

  Index parameter_count() const { return net_.parameter_count(); }
  template <typename F>
  void visit_parameters(F&& f) {
    net_.visit_parameters(f);
  }
  template <typename F>
  void visit_parameters(F&& f) const {
    net_.visit_parameters(f);
  }

  /// [t; c], (1 + context_dim) × n; `c` may be empty (0 rows) when context_dim() = 0.
  Matrix time_context(Scalar t, const Matrix& c, Index n) const {
    Matrix tc(1 + context_dim_, n);
    tc.row(0).setConstant(t);
    if (context_dim_ > 0) tc.bottomRows(context_dim_) = c;
    return tc;
  }

  /// f(z, t, c) for a batch z (Dim × n).
  Matrix value(Scalar t, const Matrix& z, const Matrix& c) const {
    return net_.forward(z, time_context(t, c, z.cols()));
  }

  /// [t_j; c_j] per column, for per-sample times `t` (1 × n), as flow matching uses.
  Matrix time_context(const Row& t, const Matrix& c) const {
    Matrix tc(1 + context_dim_, t.cols());
    tc.row(0) = t;
    if (context_dim_ > 0) tc.bottomRows(context_dim_) = c;
    return tc;
  }

  /// f(z_j, t_j, c_j) with one time per column (t is 1 × n).
  Matrix value(const Row& t, const Matrix& z, const Matrix& c) const {
    return net_.forward(z, time_context(t, c));
  }

  /// Reverse mode of value(t, z, c) (per-column times) through the MLP's own backward pass:
  /// returns ∂L/∂z and ADDS ∂L/∂θ into `gp`, given gf = ∂L/∂f.
  Matrix value_backward(const Row& t, const Matrix& z, const Matrix& c, const Matrix& gf,
                        Eigen::Ref<Vector<Scalar>> gp) const {
    return net_.backward(z, gf, gp, time_context(t, c));
  }

  /// The closed form of the exact trace, for networks with one or two hidden layers (else an
  /// empty matrix). Two: J = W₂D₁W₁D₀W₀, so tr J = Σⱼₖ D₁ⱼ W₁ⱼₖ D₀ₖ (W₀W₂)ₖⱼ = d₁ᵀ·C·d₀ with
  /// C = W₁ ∘ (W₀W₂)ᵀ (H × H) and dₖ = f′(aₖ). One: tr J = diag(W₀W₁)ᵀ·d₀ (C is that H × 1
  /// diagonal). C depends on the weights only: compute it once per solve and pass it to
  /// value_and_divergence, which then needs one H × H product per sample instead of Dim tangent
  /// passes.
  Matrix trace_matrix() const {
    if (net_.hidden_layers() == 2) {
      return net_.weight(1).cwiseProduct((net_.weight(0) * net_.weight(2)).transpose());
    }
    if (net_.hidden_layers() == 1) {
      return (net_.weight(0).array() * net_.weight(1).transpose().array()).rowwise().sum().matrix();
    }
    return Matrix();
  }

  /// f and its divergence: exact when `probes` is null, else Hutchinson's εᵀJε with ε = the
  /// probe column of each sample. The exact trace uses `trace` (from trace_matrix(), same
  /// weights) in closed form when it is given and not empty, else Dim tangent passes.
  void value_and_divergence(Scalar t, const Matrix& z, const Matrix& c, const Matrix* probes,
                            Matrix& f, Row& div, const Matrix* trace = nullptr) const {
    const Matrix tc = time_context(t, c, z.cols());
    Forward fw;
    forward_pass(z, tc, fw);
    f = fw.out;
    div.setZero(1, z.cols());
    Matrix tangent;
    Matrix tmp;
    const Index d = dim();
    if (probes == nullptr && trace != nullptr && trace->size() > 0) {
      if (net_.hidden_layers() == 2) {
        tmp.noalias() = (*trace) * fw.d1[0];
        div = (tmp.array() * fw.d1[1].array()).colwise().sum();
      } else {
        div.noalias() = trace->transpose() * fw.d1[0];
      }
    } else if (probes == nullptr) {
      for (Index i = 0; i < d; ++i) {
        tangent = fw.d1[0].array().colwise() * net_.weight(0).col(i).array();
        propagate_tangent(fw, tangent, tmp);
        div.noalias() += net_.weight(last()).row(i) * tangent;
      }
    } else {
      tangent.noalias() = net_.weight(0) * (*probes);
      tangent.array() *= fw.d1[0].array();
      propagate_tangent(fw, tangent, tmp);
      tmp.noalias() = net_.weight(last()) * tangent;
      div = (tmp.array() * probes->array()).colwise().sum();
    }
  }

  // ---- one point on fixed-size vectors ------------------------------------------------------
  static constexpr int Hidden = Hidden_;
  /// Whether one point can be evaluated on fixed-size vectors without heap allocation
  /// (point_value_and_divergence): Dim and Hidden fixed, and an H × H matrix within Eigen's
  /// stack limit (H ≤ 128 in double, 181 in float; PointSetup holds two).
  static constexpr bool HasPointPath =
      Dim_ != Dynamic && Hidden_ != Dynamic &&
      (EIGEN_STACK_ALLOCATION_LIMIT == 0 || std::size_t(Hidden_ > 0 ? Hidden_ : 1) *
                                                    std::size_t(Hidden_ > 0 ? Hidden_ : 1) *
                                                    sizeof(Scalar) <=
                                                std::size_t(EIGEN_STACK_ALLOCATION_LIMIT));
  using PointVector = Eigen::Matrix<Scalar, Dim_, 1>;
  using HiddenVector = Eigen::Matrix<Scalar, Hidden_, 1>;
  /// Rows per panel of the one-point path: four SIMD packets (Eigen's packet size for Scalar:
  /// 32 doubles or 64 floats with AVX-512, 16 or 32 with AVX2), so the fused sweep keeps
  /// 2 × 4 independent accumulators in registers.
  static constexpr int PointPanelRows = 4 * Eigen::internal::packet_traits<Scalar>::size;
  /// What a one-point solve computes once from the weights and the context. Two hidden layers:
  /// W₁ and the closed-form trace matrix C = W₁ ∘ (W₀W₂)ᵀ (tr = d₁ᵀ C d₀), each H × H in row
  /// panels: the rows split into blocks of PointPanelRows (the last one shorter when
  /// PointPanelRows does not divide H), block after block, each block column by column (entry
  /// (j, k) of a block of `rows` rows from row r at r·H + k·rows + j − r), so the
  /// per-evaluation sweep reads both matrices front to back. One hidden layer: c = diag(W₀W₁)
  /// in trace's first H entries (tr = cᵀd₀), weight1 unused. And the first layer's constant
  /// part b₀ + C₀[0; c]. Lives on the caller's stack: 2 H² scalars (256 KB in double at
  /// H = 128; the copy of W₁ makes the sweep one sequential read, 1.5× faster than reading W₁
  /// in place).
  struct PointSetup {
    static constexpr std::size_t Size =
        std::size_t(Hidden_ > 0 ? Hidden_ : 1) * std::size_t(Hidden_ > 0 ? Hidden_ : 1);
    alignas(64) std::array<Scalar, Size> weight1;
    alignas(64) std::array<Scalar, Size> trace;
    HiddenVector base;
  };
  /// Fills `s` for a field with one or two hidden layers and no context.
  void prepare_point(PointSetup& s) const {
    const Matrix& w0 = net_.weight(0);
    const Matrix& w1 = net_.weight(1);
    if (net_.hidden_layers() == 2) {
      constexpr int Rows = point_block_rows();
      constexpr int Whole = Hidden_ / Rows * Rows;
      // W₂ᵀ (H × Dim) on the stack, so (W₀W₂)ₖⱼ = Σᵢ W₀ₖᵢ W₂ᵀⱼᵢ runs down contiguous columns.
      const Eigen::Matrix<Scalar, Hidden_, Dim_> w2t = net_.weight(2).transpose();
      for (int r = 0; r < Whole; r += Rows) prepare_point_panel<Rows>(r, w0, w1, w2t, s);
      if constexpr (Whole < Hidden_) prepare_point_panel<Hidden_ - Whole>(Whole, w0, w1, w2t, s);
    } else {
      Eigen::Map<HiddenVector>(s.trace.data()) =
          (w0.array() * w1.transpose().array()).rowwise().sum().matrix();
    }
    s.base = net_.bias(0);
  }
  /// The same with the context `c` (context_dim() × 1).
  template <typename C>
  void prepare_point(PointSetup& s, const Eigen::MatrixBase<C>& c) const {
    prepare_point(s);
    if (context_dim_ > 0) s.base.noalias() += net_.context_weight().rightCols(context_dim_) * c;
  }
  /// f(z, t, c) and the exact divergence of one point, from `s` (prepare_point): the MLP pass
  /// plus the closed-form trace, on fixed-size vectors, row panel by row panel with the
  /// activation applied to each panel while it is in registers. With two hidden layers it is
  /// point_value and point_traces for a chunk of one evaluation (a solve defers the traces of
  /// 16 evaluations instead: ContinuousFlow::run_point). Requires HasPointPath and one or two
  /// hidden layers.
  void point_value_and_divergence(const PointSetup& s, Scalar t, const PointVector& z,
                                  PointVector& f, Scalar& div) const {
    if (net_.hidden_layers() == 2) {
      PointChunk chunk;
      point_value(s, t, z, f, chunk, 0);
      point_traces(s, chunk, 1, &div);
    } else {
      HiddenVector h0;
      HiddenVector d0;
      point_input(net_.weight(0).data(), s.base, net_.context_weight().data(), t, z, h0, d0);
      point_output(net_.weight(1).data(), net_.bias(1), h0, f);
      div = Eigen::Map<const HiddenVector>(s.trace.data()).dot(d0);
    }
  }

  /// Evaluations per chunk of the deferred trace (point_value, point_traces).
  static constexpr int PointChunkSize = 16;
  /// The deferred trace's chunk: d₀ = f′(a₀) and d₁ = f′(a₁) of up to PointChunkSize
  /// evaluations, H × PointChunkSize each, column i for evaluation i. Lives on the caller's
  /// stack: 2 · 16 · H scalars (32 KB in double at H = 128).
  struct PointChunk {
    static constexpr std::size_t Size = std::size_t(Hidden_ > 0 ? Hidden_ : 1) * PointChunkSize;
    alignas(64) std::array<Scalar, Size> d0;
    alignas(64) std::array<Scalar, Size> d1;
  };
  /// f(z, t, c) of one point with two hidden layers, from `s` (prepare_point), the trace
  /// deferred: the MLP pass only (a sweep over W₁, not C), d₀ and d₁ stored in column `col` of
  /// `chunk`. The trace tr = d₁ᵀ C d₀ never feeds back into z, so point_traces computes it later
  /// for a whole chunk with one pass over C. Requires HasPointPath and two hidden layers.
  void point_value(const PointSetup& s, Scalar t, const PointVector& z, PointVector& f,
                   PointChunk& chunk, int col) const {
    HiddenVector h0;
    HiddenVector d0;
    point_input(net_.weight(0).data(), s.base, net_.context_weight().data(), t, z, h0, d0);
    Eigen::Map<HiddenVector>(chunk.d0.data() + std::size_t(col) * Hidden_) = d0;
    HiddenVector h1;
    point_hidden_value(s, net_.bias(1).data(), h0, h1,
                       chunk.d1.data() + std::size_t(col) * Hidden_);
    point_output(net_.weight(2).data(), net_.bias(2), h1, f);
  }
  /// The traces tr_i = d₁ᵢᵀ C d₀ᵢ of the first `count` evaluations in `chunk` (point_value) into
  /// tr[0 … count − 1]: U = C D₀ row panel by row panel (each panel of C read from L2 once per
  /// chunk, then from L1 for each block of columns), dotted with D₁ in registers. Clears the
  /// columns count … up to the next block of four.
  void point_traces(const PointSetup& s, PointChunk& chunk, int count, Scalar* tr) const {
    const int padded = (count + PointTraceBlock - 1) / PointTraceBlock * PointTraceBlock;
    for (int i = count; i < padded; ++i) {
      Eigen::Map<HiddenVector>(chunk.d0.data() + std::size_t(i) * Hidden_).setZero();
      Eigen::Map<HiddenVector>(chunk.d1.data() + std::size_t(i) * Hidden_).setZero();
    }
    Scalar acc[PointChunkSize] = {};
    constexpr int Rows = point_block_rows();
    constexpr int Whole = Hidden_ / Rows * Rows;
    for (int r = 0; r < Whole; r += Rows) point_trace_panel<Rows>(r, s, chunk, padded, acc);
    if constexpr (Whole < Hidden_) point_trace_panel<Hidden_ - Whole>(Whole, s, chunk, padded, acc);
    for (int i = 0; i < count; ++i) tr[i] = acc[i];
  }

  /// Reverse mode for L with ∂L/∂f = gf (Dim × n) and ∂L/∂div = gdiv (1 × n), the divergence
  /// computed as in value_and_divergence (exact, or with `probes`). Returns ∂L/∂z and ADDS ∂L/∂θ
  /// into `gp` (the network's flat layout). `gdiv` may be empty (no divergence term).
  ///
  /// The exact trace's gradient: with one or two hidden layers (and `how` = Auto) by hand from its
  /// closed form, tr = d₁ᵀ C d₀ with C = W₁ ∘ (W₀W₂)ᵀ (two layers) or tr = cᵀ d₀ with
  /// c = diag(W₀W₁) (one):
  ///   ∂tr/∂a₁ = f″(a₁) ⊙ C d₀,  ∂tr/∂a₀ = f″(a₀) ⊙ Cᵀ d₁   (sources of the primal backward pass),
  ///   G = Σₙ gdivₙ d₁ₙ d₀ₙᵀ,  ∂/∂W₁ += G ∘ (W₀W₂)ᵀ,  Γ = (G ∘ W₁)ᵀ,
  ///   ∂/∂W₀ += Γ W₂ᵀ,  ∂/∂W₂ += W₀ᵀ Γ
  /// (one layer: g = Σₙ gdivₙ d₀ₙ, ∂/∂W₀ += diag(g) W₁ᵀ, ∂/∂W₁ += W₀ᵀ diag(g)): three H × H
  /// products per batch besides the primal pass, whatever Dim. Otherwise (deeper MLPs,
  /// Hutchinson, or `how` = Tangents) reverse mode over the tangent passes.
  Matrix vjp(Scalar t, const Matrix& z, const Matrix& c, const Matrix& gf, const Row& gdiv,
             const Matrix* probes, Eigen::Ref<Vector<Scalar>> gp,
             TraceGradient how = TraceGradient::Auto) const {
    const Matrix tc = time_context(t, c, z.cols());
    const Index layers = net_.hidden_layers();
    const Index d = dim();
    Forward fw;
    forward_pass(z, tc, fw);
    Grads g = slices(gp);
    std::vector<Matrix> source(static_cast<std::size_t>(layers));
    for (auto& s : source) s.setZero(net_.hidden_width(), z.cols());

    const bool closed_form =
        probes == nullptr && how == TraceGradient::Auto && (layers == 1 || layers == 2);
    if (gdiv.size() > 0 && (gdiv.array() != Scalar(0)).any() && closed_form) {
      closed_form_trace_backward(fw, gdiv, g, source);
    } else if (gdiv.size() > 0 && (gdiv.array() != Scalar(0)).any()) {
      std::vector<Matrix> adot(static_cast<std::size_t>(layers));  // ȧₖ
      std::vector<Matrix> hdot(static_cast<std::size_t>(layers));  // ḣₖ
      Matrix hbar;
      Matrix abar;
      Matrix u;
      const Index directions = probes == nullptr ? d : 1;
      for (Index i = 0; i < directions; ++i) {
        // Tangent forward.
        if (probes == nullptr) {
          adot[0] = net_.weight(0).col(i).replicate(1, z.cols());
        } else {
          adot[0].noalias() = net_.weight(0) * (*probes);
        }
        hdot[0] = adot[0].cwiseProduct(fw.d1[0]);
        for (Index k = 1; k < layers; ++k) {
          adot[std::size_t(k)].noalias() = net_.weight(k) * hdot[std::size_t(k - 1)];
          hdot[std::size_t(k)] = adot[std::size_t(k)].cwiseProduct(fw.d1[std::size_t(k)]);
        }
        // Output: div contribution = uᵀ·W_L·ḣ_{L−1}, with u = eᵢ or ε, weighted by gdiv.
        if (probes == nullptr) {
          g.w[std::size_t(last())].row(i).noalias() +=
              gdiv * hdot[std::size_t(layers - 1)].transpose();
          hbar.noalias() = net_.weight(last()).row(i).transpose() * gdiv;
        } else {
          u = probes->array().rowwise() * gdiv.array();
          g.w[std::size_t(last())].noalias() += u * hdot[std::size_t(layers - 1)].transpose();
          hbar.noalias() = net_.weight(last()).transpose() * u;
        }
        // Tangent backward.
        for (Index k = layers - 1; k >= 0; --k) {
          const std::size_t ks = std::size_t(k);
          source[ks].array() += fw.d2[ks].array() * adot[ks].array() * hbar.array();
          abar = hbar.cwiseProduct(fw.d1[ks]);
          if (k > 0) {
            g.w[ks].noalias() += abar * hdot[ks - 1].transpose();
            hbar.noalias() = net_.weight(k).transpose() * abar;
          } else if (probes == nullptr) {
            g.w[0].col(i) += abar.rowwise().sum();
          } else {
            g.w[0].noalias() += abar * probes->transpose();
          }
        }
      }
    }

    // Primal backward with the second-order sources.
    Matrix hbar;
    Matrix abar;
    g.w[std::size_t(last())].noalias() += gf * fw.h[std::size_t(layers - 1)].transpose();
    g.b[std::size_t(last())] += gf.rowwise().sum();
    hbar.noalias() = net_.weight(last()).transpose() * gf;
    for (Index k = layers - 1; k >= 0; --k) {
      const std::size_t ks = std::size_t(k);
      abar = hbar.cwiseProduct(fw.d1[ks]) + source[ks];
      if (k > 0) {
        g.w[ks].noalias() += abar * fw.h[ks - 1].transpose();
      } else {
        g.w[0].noalias() += abar * z.transpose();
        g.c[0].noalias() += abar * tc.transpose();
      }
      g.b[ks] += abar.rowwise().sum();
      hbar.noalias() = net_.weight(k).transpose() * abar;
    }
    return hbar;
  }

 private:
  struct Forward {
    std::vector<Matrix> h;   ///< hidden outputs
    std::vector<Matrix> d1;  ///< f′(aₖ)
    std::vector<Matrix> d2;  ///< f″(aₖ)
    Matrix out;
  };
  struct Grads {
    std::vector<Eigen::Map<Matrix>> w;
    std::vector<Eigen::Map<Matrix>> b;
    std::vector<Eigen::Map<Matrix>> c;  ///< one entry: C₀
  };

  Index last() const { return net_.hidden_layers(); }

  void forward_pass(const Matrix& z, const Matrix& tc, Forward& fw) const {
    const Index layers = net_.hidden_layers();
    fw.h.resize(static_cast<std::size_t>(layers));
    fw.d1.resize(static_cast<std::size_t>(layers));
    fw.d2.resize(static_cast<std::size_t>(layers));
    Matrix a;
    for (Index k = 0; k < layers; ++k) {
      const std::size_t ks = std::size_t(k);
      if (k == 0) {
        a.noalias() = net_.weight(0) * z;
        a.noalias() += net_.context_weight() * tc;
      } else {
        a.noalias() = net_.weight(k) * fw.h[ks - 1];
      }
      a.colwise() += net_.bias(k);
      fw.h[ks] = a;
      Activation::apply(fw.h[ks]);
      fw.d1[ks].resize(a.rows(), a.cols());
      fw.d2[ks].resize(a.rows(), a.cols());
      auto d1 = fw.d1[ks].array();
      auto d2 = fw.d2[ks].array();
      detail::SecondOrder<Activation>::eval(a.array(), fw.h[ks].array(), d1, d2);
    }
    fw.out.noalias() = net_.weight(last()) * fw.h[std::size_t(layers - 1)];
    fw.out.colwise() += net_.bias(last());
  }

  /// Rows of a full panel: PointPanelRows, or H when that is fewer.
  static constexpr int point_block_rows() {
    return Hidden_ > 0 && Hidden_ < PointPanelRows ? Hidden_ : PointPanelRows;
  }

  /// The panel of rows r … r + Rows − 1 of W₁ and of C = W₁ ∘ (W₀W₂)ᵀ, column by column.
  template <int Rows>
  static void prepare_point_panel(int r, const Matrix& w0, const Matrix& w1,
                                  const Eigen::Matrix<Scalar, Hidden_, Dim_>& w2t, PointSetup& s) {
    using Part = Eigen::Matrix<Scalar, Rows, 1>;
    Scalar* w = s.weight1.data() + std::size_t(r) * Hidden_;
    Scalar* c = s.trace.data() + std::size_t(r) * Hidden_;
    const auto panel = [&](int k, const Part& m) {
      const auto w1k = w1.col(k).template segment<Rows>(r);
      Eigen::Map<Part>(w + std::size_t(k) * Rows) = w1k;
      Eigen::Map<Part>(c + std::size_t(k) * Rows) = w1k.cwiseProduct(m);
    };
    // Two columns at a time: two independent chains of Dim multiply-adds.
    int k = 0;
    for (; k + 2 <= Hidden_; k += 2) {
      Part m0 = Part::Zero(), m1 = Part::Zero();  // (W₀W₂)ₖⱼ for the panel's rows j
      for (int i = 0; i < Dim_; ++i) {
        const auto w2i = w2t.col(i).template segment<Rows>(r);
        m0.noalias() += w2i * w0(k, i);
        m1.noalias() += w2i * w0(k + 1, i);
      }
      panel(k, m0);
      panel(k + 1, m1);
    }
    if (k < Hidden_) {
      Part m0 = Part::Zero();
      for (int i = 0; i < Dim_; ++i)
        m0.noalias() += w2t.col(i).template segment<Rows>(r) * w0(k, i);
      panel(k, m0);
    }
  }

  /// Columns of U = C D₀ accumulated together in point_traces (4 × 4 packets in registers).
  static constexpr int PointTraceBlock = 4;

  /// The second hidden layer without the trace: a₁ = b₁ + W₁h₀ panel by panel (the columns of
  /// W₁ in two independent chains, even and odd), h₁ = f(a₁), d₁ = f′(a₁) written to `d1`.
  static void point_hidden_value(const PointSetup& s, const Scalar* b1, const HiddenVector& h0,
                                 HiddenVector& h1, Scalar* d1) {
    constexpr int Rows = point_block_rows();
    constexpr int Whole = Hidden_ / Rows * Rows;
    for (int r = 0; r < Whole; r += Rows) point_hidden_value_panel<Rows>(r, s, b1, h0, h1, d1);
    if constexpr (Whole < Hidden_) {
      point_hidden_value_panel<Hidden_ - Whole>(Whole, s, b1, h0, h1, d1);
    }
  }
  template <int Rows>
  static void point_hidden_value_panel(int r, const PointSetup& s, const Scalar* b1,
                                       const HiddenVector& h0, HiddenVector& h1, Scalar* d1) {
    using Part = Eigen::Matrix<Scalar, Rows, 1>;
    using Col = Eigen::Map<const Part>;
    const Scalar* w = s.weight1.data() + std::size_t(r) * Hidden_;
    Part a0 = Col(b1 + r);
    Part a1 = Part::Zero();
    int k = 0;
    for (; k + 2 <= Hidden_; k += 2) {
      a0.noalias() += Col(w + std::size_t(k) * Rows) * h0[k];
      a1.noalias() += Col(w + std::size_t(k + 1) * Rows) * h0[k + 1];
    }
    if (k < Hidden_) a0.noalias() += Col(w + std::size_t(k) * Rows) * h0[k];
    const Part a = a0 + a1;
    Part h;
    Part d;
    point_activation(a, h, d);
    h1.template segment<Rows>(r) = h;
    Eigen::Map<Part>(d1 + r) = d;
  }

  /// Rows r … r + Rows − 1 of U = C D₀ for the first `count` (a multiple of PointTraceBlock)
  /// columns of the chunk, PointTraceBlock columns at a time in registers (the panel of C stays
  /// in L1 across the blocks), each column's part dotted with D₁'s and added to acc.
  template <int Rows>
  static void point_trace_panel(int r, const PointSetup& s, const PointChunk& chunk, int count,
                                Scalar* acc) {
    using Part = Eigen::Matrix<Scalar, Rows, 1>;
    using Col = Eigen::Map<const Part>;
    const Scalar* c = s.trace.data() + std::size_t(r) * Hidden_;
    for (int m = 0; m < count; m += PointTraceBlock) {
      const Scalar* e0 = chunk.d0.data() + std::size_t(m) * Hidden_;
      const Scalar* e1 = e0 + Hidden_;
      const Scalar* e2 = e1 + Hidden_;
      const Scalar* e3 = e2 + Hidden_;
      Part u0 = Part::Zero(), u1 = Part::Zero(), u2 = Part::Zero(), u3 = Part::Zero();
      for (int k = 0; k < Hidden_; ++k) {
        const Part ck = Col(c + std::size_t(k) * Rows);
        u0.noalias() += ck * e0[k];
        u1.noalias() += ck * e1[k];
        u2.noalias() += ck * e2[k];
        u3.noalias() += ck * e3[k];
      }
      const Scalar* g = chunk.d1.data() + std::size_t(m) * Hidden_ + r;
      acc[m] += Col(g).dot(u0);
      acc[m + 1] += Col(g + Hidden_).dot(u1);
      acc[m + 2] += Col(g + 2 * Hidden_).dot(u2);
      acc[m + 3] += Col(g + 3 * Hidden_).dot(u3);
    }
  }

  /// The first hidden layer: a₀ = base + t·C₀[:, 0] + W₀z (W₀ H × Dim and C₀ column-major at
  /// `w0` and `c0`) in row panels in registers, the columns of W₀ in two independent chains
  /// (even and odd), then h₀ = f(a₀) and d₀ = f′(a₀).
  static void point_input(const Scalar* w0, const HiddenVector& base, const Scalar* c0, Scalar t,
                          const PointVector& z, HiddenVector& h0, HiddenVector& d0) {
    constexpr int Rows = point_block_rows();
    constexpr int Whole = Hidden_ / Rows * Rows;
    for (int r = 0; r < Whole; r += Rows) point_input_panel<Rows>(r, w0, base, c0, t, z, h0, d0);
    if constexpr (Whole < Hidden_) {
      point_input_panel<Hidden_ - Whole>(Whole, w0, base, c0, t, z, h0, d0);
    }
  }
  template <int Rows>
  static void point_input_panel(int r, const Scalar* w0, const HiddenVector& base, const Scalar* c0,
                                Scalar t, const PointVector& z, HiddenVector& h0,
                                HiddenVector& d0) {
    using Part = Eigen::Matrix<Scalar, Rows, 1>;
    using Col = Eigen::Map<const Part>;
    Part a0 = base.template segment<Rows>(r) + t * Col(c0 + r);
    Part a1 = Part::Zero();
    int i = 0;
    for (; i + 2 <= Dim_; i += 2) {
      a0.noalias() += Col(w0 + std::size_t(i) * Hidden_ + r) * z[i];
      a1.noalias() += Col(w0 + std::size_t(i + 1) * Hidden_ + r) * z[i + 1];
    }
    if (i < Dim_) a0.noalias() += Col(w0 + std::size_t(i) * Hidden_ + r) * z[i];
    const Part a = a0 + a1;
    Part h;
    Part d;
    point_activation(a, h, d);
    h0.template segment<Rows>(r) = h;
    d0.template segment<Rows>(r) = d;
  }

  /// f = b + W h for the output layer (W Dim × H, column-major at `w`): a sweep over W's
  /// columns with four independent accumulators (the columns k mod 4), so the additions do not
  /// wait on each other.
  static void point_output(const Scalar* w, const Vector<Scalar>& b, const HiddenVector& h,
                           PointVector& f) {
    using Col = Eigen::Map<const PointVector>;
    PointVector f0 = PointVector::Zero(), f1 = PointVector::Zero();
    PointVector f2 = PointVector::Zero(), f3 = PointVector::Zero();
    int k = 0;
    for (; k + 4 <= Hidden_; k += 4) {
      f0.noalias() += Col(w + std::size_t(k) * Dim_) * h[k];
      f1.noalias() += Col(w + std::size_t(k + 1) * Dim_) * h[k + 1];
      f2.noalias() += Col(w + std::size_t(k + 2) * Dim_) * h[k + 2];
      f3.noalias() += Col(w + std::size_t(k + 3) * Dim_) * h[k + 3];
    }
    for (; k < Hidden_; ++k) f0.noalias() += Col(w + std::size_t(k) * Dim_) * h[k];
    f = b + ((f0 + f1) + (f2 + f3));
  }

  /// h = f(a) and d = f′(a) for the one-point path (fixed-size vectors). Tanh in double as
  /// 1 − 2/(e^{2a} + 1): Eigen vectorizes exp but not tanh in double, and libm's tanh was 40 %
  /// of a one-point solve (the result differs from std::tanh by a few units in the last place
  /// of 1: the one-point path equals the batch path to rounding, not bit for bit). A tanh with
  /// one division (e^r by a degree-13 polynomial, scaled by 2ⁿ) measured no faster, so this one
  /// stays. Other activations and float: the activation's own.
  template <typename V>
  static void point_activation(const V& a, V& h, V& d) {
    using S = Scalar;
    if constexpr (std::is_same_v<Activation, nn::Tanh> && std::is_same_v<Scalar, double>) {
      h = S(1) - S(2) / ((S(2) * a.array()).exp() + S(1));
    } else {
      h = a;
      Activation::apply(h);
    }
    auto da = d.array();
    detail::SecondOrder<Activation>::first(a.array(), h.array(), da);
  }

  /// The closed-form exact trace's reverse mode (one or two hidden layers; see vjp): adds the
  /// weight gradients into `g` and writes the second-order sources of the primal backward pass.
  void closed_form_trace_backward(const Forward& fw, const Row& gdiv, Grads& g,
                                  std::vector<Matrix>& source) const {
    const Matrix& w0 = net_.weight(0);
    const Matrix& w1 = net_.weight(1);
    if (net_.hidden_layers() == 1) {
      // tr = cᵀ d₀, c_k = Σᵢ W₀ₖᵢ W₁ᵢₖ.
      const Vector<Scalar> cvec = (w0.array() * w1.transpose().array()).rowwise().sum().matrix();
      source[0] = (fw.d2[0].array().colwise() * cvec.array()).rowwise() * gdiv.array();
      const Vector<Scalar> gc = fw.d1[0] * gdiv.transpose();
      g.w[0].noalias() += gc.asDiagonal() * w1.transpose();
      g.w[1].noalias() += w0.transpose() * gc.asDiagonal();
      return;
    }
    // Two: tr = d₁ᵀ C d₀, C = W₁ ∘ Mᵀ, M = W₀W₂.
    const Matrix& w2 = net_.weight(2);
    const Matrix mt = (w0 * w2).transpose();
    const Matrix cm = w1.cwiseProduct(mt);
    Matrix tmp;
    tmp.noalias() = cm * fw.d1[0];
    source[1] = (fw.d2[1].array() * tmp.array()).rowwise() * gdiv.array();
    tmp.noalias() = cm.transpose() * fw.d1[1];
    source[0] = (fw.d2[0].array() * tmp.array()).rowwise() * gdiv.array();
    tmp = fw.d1[1].array().rowwise() * gdiv.array();
    Matrix gcm;
    gcm.noalias() = tmp * fw.d1[0].transpose();          // G = ∂L/∂C
    g.w[1].array() += gcm.array() * mt.array();          // ∂C/∂W₁
    const Matrix gm = gcm.cwiseProduct(w1).transpose();  // Γ = ∂L/∂M
    g.w[0].noalias() += gm * w2.transpose();
    g.w[2].noalias() += w0.transpose() * gm;
  }

  /// Carries a first-layer tangent ḣ₀ (in `tangent`) up to ḣ_{L−1}.
  void propagate_tangent(const Forward& fw, Matrix& tangent, Matrix& tmp) const {
    for (Index k = 1; k < net_.hidden_layers(); ++k) {
      tmp.noalias() = net_.weight(k) * tangent;
      tangent = tmp.cwiseProduct(fw.d1[std::size_t(k)]);
    }
  }

  Grads slices(Eigen::Ref<Vector<Scalar>> gp) const {
    nflow::detail::check_size("ode::MLPVectorField::vjp", "grad_params", parameter_count(),
                              gp.size());
    Grads g;
    Scalar* p = gp.data();
    for (Index k = 0; k <= last(); ++k) {
      const auto& w = net_.weight(k);
      g.w.emplace_back(p, w.rows(), w.cols());
      p += w.size();
      if (k == 0) {
        g.c.emplace_back(p, net_.context_weight().rows(), net_.context_weight().cols());
        p += net_.context_weight().size();
      }
      g.b.emplace_back(p, net_.bias(k).size(), 1);
      p += net_.bias(k).size();
    }
    return g;
  }

  Network net_;
  Index context_dim_;
};

}  // namespace nflow::ode
