#pragma once
/// @file
/// @brief The layer variants of nflows 0.14 and zuko 1.6, evaluated exactly as those libraries
/// do (eval mode, no gradients), behind the small run-time interface interop::Layer.
///
/// Each class documents the library's formula it implements. Batches are `D × N`, one sample per
/// column, as everywhere in nflow; a PyTorch weight [out, in] is held as the Eigen matrix with
/// the same (i, j), so a linear layer computes `W x + b` on a column. Masks are multiplied into
/// the weights once at load time (W ⊙ M, as the libraries' masked layers compute it), so masked
/// entries are exact zeros. Every computation is column-wise: a NaN in one sample stays in that
/// sample's column.
///
/// References: nflows (Durkan, Bekasov, Murray, Papamakarios 2020, doi:10.5281/zenodo.4296287);
/// zuko (Rozet et al. 2022, doi:10.5281/zenodo.7625672); MADE (Germain et al. 2015,
/// arXiv:1502.03509); MAF (Papamakarios et al. 2017, arXiv:1705.07057); Real NVP (Dinh et al.
/// 2017, arXiv:1605.08803).

#include <Eigen/Core>
#include <cmath>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "nflow/core/types.hpp"

namespace nflow::interop {

/// A dynamic matrix (a batch D × N, a weight out × in).
template <typename Scalar>
using Matrix = Eigen::Matrix<Scalar, Dynamic, Dynamic>;
/// One value per sample.
template <typename Scalar>
using RowVector = Eigen::Matrix<Scalar, 1, Dynamic>;

/// @brief One step of an imported flow, in the libraries' direction: forward maps data to noise.
///
/// `forward(v, log_det, context)` replaces the batch `v` (D × N) by the step's output and adds
/// log|det ∂out/∂in| per column into `log_det`; `inverse` does the same for the inverse map.
/// `context` is null for an unconditional flow, else C × N. Implementations are immutable and
/// thread-safe (every call is const and uses local buffers).
template <typename Scalar>
class Layer {
 public:
  virtual ~Layer() = default;
  virtual void forward(Matrix<Scalar>& v, RowVector<Scalar>& log_det,
                       const Matrix<Scalar>* context) const = 0;
  virtual void inverse(Matrix<Scalar>& v, RowVector<Scalar>& log_det,
                       const Matrix<Scalar>* context) const = 0;
  /// The library's class name and the layer's state-dict prefix, e.g.
  /// "nflows MaskedAffineAutoregressiveTransform '_transform._transforms.0'".
  virtual std::string description() const = 0;
  /// Rows of the context the step reads (0 if it ignores the context).
  virtual Index context_dim() const { return 0; }
};

namespace detail {

/// torch.nn.functional.softplus(u) with beta = 1, threshold = 20: u if u > 20, else log1p(exp(u)).
template <typename Scalar>
Scalar torch_softplus(Scalar u) {
  return u > Scalar(20) ? u : std::log1p(std::exp(u));
}
/// torch.sigmoid(u) = 1 / (1 + exp(−u)).
template <typename Scalar>
Scalar torch_sigmoid(Scalar u) {
  return Scalar(1) / (Scalar(1) + std::exp(-u));
}

template <typename Scalar>
void relu_in_place(Matrix<Scalar>& h) {
  h = h.cwiseMax(Scalar(0));
}

/// Rows `first, first + step, …` (count of them) of `m`.
template <typename Scalar>
Matrix<Scalar> strided_rows(const Matrix<Scalar>& m, Index first, Index count, Index step) {
  Matrix<Scalar> out(count, m.cols());
  for (Index i = 0; i < count; ++i) out.row(i) = m.row(first + i * step);
  return out;
}

/// [top; bottom] (bottom may be null: then just top).
template <typename Scalar>
Matrix<Scalar> stack_rows(const Matrix<Scalar>& top, const Matrix<Scalar>* bottom) {
  if (bottom == nullptr) return top;
  Matrix<Scalar> out(top.rows() + bottom->rows(), top.cols());
  out.topRows(top.rows()) = top;
  out.bottomRows(bottom->rows()) = *bottom;
  return out;
}

/// The inverse of an affine autoregressive layer by `passes` fixed-point passes (`passes` is the
/// longest dependency chain of the loaded masks, after which further passes change nothing):
/// x = 0, then `passes` times out = net(x), x = (z − shift) / scale by `invert(out, z, x, ld)`;
/// v becomes x and log_det gets the last pass's −Σ log scale.
template <typename Scalar, typename Net, typename Invert>
void autoregressive_inverse(Matrix<Scalar>& v, RowVector<Scalar>& log_det, Index passes, Net&& net,
                            Invert&& invert) {
  const Matrix<Scalar> z = v;
  Matrix<Scalar> x = Matrix<Scalar>::Zero(v.rows(), v.cols());
  RowVector<Scalar> ld(1, v.cols());
  for (Index p = 0; p < passes; ++p) {
    ld.setZero();
    const Matrix<Scalar> out = net(x);
    invert(out, z, x, ld);
  }
  v = std::move(x);
  log_det += ld;
}

}  // namespace detail

// ---- building blocks --------------------------------------------------------------------------

/// @brief torch.nn.Linear (or a masked linear layer with the mask folded in): y = W x + b.
/// A default-constructed Linear (0 × 0) stands for an absent layer.
template <typename Scalar>
struct Linear {
  Matrix<Scalar> weight;  ///< out × in (PyTorch's [out, in]), masked entries already zero
  Vector<Scalar> bias;    ///< out

  Index in() const { return weight.cols(); }
  Index out() const { return weight.rows(); }
  bool present() const { return weight.rows() > 0; }
  Matrix<Scalar> operator()(const Matrix<Scalar>& x) const {
    Matrix<Scalar> y = weight * x;
    y.colwise() += bias;
    return y;
  }
};

/// @brief torch.nn.BatchNorm1d in eval mode: y = (x − running_mean) / sqrt(running_var + eps) ·
/// weight + bias, per feature (row).
template <typename Scalar>
struct BatchNorm1dEval {
  bool enabled = false;  ///< false: the identity (the layer is absent)
  Vector<Scalar> weight, bias, running_mean, running_var;
  Scalar eps = Scalar(1e-5);

  void apply(Matrix<Scalar>& x) const {
    if (!enabled) return;
    const Vector<Scalar> inv_std = (running_var.array() + eps).sqrt().inverse().matrix();
    for (Index j = 0; j < x.cols(); ++j) {
      x.col(j) =
          ((x.col(j) - running_mean).array() * inv_std.array() * weight.array() + bias.array())
              .matrix();
    }
  }
};

/// @brief nflows' pre-activation residual block (MaskedResidualBlock in MADE, ResidualBlock in
/// ResidualNet): t = h; [t = bn0(t)]; t = relu(t); t = linear0(t); [t += context_layer(c)];
/// [t = bn1(t)]; t = relu(t); t = linear1(t); h = h + t.
template <typename Scalar>
struct NflowsResidualBlock {
  BatchNorm1dEval<Scalar> batch_norm0, batch_norm1;
  Linear<Scalar> linear0, linear1;
  Linear<Scalar> context_layer;  ///< absent unless conditional

  void apply(Matrix<Scalar>& h, const Matrix<Scalar>* c) const {
    Matrix<Scalar> t = h;
    batch_norm0.apply(t);
    detail::relu_in_place(t);
    t = linear0(t);
    if (context_layer.present() && c != nullptr) t += context_layer(*c);
    batch_norm1.apply(t);
    detail::relu_in_place(t);
    t = linear1(t);
    h += t;
  }
};

/// @brief nflows' MaskedFeedforwardBlock: h = relu(linear([bn](h))) (no context).
template <typename Scalar>
struct NflowsFeedforwardBlock {
  BatchNorm1dEval<Scalar> batch_norm;
  Linear<Scalar> linear;

  void apply(Matrix<Scalar>& h) const {
    batch_norm.apply(h);
    h = linear(h);
    detail::relu_in_place(h);
  }
};

/// @brief nflows.nn.nde.made.MADE (masks folded into the weights) and, with `residual` and no
/// context, nflows.nn.nets.ResidualNet (the same computation with unmasked layers).
///
///     residual:     h = initial(x) [+ relu(context_layer(c))]; h = block_b(h, c) for each b;
///                   out = final(h)
///     feedforward:  h = relu(initial(x) [+ relu(context_layer(c))]); h = block_b(h); out =
///     final(h)
template <typename Scalar>
struct NflowsNet {
  Linear<Scalar> initial;
  Linear<Scalar> context_layer;  ///< absent unless conditional
  bool residual = true;
  std::vector<NflowsResidualBlock<Scalar>> residual_blocks;
  std::vector<NflowsFeedforwardBlock<Scalar>> feedforward_blocks;
  Linear<Scalar> final;

  Matrix<Scalar> operator()(const Matrix<Scalar>& x, const Matrix<Scalar>* c) const {
    Matrix<Scalar> h = initial(x);
    if (context_layer.present() && c != nullptr) {
      Matrix<Scalar> hc = context_layer(*c);
      detail::relu_in_place(hc);
      h += hc;
    }
    if (residual) {
      for (const auto& b : residual_blocks) b.apply(h, c);
    } else {
      detail::relu_in_place(h);
      for (const auto& b : feedforward_blocks) b.apply(h);
    }
    return final(h);
  }
};

/// @brief zuko.nn.MLP / zuko.nn.MaskedMLP (masks folded in): linear, ReLU, linear, …, linear
/// (no activation after the last layer, no normalisation).
template <typename Scalar>
struct ZukoMlp {
  std::vector<Linear<Scalar>> layers;

  Matrix<Scalar> operator()(const Matrix<Scalar>& x) const {
    Matrix<Scalar> h = layers.front()(x);
    for (std::size_t l = 1; l < layers.size(); ++l) {
      detail::relu_in_place(h);
      h = layers[l](h);
    }
    return h;
  }
};

// ---- flow layers ------------------------------------------------------------------------------

/// @brief nflows MaskedAffineAutoregressiveTransform.
///
/// The MADE output (2D rows) is read as [D, 2]: row 2i is the unconstrained scale uᵢ, row 2i+1
/// the shift tᵢ. With sᵢ = softplus(uᵢ) + 1e-3:
///
///     forward:  zᵢ = sᵢ xᵢ + tᵢ,          log|det ∂z/∂x| = Σᵢ log sᵢ       (one MADE pass)
///     inverse:  x = 0, then `passes` times: (u, t) = MADE(x, c), x = (z − t) / s;
///               log|det ∂x/∂z| = −Σᵢ log sᵢ of the last pass.
///
/// The library makes D passes; `passes` is the length of the longest dependency chain of the
/// loaded masks (≤ D), after which further passes reproduce the same x exactly.
template <typename Scalar>
class NflowsAffineAutoregressive final : public Layer<Scalar> {
 public:
  NflowsAffineAutoregressive(NflowsNet<Scalar> made, Index dim, Index passes, std::string prefix)
      : made_(std::move(made)), dim_(dim), passes_(passes), prefix_(std::move(prefix)) {}

  void forward(Matrix<Scalar>& v, RowVector<Scalar>& log_det,
               const Matrix<Scalar>* c) const override {
    const Matrix<Scalar> out = made_(v, ctx(c));
    apply(out, v, v, log_det, true);
  }
  void inverse(Matrix<Scalar>& v, RowVector<Scalar>& log_det,
               const Matrix<Scalar>* c) const override {
    detail::autoregressive_inverse<Scalar>(
        v, log_det, passes_,
        [&](const Matrix<Scalar>& x) -> Matrix<Scalar> { return made_(x, ctx(c)); },
        [&](const Matrix<Scalar>& out, const Matrix<Scalar>& z, Matrix<Scalar>& x,
            RowVector<Scalar>& ld) { apply(out, z, x, ld, false); });
  }
  std::string description() const override {
    return "nflows MaskedAffineAutoregressiveTransform '" + prefix_ + "'";
  }
  Index context_dim() const override {
    return made_.context_layer.present() ? made_.context_layer.in() : 0;
  }
  Index passes() const { return passes_; }
  const NflowsNet<Scalar>& made() const { return made_; }

 private:
  const Matrix<Scalar>* ctx(const Matrix<Scalar>* c) const {
    return made_.context_layer.present() ? c : nullptr;
  }
  void apply(const Matrix<Scalar>& out, const Matrix<Scalar>& in, Matrix<Scalar>& res,
             RowVector<Scalar>& ld, bool forward) const {
    for (Index j = 0; j < in.cols(); ++j) {
      Scalar sum = 0;
      for (Index i = 0; i < dim_; ++i) {
        const Scalar scale = detail::torch_softplus(out(2 * i, j)) + Scalar(1e-3);
        const Scalar shift = out(2 * i + 1, j);
        res(i, j) = forward ? scale * in(i, j) + shift : (in(i, j) - shift) / scale;
        sum += std::log(scale);
      }
      ld(j) += forward ? sum : -sum;
    }
  }

  NflowsNet<Scalar> made_;
  Index dim_;
  Index passes_;
  std::string prefix_;
};

/// @brief A permutation layer (nflows Permutation, ReversePermutation, RandomPermutation):
/// forward out[j] = in[perm[j]], inverse in[perm[j]] = out[j]; log-det 0.
template <typename Scalar>
class PermutationLayer final : public Layer<Scalar> {
 public:
  PermutationLayer(Eigen::VectorXi perm, std::string what)
      : perm_(std::move(perm)), what_(std::move(what)) {}

  void forward(Matrix<Scalar>& v, RowVector<Scalar>&, const Matrix<Scalar>*) const override {
    Matrix<Scalar> out(v.rows(), v.cols());
    for (Index j = 0; j < perm_.size(); ++j) out.row(j) = v.row(perm_(j));
    v = std::move(out);
  }
  void inverse(Matrix<Scalar>& v, RowVector<Scalar>&, const Matrix<Scalar>*) const override {
    Matrix<Scalar> out(v.rows(), v.cols());
    for (Index j = 0; j < perm_.size(); ++j) out.row(perm_(j)) = v.row(j);
    v = std::move(out);
  }
  std::string description() const override { return what_; }
  const Eigen::VectorXi& permutation() const { return perm_; }

 private:
  Eigen::VectorXi perm_;
  std::string what_;
};

/// @brief nflows.transforms.normalization.BatchNorm as a flow layer, eval mode. With
/// w = softplus(unconstrained_weight) + eps and σ² = running_var + eps:
///
///     forward:  z = w (x − running_mean) / σ + bias,   log|det| = Σᵢ [log wᵢ − ½ log σᵢ²]
///     inverse:  x = σ (z − bias) / w + running_mean,   log|det| = −Σᵢ [log wᵢ − ½ log σᵢ²]
template <typename Scalar>
class NflowsBatchNormLayer final : public Layer<Scalar> {
 public:
  NflowsBatchNormLayer(const Vector<Scalar>& unconstrained_weight, Vector<Scalar> bias,
                       Vector<Scalar> running_mean, Vector<Scalar> running_var, Scalar eps,
                       std::string prefix)
      : bias_(std::move(bias)), mean_(std::move(running_mean)), prefix_(std::move(prefix)) {
    weight_ =
        unconstrained_weight.unaryExpr([](Scalar u) { return detail::torch_softplus(u); }).array() +
        eps;
    std_ = (running_var.array() + eps).sqrt().matrix();
    log_det_ = (weight_.array().log() - Scalar(0.5) * (running_var.array() + eps).log()).sum();
  }

  void forward(Matrix<Scalar>& v, RowVector<Scalar>& log_det,
               const Matrix<Scalar>*) const override {
    for (Index j = 0; j < v.cols(); ++j) {
      v.col(j) =
          (weight_.array() * ((v.col(j) - mean_).array() / std_.array()) + bias_.array()).matrix();
    }
    log_det.array() += log_det_;
  }
  void inverse(Matrix<Scalar>& v, RowVector<Scalar>& log_det,
               const Matrix<Scalar>*) const override {
    for (Index j = 0; j < v.cols(); ++j) {
      v.col(j) =
          (std_.array() * ((v.col(j) - bias_).array() / weight_.array()) + mean_.array()).matrix();
    }
    log_det.array() -= log_det_;
  }
  std::string description() const override { return "nflows BatchNorm '" + prefix_ + "'"; }

 private:
  Vector<Scalar> weight_, bias_, mean_, std_;
  Scalar log_det_ = 0;
  std::string prefix_;
};

/// @brief nflows AffineCouplingTransform (and AdditiveCouplingTransform) with a ResidualNet
/// conditioner. With x_I the identity features and x_T the transformed ones (each in the order of
/// its index buffer) and out = net(x_I) (2|T| rows, NOT interleaved): t = out[0:|T|],
/// u = out[|T|:2|T|], s = sigmoid(u + 2) + 1e-3:
///
///     forward:  z_T = x_T s + t,  z_I = x_I,   log|det| = Σ log s
///     inverse:  x_T = (z_T − t) / s,           log|det| = −Σ log s
///
/// Additive (use_volume_preserving=True; net output |T| rows): t = out, s = 1, log-det 0.
template <typename Scalar>
class NflowsCoupling final : public Layer<Scalar> {
 public:
  NflowsCoupling(std::vector<Index> identity, std::vector<Index> transform, NflowsNet<Scalar> net,
                 bool additive, std::string prefix)
      : identity_(std::move(identity)),
        transform_(std::move(transform)),
        net_(std::move(net)),
        additive_(additive),
        prefix_(std::move(prefix)) {}

  void forward(Matrix<Scalar>& v, RowVector<Scalar>& log_det,
               const Matrix<Scalar>*) const override {
    run(v, log_det, true);
  }
  void inverse(Matrix<Scalar>& v, RowVector<Scalar>& log_det,
               const Matrix<Scalar>*) const override {
    run(v, log_det, false);
  }
  std::string description() const override {
    return std::string("nflows ") +
           (additive_ ? "AdditiveCouplingTransform '" : "AffineCouplingTransform '") + prefix_ +
           "'";
  }

 private:
  void run(Matrix<Scalar>& v, RowVector<Scalar>& log_det, bool forward) const {
    const Index ni = Index(identity_.size());
    const Index nt = Index(transform_.size());
    Matrix<Scalar> xi(ni, v.cols());
    for (Index k = 0; k < ni; ++k) xi.row(k) = v.row(identity_[std::size_t(k)]);
    const Matrix<Scalar> out = net_(xi, nullptr);
    for (Index j = 0; j < v.cols(); ++j) {
      Scalar sum = 0;
      for (Index k = 0; k < nt; ++k) {
        const Index f = transform_[std::size_t(k)];
        const Scalar shift = out(k, j);
        const Scalar scale = additive_
                                 ? Scalar(1)
                                 : detail::torch_sigmoid(out(nt + k, j) + Scalar(2)) + Scalar(1e-3);
        v(f, j) = forward ? v(f, j) * scale + shift : (v(f, j) - shift) / scale;
        if (!additive_) sum += std::log(scale);
      }
      log_det(j) += forward ? sum : -sum;
    }
  }

  std::vector<Index> identity_, transform_;
  NflowsNet<Scalar> net_;
  bool additive_;
  std::string prefix_;
};

/// @brief zuko's MonotonicAffineTransform(shift, a, slope): log_scale = a / (1 + |a / log(slope)|),
/// a soft clip of the log-scale into (log slope, −log slope).
template <typename Scalar>
Scalar zuko_log_scale(Scalar a, Scalar log_slope) {
  return a / (Scalar(1) + std::abs(a / log_slope));
}

/// @brief zuko MaskedAutoregressiveTransform with MonotonicAffineTransform. The MaskedMLP sees
/// concat(x, c); its output (2D rows) is read as [D, 2]: row 2i the shift tᵢ, row 2i+1 the
/// unconstrained aᵢ; ℓᵢ = zuko_log_scale(aᵢ):
///
///     forward:  zᵢ = xᵢ exp(ℓᵢ) + tᵢ,   log|det| = Σ ℓᵢ
///     inverse:  x = 0, then `passes` times: x = (z − t) / exp(ℓ) with (t, a) = MLP(x, c);
///               log|det| = −Σ ℓᵢ at the final x.
///
/// `passes` is the longest dependency chain of the loaded masks (zuko makes `passes` = D
/// passes by default; more passes reproduce the same x).
template <typename Scalar>
class ZukoAffineAutoregressive final : public Layer<Scalar> {
 public:
  ZukoAffineAutoregressive(ZukoMlp<Scalar> hyper, Index dim, Index context_dim, Index passes,
                           Scalar log_slope, std::string prefix)
      : hyper_(std::move(hyper)),
        dim_(dim),
        context_dim_(context_dim),
        passes_(passes),
        log_slope_(log_slope),
        prefix_(std::move(prefix)) {}

  void forward(Matrix<Scalar>& v, RowVector<Scalar>& log_det,
               const Matrix<Scalar>* c) const override {
    const Matrix<Scalar> out = hyper_(detail::stack_rows(v, ctx(c)));
    apply(out, v, v, log_det, true);
  }
  void inverse(Matrix<Scalar>& v, RowVector<Scalar>& log_det,
               const Matrix<Scalar>* c) const override {
    detail::autoregressive_inverse<Scalar>(
        v, log_det, passes_,
        [&](const Matrix<Scalar>& x) -> Matrix<Scalar> {
          return hyper_(detail::stack_rows(x, ctx(c)));
        },
        [&](const Matrix<Scalar>& out, const Matrix<Scalar>& z, Matrix<Scalar>& x,
            RowVector<Scalar>& ld) { apply(out, z, x, ld, false); });
  }
  std::string description() const override {
    return "zuko MaskedAutoregressiveTransform '" + prefix_ + "'";
  }
  Index context_dim() const override { return context_dim_; }
  Index passes() const { return passes_; }

 private:
  const Matrix<Scalar>* ctx(const Matrix<Scalar>* c) const {
    return context_dim_ > 0 ? c : nullptr;
  }
  void apply(const Matrix<Scalar>& out, const Matrix<Scalar>& in, Matrix<Scalar>& res,
             RowVector<Scalar>& ld, bool forward) const {
    for (Index j = 0; j < in.cols(); ++j) {
      Scalar sum = 0;
      for (Index i = 0; i < dim_; ++i) {
        const Scalar shift = out(2 * i, j);
        const Scalar ls = zuko_log_scale(out(2 * i + 1, j), log_slope_);
        res(i, j) = forward ? in(i, j) * std::exp(ls) + shift : (in(i, j) - shift) / std::exp(ls);
        sum += ls;
      }
      ld(j) += forward ? sum : -sum;
    }
  }

  ZukoMlp<Scalar> hyper_;
  Index dim_, context_dim_, passes_;
  Scalar log_slope_;
  std::string prefix_;
};

/// @brief zuko GeneralCouplingTransform with MonotonicAffineTransform (RealNVP / NICE). mask[i]
/// true: feature i is in the constant part x_a; false: in the transformed part x_b. The MLP sees
/// concat(x_a, c) and outputs [|b|, 2]: row 2k the shift, row 2k+1 the unconstrained a:
///
///     forward:  z_b = x_b exp(ℓ) + t,   z_a = x_a,   log|det| = Σ ℓ
///     inverse:  x_b = (z_b − t) / exp(ℓ),             log|det| = −Σ ℓ
template <typename Scalar>
class ZukoAffineCoupling final : public Layer<Scalar> {
 public:
  ZukoAffineCoupling(std::vector<Index> constant, std::vector<Index> transformed,
                     ZukoMlp<Scalar> hyper, Index context_dim, Scalar log_slope, std::string prefix)
      : constant_(std::move(constant)),
        transformed_(std::move(transformed)),
        hyper_(std::move(hyper)),
        context_dim_(context_dim),
        log_slope_(log_slope),
        prefix_(std::move(prefix)) {}

  void forward(Matrix<Scalar>& v, RowVector<Scalar>& log_det,
               const Matrix<Scalar>* c) const override {
    run(v, log_det, c, true);
  }
  void inverse(Matrix<Scalar>& v, RowVector<Scalar>& log_det,
               const Matrix<Scalar>* c) const override {
    run(v, log_det, c, false);
  }
  std::string description() const override {
    return "zuko GeneralCouplingTransform '" + prefix_ + "'";
  }
  Index context_dim() const override { return context_dim_; }

 private:
  void run(Matrix<Scalar>& v, RowVector<Scalar>& log_det, const Matrix<Scalar>* c,
           bool forward) const {
    const Index na = Index(constant_.size());
    const Index nb = Index(transformed_.size());
    Matrix<Scalar> xa(na, v.cols());
    for (Index k = 0; k < na; ++k) xa.row(k) = v.row(constant_[std::size_t(k)]);
    const Matrix<Scalar> out = hyper_(detail::stack_rows(xa, context_dim_ > 0 ? c : nullptr));
    for (Index j = 0; j < v.cols(); ++j) {
      Scalar sum = 0;
      for (Index k = 0; k < nb; ++k) {
        const Index f = transformed_[std::size_t(k)];
        const Scalar shift = out(2 * k, j);
        const Scalar ls = zuko_log_scale(out(2 * k + 1, j), log_slope_);
        v(f, j) = forward ? v(f, j) * std::exp(ls) + shift : (v(f, j) - shift) / std::exp(ls);
        sum += ls;
      }
      log_det(j) += forward ? sum : -sum;
    }
  }

  std::vector<Index> constant_, transformed_;
  ZukoMlp<Scalar> hyper_;
  Index context_dim_;
  Scalar log_slope_;
  std::string prefix_;
};

}  // namespace nflow::interop
