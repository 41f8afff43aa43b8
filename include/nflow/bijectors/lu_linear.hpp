#pragma once
/// @file
/// @brief LULinear: z = W x + b with W = P·L·(U + diag(sign ⊙ exp(log_s))) (Glow's LU-decomposed
/// invertible linear map).

#include "nflow/core/bijector_base.hpp"
#include "nflow/core/errors.hpp"
#include "nflow/core/parameters.hpp"
#include "nflow/detail/lu_param.hpp"

#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>

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
/// Parameters, in visit order:
/// - "lower" (D × D): the strictly lower entries of the unit lower-triangular L. Stored as a full
///   matrix; the diagonal and upper entries are ignored, kept at zero and get zero gradient.
/// - "upper" (D × D): the strictly upper entries of U; diagonal and lower entries ignored likewise.
/// - "log_s" (D × 1): log of the absolute diagonal of U'.
/// - "bias" b (D × 1).
///
/// Invariant: every used entry is finite, |log_s| < log(largest Scalar) (so exp(±log_s) is finite
/// and nonzero: W is invertible), and the cached W, L and U' match the parameters. Every mutating
/// call (the setters, and the non-const visit_parameters that set_parameters, optimisers and
/// loaders use) re-validates and recomputes the caches (O(D³), once per call, not per sample); a
/// rejected value throws ParameterError naming the parameter and leaves the layer unchanged
/// (strong guarantee). `const` evaluation only reads, so it is thread-safe.
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
class LULinear : public BijectorBase<LULinear<Scalar_, Dim_>> {
  using LU = detail::LUParam<Scalar_>;

 public:
  using Scalar = Scalar_;
  static constexpr int Dim = Dim_;
  static constexpr bool IsConstantLogDet = true;
  using Column = Eigen::Matrix<Scalar, Dim, 1>;
  using Weight = typename LU::Square;
  using WeightColumn = typename LU::Column;

  /// The identity map of dimension Dim.
  LULinear() requires(Dim_ != Dynamic) : LULinear(Index(Dim_)) {}
  /// The identity map of dimension `dim`.
  explicit LULinear(Index dim) : lu_(LU::identity(checked_dim(dim), kName)), bias_(Column::Zero(dim)) {}

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
  /// The assembled W = P·L·(U + diag(sign ⊙ exp(log_s))), D × D.
  const Weight& weight() const { return lu_.weight(); }
  /// log|det W| = Σ log_s.
  Scalar log_abs_det() const { return lu_.log_abs_det(); }
  const Weight& lower() const { return lu_.lower(); }
  const Weight& upper() const { return lu_.upper(); }
  const WeightColumn& log_s() const { return lu_.log_s(); }
  const Column& bias() const { return bias_; }
  /// The fixed ±1 signs of U's diagonal (a buffer).
  const WeightColumn& sign() const { return lu_.sign(); }
  /// The fixed permutation: row i of W is row permutation()(i) of L·U'.
  const typename LU::Indices& permutation() const { return lu_.permutation(); }

  template <typename D>
  void set_lower(const Eigen::MatrixBase<D>& v) {
    set_square("lower", v, [](LULinear& s) -> Weight& { return s.lu_.lower_storage(); });
  }
  template <typename D>
  void set_upper(const Eigen::MatrixBase<D>& v) {
    set_square("upper", v, [](LULinear& s) -> Weight& { return s.lu_.upper_storage(); });
  }
  template <typename D>
  void set_log_s(const Eigen::MatrixBase<D>& v) {
    detail::check_rows(kName, "log_s", dim(), v.rows(), v.cols());
    detail::check_cols(kName, "log_s", 1, v.rows(), v.cols());
    mutate([&] { lu_.log_s_storage() = v; });
  }
  template <typename D>
  void set_bias(const Eigen::MatrixBase<D>& v) {
    detail::check_rows(kName, "bias", dim(), v.rows(), v.cols());
    detail::check_cols(kName, "bias", 1, v.rows(), v.cols());
    mutate([&] { bias_ = v; });
  }

  // ---- hooks for BijectorBase ----------------------------------------------------------------
  template <typename X, typename C>
  auto forward_impl(const X& x, const C&) const {
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
  auto inverse_impl(const Z& z, const C&) const {
    detail::ResultFor<Scalar, Dim, Z> r;
    r.value.resize(z.rows(), z.cols());
    if constexpr (Z::ColsAtCompileTime == 1) {
      const Column u = z - bias_;  // on the stack when Dim is fixed
      lu_.solve_column(u, r.value);
    } else {
      with_output(r.value, [&](typename LU::MatrixRef out) { lu_.solve(z.colwise() - bias_, out); });
    }
    r.log_det.setConstant(1, z.cols(), -lu_.log_abs_det());
    return r;
  }
  template <typename X, typename GV, typename GL, typename C>
  auto forward_vjp_impl(const X& x, const GV& gv, const GL& gl, Eigen::Ref<Vector<Scalar>> gp,
                        const C&) const {
    const Index d = dim();
    detail::GradientSlicer<Scalar> slicer(gp);
    auto g_lower = slicer.next(d, d);
    auto g_upper = slicer.next(d, d);
    auto g_log_s = slicer.next(d);
    auto g_bias = slicer.next(d);
    detail::BatchFor<Scalar, Dim, X> gx(d, x.cols());
    with_output(gx, [&](typename LU::MatrixRef out) { lu_.apply_vjp(x, gv, out, g_lower, g_upper, g_log_s); });
    g_log_s.array() += gl.sum();
    g_bias += gv.rowwise().sum();
    return gx;
  }
  template <typename Z, typename GV, typename GL, typename C>
  auto inverse_vjp_impl(const Z& z, const GV& gv, const GL& gl, Eigen::Ref<Vector<Scalar>> gp,
                        const C&) const {
    const Index d = dim();
    detail::GradientSlicer<Scalar> slicer(gp);
    auto g_lower = slicer.next(d, d);
    auto g_upper = slicer.next(d, d);
    auto g_log_s = slicer.next(d);
    auto g_bias = slicer.next(d);
    detail::BatchFor<Scalar, Dim, Z> gz(d, z.cols());
    with_output(gz, [&](typename LU::MatrixRef out) {
      lu_.solve_vjp(z.colwise() - bias_, gv, out, g_lower, g_upper, g_log_s);
    });
    g_log_s.array() -= gl.sum();
    g_bias -= gz.rowwise().sum();
    return gz;
  }

  // ---- parameters --------------------------------------------------------------------------------
  /// The parameters "lower", "upper", "log_s", "bias". After a non-const visit_parameters() the
  /// layer re-validates and recomputes its cached W; if a written value is invalid (or the visitor
  /// throws) the layer is restored to its state before the call and the exception propagates.
  template <typename Self, typename F>
  static void parameters_impl(Self& self, F&& f) {
    if constexpr (std::is_const_v<Self>) {
      f("lower", self.lu_.lower());
      f("upper", self.lu_.upper());
      f("log_s", self.lu_.log_s());
    } else {
      f("lower", self.lu_.lower_storage());
      f("upper", self.lu_.upper_storage());
      f("log_s", self.lu_.log_s_storage());
    }
    f("bias", self.bias_);
  }
  template <typename Write>
  void update_parameters_impl(Write&& write) {
    mutate(std::forward<Write>(write));
  }

  /// @brief The buffers "permutation" (P: row i of W is row permutation(i) of L·U') and "sign"
  /// (the fixed ±1 signs of U's diagonal); see nflow/core/buffers.hpp. New values must be a
  /// permutation of 0 … D−1 and entries ±1; otherwise ParameterError, and the layer is unchanged.
  template <typename F>
  void visit_buffers(F&& f) const {
    lu_.visit_buffers(f);
  }
  template <typename F>
  void visit_buffers(F&& f) {
    mutate([&] { lu_.visit_buffers(f, kName); });
  }

 private:
  static constexpr const char* kName = "LULinear";

  static Index checked_dim(Index dim) {
    if (dim <= 0 || (Dim_ != Dynamic && dim != Dim_)) {
      throw ParameterError(std::string("nflow::") + kName +
                           ": dim must be positive (and equal Dim when fixed), got " + std::to_string(dim));
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

  explicit LULinear(LU lu) : lu_(std::move(lu)), bias_(Column::Zero(lu_.size())) {}

  /// Runs `write`, then re-validates and refreshes the caches; restores the old state on failure.
  template <typename Write>
  void mutate(Write&& write) {
    LULinear backup = *this;
    try {
      write();
      if (!bias_.allFinite()) {
        throw ParameterError(std::string("nflow::") + kName + ": parameter 'bias' must be finite");
      }
      lu_.refresh(kName);
    } catch (...) {
      *this = std::move(backup);
      throw;
    }
  }

  template <typename D, typename Get>
  void set_square(const char* name, const Eigen::MatrixBase<D>& v, Get get) {
    detail::check_rows(kName, name, dim(), v.rows(), v.cols());
    detail::check_cols(kName, name, dim(), v.rows(), v.cols());
    mutate([&] { get(*this) = v; });
  }

  LU lu_;
  Column bias_;
};

}  // namespace nflow
