#pragma once
/// @file
/// @brief LULinear: z = W x + b with W = P·L·(U + diag(sign ⊙ exp(log_s))) (Glow's LU-decomposed
/// invertible linear map).

#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>

#include "nflow/bijectors/lu_bijector_base.hpp"
#include "nflow/core/errors.hpp"
#include "nflow/core/parameters.hpp"
#include "nflow/core/types.hpp"

namespace nflow {

/// @brief An invertible linear layer in LU form: z = W x + b, W = P·L·(U + diag(sign ⊙ exp(log_s))).
///
/// forward:  z = W x + b,                            log|det| = Σᵢ log_sᵢ (constant in x)
/// inverse:  x = U'⁻¹ L⁻¹ Pᵀ (z − b), U' = U + diag(sign ⊙ exp(log_s)),   log|det| = −Σᵢ log_sᵢ
///
/// The inverse is one permutation and two triangular solves (never a general inverse); the cost of
/// either direction is D² multiply-adds per sample. P (a permutation, (P v)ᵢ = v_{perm(i)}) and
/// sign (±1) are fixed buffers, not trainable.
///
/// Parameters, in visit order: "lower" (D × D), "upper" (D × D), "log_s" (D × 1), the LU factors
/// as described in nflow::LUParameterization (ignored entries kept at zero with zero gradient),
/// then "bias" b (D × 1). The invariant, validation and strong guarantee on rejected writes are
/// those of nflow::LUBijectorBase (plus: b is finite). `const` evaluation only reads, so it is
/// thread-safe.
///
/// Gradients: both directions have exact vjps. The inverse direction's (for reverse-KL training)
/// uses triangular solves only: ∂L/∂(z − b) = W⁻ᵀ ∂L/∂x = P L⁻ᵀ U'⁻ᵀ ∂L/∂x.
///
/// Initialisation: the constructor gives the identity (P = I, L = I, U = 0, log_s = 0, b = 0);
/// random_orthogonal(dim, seed) a Haar-random orthogonal W (reproducible from the seed, random P);
/// from_weight(w) the exact LU factors of a given invertible w.
///
/// References: Kingma & Dhariwal 2018, Glow: Generative Flow with Invertible 1×1 Convolutions,
/// §3.2, arXiv:1807.03039.
/// @tparam Scalar_ float or double. @tparam Dim_ fixed or Eigen::Dynamic. The weights are
/// dynamic-size (heap-held) either way; with a fixed Dim a single point stays on the stack.
template <typename Scalar_, int Dim_ = Dynamic>
class LULinear : public LUBijectorBase<LULinear<Scalar_, Dim_>, Scalar_> {
  using Base = LUBijectorBase<LULinear<Scalar_, Dim_>, Scalar_>;
  using Base::lu_;
  using typename Base::LU;
  friend Base;

 public:
  using Scalar = Scalar_;
  static constexpr int Dim = Dim_;
  static constexpr bool IsConstantLogDet = true;
  using Column = Eigen::Matrix<Scalar, Dim, 1>;
  using typename Base::Weight;
  using typename Base::WeightColumn;

  /// The identity map of dimension Dim.
  LULinear() requires(Dim_ != Dynamic) : LULinear(Index(Dim_)) {}
  /// The identity map of dimension `dim`.
  explicit LULinear(Index dim)
      : Base(LU::identity(checked_dim(dim), kName)), bias_(Column::Zero(dim)) {}

  /// A Haar-random orthogonal W drawn reproducibly from `seed` (log|det| = 0), bias zero.
  static LULinear random_orthogonal(Index dim, std::uint64_t seed) {
    return LULinear(LU::random_orthogonal(checked_dim(dim), seed, kName));
  }
  /// W given explicitly (any invertible D × D matrix), factored exactly by LU with partial
  /// pivoting; bias zero. Throws ParameterError if `w` is singular or not finite.
  template <typename D>
  static LULinear from_weight(const Eigen::MatrixBase<D>& w) {
    checked_dim(w.rows());
    return LULinear(LU::from_weight(w, kName));
  }

  Index dim() const { return bias_.size(); }
  /// log|det W| = Σ log_s.
  Scalar log_abs_det() const { return lu_.log_abs_det(); }
  const Column& bias() const { return bias_; }
  // weight(), lower(), upper(), log_s(), sign(), permutation() and their setters: LUBijectorBase.

  template <typename D>
  void set_bias(const Eigen::MatrixBase<D>& v) {
    detail::check_rows(kName, "bias", dim(), v.rows(), v.cols());
    detail::check_cols(kName, "bias", 1, v.rows(), v.cols());
    this->mutate([&] { bias_ = v; });
  }

  // ---- hooks for BijectorBase ----------------------------------------------------------------
  template <typename X, typename C>
  detail::ResultFor<Scalar, Dim, X> forward_impl(const X& x, const C&) const {
    detail::ResultFor<Scalar, Dim, X> r;
    r.value.resize(x.rows(), x.cols());
    if constexpr (X::ColsAtCompileTime == 1) {
      lu_.apply_column(x, r.value);
    } else {
      with_output(r.value, [&](typename LU::MatrixRef out) { lu_.apply(x, out); });
    }
    r.value.colwise() += bias_;
    r.log_det.setConstant(1, x.cols(), lu_.log_abs_det());
    return r;
  }
  template <typename Z, typename C>
  detail::ResultFor<Scalar, Dim, Z> inverse_impl(const Z& z, const C&) const {
    detail::ResultFor<Scalar, Dim, Z> r;
    r.value.resize(z.rows(), z.cols());
    if constexpr (Z::ColsAtCompileTime == 1) {
      const Column u = z - bias_;  // on the stack when Dim is fixed
      lu_.solve_column(u, r.value);
    } else {
      with_output(r.value,
                  [&](typename LU::MatrixRef out) { lu_.solve(z.colwise() - bias_, out); });
    }
    r.log_det.setConstant(1, z.cols(), -lu_.log_abs_det());
    return r;
  }
  // forward_vjp_impl, inverse_vjp_impl: LUBijectorBase, through vjp<Inverse> below.

  // ---- parameters --------------------------------------------------------------------------------
  /// The parameters "lower", "upper", "log_s", "bias". After a non-const visit_parameters() the
  /// layer re-validates and recomputes its cached W; if a written value is invalid (or the visitor
  /// throws) the layer is restored to its state before the call and the exception propagates.
  template <typename Self, typename F>
  static void parameters_impl(Self& self, F&& f) {
    Base::parameters_impl(self, f);
    f("bias", self.bias_);
  }

  // visit_buffers ("permutation", "sign"): LUBijectorBase.

 private:
  static constexpr const char* kName = "LULinear";

  static Index checked_dim(Index dim) {
    if (dim <= 0 || (Dim_ != Dynamic && dim != Dim_)) {
      throw ParameterError(std::string("nflow::") + kName +
                           ": dim must be positive (and equal Dim when fixed), got " +
                           std::to_string(dim));
    }
    return dim;
  }

  /// Calls f with `out` as a column-major Ref, through a temporary if `out` is row-major (Dim = 1).
  template <typename Out, typename F>
  static void with_output(Out& out, F&& f) {
    if constexpr (bool(Out::IsRowMajor)) {
      Eigen::Matrix<Scalar, Dynamic, Dynamic> tmp(out.rows(), out.cols());
      f(tmp);
      out = tmp;
    } else {
      f(out);
    }
  }

  explicit LULinear(LU lu) : Base(std::move(lu)), bias_(Column::Zero(lu_.size())) {}

  /// The vjp of either direction: the LU map's (LUBijectorBase::lu_vjp), then the bias and the
  /// constant log-det (±Σ log_s per sample).
  template <bool Inverse, typename In, typename GV, typename GL>
  auto vjp(const In& in, const GV& gv, const GL& gl, Eigen::Ref<Vector<Scalar>> gp) const {
    detail::GradientSlicer<Scalar> slicer(gp);
    detail::BatchFor<Scalar, Dim, In> g_in(dim(), in.cols());
    with_output(g_in, [&](typename LU::MatrixRef out) {
      if constexpr (Inverse) {
        auto g_log_s = this->template lu_vjp<true>(in.colwise() - bias_, gv, out, slicer);
        g_log_s.array() -= gl.sum();
      } else {
        auto g_log_s = this->template lu_vjp<false>(in, gv, out, slicer);
        g_log_s.array() += gl.sum();
      }
    });
    auto g_bias = slicer.next(dim());
    if constexpr (Inverse) {
      g_bias -= g_in.rowwise().sum();
    } else {
      g_bias += gv.rowwise().sum();
    }
    return g_in;
  }

  /// The bias is finite (checked by LUBijectorBase::mutate after every write).
  void check_own_parameters() const {
    if (!bias_.allFinite()) {
      throw ParameterError(std::string("nflow::") + kName + ": parameter 'bias' must be finite");
    }
  }

  Column bias_;
};

}  // namespace nflow
