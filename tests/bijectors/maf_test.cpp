// Tests of nflow/bijectors/masked_autoregressive.hpp (MAF, IAF) and
// nflow/bijectors/transformers/affine.hpp: the exact triangular Jacobian, the log-det as −Σα,
// gradients against finite differences (also through Flow and Density), the bounded log-scale,
// and an affine MAF fitted to a correlated Gaussian. The shared bijector laws are in
// maf_laws_test.cpp (split off to keep each file's compile time reasonable).

// Makes Eigen assert on any heap allocation while set_is_malloc_allowed(false) is in effect
// (only in builds without NDEBUG); used to check the allocation-free single-point path.
#define EIGEN_RUNTIME_NO_MALLOC

#include <Eigen/LU>
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "nflow/bijectors/masked_autoregressive.hpp"
#include "nflow/bijectors/reverse.hpp"
#include "nflow/core/flow.hpp"
#include "nflow/core/parameters.hpp"
#include "nflow/distributions/density.hpp"
#include "nflow/distributions/standard_normal.hpp"
#include "support/maf_test_support.hpp"

namespace {

using namespace nflow;
using namespace nflow::test_maf;

/// For a map f of one point whose output i may depend only on inputs j with deg(j) ≤ deg(i):
/// perturbs each input and checks the finite-difference Jacobian is exactly zero above the
/// diagonal in degree order (outputs bit-identical), non-zero on the diagonal, and that
/// Σ log|J_ii| matches the reported log-det.
template <typename Map>
void check_triangular(Map&& f, const Eigen::VectorXd& x, const Eigen::VectorXi& degree,
                      double log_det) {
  const Index d = x.size();
  const double h = 1e-5;
  double diag_log_det = 0;
  for (Index j = 0; j < d; ++j) {
    Eigen::VectorXd xp = x;
    Eigen::VectorXd xm = x;
    xp(j) += h;
    xm(j) -= h;
    const Eigen::VectorXd fp = f(xp);
    const Eigen::VectorXd fm = f(xm);
    const Eigen::VectorXd col = (fp - fm) / (2 * h);
    for (Index i = 0; i < d; ++i) {
      if (degree(j) > degree(i)) {
        INFO("output " << i << " (degree " << degree(i) << ") vs input " << j << " (degree "
                       << degree(j) << ")");
        CHECK(fp(i) == fm(i));
        CHECK(col(i) == 0.0);
      }
    }
    CHECK(col(j) != 0.0);
    diag_log_det += std::log(std::abs(col(j)));
  }
  CHECK(diag_log_det == Approx(log_det).epsilon(1e-6).margin(1e-7));
}

/// max |a − b| / max(1, max |b|), in double.
template <typename A, typename B>
double relative_error(const A& a, const B& b) {
  const Eigen::MatrixXd bd = b.template cast<double>();
  return (a.template cast<double>() - bd).cwiseAbs().maxCoeff() /
         std::max(1.0, bd.cwiseAbs().maxCoeff());
}

template <typename S>
Eigen::VectorXd as_double(const Eigen::Matrix<S, Dyn, 1>& v) {
  return v.template cast<double>();
}

}  // namespace

// ---- compile-time facts --------------------------------------------------------------------------

TEST_CASE("MAF is one pass forward and Dim passes inverse, IAF the other way round",
          "[bijectors][maf][traits]") {
  using M = MAF<double, 3>;
  using I = IAF<double, 3>;
  static_assert(Bijector<M> && Bijector<I>);
  static_assert(M::ForwardCost == Cost::OnePass && M::InverseCost == Cost::DimPasses);
  static_assert(I::ForwardCost == Cost::DimPasses && I::InverseCost == Cost::OnePass);
  static_assert(!M::IsConstantLogDet && !I::IsConstantLogDet);
  static_assert(ForwardDifferentiable<M> && !InverseDifferentiable<M>);
  static_assert(!ForwardDifferentiable<I> && InverseDifferentiable<I>);
  using F = Flow<M, Reverse<double, 3>, M>;
  static_assert(F::ForwardCost == Cost::OnePass && F::InverseCost == Cost::DimPasses);
  static_assert(ForwardDifferentiable<F> && !InverseDifferentiable<F>);
  static_assert(InverseDifferentiable<Flow<I, I>>);
  static_assert(context_dim_v<CondMaf<float>> == 2 && context_dim_v<DynMaf<float>> == Dyn);
  SUCCEED("static checks");
}

// ---- structure ---------------------------------------------------------------------------------

TEMPLATE_TEST_CASE("MAF's Jacobian is exactly triangular in its order, both ways",
                   "[bijectors][maf][autoregressive]", float, double) {
  using S = TestType;
  // Finite differences in float are too coarse for the log-det check; the exactness checks
  // (bit-identical earlier outputs) run in both precisions.
  auto run = [](const auto& b, const auto& ctx, std::uint64_t seed) {
    using B = std::remove_cvref_t<decltype(b)>;
    std::mt19937_64 gen(seed);
    const Eigen::VectorXi& degree = b.made().input_degrees();
    const Eigen::VectorXd x = standard_normal_matrix<double>(b.dim(), 1, gen);
    auto forward = [&](const Eigen::VectorXd& v) {
      return as_double<S>(b.forward_and_log_det(Eigen::Matrix<S, Dyn, 1>(v.cast<S>()), ctx).value);
    };
    auto inverse = [&](const Eigen::VectorXd& v) {
      return as_double<S>(b.inverse_and_log_det(Eigen::Matrix<S, Dyn, 1>(v.cast<S>()), ctx).value);
    };
    const double fld =
        double(b.forward_and_log_det(Eigen::Matrix<S, Dyn, 1>(x.cast<S>()), ctx).log_det(0));
    const double ild =
        double(b.inverse_and_log_det(Eigen::Matrix<S, Dyn, 1>(x.cast<S>()), ctx).log_det(0));
    if constexpr (std::is_same_v<S, double>) {
      check_triangular(forward, x, degree, fld);
      check_triangular(inverse, x, degree, ild);
      // IAF is the same layer used the other way round: its maps are these two, swapped.
      const Inverted<B> iaf(b);
      CHECK(
          as_double<S>(iaf.forward_and_log_det(Eigen::Matrix<S, Dyn, 1>(x.cast<S>()), ctx).value) ==
          inverse(x));
    } else {
      // Exactness only: earlier outputs do not move at all when a later input moves.
      for (Index j = 0; j < x.size(); ++j) {
        Eigen::VectorXd xp = x;
        xp(j) += 0.5;
        const Eigen::VectorXd f0 = forward(x), f1 = forward(xp), i0 = inverse(x), i1 = inverse(xp);
        for (Index i = 0; i < x.size(); ++i) {
          if (degree(j) > degree(i)) {
            CHECK(f0(i) == f1(i));
            CHECK(i0(i) == i1(i));
          }
        }
      }
    }
  };
  run(randomized(FixedMaf<S>({.order = InputOrder::Reversed}), 1, 0.5), no_context, 2);
  run(randomized(DynMaf<S>(6, {.hidden_width = 9, .seed = 4, .order = InputOrder::Random}), 3, 0.5),
      no_context, 4);
  Eigen::Matrix<S, Dyn, 1> c(2);
  c << S(0.3), S(-1.1);
  run(randomized(CondMaf<S>({.hidden_width = 6, .hidden_degrees = nn::HiddenDegrees::Random}), 5,
                 0.5),
      c, 6);
}

TEST_CASE("MAF's log-det is -Σα with α = B·tanh(raw/B) from the MADE",
          "[bijectors][maf][log_det]") {
  const auto b = randomized(DynMaf<double>(5, {.hidden_width = 8, .context_dim = 3}), 1, 0.8);
  std::mt19937_64 gen(2);
  const Eigen::MatrixXd x = standard_normal_matrix<double>(5, 6, gen);
  const Eigen::MatrixXd c = standard_normal_matrix<double>(3, 6, gen);
  const Eigen::MatrixXd params = b.made().forward(x, c);
  const Eigen::ArrayXXd alpha = 3.0 * (params.bottomRows(5).array() / 3.0).tanh();
  const auto r = b.forward_and_log_det(x, c);
  for (Index j = 0; j < 6; ++j) CHECK(r.log_det(j) == Approx(-alpha.col(j).sum()).epsilon(1e-13));
  const Eigen::MatrixXd z = (x - params.topRows(5)).array() * (-alpha).exp();
  CHECK((r.value - z).cwiseAbs().maxCoeff() < 1e-13);
  // Inverse log-det at the image: +Σα of the same α.
  const auto ri = b.inverse_and_log_det(r.value, c);
  CHECK((ri.log_det + r.log_det).cwiseAbs().maxCoeff() < 1e-12);
}

TEST_CASE("A fresh MAF layer is the identity, and its parameters carry the MADE's names",
          "[bijectors][maf][parameters]") {
  const FixedMaf<double> b;
  std::mt19937_64 gen(1);
  const Eigen::Matrix<double, 3, Dyn> x = standard_normal_matrix<double, 3>(3, 5, gen);
  const auto r = b.forward_and_log_det(x);
  CHECK(r.value == x);
  CHECK(r.log_det.isZero(0.0));
  CHECK(b.inverse(x) == x);
  using F = Flow<CondMaf<double>, CondMaf<double>>;
  const F flow(CondMaf<double>({.hidden_width = 4}), CondMaf<double>({.hidden_width = 4}));
  const auto names = parameter_names(flow);
  REQUIRE(names.size() == 14);
  CHECK(names[0] == "0.made.layers.0.weight");
  CHECK(names[1] == "0.made.layers.0.context_weight");
  CHECK(names[2] == "0.made.layers.0.bias");
  CHECK(names[6] == "0.made.layers.2.bias");
  CHECK(names[7] == "1.made.layers.0.weight");
  const IAF<double, 3, 8, nn::Tanh> iaf{FixedMaf<double>()};
  CHECK(parameter_names(iaf).front() == "made.layers.0.weight");
  CHECK(iaf.parameter_count() == b.parameter_count());
}

TEST_CASE("MAF orders: natural, reversed and seeded random", "[bijectors][maf][order]") {
  CHECK(DynMaf<double>(4).order() == Eigen::Vector4i(0, 1, 2, 3));
  CHECK(DynMaf<double>(4, {.order = InputOrder::Reversed}).order() == Eigen::Vector4i(3, 2, 1, 0));
  const Eigen::VectorXi r1 = DynMaf<double>(6, {.seed = 3, .order = InputOrder::Random}).order();
  const Eigen::VectorXi r2 = DynMaf<double>(6, {.seed = 3, .order = InputOrder::Random}).order();
  const Eigen::VectorXi r3 = DynMaf<double>(6, {.seed = 4, .order = InputOrder::Random}).order();
  CHECK(r1 == r2);
  CHECK(r1 != r3);
  CHECK(DynMaf<double>(3, {.custom_order = Eigen::Vector3i(2, 0, 1)}).made().input_degrees() ==
        Eigen::Vector3i(2, 3, 1));
  CHECK(get_parameters(DynMaf<double>(6, {.seed = 3})) ==
        get_parameters(DynMaf<double>(6, {.seed = 3})));
}

TEST_CASE("MAF rejects inconsistent options and missing contexts", "[bijectors][maf][errors]") {
  CHECK_THROWS_AS(FixedMaf<double>(4), ParameterError);
  CHECK_THROWS_AS(FixedMaf<double>({.hidden_width = 5}), ParameterError);  // Hidden is 8
  CHECK_THROWS_WITH(FixedMaf<double>({.hidden_width = 5}),
                    Catch::Contains("'hidden_width' = 5") && Catch::Contains("Hidden = 8"));
  CHECK_THROWS_WITH(CondMaf<double>({.context_dim = 3}), Catch::Contains("'context_dim' = 3"));
  CHECK_THROWS_AS(FixedMaf<double>({.context_dim = 2}), ParameterError);
  CHECK_THROWS_AS(CondMaf<double>({.context_dim = 3}), ParameterError);
  CHECK_THROWS_AS(DynMaf<double>(3, {.custom_order = Eigen::Vector3i(0, 1, 1)}), ParameterError);
  CHECK_THROWS_AS(AffineTransformer<double>(0.0), ParameterError);
  const CondMaf<double> cond;
  CHECK(cond.context_dim() == 2);
  CHECK_THROWS_AS(cond.forward(Eigen::Vector4d::Zero()), ShapeError);
  CHECK_THROWS_AS(cond.inverse(Eigen::Vector4d::Zero(), Eigen::Vector3d::Zero()), ShapeError);
  const DynMaf<double> dyn(3, {.context_dim = 2});
  CHECK_THROWS_AS(dyn.forward(Eigen::Vector3d::Zero()), ShapeError);
  CHECK_THROWS_AS(
      dyn.forward(Eigen::Matrix<double, 3, 2>::Zero(), Eigen::Matrix<double, 2, 3>::Zero()),
      ShapeError);
}

// ---- stability -----------------------------------------------------------------------------------

TEST_CASE("The bounded log-scale keeps the Dim-pass inverse finite and invertible",
          "[bijectors][maf][stability]") {
  // Huge raw log-scales: α saturates at ±B, so every scale stays within [e^−B, e^B].
  auto b = randomized(DynMaf<double>(6, {.hidden_width = 8}), 1, 0.3);
  Vector<double> theta = get_parameters(b);
  Index offset = 0;
  b.visit_parameters([&](const std::string& name, const auto& t) {
    if (name == "made.layers.2.weight") {  // 12 × 8: rows 6 … 11 produce the raw log-scales
      for (Index k = 0; k < t.cols(); ++k) theta.segment(offset + k * t.rows() + 6, 6) *= 1e4;
    }
    if (name == "made.layers.2.bias") theta.segment(offset + 6, 6).setConstant(1e6);
    offset += t.size();
  });
  set_parameters(b, theta);
  std::mt19937_64 gen(3);
  const Eigen::MatrixXd z = 3.0 * standard_normal_matrix<double>(6, 50, gen);
  const auto x = b.inverse_and_log_det(z);
  REQUIRE(x.value.allFinite());
  CHECK(x.log_det.maxCoeff() <= 6 * 3.0);
  CHECK(x.log_det.minCoeff() >= -6 * 3.0);
  const auto back = b.forward_and_log_det(x.value);
  CHECK(((back.value - z).array().abs() / (1.0 + z.array().abs())).maxCoeff() < 1e-9);
  CHECK((back.log_det + x.log_det).cwiseAbs().maxCoeff() < 1e-9);
}

TEMPLATE_TEST_CASE("MAF round-trips large batches (many column blocks) and matches point by point",
                   "[bijectors][maf][batch]", float, double) {
  using S = TestType;
  const auto b = randomized(DynMaf<S>(4, {.hidden_width = 300, .context_dim = 2}), 1, 0.05);
  std::mt19937_64 gen(2);
  const Index n = 1000;
  const Eigen::Matrix<S, Dyn, Dyn> x = standard_normal_matrix<S>(4, n, gen);
  const Eigen::Matrix<S, Dyn, Dyn> c = standard_normal_matrix<S>(2, n, gen);
  const auto z = b.forward_and_log_det(x, c);
  const auto back = b.inverse_and_log_det(z.value, c);
  const double tol = std::is_same_v<S, double> ? 1e-11 : 1e-4;
  CHECK(((back.value - x).array().abs() / (S(1) + x.array().abs())).maxCoeff() < tol);
  for (Index j : {Index(0), Index(517), n - 1}) {
    const Eigen::Matrix<S, Dyn, 1> xj = x.col(j);
    const Eigen::Matrix<S, Dyn, 1> cj = c.col(j);
    CHECK(((b.forward(xj, cj) - z.value.col(j)).array().abs()).maxCoeff() < tol);
    CHECK(((b.inverse(z.value.col(j).eval(), cj) - back.value.col(j)).array().abs()).maxCoeff() <
          tol);
  }
}

TEMPLATE_TEST_CASE("MAF's Dim-pass inverse equals a naive solve that reruns the MADE D times",
                   "[bijectors][maf][solve]", float, double) {
  using S = TestType;
  // The naive solve: x⁽⁰⁾ = 0, then D times x ← τ⁻¹(z; MADE(x, c)) over all dimensions; after
  // pass k the first k dimensions in the order are exact, so after D passes all are.
  auto check = [](auto layer, Index n, std::uint64_t seed) {
    using B = decltype(layer);
    const B b = randomized(std::move(layer), seed, 0.6);
    std::mt19937_64 gen(seed + 1);
    const Index D = b.dim();
    const Index cd = b.context_dim();
    const Eigen::Matrix<S, Dyn, Dyn> z = standard_normal_matrix<S>(D, n, gen);
    const Eigen::Matrix<S, Dyn, Dyn> c = standard_normal_matrix<S>(cd, n, gen);
    Eigen::Matrix<S, Dyn, Dyn> naive = Eigen::Matrix<S, Dyn, Dyn>::Zero(D, n);
    Eigen::Matrix<S, 1, Dyn> naive_log_det(1, n);
    for (Index k = 0; k < D; ++k) {
      const Eigen::Matrix<S, Dyn, Dyn> params =
          cd > 0 ? Eigen::Matrix<S, Dyn, Dyn>(b.made().forward(naive, c))
                 : Eigen::Matrix<S, Dyn, Dyn>(b.made().forward(naive));
      naive_log_det.setZero();
      Eigen::Matrix<S, Dyn, Dyn> next(D, n);
      b.transformer().inverse(z, params, next, naive_log_det);
      naive = next;
    }
    const auto solved = cd > 0 ? b.inverse_and_log_det(z, c) : b.inverse_and_log_det(z);
    const double tol = std::is_same_v<S, double> ? 1e-12 : 1e-4;
    CHECK(relative_error(solved.value, naive) < tol);
    CHECK(relative_error(solved.log_det, naive_log_det) < tol);
    // One point at a time (the fixed-size path when Dim is fixed) equals the batch.
    for (Index j = 0; j < std::min<Index>(n, 3); ++j) {
      Eigen::Matrix<S, B::Dim, 1> zj;
      zj.resize(D);
      zj = z.col(j);
      const Eigen::Matrix<S, Dyn, 1> cj = c.col(j);
      const Eigen::Matrix<S, Dyn, 1> xj = cd > 0 ? b.inverse(zj, cj) : b.inverse(zj);
      CHECK(relative_error(xj, Eigen::Matrix<S, Dyn, 1>(naive.col(j))) < tol);
    }
  };
  check(FixedMaf<S>({.hidden_width = 8, .order = InputOrder::Reversed}), 4, 1);
  check(DynMaf<S>(6, {.hidden_width = 9,
                      .hidden_layers = 3,
                      .context_dim = 2,
                      .seed = 5,
                      .hidden_degrees = nn::HiddenDegrees::Random}),
        3, 2);
  check(DynMaf<S>(4, {.hidden_width = 8, .hidden_layers = 0, .context_dim = 1}), 2,
        3);  // no hidden layer
  check(DynMaf<S>(3, {.hidden_width = 600, .hidden_layers = 2, .context_dim = 1}), 300,
        4);  // several blocks
  check(FixedMaf<S>({.hidden_width = 8, .hidden_layers = 10}), 2,
        5);  // more layers than the stack store holds
  check(DynMaf<S>(1, {.hidden_width = 4, .hidden_layers = 1}), 2, 6);  // D = 1
}

// ---- gradients -----------------------------------------------------------------------------------

TEST_CASE("AffineTransformer's backward passes match finite differences",
          "[bijectors][transformers][gradients]") {
  const AffineTransformer<double> t(2.0);
  std::mt19937_64 gen(1);
  const Index n = 3, m = 4;
  const Eigen::MatrixXd x = standard_normal_matrix<double>(n, m, gen);
  const Eigen::MatrixXd p = 1.5 * standard_normal_matrix<double>(2 * n, m, gen);
  const Eigen::MatrixXd gz = standard_normal_matrix<double>(n, m, gen);
  const Eigen::RowVectorXd gl = standard_normal_matrix<double>(1, m, gen);
  auto loss = [&](bool inverse, const Eigen::MatrixXd& xv, const Eigen::MatrixXd& pv) {
    Eigen::MatrixXd out(n, m);
    Eigen::RowVectorXd ld = Eigen::RowVectorXd::Zero(m);
    if (inverse) {
      t.inverse(xv, pv, out, ld);
    } else {
      t.forward(xv, pv, out, ld);
    }
    return (out.array() * gz.array()).sum() + (ld.array() * gl.array()).sum();
  };
  for (const bool inverse : {false, true}) {
    Eigen::MatrixXd gx(n, m), gp(2 * n, m);
    if (inverse) {
      t.inverse_backward(x, p, gz, gl, gx, gp);
    } else {
      t.forward_backward(x, p, gz, gl, gx, gp);
    }
    const double h = 1e-4;
    for (Index i = 0; i < x.size(); ++i) {
      Eigen::MatrixXd a = x, b = x;
      a(i) += h;
      b(i) -= h;
      CHECK(
          gx(i) ==
          Approx((loss(inverse, a, p) - loss(inverse, b, p)) / (2 * h)).epsilon(1e-7).margin(1e-8));
    }
    for (Index i = 0; i < p.size(); ++i) {
      Eigen::MatrixXd a = p, b = p;
      a(i) += h;
      b(i) -= h;
      CHECK(
          gp(i) ==
          Approx((loss(inverse, x, a) - loss(inverse, x, b)) / (2 * h)).epsilon(1e-7).margin(1e-8));
    }
  }
}

TEST_CASE(
    "Density::log_prob_vjp through a conditional Flow of MAF layers matches finite differences",
    "[bijectors][maf][gradients][density]") {
  using M = DynMaf<double>;
  using F = Flow<M, Reverse<double>, M>;
  Density density(
      StandardNormal<double>(3),
      F(randomized(M(3, {.hidden_width = 5, .context_dim = 2}), 1, 0.5), Reverse<double>(3),
        randomized(M(3, {.hidden_width = 5, .context_dim = 2, .order = InputOrder::Reversed}), 2,
                   0.5)));
  std::mt19937_64 gen(3);
  const Index n = 4;
  const Eigen::MatrixXd x = standard_normal_matrix<double>(3, n, gen);
  const Eigen::MatrixXd c = standard_normal_matrix<double>(2, n, gen);
  const Eigen::RowVectorXd w = standard_normal_matrix<double>(1, n, gen);
  auto loss = [&](const auto& d, const Eigen::MatrixXd& xv) {
    return (d.log_prob(xv, c).array() * w.array()).sum();
  };
  Vector<double> gp = Vector<double>::Zero(density.parameter_count());
  const Eigen::MatrixXd gx = density.log_prob_vjp(x, w, gp, c);
  const double h = 1e-3;
  auto stencil = [&](auto&& f) {
    return (8.0 * (f(h) - f(-h)) - (f(2 * h) - f(-2 * h))) / (12.0 * h);
  };
  Eigen::MatrixXd fd_x(3, n);
  for (Index i = 0; i < x.size(); ++i) {
    fd_x(i) = stencil([&](double s) {
      Eigen::MatrixXd v = x;
      v(i) += s;
      return loss(density, v);
    });
  }
  const Vector<double> theta = get_parameters(density);
  Eigen::VectorXd fd_p(theta.size());
  auto probe = density;
  for (Index i = 0; i < theta.size(); ++i) {
    fd_p(i) = stencil([&](double s) {
      Vector<double> t = theta;
      t(i) += s;
      set_parameters(probe, t);
      return loss(probe, x);
    });
  }
  CHECK((gx - fd_x).cwiseAbs().maxCoeff() / std::max(1.0, fd_x.cwiseAbs().maxCoeff()) < 1e-6);
  CHECK((gp - fd_p).cwiseAbs().maxCoeff() / std::max(1.0, fd_p.cwiseAbs().maxCoeff()) < 1e-6);
  // The score is the same pass with unit weights.
  const Eigen::MatrixXd score = density.score(x, c);
  Vector<double> scratch = Vector<double>::Zero(density.parameter_count());
  CHECK((score - density.log_prob_vjp(x, Eigen::RowVectorXd::Ones(n), scratch, c))
            .cwiseAbs()
            .maxCoeff() == 0.0);
}

// ---- fitting a Gaussian --------------------------------------------------------------------------

TEST_CASE("An affine MAF (Identity activation) fitted by Adam recovers a correlated Gaussian",
          "[bijectors][maf][fit]") {
  const Index d = 3;
  const Eigen::Vector3d mean(1.0, -2.0, 0.5);
  Eigen::Matrix3d chol;
  chol << 1.5, 0.0, 0.0,  //
      1.2, 0.5, 0.0,      //
      -0.6, 0.4, 0.8;
  const Eigen::Matrix3d cov = chol * chol.transpose();
  std::mt19937_64 gen(7);
  const Index n = 4000;
  const Eigen::MatrixXd data = (chol * standard_normal_matrix<double>(d, n, gen)).colwise() + mean;

  Density density(
      StandardNormal<double, 3>(),
      MAF<double, 3, Dyn, nn::Identity>({.hidden_width = 8, .hidden_layers = 1, .seed = 1}));
  // A tiny Adam on the mean log-likelihood.
  Vector<double> theta = get_parameters(density);
  Vector<double> m1 = Vector<double>::Zero(theta.size());
  Vector<double> m2 = Vector<double>::Zero(theta.size());
  const Eigen::RowVectorXd weights = Eigen::RowVectorXd::Constant(n, 1.0 / double(n));
  const double lr = 0.02, beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double first_ll = 0, ll = 0;
  for (int step = 1; step <= 1500; ++step) {
    Vector<double> grad = Vector<double>::Zero(theta.size());
    density.log_prob_vjp(data, weights, grad);
    if (step == 1) first_ll = density.log_prob(data).mean();
    m1 = beta1 * m1 + (1 - beta1) * grad;
    m2 = beta2 * m2 + (1 - beta2) * grad.cwiseAbs2();
    const double c1 = 1 - std::pow(beta1, step), c2 = 1 - std::pow(beta2, step);
    theta.array() += lr * (m1.array() / c1) / ((m2.array() / c2).sqrt() + eps);  // ascent
    set_parameters(density, theta);
  }
  ll = density.log_prob(data).mean();
  // The best Gaussian's mean log-likelihood on the data: −½ log det(2πe Σ̂).
  const Eigen::Vector3d data_mean = data.rowwise().mean();
  const Eigen::MatrixXd centred = data.colwise() - data_mean;
  const Eigen::Matrix3d data_cov = centred * centred.transpose() / double(n);
  const double best_ll =
      -0.5 * std::log((2 * Constants<double>::pi * std::exp(1.0) * data_cov).determinant());
  INFO("mean log-likelihood: first " << first_ll << ", fitted " << ll << ", best Gaussian "
                                     << best_ll);
  CHECK(ll > best_ll - 0.01);

  std::mt19937_64 sgen(8);
  const Eigen::MatrixXd samples = density.sample(100000, sgen);
  const Eigen::Vector3d model_mean = samples.rowwise().mean();
  const Eigen::MatrixXd sc = samples.colwise() - model_mean;
  const Eigen::Matrix3d model_cov = sc * sc.transpose() / double(samples.cols());
  INFO("model mean " << model_mean.transpose() << "\nmodel cov\n"
                     << model_cov << "\ntrue cov\n"
                     << cov);
  CHECK((model_mean - mean).cwiseAbs().maxCoeff() < 0.08);
  CHECK((model_cov - cov).cwiseAbs().maxCoeff() < 0.15);
  CHECK((model_mean - data_mean).cwiseAbs().maxCoeff() < 0.04);
  CHECK((model_cov - data_cov).cwiseAbs().maxCoeff() < 0.08);
}

// ---- allocation ----------------------------------------------------------------------------------

TEST_CASE("MAF and IAF on one point with fixed Dim and Hidden do not allocate",
          "[bijectors][maf][alloc]") {
#ifdef NDEBUG
  WARN("NDEBUG is defined: Eigen's malloc check is disabled, this test checks nothing");
#endif
  const auto b = randomized(FixedMaf<double>(), 1);
  const Inverted<FixedMaf<double>> iaf(b);
  const Eigen::Vector3d x(0.3, -0.1, 0.8);
  Eigen::Vector3d z, back, s;
  Eigen::Matrix<double, 1, 1> ld;
  Eigen::internal::set_is_malloc_allowed(false);
  {
    const auto r = b.forward_and_log_det(x);
    z = r.value;
    ld = r.log_det;
    back = b.inverse(z);
    s = iaf.inverse(x);
  }
  Eigen::internal::set_is_malloc_allowed(true);
  CHECK((back - x).cwiseAbs().maxCoeff() < 1e-12);
  CHECK(s == z);
  CHECK(std::isfinite(ld(0)));
}
