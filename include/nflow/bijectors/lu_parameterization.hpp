#pragma once
/// @file
/// @brief LUParameterization: the LU parameterisation of an invertible square matrix W, with its
/// products, triangular solves and their reverse-mode gradients, the map behind nflow::LULinear
/// and nflow::Conv1x1 (Kingma & Dhariwal 2018, Glow, §3.2, arXiv:1807.03039).

#include <Eigen/Core>
#include <Eigen/LU>
#include <Eigen/QR>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>

#include "nflow/core/buffers.hpp"
#include "nflow/core/errors.hpp"
#include "nflow/core/random.hpp"
#include "nflow/core/types.hpp"

namespace nflow {

/// @brief An invertible n × n matrix in LU form, with the operations of a linear bijector on it:
///
///     W = P · L · (U + diag(sign ⊙ exp(log_s)))
///
/// - P: a fixed permutation (a buffer): (P v)ᵢ = v_{perm(i)}, so row i of W is row perm(i) of L·U';
/// - L: unit lower-triangular; its strictly lower entries are the parameter "lower", stored as a
///   full n × n matrix whose diagonal and upper entries are ignored (kept at zero, zero gradient);
/// - U: strictly upper-triangular; the parameter "upper", a full n × n matrix whose diagonal and
///   lower entries are ignored likewise;
/// - sign: a fixed ±1 vector (a buffer); log_s: the parameter "log_s" (n entries).
///
/// log|det W| = Σ log_s. W⁻¹v = U'⁻¹ L⁻¹ Pᵀ v: one permutation and two triangular solves, never a
/// general inverse.
///
/// Invariant: every used entry is finite, |log_s| < log(largest Scalar) (so exp(±log_s) is finite
/// and nonzero: W is invertible), and the cached U' = U + diag(sign ⊙ exp(log_s)), L and W match
/// the parameters. The caches are recomputed by refresh(), which every mutating path of the owner
/// calls after writing through the *_storage() accessors, so `const` evaluation reads only and is
/// thread-safe. refresh() throws ParameterError naming the parameter ('lower', 'upper' or 'log_s').
///
/// Every operation works on an n × M matrix of columns (a batch for LULinear, the pixels of all
/// samples of a batch for Conv1x1), or on one column. The weights are always dynamic-size and the
/// operations take Eigen::Ref arguments: one compiled copy per Scalar serves every size.
///
/// References: Kingma & Dhariwal 2018, Glow: Generative Flow with Invertible 1×1 Convolutions,
/// §3.2, arXiv:1807.03039.
/// @tparam Scalar float or double.
template <typename Scalar>
class LUParameterization {
 public:
  using Square = Eigen::Matrix<Scalar, Dynamic, Dynamic>;
  using Column = Eigen::Matrix<Scalar, Dynamic, 1>;
  using Indices = Eigen::VectorXi;

  /// The identity: P = I, L = I, U = 0, log_s = 0, sign = +1.
  static LUParameterization identity(Index n, const char* owner) {
    check_size_arg(n, owner);
    LUParameterization p;
    p.lower_ = Square::Zero(n, n);
    p.upper_ = Square::Zero(n, n);
    p.log_s_ = Column::Zero(n);
    p.sign_ = Column::Ones(n);
    p.perm_.resize(n);
    for (Index i = 0; i < n; ++i) p.perm_(i) = int(i);
    p.refresh(owner);
    return p;
  }

  /// The exact factors of a given invertible `w` by LU with partial pivoting (computed in double).
  /// Throws ParameterError naming 'log_s' if `w` is singular or not finite.
  template <typename D>
  static LUParameterization from_weight(const Eigen::MatrixBase<D>& w, const char* owner) {
    check_size_arg(w.rows(), owner);
    if (w.rows() != w.cols()) {
      throw ShapeError(std::string("nflow: ") + owner + ": the weight must be square, got " +
                       detail::shape_string(w.rows(), w.cols()));
    }
    if (!w.allFinite()) {
      throw ParameterError(std::string("nflow::") + owner + ": the weight must be finite");
    }
    const Index n = w.rows();
    const Eigen::MatrixXd wd = w.template cast<double>();
    const Eigen::PartialPivLU<Eigen::MatrixXd> lu(wd);
    const Eigen::MatrixXd& f = lu.matrixLU();
    // PartialPivLU gives w = P⁻¹ L U with P = permutationP() of indices σ, (P⁻¹v)ᵢ = v_{σ(i)}.
    LUParameterization p;
    p.lower_ =
        f.template triangularView<Eigen::StrictlyLower>().toDenseMatrix().template cast<Scalar>();
    p.upper_ =
        f.template triangularView<Eigen::StrictlyUpper>().toDenseMatrix().template cast<Scalar>();
    p.log_s_.resize(n);
    p.sign_.resize(n);
    for (Index i = 0; i < n; ++i) {
      const double d = f(i, i);
      if (d == 0.0) {
        throw ParameterError(std::string("nflow::") + owner +
                             ": parameter 'log_s' would be -inf: the weight is singular");
      }
      p.log_s_(i) = Scalar(std::log(std::abs(d)));
      p.sign_(i) = d > 0 ? Scalar(1) : Scalar(-1);
    }
    p.perm_ = lu.permutationP().indices().template cast<int>();
    p.refresh(owner);
    return p;
  }

  /// A Haar-random orthogonal W (QR of a Gaussian matrix with R's diagonal made positive), drawn
  /// from `seed` with nflow's reproducible sampler, then factored by from_weight. log|det W| = 0.
  static LUParameterization random_orthogonal(Index n, std::uint64_t seed, const char* owner) {
    check_size_arg(n, owner);
    std::mt19937_64 gen(seed);
    const Eigen::MatrixXd g = standard_normal_matrix<double>(n, n, gen);
    const Eigen::HouseholderQR<Eigen::MatrixXd> qr(g);
    Eigen::MatrixXd q = qr.householderQ();
    for (Index j = 0; j < n; ++j) {
      if (qr.matrixQR()(j, j) < 0) q.col(j) = -q.col(j);
    }
    return from_weight(q, owner);
  }

  Index size() const { return log_s_.size(); }
  const Square& lower() const { return lower_; }
  const Square& upper() const { return upper_; }
  const Column& log_s() const { return log_s_; }
  const Column& sign() const { return sign_; }
  const Indices& permutation() const { return perm_; }
  /// The assembled W = P L (U + diag(sign ⊙ exp(log_s))).
  const Square& weight() const { return weight_; }
  Scalar log_abs_det() const { return log_s_.sum(); }

  // Mutable access for the owner's setters and visitors; the owner calls refresh() afterwards.
  Square& lower_storage() { return lower_; }
  Square& upper_storage() { return upper_; }
  Column& log_s_storage() { return log_s_; }

  /// The buffers "permutation" (P's indices perm) and "sign" (the ±1 signs as integers), see
  /// nflow/core/buffers.hpp.
  template <typename F>
  void visit_buffers(F& f) const {
    const BufferVector p = detail::to_buffer(perm_);
    f(std::string("permutation"), p);
    const BufferVector s = sign_buffer();
    f(std::string("sign"), s);
  }
  /// Writable visit: validates both new values (a permutation of 0 … n−1; entries ±1), applies
  /// them and refreshes the caches. Throws ParameterError naming the buffer; the owner restores
  /// its state on a throw (as for parameters).
  template <typename F>
  void visit_buffers(F& f, const char* owner) {
    BufferVector p = detail::to_buffer(perm_);
    f(std::string("permutation"), p);
    BufferVector s = sign_buffer();
    f(std::string("sign"), s);
    const std::string who = std::string("nflow::") + owner;
    Indices perm = detail::buffer_to_permutation(who.c_str(), "permutation", p, size());
    const Eigen::VectorXi si = detail::buffer_to_indices(who.c_str(), "sign", s, size(), -1, 1);
    for (Index i = 0; i < size(); ++i) {
      if (si(i) == 0)
        reject_buffer(who, "sign",
                      "entry " + std::to_string(i) + " is 0; every entry must be +1 or -1");
    }
    perm_ = std::move(perm);
    sign_ = si.template cast<Scalar>();
    refresh(owner);
  }

  /// Zeroes the ignored entries, validates, and recomputes the caches. Throws ParameterError
  /// naming the offending parameter ('lower', 'upper' or 'log_s').
  void refresh(const char* owner) {
    set_permutation_matrix();
    lower_.template triangularView<Eigen::Upper>().setZero();
    upper_.template triangularView<Eigen::Lower>().setZero();
    if (!lower_.allFinite()) reject(owner, "lower", "must be finite");
    if (!upper_.allFinite()) reject(owner, "upper", "must be finite");
    if (!log_s_.allFinite()) reject(owner, "log_s", "must be finite");
    if (!(log_s_.cwiseAbs().array() < max_abs_log()).all()) {
      reject(
          owner, "log_s",
          "must satisfy |log_s| < log(largest Scalar), so that exp(±log_s) is finite and nonzero");
    }
    const Column diag = sign_.cwiseProduct(log_s_.array().exp().matrix());
    upper_full_ = upper_;
    upper_full_.diagonal() = diag;
    lower_full_ = lower_;
    lower_full_.diagonal().setOnes();
    const Square a = lower_full_ * upper_full_;
    weight_ = p_ * a;
    if (!weight_.allFinite()) {
      reject(owner, "lower", "(with 'upper') gives a weight P·L·U that overflows");
    }
  }

  using MatrixRef = Eigen::Ref<Eigen::Matrix<Scalar, Dynamic, Dynamic>>;
  using ConstMatrixRef = Eigen::Ref<const Eigen::Matrix<Scalar, Dynamic, Dynamic>>;
  using VectorRef = Eigen::Ref<Eigen::Matrix<Scalar, Dynamic, 1>>;
  using ConstVectorRef = Eigen::Ref<const Eigen::Matrix<Scalar, Dynamic, 1>>;
  using Work = Eigen::Matrix<Scalar, Dynamic, Dynamic>;

  // The operations below take Eigen::Ref arguments rather than templates, so that every layer
  // size and input type shares one compiled copy per Scalar (the triangular solves and products
  // are large templates: instantiating them per input type multiplied compile times).

  /// out = W · in for n × M matrices (`out` must not alias `in`).
  void apply(ConstMatrixRef in, MatrixRef out) const { out.noalias() = weight_ * in; }
  /// out = W · in for one column (matrix-vector kernels; no heap allocation). Not inlined: once
  /// inlined into a caller whose column is a small fixed-size vector, g++ 12 at -O3 flags the
  /// (unreachable) packet paths of the dynamic-size kernels with -Warray-bounds.
  EIGEN_DONT_INLINE void apply_column(ConstVectorRef in, VectorRef out) const {
    out.noalias() = weight_ * in;
  }

  /// out = W⁻¹ · in by one permutation and two triangular solves (`out` must not alias `in`).
  /// Works through the columns in chunks of about 32 KiB, which stay in cache between the
  /// permutation and the two solves (2–3× faster than whole-batch solves on 65,536 columns).
  void solve(ConstMatrixRef in, MatrixRef out) const {
    const Index cols = in.cols();
    const Index chunk =
        std::max<Index>(64, Index(32768 / sizeof(Scalar)) / std::max<Index>(1, size()));
    for (Index j = 0; j < cols; j += chunk) {
      const Index c = std::min(chunk, cols - j);
      auto block = out.middleCols(j, c);
      block.noalias() = p_.transpose() * in.middleCols(j, c);
      lower_.template triangularView<Eigen::UnitLower>().solveInPlace(block);
      upper_full_.template triangularView<Eigen::Upper>().solveInPlace(block);
    }
  }
  /// The same for one column (triangular vector solves; no heap allocation; not inlined, as above).
  EIGEN_DONT_INLINE void solve_column(ConstVectorRef in, VectorRef out) const {
    out.noalias() = p_.transpose() * in;
    lower_.template triangularView<Eigen::UnitLower>().solveInPlace(out);
    upper_full_.template triangularView<Eigen::Upper>().solveInPlace(out);
  }

  /// Reverse mode of out = W · in: writes ∂L/∂in = Wᵀ g into `g_in` and adds ∂L/∂lower,
  /// ∂L/∂upper and the part of ∂L/∂log_s that comes through W into the three gradient tensors.
  ///
  /// With y = U' in, g̃ = Pᵀ g and h = Lᵀ g̃: ∂L/∂L = g̃ yᵀ (strictly lower), ∂L/∂U' = h inᵀ,
  /// so ∂L/∂log_s = diag(h inᵀ) ⊙ sign ⊙ exp(log_s); ∂L/∂in = U'ᵀ h = Wᵀ g.
  /// y and h use dense products with the cached factors (zeros included): twice the
  /// multiply-adds of triangular products, but Eigen's GEMM is faster than its triangular
  /// products at these sizes and one kernel serves every product here.
  void apply_vjp(ConstMatrixRef in, ConstMatrixRef g, MatrixRef g_in, MatrixRef g_lower,
                 MatrixRef g_upper, VectorRef g_log_s) const {
    const Index n = size();
    const Index m = in.cols();
    Work y(n, m);
    y.noalias() = upper_full_ * in;
    Work gt(n, m);
    gt.noalias() = p_.transpose() * g;
    Work h(n, m);
    h.noalias() = lower_full_.transpose() * gt;
    g_in.noalias() = weight_.transpose() * g;
    Square outer(n, n);
    outer.noalias() = gt * y.transpose();
    g_lower.template triangularView<Eigen::StrictlyLower>() += outer;
    outer.noalias() = h * in.transpose();
    g_upper.template triangularView<Eigen::StrictlyUpper>() += outer;
    g_log_s += outer.diagonal().cwiseProduct(upper_full_.diagonal());
  }

  /// Reverse mode of out = W⁻¹ · in, by triangular solves only: writes ∂L/∂in = W⁻ᵀ g into
  /// `g_in` and adds the parameter gradients that come through W⁻¹.
  ///
  /// With v = L⁻¹ Pᵀ in, out = U'⁻¹ v, q = U'⁻ᵀ g and g̃ = L⁻ᵀ q: ∂L/∂in = P g̃,
  /// ∂L/∂L = −g̃ vᵀ (strictly lower), ∂L/∂U' = −q outᵀ.
  void solve_vjp(ConstMatrixRef in, ConstMatrixRef g, MatrixRef g_in, MatrixRef g_lower,
                 MatrixRef g_upper, VectorRef g_log_s) const {
    const Index n = size();
    Work v(n, in.cols());
    v.noalias() = p_.transpose() * in;
    lower_.template triangularView<Eigen::UnitLower>().solveInPlace(v);
    Work out = v;
    upper_full_.template triangularView<Eigen::Upper>().solveInPlace(out);
    Work q = g;
    upper_full_.transpose().template triangularView<Eigen::Lower>().solveInPlace(q);
    Work gt = q;
    lower_.transpose().template triangularView<Eigen::UnitUpper>().solveInPlace(gt);
    g_in.noalias() = p_ * gt;
    Square outer(n, n);
    outer.noalias() = gt * v.transpose();
    g_lower.template triangularView<Eigen::StrictlyLower>() -= outer;
    outer.noalias() = q * out.transpose();
    g_upper.template triangularView<Eigen::StrictlyUpper>() -= outer;
    g_log_s -= outer.diagonal().cwiseProduct(upper_full_.diagonal());
  }

 private:
  LUParameterization() = default;

  static void check_size_arg(Index n, const char* owner) {
    if (n <= 0) {
      throw ParameterError(std::string("nflow::") + owner + ": the size must be positive, got " +
                           std::to_string(n));
    }
  }

  /// log of the largest finite Scalar: the bound on |log_s|.
  static Scalar max_abs_log() { return std::log(std::numeric_limits<Scalar>::max()); }

  [[noreturn]] static void reject(const char* owner, const char* name, const char* why) {
    throw ParameterError(std::string("nflow::") + owner + ": parameter '" + name + "' " + why);
  }

  BufferVector sign_buffer() const {
    BufferVector b(sign_.size());
    for (Index i = 0; i < sign_.size(); ++i) b(i) = sign_(i) > 0 ? 1 : -1;
    return b;
  }
  [[noreturn]] static void reject_buffer(const std::string& who, const char* name,
                                         const std::string& what) {
    throw ParameterError(who + ": buffer '" + name + "' " + what);
  }

  /// P as an Eigen permutation: Eigen's (P v)_{indices(k)} = v_k, so its indices are perm⁻¹.
  void set_permutation_matrix() {
    Indices inv(perm_.size());
    for (Index i = 0; i < perm_.size(); ++i) inv(perm_(i)) = int(i);
    p_ = Eigen::PermutationMatrix<Dynamic, Dynamic, int>(inv);
  }

  Square lower_;
  Square upper_;
  Column log_s_;
  Column sign_;
  Indices perm_;
  Eigen::PermutationMatrix<Dynamic, Dynamic, int> p_;  // P, for products
  Square upper_full_;                                  // cache: U + diag(sign ⊙ exp(log_s))
  Square lower_full_;                                  // cache: L (unit diagonal, zeros above)
  Square weight_;                                      // cache: P L U'
};

}  // namespace nflow
