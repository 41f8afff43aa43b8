#pragma once
/// @file
/// @brief The kernels of a dense (fully connected) layer over a batch, shared by the MLP and by
/// masked networks, and the PyTorch-style uniform initialisation.
///
/// A dense layer maps a batch `X` (in × N, one sample per column) to `Y = W·X + b·1ᵀ`
/// (out × N), with `W` out × in (PyTorch's nn.Linear layout) and `b` a column vector. Over a
/// batch the product is one GEMM; the bias is a broadcast add. Its reverse-mode derivatives, for
/// an upstream gradient `G = ∂L/∂Y`, are `∂L/∂W = G·Xᵀ`, `∂L/∂b = G·1` (row sums) and
/// `∂L/∂X = Wᵀ·G`. Column j of `Y` depends on column j of `X` only.

#include <Eigen/Core>
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstddef>
#include <random>
#include <type_traits>

#include "nflow/core/errors.hpp"
#include "nflow/core/random.hpp"
#include "nflow/core/types.hpp"

namespace nflow::nn {

namespace blas_detail {
#ifdef NFLOW_USE_BLAS
// The Fortran BLAS GEMMs (every BLAS exports them), under names of nflow's own so that no
// declaration in a BLAS header (cblas.h, Eigen's blas.h) can clash; the two trailing arguments are
// the lengths of the character arguments that gfortran-compiled BLAS libraries expect.
extern "C" void nflow_blas_sgemm(const char*, const char*, const int*, const int*, const int*,
                                 const float*, const float*, const int*, const float*, const int*,
                                 const float*, float*, const int*, std::size_t,
                                 std::size_t) __asm__("sgemm_");
extern "C" void nflow_blas_dgemm(const char*, const char*, const int*, const int*, const int*,
                                 const double*, const double*, const int*, const double*,
                                 const int*, const double*, double*, const int*, std::size_t,
                                 std::size_t) __asm__("dgemm_");
// OpenBLAS's and OpenMP's thread controls, as weak references (null when the program has no
// OpenBLAS, or no OpenMP runtime).
extern "C" int nflow_openblas_get_parallel() __asm__("openblas_get_parallel") __attribute__((weak));
extern "C" void nflow_openblas_set_num_threads(int) __asm__("openblas_set_num_threads")
    __attribute__((weak));
extern "C" int nflow_omp_get_max_threads() __asm__("omp_get_max_threads") __attribute__((weak));
extern "C" void nflow_omp_set_num_threads(int) __asm__("omp_set_num_threads") __attribute__((weak));

/// Runs `call` (one BLAS call) on one thread: nflow splits batches over threads of its own
/// (nflow/core/parallel.hpp), and BLAS threads inside them would oversubscribe the cores.
/// OpenBLAS built on OpenMP sizes each call by the calling thread's OpenMP setting, so that is set
/// to 1 for the call and restored after it (the caller's own OpenMP loops keep their threads);
/// OpenBLAS built on pthreads has one process-wide count, set to 1 at the first call. Another
/// BLAS is called as it is (link a sequential one).
template <typename Call>
void single_threaded(Call&& call) {
  static const int parallel =
      nflow_openblas_get_parallel != nullptr ? nflow_openblas_get_parallel() : 0;
  if (parallel == 1) {
    static const bool once = [] {
      if (nflow_openblas_set_num_threads != nullptr) nflow_openblas_set_num_threads(1);
      return true;
    }();
    (void)once;
  } else if (parallel == 2 && nflow_omp_get_max_threads != nullptr &&
             nflow_omp_set_num_threads != nullptr) {
    const int saved = nflow_omp_get_max_threads();
    if (saved > 1) {
      nflow_omp_set_num_threads(1);
      call();
      nflow_omp_set_num_threads(saved);
      return;
    }
  }
  call();
}
#endif

/// Throws the ShapeError of nn::gemm. Out of line and not a template, so that every gemm
/// specialisation carries only the comparison and a call (the message code is compiled once).
[[noreturn]] inline void gemm_shape_error(Index a_rows, Index a_cols, Index b_rows, Index b_cols,
                                          Index out_rows, Index out_cols) {
  throw ShapeError("nflow: nn::gemm: op(a) is " + detail::shape_string(a_rows, a_cols) +
                   ", op(b) " + detail::shape_string(b_rows, b_cols) + " and out " +
                   detail::shape_string(out_rows, out_cols) +
                   ": op(a)·op(b) needs op(a)'s columns = op(b)'s rows and out of shape "
                   "op(a)'s rows x op(b)'s columns");
}

/// Whether an Eigen expression type can be handed to a BLAS GEMM as it is: float or double,
/// stored column-major with unit inner stride (a plain matrix, a Map, a Ref or a block of one).
template <typename T>
constexpr bool blas_operand() {
  using U = std::remove_cvref_t<T>;
  using S = typename U::Scalar;
  return (std::is_same_v<S, float> ||
          std::is_same_v<S, double>)&&(int(U::Flags) & Eigen::DirectAccessBit) != 0 &&
         (int(U::Flags) & Eigen::RowMajorBit) == 0 && int(U::InnerStrideAtCompileTime) == 1;
}

/// y[0..m) (+)= A·x for the few rows (fewer than a half packet: 3 floats, 1 double) that Eigen's
/// matrix-vector kernel leaves to a scalar loop whose multiply-adds form one dependency chain per
/// row (a 2 × 64 float product took 62–75 ns against 41 ns for 4 × 64); here eight chains per
/// row, summed pairwise at the end. A column-major with leading dimension lda, x and y contiguous.
template <typename S>
void few_rows_gemv(Index m, Index n, const S* a, Index lda, const S* x, S* y, bool accumulate) {
  for (Index i = 0; i < m; ++i) {
    S s[8] = {};
    Index j = 0;
    for (; j + 8 <= n; j += 8) {
      for (Index k = 0; k < 8; ++k) s[k] += a[(j + k) * lda + i] * x[j + k];
    }
    for (; j < n; ++j) s[j % 8] += a[j * lda + i] * x[j];
    const S sum = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    y[i] = accumulate ? y[i] + sum : sum;
  }
}
}  // namespace blas_detail

/// @brief `out = op(a)·op(b)` (or `out += op(a)·op(b)` with `accumulate`), where op is the
/// transpose when `TransA` / `TransB`. `out` must already have the product's shape (else
/// nflow::ShapeError, naming the three shapes; nothing is written) and must not alias `a` or `b`
/// (as with Eigen's `noalias()`).
///
/// Eigen computes it, unless nflow is built with `NFLOW_USE_BLAS` (CMake option of that name):
/// then products of at least 16 columns and 2¹³ multiply-adds whose operands are plain column-major
/// float or double storage go to the BLAS library's GEMM (single-threaded: nflow's own threads
/// split batches). One point (one column) always stays in Eigen, whose small fixed-size products
/// are faster than a library call. Column j of `op(a)·op(b)` depends on column j of `op(b)` only,
/// in either path, so a NaN in one sample never reaches another; the two paths round differently
/// (a batch and the same columns one at a time agree to rounding, not bit for bit).
template <bool TransA, bool TransB, typename Out, typename A, typename B>
void gemm(Out&& out, const A& a, const B& b, bool accumulate) {
  const Index a_rows = TransA ? a.cols() : a.rows(), a_cols = TransA ? a.rows() : a.cols();
  const Index b_rows = TransB ? b.cols() : b.rows(), b_cols = TransB ? b.rows() : b.cols();
  if (a_rows != out.rows() || b_cols != out.cols() || a_cols != b_rows) [[unlikely]] {
    blas_detail::gemm_shape_error(a_rows, a_cols, b_rows, b_cols, out.rows(), out.cols());
  }
  auto eigen_product = [&](const auto& lhs, const auto& rhs) {
    if (accumulate) {
      out.noalias() += lhs * rhs;
    } else {
      out.noalias() = lhs * rhs;
    }
  };
  auto eigen = [&] {
    if constexpr (TransA && TransB) {
      eigen_product(a.transpose(), b.transpose());
    } else if constexpr (TransA) {
      eigen_product(a.transpose(), b);
    } else if constexpr (TransB) {
      eigen_product(a, b.transpose());
    } else {
      eigen_product(a, b);
    }
  };
#ifdef NFLOW_USE_BLAS
  using S = typename std::remove_cvref_t<Out>::Scalar;
  if constexpr (blas_detail::blas_operand<Out>() && blas_detail::blas_operand<A>() &&
                blas_detail::blas_operand<B>() && std::is_same_v<S, typename A::Scalar> &&
                std::is_same_v<S, typename B::Scalar>) {
    const Index m = out.rows(), n = out.cols(), k = a_cols;
    const bool large = n >= 16 && m * n * k >= (Index(1) << 13) && m <= INT_MAX && n <= INT_MAX &&
                       k <= INT_MAX && a.outerStride() <= INT_MAX && b.outerStride() <= INT_MAX &&
                       out.outerStride() <= INT_MAX;
    if (large) {
      const char ta = TransA ? 'T' : 'N', tb = TransB ? 'T' : 'N';
      const int mi = int(m), ni = int(n), ki = int(k);
      const int lda = int(std::max<Index>({a.outerStride(), a.rows(), 1}));
      const int ldb = int(std::max<Index>({b.outerStride(), b.rows(), 1}));
      const int ldc = int(std::max<Index>({out.outerStride(), m, 1}));
      const S one = 1, beta = accumulate ? S(1) : S(0);
      blas_detail::single_threaded([&] {
        if constexpr (std::is_same_v<S, float>) {
          blas_detail::nflow_blas_sgemm(&ta, &tb, &mi, &ni, &ki, &one, a.data(), &lda, b.data(),
                                        &ldb, &beta, out.data(), &ldc, 1, 1);
        } else {
          blas_detail::nflow_blas_dgemm(&ta, &tb, &mi, &ni, &ki, &one, a.data(), &lda, b.data(),
                                        &ldb, &beta, out.data(), &ldc, 1, 1);
        }
      });
      return;
    }
  }
#endif
  // One point: the rows past the last multiple of 4 floats (2 doubles), which Eigen's
  // matrix-vector kernel computes as scalar dependency chains, in few_rows_gemv (the output
  // layer of a d = 2 coupling has 2 rows: 62 → 30 ns; a Real NVP d = 2 log_prob 2.2 → 1.85 µs).
  using OutT = std::remove_cvref_t<Out>;
  if constexpr (!TransA && !TransB && int(OutT::ColsAtCompileTime) == 1 &&
                blas_detail::blas_operand<Out>() && blas_detail::blas_operand<A>() &&
                blas_detail::blas_operand<B>() &&
                std::is_same_v<typename OutT::Scalar, typename A::Scalar> &&
                std::is_same_v<typename OutT::Scalar, typename B::Scalar>) {
    using S1 = typename OutT::Scalar;
    constexpr Index half_packet = Index(16 / sizeof(S1));
    const Index m = out.rows(), tail = m % half_packet, head = m - tail;
    if (tail != 0 && a.cols() > 0) {
      if (head > 0) {
        auto top = out.topRows(head);
        if (accumulate) {
          top.noalias() += a.topRows(head) * b;
        } else {
          top.noalias() = a.topRows(head) * b;
        }
      }
      blas_detail::few_rows_gemv<S1>(tail, a.cols(), a.data() + head, a.outerStride(), b.data(),
                                     out.data() + head, accumulate);
      return;
    }
  }
  eigen();
}

/// @brief Sets every column of `out` to `bias` (a vectorised column copy each; `out.colwise() +=
/// bias` on a block of a matrix compiled to scalar code with g++ 12 and Eigen 3.4, 13 % of a
/// Real NVP batch).
template <typename OutDerived, typename BiasDerived>
void fill_columns(Eigen::MatrixBase<OutDerived>& out, const Eigen::MatrixBase<BiasDerived>& bias) {
  for (Index j = 0; j < out.cols(); ++j) out.col(j) = bias.derived();
}

/// @brief `out = weight · input + bias` broadcast over columns: the bias is written into `out`
/// and the product accumulated onto it, one pass (`out = W·X` would zero `out` first and the bias
/// add pass over it again). `out` must already have the right shape (a plain matrix or a
/// writable block).
template <typename OutDerived, typename WeightDerived, typename InputDerived, typename BiasDerived>
void dense_forward(Eigen::MatrixBase<OutDerived>& out,
                   const Eigen::MatrixBase<WeightDerived>& weight,
                   const Eigen::MatrixBase<InputDerived>& input,
                   const Eigen::MatrixBase<BiasDerived>& bias) {
  fill_columns(out, bias);
  gemm<false, false>(out.derived(), weight.derived(), input.derived(), true);
}

/// @brief Rvalue overload of dense_forward, for a block of a larger buffer.
template <typename OutDerived, typename WeightDerived, typename InputDerived, typename BiasDerived>
void dense_forward(Eigen::MatrixBase<OutDerived>&& out,
                   const Eigen::MatrixBase<WeightDerived>& weight,
                   const Eigen::MatrixBase<InputDerived>& input,
                   const Eigen::MatrixBase<BiasDerived>& bias) {
  dense_forward(out, weight, input, bias);
}

/// @brief Adds a dense layer's parameter gradients: `grad_weight += delta · inputᵀ` and
/// `grad_bias += delta · 1` (the sum over samples), where `delta = ∂L/∂(W·X + b)`.
template <typename DeltaDerived, typename InputDerived, typename GradWeight, typename GradBias>
void dense_accumulate_parameter_gradients(const Eigen::MatrixBase<DeltaDerived>& delta,
                                          const Eigen::MatrixBase<InputDerived>& input,
                                          GradWeight&& grad_weight, GradBias&& grad_bias) {
  gemm<false, true>(grad_weight, delta.derived(), input.derived(), true);
  grad_bias += delta.derived().rowwise().sum();
}

/// @brief Fills `m`, column by column (column-major order), with draws uniform on (−bound, bound).
///
/// Each draw is `bound · (2u − 1)` with `u = nflow::uniform_open01(gen)` (53 random bits, in
/// double, then rounded to the matrix's scalar), so a seed gives the same values on every
/// compiler and standard library.
template <typename Derived, std::uniform_random_bit_generator G>
void fill_uniform_symmetric(Eigen::DenseBase<Derived>& m, double bound, G& gen) {
  using S = typename Derived::Scalar;
  auto& d = m.derived();
  for (Index j = 0; j < d.cols(); ++j) {
    for (Index i = 0; i < d.rows(); ++i) {
      d.coeffRef(i, j) = S(bound * (2.0 * uniform_open01(gen) - 1.0));
    }
  }
}

/// @brief Rvalue overload of fill_uniform_symmetric (for an `Eigen::Ref` or a block).
template <typename Derived, std::uniform_random_bit_generator G>
void fill_uniform_symmetric(Eigen::DenseBase<Derived>&& m, double bound, G& gen) {
  fill_uniform_symmetric(m, bound, gen);
}

/// @brief The bound of PyTorch's default nn.Linear initialisation, 1/√fan_in (for the weight,
/// kaiming_uniform with a = √5, and for the bias alike); 0 when fan_in is 0.
inline double default_init_bound(Index fan_in) {
  return fan_in > 0 ? 1.0 / std::sqrt(double(fan_in)) : 0.0;
}

}  // namespace nflow::nn
