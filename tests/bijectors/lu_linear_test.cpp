// Tests of nflow/bijectors/lu_linear.hpp (and bijectors/lu_parameterization.hpp, lu_bijector_base.hpp): the bijector laws over float
// and double, fixed and dynamic sizes; the log-det against Eigen's determinant of the assembled W;
// W against a naive assembly of its factors; ill-conditioned inverses; parameter validation.

// Eigen asserts on any heap allocation while set_is_malloc_allowed(false) is in effect (builds
// without NDEBUG): used to check the allocation-free single-point path. Defined in every source of
// this test executable so that Eigen's inline functions agree across them.
#define EIGEN_RUNTIME_NO_MALLOC

#include <Eigen/LU>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <nflow/bijectors/lu_linear.hpp>
#include <nflow/core/parameters.hpp>
#include <nflow/core/random.hpp>
#include <nflow/testing/catch2.hpp>
#include <random>

#include "support/randomized.hpp"

using namespace nflow;

namespace {

using nflow::test::randomized;

/// W = P L (U + diag(sign exp(log_s))) by explicit loops, independent of the layer's own assembly.
template <typename B>
Eigen::MatrixXd naive_weight(const B& b) {
  const Index d = b.lower().rows();
  Eigen::MatrixXd l = Eigen::MatrixXd::Identity(d, d);
  Eigen::MatrixXd u = Eigen::MatrixXd::Zero(d, d);
  for (Index i = 0; i < d; ++i) {
    for (Index j = 0; j < d; ++j) {
      if (j < i) l(i, j) = double(b.lower()(i, j));
      if (j > i) u(i, j) = double(b.upper()(i, j));
    }
    u(i, i) = double(b.sign()(i)) * std::exp(double(b.log_s()(i)));
  }
  const Eigen::MatrixXd a = l * u;
  Eigen::MatrixXd w(d, d);
  for (Index i = 0; i < d; ++i) w.row(i) = a.row(b.permutation()(i));
  return w;
}

}  // namespace

// The bijector laws of LULinear run in the conformance list (tests/conformance/).
TEST_CASE("LULinear's log-det equals log|det W| of the assembled weight",
          "[bijectors][lu_linear]") {
  for (const Index d : {1, 2, 5, 16, 17, 40}) {
    // Entries of size 0.5/√d keep W well conditioned at every d (random triangular factors with
    // O(1) entries are exponentially ill-conditioned in d, and then Eigen's determinant is the
    // inaccurate side of the comparison).
    const auto b = randomized(LULinear<double>::random_orthogonal(d, std::uint64_t(d)),
                              100 + std::uint64_t(d), 0.5 / std::sqrt(double(d)));
    const Eigen::MatrixXd w = b.weight();
    const double expected = std::log(std::abs(w.partialPivLu().determinant()));
    INFO("d = " << d);
    CHECK(std::abs(b.log_abs_det() - expected) <= 1e-12 * std::max(1.0, std::abs(expected)));
    const Eigen::MatrixXd x = Eigen::MatrixXd::Random(d, 3);
    const auto r = b.forward_and_log_det(x);
    CHECK((r.log_det.array() == b.log_s().sum()).all());
    CHECK((r.log_det.array() - expected).abs().maxCoeff() <=
          1e-12 * std::max(1.0, std::abs(expected)));
  }
}

TEST_CASE("LULinear's weight and forward match a naive assembly of P, L, U, sign and log_s",
          "[bijectors][lu_linear]") {
  const auto b = randomized(LULinear<double, 6>::random_orthogonal(6, 21), 22);
  const Eigen::MatrixXd w = naive_weight(b);
  CHECK((Eigen::MatrixXd(b.weight()) - w).cwiseAbs().maxCoeff() <= 1e-13 * w.cwiseAbs().maxCoeff());
  const Eigen::MatrixXd x = Eigen::MatrixXd::Random(6, 5);
  const Eigen::MatrixXd z = b.forward(x);
  const Eigen::MatrixXd expected = (w * x).colwise() + Eigen::VectorXd(b.bias());
  CHECK((z - expected).cwiseAbs().maxCoeff() <= 1e-13 * (1 + expected.cwiseAbs().maxCoeff()));
  // The inverse agrees with a dense LU solve (which the layer itself never uses).
  const Eigen::MatrixXd back = w.fullPivLu().solve(z.colwise() - Eigen::VectorXd(b.bias()));
  CHECK((b.inverse(z) - back).cwiseAbs().maxCoeff() <= 1e-12);
}

TEST_CASE("LULinear's constructors: identity, random orthogonal, from a given weight",
          "[bijectors][lu_linear]") {
  const LULinear<double, 3> id;
  CHECK(id.weight().isIdentity(0.0));
  CHECK(id.log_abs_det() == 0.0);
  CHECK(id.bias().isZero(0.0));

  const auto q = LULinear<double>::random_orthogonal(8, 5);
  CHECK((q.weight() * q.weight().transpose()).isIdentity(1e-13));
  CHECK(std::abs(q.log_abs_det()) <= 1e-13);
  CHECK(q.weight() == LULinear<double>::random_orthogonal(8, 5).weight());
  CHECK(q.weight() != LULinear<double>::random_orthogonal(8, 6).weight());
  CHECK((q.sign().array().abs() == 1.0).all());
  // Float and double draw the same W (computed in double, then rounded).
  const auto qf = LULinear<float>::random_orthogonal(8, 5);
  CHECK((qf.weight().cast<double>() - q.weight()).cwiseAbs().maxCoeff() <= 1e-6);

  std::mt19937_64 gen(9);
  const Eigen::MatrixXd w = standard_normal_matrix<double>(5, 5, gen);
  const auto b = LULinear<double>::from_weight(w);
  CHECK((Eigen::MatrixXd(b.weight()) - w).cwiseAbs().maxCoeff() <=
        1e-14 * w.cwiseAbs().maxCoeff() * 5);
  CHECK(std::abs(b.log_abs_det() - std::log(std::abs(w.determinant()))) <= 1e-12);
}

TEST_CASE("LULinear inverts an ill-conditioned weight by triangular solves",
          "[bijectors][lu_linear]") {
  const Index d = 12;
  LULinear<double> b(d);
  std::mt19937_64 gen(31);
  b.set_lower(standard_normal_matrix<double>(d, d, gen) * 0.8);
  b.set_upper(standard_normal_matrix<double>(d, d, gen) * 0.8);
  b.set_log_s(Eigen::VectorXd::LinSpaced(d, -7.0, 7.0));
  b.set_bias(standard_normal_matrix<double>(d, 1, gen));
  const Eigen::MatrixXd w = b.weight();
  const double cond = 1.0 / w.partialPivLu().rcond();  // an estimate of the 1-norm condition number
  INFO("condition number " << cond);
  CHECK(cond > 1e7);
  const Eigen::MatrixXd x = standard_normal_matrix<double>(d, 50, gen);
  const Eigen::MatrixXd round_trip = b.inverse(b.forward(x));
  // Backward-stable triangular solves lose at most about cond · eps.
  CHECK((round_trip - x).cwiseAbs().maxCoeff() <= 1e-15 * cond);
  const auto r = b.inverse_and_log_det(b.forward(x));
  CHECK(std::abs(r.log_det(0) + std::log(std::abs(w.partialPivLu().determinant()))) <= 1e-10);
  // The laws hold too, with the tolerances such a condition number allows (the finite-difference
  // Jacobian's log-det loses about cond · 1e-16 here).
  testing::LawOptions opt;
  opt.round_trip_tol = 1e-15 * cond;
  opt.log_det_tol = 1e-14 * cond;
  opt.skip_all(testing::gradient_law_names(),
               "the gradients are checked on well-conditioned layers above");
  NFLOW_CHECK_LAWS(b, opt);
}

TEST_CASE("LULinear rejects invalid parameters by name and stays unchanged",
          "[bijectors][lu_linear][errors]") {
  auto b = randomized(LULinear<double>(3), 41);
  const Vector<double> before = get_parameters(b);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();

  CHECK_THROWS_AS(b.set_log_s(Eigen::Vector3d(0.0, nan, 1.0)), ParameterError);
  CHECK_THROWS_WITH(b.set_log_s(Eigen::Vector3d(0.0, nan, 1.0)), Catch::Contains("'log_s'"));
  CHECK_THROWS_WITH(b.set_log_s(Eigen::Vector3d(0.0, inf, 1.0)), Catch::Contains("'log_s'"));
  CHECK_THROWS_WITH(b.set_log_s(Eigen::Vector3d(0.0, 1000.0, 1.0)), Catch::Contains("'log_s'"));
  CHECK_THROWS_WITH(b.set_log_s(Eigen::Vector3d(0.0, -1000.0, 1.0)), Catch::Contains("'log_s'"));
  Eigen::Matrix3d bad = Eigen::Matrix3d::Zero();
  bad(2, 0) = inf;
  CHECK_THROWS_WITH(b.set_lower(bad), Catch::Contains("'lower'"));
  CHECK_THROWS_WITH(b.set_upper(bad.transpose()), Catch::Contains("'upper'"));
  CHECK_THROWS_WITH(b.set_bias(Eigen::Vector3d(nan, 0, 0)), Catch::Contains("'bias'"));
  // Loading through the generic parameter mechanism is validated the same way.
  Vector<double> theta = before;
  theta(3) = nan;  // "lower"(0, 1) is ignored ...
  theta(1) = nan;  // ... but "lower"(1, 0) is used
  CHECK_THROWS_WITH(set_parameters(b, theta), Catch::Contains("'lower'"));
  theta = before;
  theta(18 + 1) = nan;  // "log_s"(1)
  CHECK_THROWS_WITH(set_parameters(b, theta), Catch::Contains("'log_s'"));
  CHECK(get_parameters(b) == before);  // strong guarantee: every rejected write left b unchanged

  CHECK_THROWS_AS(b.set_lower(Eigen::Matrix2d::Zero()), ShapeError);
  CHECK_THROWS_AS(b.set_log_s(Eigen::Vector4d::Zero()), ShapeError);
  CHECK_THROWS_AS(LULinear<double>(0), ParameterError);
  CHECK_THROWS_AS((LULinear<double, 3>(4)), ParameterError);
  CHECK_THROWS_AS((LULinear<double, 20>(21)), ParameterError);
  CHECK_THROWS_WITH(LULinear<double>::from_weight(Eigen::Matrix2d::Ones()),
                    Catch::Contains("'log_s'"));
  CHECK_THROWS_AS(LULinear<double>::from_weight(Eigen::MatrixXd::Ones(2, 3)), ShapeError);
  CHECK_THROWS_AS(b.forward(Eigen::Vector4d::Zero()), ShapeError);
}

TEST_CASE("LULinear keeps ignored entries of 'lower' and 'upper' at zero, with zero gradient",
          "[bijectors][lu_linear]") {
  LULinear<double> b(3);
  b.set_lower(Eigen::Matrix3d::Constant(2.0));
  b.set_upper(Eigen::Matrix3d::Constant(3.0));
  CHECK(b.lower() == Eigen::Matrix3d{{0, 0, 0}, {2, 0, 0}, {2, 2, 0}});
  CHECK(b.upper() == Eigen::Matrix3d{{0, 3, 3}, {0, 0, 3}, {0, 0, 0}});
  const Eigen::MatrixXd x = Eigen::MatrixXd::Random(3, 4);
  Vector<double> gp = Vector<double>::Zero(b.parameter_count());
  (void)b.forward_vjp(x, Eigen::MatrixXd::Ones(3, 4), Eigen::RowVectorXd::Ones(4), gp);
  (void)b.inverse_vjp(x, Eigen::MatrixXd::Ones(3, 4), Eigen::RowVectorXd::Ones(4), gp);
  const Eigen::Map<const Eigen::Matrix3d> gl(gp.data());
  const Eigen::Map<const Eigen::Matrix3d> gu(gp.data() + 9);
  CHECK(Eigen::Matrix3d(gl.triangularView<Eigen::Upper>()).isZero(0.0));
  CHECK(Eigen::Matrix3d(gu.triangularView<Eigen::Lower>()).isZero(0.0));
  CHECK(parameter_names(b) == std::vector<std::string>{"lower", "upper", "log_s", "bias"});
}

TEST_CASE("LULinear's single-point path allocates nothing with a fixed Dim",
          "[bijectors][lu_linear]") {
  const auto b = randomized(LULinear<double, 4>{}, 51);
  const auto big = randomized(LULinear<float, 20>::random_orthogonal(20, 1), 52);
  const Eigen::Vector4d x = Eigen::Vector4d::Random();
  const Eigen::Matrix<float, 20, 1> xb = Eigen::Matrix<float, 20, 1>::Random();
  Eigen::internal::set_is_malloc_allowed(false);
  const auto r = b.forward_and_log_det(x);
  const auto s = b.inverse_and_log_det(r.value);
  const auto rb = big.forward_and_log_det(xb);
  const auto sb = big.inverse_and_log_det(rb.value);
  Eigen::internal::set_is_malloc_allowed(true);
  CHECK((s.value - x).cwiseAbs().maxCoeff() <= 1e-12);
  CHECK((sb.value - xb).cwiseAbs().maxCoeff() <= 1e-4f);
}
