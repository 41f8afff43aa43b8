#pragma once
/// @file
/// @brief ImportedTransform and ImportedFlow: a run-time chain of interop::Layer steps (the
/// number and kind of layers come from the file), and that chain with its base distribution.

#include <Eigen/Core>
#include <cmath>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "nflow/core/bijector_base.hpp"
#include "nflow/core/errors.hpp"
#include "nflow/core/random.hpp"
#include "nflow/core/types.hpp"
#include "nflow/distributions/density.hpp"
#include "nflow/interop/layers.hpp"
#include "nflow/math/constants.hpp"

namespace nflow::interop {

/// @brief The transform of an imported model: its layers in the library's forward order (data →
/// noise), as one nflow bijector with run-time Dim and ContextDim (Dim = ContextDim = Dynamic).
///
///     forward(x)  = L_n(… L_1(x)),   log|det ∂z/∂x| = Σ the layers' forward log-dets
///     inverse(z)  = L_1⁻¹(… L_n⁻¹(z)), log|det ∂x/∂z| = Σ the layers' inverse log-dets
///
/// Models nflow::Bijector (forward_and_log_det, inverse_and_log_det, forward, inverse, … with an
/// optional context batch, shape-checked with nflow::ShapeError); evaluation only: it has no
/// parameters to visit and no vector-Jacobian products. A NaN or ±inf anywhere in an input column
/// (or in that column's context) makes every output of that column NaN (value and log-det); other
/// columns are unaffected. Immutable after loading; copies share the layers; thread-safe.
/// @tparam Scalar_ float or double.
template <typename Scalar_>
class ImportedTransform : public BijectorBase<ImportedTransform<Scalar_>> {
 public:
  using Scalar = Scalar_;
  static constexpr int Dim = Dynamic;
  static constexpr int ContextDim = Dynamic;
  static constexpr bool IsConstantLogDet = false;
  static constexpr Cost ForwardCost = Cost::OnePass;
  static constexpr Cost InverseCost = Cost::DimPasses;

  ImportedTransform() = default;
  /// @param dim D > 0. @param context_dim rows of the context (0: unconditional).
  ImportedTransform(Index dim, Index context_dim,
                    std::vector<std::shared_ptr<const Layer<Scalar>>> layers)
      : dim_(dim), context_dim_(context_dim), layers_(std::move(layers)) {}

  Index dim() const { return dim_; }
  Index context_dim() const { return context_dim_; }
  /// Number of layers.
  std::size_t size() const { return layers_.size(); }
  /// Layer i in forward order.
  const Layer<Scalar>& layer(std::size_t i) const { return *layers_.at(i); }

  /// One line per layer: "i: <description>".
  std::string summary() const {
    std::string s;
    for (std::size_t i = 0; i < layers_.size(); ++i)
      s += std::to_string(i) + ": " + layers_[i]->description() + "\n";
    return s;
  }

  // ---- hooks for BijectorBase ------------------------------------------------------------------
  template <typename X, typename C>
  ValueAndLogDet<Scalar, Dynamic, Dynamic> forward_impl(const X& x, const C& ctx) const {
    return run(x, ctx, true);
  }
  template <typename Z, typename C>
  ValueAndLogDet<Scalar, Dynamic, Dynamic> inverse_impl(const Z& z, const C& ctx) const {
    return run(z, ctx, false);
  }

 private:
  template <typename X, typename C>
  ValueAndLogDet<Scalar, Dynamic, Dynamic> run(const X& x, const C& ctx, bool forward) const {
    const Matrix<Scalar> input = x;  // evaluated once (x may be any expression)
    ValueAndLogDet<Scalar, Dynamic, Dynamic> r;
    r.value = input;
    r.log_det = RowVector<Scalar>::Zero(1, input.cols());
    Matrix<Scalar> c;
    if constexpr (!is_no_context_v<C>) c = ctx;
    const Matrix<Scalar>* cp = context_dim_ > 0 ? &c : nullptr;
    if (forward) {
      for (const auto& l : layers_) l->forward(r.value, r.log_det, cp);
    } else {
      for (auto it = layers_.rbegin(); it != layers_.rend(); ++it)
        (*it)->inverse(r.value, r.log_det, cp);
    }
    // A non-finite input column gives an all-NaN output column (documented contract).
    const Scalar nan = std::numeric_limits<Scalar>::quiet_NaN();
    for (Index j = 0; j < input.cols(); ++j) {
      if (!input.col(j).allFinite() || (cp != nullptr && !c.col(j).allFinite())) {
        r.value.col(j).setConstant(nan);
        r.log_det(j) = nan;
      }
    }
    return r;
  }

  Index dim_ = 0;
  Index context_dim_ = 0;
  std::vector<std::shared_ptr<const Layer<Scalar>>> layers_;
};

/// @brief The base distribution of an imported model: N(loc, diag(scale²)) (nflows'
/// StandardNormal: loc = 0, scale = 1; zuko's DiagNormal with its 'base.loc' and 'base.scale'
/// buffers). log p(z) = Σᵢ [−(zᵢ − locᵢ)² / (2 scaleᵢ²) − log scaleᵢ − ½ log 2π].
template <typename Scalar_>
class ImportedBase {
 public:
  using Scalar = Scalar_;
  static constexpr int Dim = Dynamic;

  ImportedBase() = default;
  ImportedBase(Vector<Scalar> loc, Vector<Scalar> scale)
      : loc_(std::move(loc)), scale_(std::move(scale)) {}
  /// The standard normal on R^dim.
  static ImportedBase standard(Index dim) {
    return {Vector<Scalar>::Zero(dim), Vector<Scalar>::Ones(dim)};
  }

  Index dim() const { return loc_.size(); }
  const Vector<Scalar>& loc() const { return loc_; }
  const Vector<Scalar>& scale() const { return scale_; }

  template <typename Z>
  PerSample<Scalar, Dynamic> log_prob(const Eigen::MatrixBase<Z>& z) const {
    nflow::detail::check_rows("ImportedBase::log_prob", "z", dim(), z.rows(), z.cols());
    const Scalar norm =
        scale_.array().log().sum() + Scalar(dim()) * Constants<Scalar>::half_log_two_pi;
    PerSample<Scalar, Dynamic> lp(1, z.cols());
    for (Index j = 0; j < z.cols(); ++j) {
      lp(j) = -((z.col(j) - loc_).array().square() / (Scalar(2) * scale_.array().square())).sum() -
              norm;
    }
    return lp;
  }

  /// `n` samples loc + scale ⊙ ε, ε drawn with nflow::fill_standard_normal.
  template <std::uniform_random_bit_generator G>
  Batch<Scalar, Dynamic, Dynamic> sample(Index n, G& gen) const {
    Batch<Scalar, Dynamic, Dynamic> e(dim(), n);
    fill_standard_normal(e, gen);
    for (Index j = 0; j < n; ++j)
      e.col(j) = (loc_.array() + scale_.array() * e.col(j).array()).matrix();
    return e;
  }

  Index parameter_count() const { return 0; }
  template <typename F>
  void visit_parameters(F&&) const {}
  template <typename F>
  void visit_parameters(F&&) {}

 private:
  Vector<Scalar> loc_, scale_;
};

/// @brief A model imported from nflows or zuko: its transform and its base, as an
/// nflow::Density (log_prob(x[, c]), sample(n, gen[, c]), sample_and_log_prob) plus the fused
/// calls of the transform (forward_and_log_det, inverse_and_log_det).
///
/// Every batch is D × N (one sample per column), contexts C × N (or C × 1 for `sample`, shared by
/// all n samples). Evaluation only (no gradients). See docs/interop.md.
template <typename Scalar_>
class ImportedFlow : public Density<ImportedBase<Scalar_>, ImportedTransform<Scalar_>> {
  using Base = Density<ImportedBase<Scalar_>, ImportedTransform<Scalar_>>;

 public:
  using Scalar = Scalar_;
  ImportedFlow(ImportedBase<Scalar> base, ImportedTransform<Scalar> transform)
      : Base(std::move(base), std::move(transform)) {}

  Index context_dim() const { return this->transform().context_dim(); }

  /// (z, log|det ∂z/∂x|) of data x.
  template <typename X, ContextArg C = NoContext>
  ValueAndLogDet<Scalar, Dynamic, Dynamic> forward_and_log_det(const Eigen::MatrixBase<X>& x,
                                                               const C& context = C{}) const {
    return this->transform().forward_and_log_det(x, context);
  }
  /// (x, log|det ∂x/∂z|) of noise z: what sampling computes from given latents.
  template <typename Z, ContextArg C = NoContext>
  ValueAndLogDet<Scalar, Dynamic, Dynamic> inverse_and_log_det(const Eigen::MatrixBase<Z>& z,
                                                               const C& context = C{}) const {
    return this->transform().inverse_and_log_det(z, context);
  }
};

}  // namespace nflow::interop
