#pragma once
/// @file
/// @brief ImportedFlow: an imported model — a DynamicFlow of native layers (their number and
/// kinds come from the file) with the library's base distribution.

#include <Eigen/Core>
#include <cmath>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "nflow/core/bijector_base.hpp"
#include "nflow/core/dynamic_flow.hpp"
#include "nflow/core/errors.hpp"
#include "nflow/core/random.hpp"
#include "nflow/core/types.hpp"
#include "nflow/distributions/density.hpp"
#include "nflow/math/constants.hpp"

namespace nflow::interop {

/// @brief The transform of an imported model: its layers in the library's forward order (data →
/// noise) as native nflow bijectors (see nflow/interop/native.hpp) in a run-time sequence.
/// Everything a DynamicFlow does works: gradients both ways, score, tapes, training, parameters
/// and buffers by name, saving and loading with nflow::io.
template <typename Scalar>
using ImportedTransform = DynamicFlow<Scalar>;

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

  /// ∂L/∂z for L depending on log_prob(z) through `grad_log_prob` (1 × N): −(z − loc)/scale²
  /// per column, times the column's gradient. loc and scale are buffers (not trained), as in the
  /// libraries.
  template <typename Z, typename G>
  Batch<Scalar, Dynamic, Z::ColsAtCompileTime> log_prob_vjp(
      const Eigen::MatrixBase<Z>& z, const Eigen::MatrixBase<G>& grad_log_prob,
      Eigen::Ref<Vector<Scalar>> /*grad_params*/) const {
    nflow::detail::check_rows("ImportedBase::log_prob_vjp", "z", dim(), z.rows(), z.cols());
    Batch<Scalar, Dynamic, Z::ColsAtCompileTime> g(z.rows(), z.cols());
    for (Index j = 0; j < z.cols(); ++j) {
      g.col(j) =
          (-(z.col(j) - loc_).array() / scale_.array().square() * grad_log_prob(0, j)).matrix();
    }
    return g;
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
/// all n samples). The layers are native nflow bijectors: gradients, score, fine-tuning with
/// nflow::train and saving with nflow::io work as for any Density. See docs/interop.md.
template <typename Scalar_>
class ImportedFlow : public Density<ImportedBase<Scalar_>, ImportedTransform<Scalar_>> {
  using Base = Density<ImportedBase<Scalar_>, ImportedTransform<Scalar_>>;

 public:
  using Scalar = Scalar_;
  ImportedFlow(ImportedBase<Scalar> base, ImportedTransform<Scalar> transform)
      : Base(std::move(base), std::move(transform)) {}

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
