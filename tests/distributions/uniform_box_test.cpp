// UniformBox: normalisation, −∞ outside and NaN per column, sampling moments, reproducibility and
// the half-open box, use as the base of a Density, and errors on bad bounds.
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <nflow/bijectors/elementwise_affine.hpp>
#include <nflow/core/parameters.hpp>
#include <nflow/distributions/density.hpp>
#include <nflow/distributions/uniform_box.hpp>
#include <random>

using namespace nflow;

namespace {
// The box [−1, 2] × [0.5, 1.25]: widths 3 and 0.75, volume 2.25.
template <typename S>
UniformBox<S, 2> test_box() {
  return UniformBox<S, 2>(Eigen::Matrix<S, 2, 1>(-1, 0.5), Eigen::Matrix<S, 2, 1>(2, 1.25));
}
// Every column of `z` lies in [lower, upper).
template <typename M, typename V>
bool in_half_open_box(const M& z, const V& lower, const V& upper) {
  for (Index i = 0; i < z.rows(); ++i) {
    if (!(z.row(i).array() >= lower(i)).all() || !(z.row(i).array() < upper(i)).all()) return false;
  }
  return true;
}
}  // namespace

TEMPLATE_TEST_CASE("a uniform box integrates to 1 on a grid over a larger box", "[uniform_box]",
                   float, double) {
  using S = TestType;
  const UniformBox<S, 2> box = test_box<S>();
  // Midpoint rule with cells that tile the box exactly (its edges are cell edges), extended by
  // `pad` cells on every side: the midpoints outside must contribute exactly 0.
  const int cells_x = 60, cells_y = 30, pad = 6;
  const double hx = 3.0 / cells_x, hy = 0.75 / cells_y;
  const int mx = cells_x + 2 * pad, my = cells_y + 2 * pad;
  Eigen::Matrix<S, 2, Eigen::Dynamic> grid(2, mx * my);
  for (int i = 0; i < mx; ++i)
    for (int j = 0; j < my; ++j)
      grid.col(i * my + j) << S(-1 + (i - pad + 0.5) * hx), S(0.5 + (j - pad + 0.5) * hy);
  const PerSample<S, Dynamic> lp = box.log_prob(grid);
  const double mass = lp.template cast<double>().array().exp().sum() * hx * hy;
  CHECK(mass == Approx(1.0).epsilon(1e-5));
  CHECK((lp.array() == -std::numeric_limits<S>::infinity()).count() == mx * my - 60 * 30);
  // The box is closed: its corners are inside.
  CHECK(box.log_prob(box.lower())(0) == Approx(-std::log(2.25)));
  CHECK(box.log_prob(box.upper())(0) == Approx(-std::log(2.25)));
}

TEMPLATE_TEST_CASE("a uniform box gives −∞ outside and NaN for NaN, column by column",
                   "[uniform_box]", float, double) {
  using S = TestType;
  const S inf = std::numeric_limits<S>::infinity();
  const S nan = std::numeric_limits<S>::quiet_NaN();
  const UniformBox<S, 2> box = test_box<S>();
  Eigen::Matrix<S, 2, Eigen::Dynamic> z(2, 7);
  z << 0, -1.5, 0, nan, nan, inf, 1.5,  //
      1, 1, 1.3, 1, 9, 1, 0.5;
  const PerSample<S, Dynamic> lp = box.log_prob(z);
  const S inside = -std::log(S(2.25));
  CHECK(lp(0) == Approx(inside));
  CHECK(lp(1) == -inf);  // below lower in the first coordinate
  CHECK(lp(2) == -inf);  // above upper in the second
  CHECK(std::isnan(lp(3)));
  CHECK(std::isnan(lp(4)));  // NaN wins over outside
  CHECK(lp(5) == -inf);
  CHECK(lp(6) == Approx(inside));
  // The gradient is 0, NaN only in the columns holding a NaN; the single-point path agrees.
  Vector<S> none(0);
  const auto dz = box.log_prob_vjp(z, PerSample<S, Dynamic>::Ones(7), none);
  CHECK(dz.col(0).isZero());
  CHECK(dz.col(1).isZero());
  CHECK(dz.col(3).array().isNaN().all());
  CHECK(dz.col(4).array().isNaN().all());
  CHECK(dz.rightCols(2).isZero());
  const Eigen::Matrix<S, 2, 1> p = z.col(6);
  const PerSample<S, 1> one = box.log_prob(p);
  CHECK(one(0) == lp(6));
  CHECK_THROWS_AS(box.log_prob(Eigen::Matrix<S, 3, 1>::Zero()), ShapeError);
  CHECK_THROWS_AS(
      box.log_prob_vjp(Eigen::Matrix<S, 3, 2>::Zero(), PerSample<S, Dynamic>::Ones(2), none),
      ShapeError);
}

TEMPLATE_TEST_CASE("uniform box samples have the moments, the support and a fixed sequence",
                   "[uniform_box]", float, double) {
  using S = TestType;
  const UniformBox<S, 2> box = test_box<S>();
  std::mt19937_64 gen(7);
  const Index n = 100000;
  const Eigen::Matrix<S, 2, Eigen::Dynamic> z = box.sample(n, gen);
  const Eigen::MatrixXd x = z.template cast<double>();
  const Eigen::Vector2d lower(-1, 0.5), upper(2, 1.25), width = upper - lower;
  const Eigen::Vector2d mean = x.rowwise().mean();
  const Eigen::Vector2d var = (x.colwise() - mean).array().square().rowwise().sum() / double(n - 1);
  for (int i = 0; i < 2; ++i) {
    const double sd = width(i) / std::sqrt(12.0);
    CHECK(mean(i) == Approx((lower(i) + upper(i)) / 2).margin(5 * sd / std::sqrt(double(n))));
    CHECK(var(i) == Approx(width(i) * width(i) / 12).epsilon(0.02));
  }
  CHECK(in_half_open_box(z, box.lower(), box.upper()));
  CHECK(box.log_prob(z).array().isFinite().all());
  // The sequence is nflow's own (uniform_open01 per coefficient in storage order), not a standard
  // library distribution's: the same on every compiler.
  std::mt19937_64 again(7), reference(7);
  const Eigen::Matrix<S, 2, Eigen::Dynamic> first = box.sample(3, again);
  for (Index k = 0; k < first.size(); ++k) {
    const Index i = k % 2;
    const double u = uniform_open01(reference);
    CHECK(first(k) == S(lower(i) + width(i) * u));
  }
  CHECK(first == z.leftCols(3));
  std::mt19937_64 other(8);
  CHECK(box.sample(3, other) != first);
}

TEST_CASE("uniform box samples never reach upper, even when rounding would", "[uniform_box]") {
  // A box one float wide: half of the draws round to upper in float and must be moved below it.
  const Eigen::Matrix<float, 2, 1> lower(1.0f, -3.0f);
  const Eigen::Matrix<float, 2, 1> upper(std::nextafter(1.0f, 2.0f), std::nextafter(-3.0f, 0.0f));
  const UniformBox<float, 2> box(lower, upper);
  std::mt19937_64 gen(3);
  const Eigen::Matrix<float, 2, Eigen::Dynamic> z = box.sample(200, gen);
  CHECK(in_half_open_box(z, lower, upper));
}

TEST_CASE("a Density on a uniform box base evaluates and samples the image box",
          "[uniform_box][density]") {
  // z = x ⊙ exp(s) + b maps the box B' = [(l − b)/e^s, (u − b)/e^s] onto [l, u]: x is uniform on B'.
  ElementwiseAffine<double, 2> affine;
  affine.set_shift(Eigen::Vector2d(0.5, -1.0));
  affine.set_log_scale(Eigen::Vector2d(std::log(2.0), std::log(0.25)));
  Density density(test_box<double>(), affine);
  const Eigen::Vector2d lo((-1 - 0.5) / 2.0, (0.5 + 1.0) / 0.25);
  const Eigen::Vector2d hi((2 - 0.5) / 2.0, (1.25 + 1.0) / 0.25);
  const double log_volume = std::log((hi - lo).prod());
  Eigen::Matrix<double, 2, 3> x;
  x.col(0) = (lo + hi) / 2;
  x.col(1) = lo - Eigen::Vector2d(0.01, 0);
  x.col(2) = hi + Eigen::Vector2d(0, 0.01);
  const auto lp = density.log_prob(x);
  CHECK(lp(0) == Approx(-log_volume).epsilon(1e-14));
  CHECK(lp(1) == -std::numeric_limits<double>::infinity());
  CHECK(lp(2) == -std::numeric_limits<double>::infinity());
  std::mt19937_64 gen(5);
  const auto s = density.sample_and_log_prob(1000, gen);
  CHECK(((s.samples.colwise() - lo).array() >= -1e-12).all());
  CHECK(((s.samples.colwise() - hi).array() <= 1e-12).all());
  CHECK((s.log_prob.array() + log_volume).abs().maxCoeff() < 1e-12);
  // No base parameters; the flat base gives a zero score, and ∂log p/∂s = ∂log|det|/∂s = 1.
  CHECK(density.parameter_count() == 4);
  CHECK(parameter_names(density).front() == "transform.shift");
  CHECK(density.score(Eigen::Matrix<double, 2, 1>(x.col(0))).isZero());
  Vector<double> grad = Vector<double>::Zero(4);
  density.log_prob_vjp(x.leftCols(1), Eigen::Matrix<double, 1, 1>(1.0), grad);
  CHECK(grad.isApprox(Eigen::Vector4d(0, 0, 1, 1)));
}

TEST_CASE("a uniform box rejects bad bounds and sizes with a sentence", "[uniform_box][errors]") {
  using Box = UniformBox<double>;
  using V = Eigen::VectorXd;
  const Box unit(3);
  CHECK(unit.lower() == V::Zero(3));
  CHECK(unit.upper() == V::Ones(3));
  CHECK(UniformBox<double, 2>{}.upper() == Eigen::Vector2d::Ones());
  CHECK(unit.log_prob(Eigen::Vector3d(0.5, 0, 1))(0) == 0.0);
  const double inf = std::numeric_limits<double>::infinity();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  using Catch::Matchers::Contains;
  CHECK_THROWS_WITH(Box(V::Zero(2), V::Ones(3)), Contains("same size"));
  CHECK_THROWS_WITH(Box(V::Zero(0), V::Ones(0)), Contains("non-empty"));
  CHECK_THROWS_WITH((UniformBox<double, 2>(V::Zero(3), V::Ones(3))), Contains("Dim when fixed"));
  CHECK_THROWS_WITH(Box(Eigen::RowVectorXd::Zero(2), Eigen::RowVectorXd::Ones(2)),
                    Contains("column vectors"));
  CHECK_THROWS_WITH(Box(Eigen::Vector2d(0, 1), Eigen::Vector2d(1, 1)), Contains("bound 1"));
  CHECK_THROWS_AS(Box(Eigen::Vector2d(0, 2), Eigen::Vector2d(1, 1)), ParameterError);
  CHECK_THROWS_AS(Box(Eigen::Vector2d(0, nan), Eigen::Vector2d(1, 1)), ParameterError);
  CHECK_THROWS_AS(Box(Eigen::Vector2d(0, 0), Eigen::Vector2d(inf, 1)), ParameterError);
  CHECK_THROWS_AS(Box(Eigen::Vector2d(-inf, 0), Eigen::Vector2d(1, 1)), ParameterError);
  CHECK_THROWS_WITH(Box(Eigen::Vector2d(-1e308, 0), Eigen::Vector2d(1e308, 1)),
                    Contains("finite width"));
  CHECK_THROWS_AS(Box(0), ParameterError);
  CHECK_THROWS_AS((UniformBox<double, 2>(3)), ParameterError);
}
