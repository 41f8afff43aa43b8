// nflow::nn::gemm (nflow/nn/dense.hpp), the one place where the dense layers' products are
// computed: by Eigen, or, in a build with NFLOW_USE_BLAS, by the BLAS library for large products.
// The same tests run in both builds: the sanitizer tree's unit tests take Eigen's path, the
// release tree builds this file once more with NFLOW_USE_BLAS (label "blas"), where the products
// of 16 columns and more go to the library. References are naive loops in long double.
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <random>

#include "nflow/bijectors/coupling.hpp"
#include "nflow/core/random.hpp"
#include "nflow/nn/dense.hpp"
#include "nflow/testing/catch2.hpp"
#include "support/randomized.hpp"

using namespace nflow;

namespace {

template <typename S>
using Mat = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;

/// out0 + op(a)·op(b) (or op(a)·op(b)), each entry a long-double sum, and the bound on the
/// rounding of a float/double evaluation: k·eps·Σ|terms| per entry.
template <bool TA, bool TB, typename S>
void reference(const Mat<S>& out0, const Mat<S>& a, const Mat<S>& b, bool accumulate,
               Mat<long double>& value, Mat<long double>& bound) {
  const Index m = out0.rows(), n = out0.cols(), k = TA ? a.rows() : a.cols();
  value.resize(m, n);
  bound.resize(m, n);
  const long double eps = std::numeric_limits<S>::epsilon();
  for (Index i = 0; i < m; ++i) {
    for (Index j = 0; j < n; ++j) {
      long double sum = accumulate ? out0(i, j) : 0.0L, size = std::fabs(sum);
      for (Index l = 0; l < k; ++l) {
        const long double t = (long double)(TA ? a(l, i) : a(i, l)) * (TB ? b(j, l) : b(l, j));
        sum += t;
        size += std::fabs(t);
      }
      value(i, j) = sum;
      bound(i, j) = 2 * (k + 2) * eps * size + std::numeric_limits<S>::min();
    }
  }
}

/// gemm into a block of a larger matrix (an outer stride), from blocks of larger matrices, against
/// the reference; then the column independence: a NaN in one column of op(b) reaches that
/// column of the product only (no NaN can enter through op(a)'s other rows).
template <bool TA, bool TB, typename S>
void check_shape(Index m, Index n, Index k, bool accumulate, std::mt19937_64& gen) {
  CAPTURE(m, n, k, TA, TB, accumulate);
  const Mat<S> abig = standard_normal_matrix<S>((TA ? k : m) + 3, (TA ? m : k) + 2, gen);
  const Mat<S> bbig = standard_normal_matrix<S>((TB ? n : k) + 1, (TB ? k : n) + 4, gen);
  const Mat<S> a = abig.block(2, 1, TA ? k : m, TA ? m : k);
  const Mat<S> b = bbig.block(1, 3, TB ? n : k, TB ? k : n);
  Mat<S> out = standard_normal_matrix<S>(m + 5, n + 2, gen);
  const Mat<S> out0 = out.block(3, 1, m, n);
  Mat<S> before = out;
  nn::gemm<TA, TB>(out.block(3, 1, m, n), abig.block(2, 1, a.rows(), a.cols()),
                   bbig.block(1, 3, b.rows(), b.cols()), accumulate);
  Mat<long double> value, bound;
  reference<TA, TB, S>(out0, a, b, accumulate, value, bound);
  double worst = 0;
  for (Index i = 0; i < m; ++i)
    for (Index j = 0; j < n; ++j)
      worst = std::max(worst, double(std::fabs(out(3 + i, 1 + j) - value(i, j)) / bound(i, j)));
  CHECK(worst <= 1.0);
  // The rows and columns around the block are untouched.
  Mat<S> after = out;
  after.block(3, 1, m, n).setZero();
  before.block(3, 1, m, n).setZero();
  CHECK(after == before);
  // NaN in column c of op(b): column c of the product only.
  if (n >= 2 && k >= 1) {
    Mat<S> bn = b;
    const Index c = n / 2;
    if (TB) {
      bn(c, 0) = std::numeric_limits<S>::quiet_NaN();
    } else {
      bn(0, c) = std::numeric_limits<S>::quiet_NaN();
    }
    Mat<S> outn = out0;
    nn::gemm<TA, TB>(outn, a, bn, accumulate);
    Mat<S> clean = out0;
    nn::gemm<TA, TB>(clean, a, b, accumulate);
    for (Index j = 0; j < n; ++j) {
      if (j == c) {
        CHECK(outn.col(j).hasNaN());
      } else {
        CHECK(outn.col(j) == clean.col(j));
      }
    }
  }
}

template <typename S>
void check_all_shapes() {
  std::mt19937_64 gen(20261205);
  // (m, n, k): one point, a small batch below the library threshold, and products above it
  // (n ≥ 16 and m·n·k ≥ 2¹³), square and narrow.
  const Index shapes[][3] = {{3, 1, 5},    {8, 7, 4},     {64, 64, 64},
                             {17, 33, 40}, {128, 256, 2}, {2, 300, 64}};
  for (const auto& s : shapes) {
    for (bool acc : {false, true}) {
      check_shape<false, false, S>(s[0], s[1], s[2], acc, gen);
      check_shape<true, false, S>(s[0], s[1], s[2], acc, gen);
      check_shape<false, true, S>(s[0], s[1], s[2], acc, gen);
    }
  }
}

/// One point: an output that is a column at compile time (a segment of a column), where gemm
/// computes the rows past the last multiple of a half packet itself (few_rows_gemv) and the
/// others in Eigen: every row count from 1 to 11 and depths around multiples of 8, operands
/// inside larger matrices (a's outer stride above its rows), against the reference.
template <typename S>
void check_one_point_rows() {
  std::mt19937_64 gen(20261206);
  for (Index m = 1; m <= 11; ++m) {
    for (Index k : {0, 1, 7, 8, 9, 64, 67}) {
      for (bool acc : {false, true}) {
        CAPTURE(m, k, acc);
        const Mat<S> abig = standard_normal_matrix<S>(m + 3, k + 2, gen);
        const Mat<S> bbig = standard_normal_matrix<S>(k + 1, 4, gen);
        Mat<S> out = standard_normal_matrix<S>(m + 5, 3, gen);
        const Mat<S> before = out;
        auto column = out.col(1).segment(3, m);
        static_assert(decltype(column)::ColsAtCompileTime == 1);
        nn::gemm<false, false>(column, abig.block(2, 1, m, k), bbig.col(3).segment(1, k), acc);
        Mat<long double> value, bound;
        reference<false, false, S>(before.block(3, 1, m, 1), abig.block(2, 1, m, k),
                                   bbig.block(1, 3, k, 1), acc, value, bound);
        double worst = 0;
        for (Index i = 0; i < m; ++i) {
          worst = std::max(worst, double(std::fabs(out(3 + i, 1) - value(i, 0)) / bound(i, 0)));
        }
        CHECK(worst <= 1.0);
        Mat<S> after = out, untouched = before;
        after.block(3, 1, m, 1).setZero();
        untouched.block(3, 1, m, 1).setZero();
        CHECK(after == untouched);
      }
    }
  }
}

}  // namespace

TEST_CASE("gemm: one point, every row count, against long double", "[nn][gemm]") {
  check_one_point_rows<double>();
  check_one_point_rows<float>();
}

TEST_CASE("gemm: products of every shape, transposed operands, blocks, against long double",
          "[nn][gemm]") {
  check_all_shapes<double>();
  check_all_shapes<float>();
}

TEST_CASE("gemm: operands of mismatched shapes are a ShapeError that writes nothing",
          "[nn][gemm]") {
  // Each (TransA, TransB) with one dimension wrong at a time, below and above the library
  // threshold (n = 2 and n = 40): the output keeps its entries.
  std::mt19937_64 gen(11);
  for (const Index n : {Index(2), Index(40)}) {
    const Mat<double> a = standard_normal_matrix<double>(6, 9, gen);   // op(a): 6 x 9 or 9 x 6
    const Mat<double> b = standard_normal_matrix<double>(9, n, gen);   // op(b) = b: 9 x n
    const Mat<double> bt = standard_normal_matrix<double>(n, 9, gen);  // op(b) = btᵀ: 9 x n
    const Mat<double> at = standard_normal_matrix<double>(9, 6, gen);  // op(a) = atᵀ: 6 x 9
    const Mat<double> filled = Mat<double>::Constant(6, n, 7.0);
    Mat<double> out = filled;
    REQUIRE_NOTHROW((nn::gemm<false, false>(out, a, b, false)));
    REQUIRE_NOTHROW((nn::gemm<true, true>(out, at, bt, true)));
    out = filled;
    Mat<double> wrong_rows = filled.topRows(5), wrong_cols = filled.leftCols(n - 1);
    CHECK_THROWS_AS((nn::gemm<false, false>(wrong_rows, a, b, false)), ShapeError);
    CHECK_THROWS_AS((nn::gemm<false, false>(wrong_cols, a, b, true)), ShapeError);
    CHECK_THROWS_AS((nn::gemm<true, false>(out, a, b, false)), ShapeError);  // aᵀ is 9 x 6
    CHECK_THROWS_AS((nn::gemm<false, true>(out, a, b, false)), ShapeError);  // bᵀ is n x 9
    CHECK_THROWS_AS((nn::gemm<false, false>(out, a, b.topRows(8), false)), ShapeError);
    CHECK_THROWS_AS((nn::gemm<true, true>(out, at, bt.leftCols(8), true)), ShapeError);
    CHECK_THROWS_WITH((nn::gemm<false, false>(out, a, b.topRows(8), false)),
                      Catch::Contains("nn::gemm") && Catch::Contains("6 x 9") &&
                          Catch::Contains("8 x " + std::to_string(n)));
    CHECK(out == filled);
    CHECK(wrong_rows == filled.topRows(5));
    CHECK(wrong_cols == filled.leftCols(n - 1));
  }
}

TEST_CASE("gemm: a coupling layer on batches past the library threshold passes the laws",
          "[nn][gemm]") {
  // Batches of 40 columns through hidden layers of 48: its hidden and output products go to the
  // library in a NFLOW_USE_BLAS build; the laws compare them with single columns (Eigen's
  // path), finite-difference Jacobians and gradients, and check that a NaN stays in its column.
  const auto b = test::randomized(
      AffineCoupling<double, Dynamic, Dynamic, nn::Tanh>(
          CouplingMask::alternating(5), {.hidden_width = 48, .hidden_layers = 2, .seed = 3}),
      4, 0.3);
  testing::LawOptions opt;
  opt.batch = 40;
  opt.parameter_samples = 60;
  NFLOW_CHECK_LAWS(b, opt);
  // A batch of 300 (several of the network's column blocks) equals its columns one at a time.
  std::mt19937_64 gen(5);
  const Eigen::MatrixXd x = standard_normal_matrix<double>(5, 300, gen);
  const auto r = b.forward_and_log_det(x);
  double worst = 0;
  for (Index j = 0; j < x.cols(); ++j) {
    const Eigen::VectorXd xj = x.col(j);
    const auto p = b.forward_and_log_det(xj);
    worst = std::max({worst, (p.value - r.value.col(j)).cwiseAbs().maxCoeff(),
                      std::abs(p.log_det(0) - r.log_det(j))});
  }
  CHECK(worst <= 1e-12);
}
