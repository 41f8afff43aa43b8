// The compiled instances (nflow::instances, nflow/bijectors/coupling_instances.hpp): this file is
// compiled with NFLOW_PRECOMPILED_INSTANCES and linked with the library, so every coupling hook it
// calls with the library's call types (batches, one point, no context or a context) runs the
// library's code. Each layer of the library, at random parameters, with and without a context:
// round trips, the log-det against a finite-difference Jacobian, one point against the batch,
// the recorded gradient against finite differences (double), float against double; and flows of
// them train with train::fit. (The full bijector laws run on the same layers, compiled from the
// headers, in the unit tests: a law harness per layer costs a minute of g++ here.)
#include <Eigen/LU>
#include <catch2/catch.hpp>
#include <cmath>
#include <nflow/bijectors/coupling.hpp>
#include <nflow/bijectors/masked_autoregressive.hpp>
#include <nflow/bijectors/reverse.hpp>
#include <nflow/core/flow.hpp>
#include <nflow/core/parameters.hpp>
#include <nflow/core/random.hpp>
#include <nflow/distributions/density.hpp>
#include <nflow/distributions/standard_normal.hpp>
#include <nflow/train/fit.hpp>
#include <random>
#include <type_traits>

#include "support/randomized.hpp"

#ifndef NFLOW_PRECOMPILED_INSTANCES
#error "instances_test.cpp must be compiled against nflow::instances (NFLOW_PRECOMPILED_INSTANCES)"
#endif

using namespace nflow;
using Md = Eigen::MatrixXd;
using Vd = Eigen::VectorXd;

namespace {

/// forward_and_log_det with the context `c`, or without one when c has no rows.
template <typename L, typename X, typename C>
auto forward(const L& layer, const X& x, const C& c) {
  return c.rows() == 0 ? layer.forward_and_log_det(x) : layer.forward_and_log_det(x, c);
}
template <typename L, typename X, typename C>
auto inverse(const L& layer, const X& x, const C& c) {
  return c.rows() == 0 ? layer.inverse_and_log_det(x) : layer.inverse_and_log_det(x, c);
}

/// Σ z + Σ log|det| of a batch: the loss whose parameter gradient is checked.
template <typename L>
double loss(const L& layer, const Md& x, const Md& c) {
  const auto r = forward(layer, x, c);
  return r.value.sum() + r.log_det.sum();
}

/// A coupling layer of type L on `mask`, or (no mask) an autoregressive one on `dim` features.
template <typename L>
L make_layer(const CouplingMask* mask, Index dim, Index context, std::uint64_t seed,
             Index width = 8) {
  if constexpr (std::is_constructible_v<L, CouplingMask, CouplingOptions>) {
    return L(*mask, {.hidden_width = width, .context_dim = context, .seed = seed});
  } else {
    (void)mask;
    return L(dim, {.hidden_width = width, .context_dim = context, .seed = seed});
  }
}

/// LD (double) and LF (its float twin) with the same random parameters, checked on `mask` (or,
/// autoregressive, on `dim` features) with a context of `context` rows (0: none).
template <typename LD, typename LF>
void check_layer(const CouplingMask* mask, Index dim, Index context, std::uint64_t seed) {
  INFO("layer of " << dim << " features, context " << context);
  const LD ld = test::randomized(make_layer<LD>(mask, dim, context, seed), seed + 1, 0.4);
  LF lf = make_layer<LF>(mask, dim, context, seed);
  set_parameters(lf, get_parameters(ld).template cast<float>());
  const Index d = dim;
  const Index n = 6;
  std::mt19937_64 gen(seed + 2);
  const Md x = standard_normal_matrix<double>(d, n, gen);
  const Md c = standard_normal_matrix<double>(context, n, gen);

  // Round trips; the log-dets of the two directions cancel.
  const auto f = forward(ld, x, c);
  const auto b = inverse(ld, f.value, c);
  CHECK((b.value - x).cwiseAbs().maxCoeff() <= 1e-10);
  CHECK((f.log_det + b.log_det).cwiseAbs().maxCoeff() <= 1e-10);

  // One point: equal to its column of the batch; log-det against a finite-difference Jacobian.
  const Vd x0 = x.col(0);
  const Vd c0 = c.col(0);
  const auto p = forward(ld, x0, c0);
  CHECK((p.value - f.value.col(0)).cwiseAbs().maxCoeff() <= 1e-12);
  CHECK(std::abs(p.log_det(0) - f.log_det(0)) <= 1e-12);
  const double h = 1e-6;
  Md jac(d, d);
  for (Index j = 0; j < d; ++j) {
    Vd up = x0, down = x0;
    up(j) += h;
    down(j) -= h;
    jac.col(j) = (forward(ld, up, c0).value - forward(ld, down, c0).value) / (2 * h);
  }
  CHECK(std::abs(std::log(std::abs(jac.determinant())) - p.log_det(0)) <= 1e-6);
  const auto q = inverse(ld, p.value, c0);
  CHECK((q.value - x0).cwiseAbs().maxCoeff() <= 1e-10);

  // The recorded forward pass and its vjp: ∂(Σ z + Σ log|det|)/∂θ against finite differences.
  tape_t<LD> tape;
  const auto rec = context == 0 ? ld.forward_recorded(x, tape) : ld.forward_recorded(x, tape, c);
  CHECK((rec.value - f.value).cwiseAbs().maxCoeff() <= 1e-12);
  Eigen::VectorXd gp = Eigen::VectorXd::Zero(ld.parameter_count());
  const Md ones = Md::Ones(d, n);
  const Eigen::RowVectorXd ones_ld = Eigen::RowVectorXd::Ones(n);
  if (context == 0) {
    ld.forward_vjp_recorded(tape, ones, ones_ld, gp);
  } else {
    ld.forward_vjp_recorded(tape, ones, ones_ld, gp, c);
  }
  const Eigen::VectorXd theta = get_parameters(ld);
  double worst = 0;
  for (Index k = 0; k < theta.size(); k += std::max<Index>(1, theta.size() / 23)) {
    LD moved = ld;
    Eigen::VectorXd t = theta;
    t(k) += h;
    set_parameters(moved, t);
    const double up = loss(moved, x, c);
    t(k) -= 2 * h;
    set_parameters(moved, t);
    const double down = loss(moved, x, c);
    worst = std::max(worst, std::abs((up - down) / (2 * h) - gp(k)) / (1 + std::abs(gp(k))));
  }
  CHECK(worst <= 1e-5);

  // Float: the same map to float's rounding, batch and one point.
  const Eigen::MatrixXf xf = x.cast<float>();
  const Eigen::MatrixXf cf = c.cast<float>();
  const auto ff = forward(lf, xf, cf);
  CHECK((ff.value.template cast<double>() - f.value).cwiseAbs().maxCoeff() <=
        1e-4 * (1 + f.value.cwiseAbs().maxCoeff()));
  CHECK((ff.log_det.template cast<double>() - f.log_det).cwiseAbs().maxCoeff() <= 1e-3);
  CHECK((inverse(lf, ff.value, cf).value - xf).cwiseAbs().maxCoeff() <= 1e-4f);
  const Eigen::VectorXf xf0 = xf.col(0);
  const Eigen::VectorXf cf0 = cf.col(0);
  CHECK((forward(lf, xf0, cf0).value - ff.value.col(0)).cwiseAbs().maxCoeff() <= 1e-5f);
}

/// A two-layer flow of L fitted to a correlated Gaussian (with a context that shifts it when
/// `context`): the loss falls by more than 0.3 nats.
template <typename L>
void check_fit(bool context) {
  using S = typename L::Scalar;
  const Index d = 4;
  const Index cd = context ? 1 : 0;
  const CouplingMask half = CouplingMask::half(d);
  auto layer = [&](std::uint64_t seed) { return make_layer<L>(&half, d, cd, seed, 16); };
  Density density(StandardNormal<S>(d), Flow<L, Reverse<S>, L>(layer(1), Reverse<S>(d), layer(2)));
  std::mt19937_64 gen(7);
  Eigen::Matrix<S, Dynamic, Dynamic> x = standard_normal_matrix<S>(d, 512, gen);
  const Eigen::Matrix<S, Dynamic, Dynamic> c = standard_normal_matrix<S>(cd, 512, gen);
  x.row(1) = x.row(0) * S(0.9) + x.row(1) * S(0.3);
  x.row(3) = x.row(2) * S(-0.8) + x.row(3) * S(0.4);
  if (context) x.row(0) += c.row(0) * S(2);
  auto nll = [&] {
    return -double(context ? density.log_prob(x, c).mean() : density.log_prob(x).mean());
  };
  const double before = nll();
  train::fit(density, {.samples = x, .context = c},
             {.batch_size = 128, .epochs = 30, .adam = {.learning_rate = 5e-3}});
  const double after = nll();
  INFO("NLL before " << before << ", after " << after);
  CHECK(after < before - 0.3);
}

}  // namespace

TEST_CASE("instances: the compiled affine and scale-shift couplings", "[instances]") {
  const CouplingMask half = CouplingMask::half(5);
  const CouplingMask alternating = CouplingMask::alternating(4);
  for (Index context : {0, 2}) {
    check_layer<AffineCoupling<double>, AffineCoupling<float>>(&half, 5, context, 1);
    check_layer<ScaleShiftCoupling<double>, ScaleShiftCoupling<float>>(&alternating, 4, context, 2);
  }
}

TEST_CASE("instances: the compiled additive and spline couplings", "[instances]") {
  const CouplingMask flipped = CouplingMask::half(4, true);
  const CouplingMask half = CouplingMask::half(3);
  for (Index context : {0, 2}) {
    check_layer<AdditiveCoupling<double>, AdditiveCoupling<float>>(&flipped, 4, context, 3);
    check_layer<SplineCoupling<double>, SplineCoupling<float>>(&half, 3, context, 4);
  }
}

TEST_CASE("instances: the compiled autoregressive layers", "[instances]") {
  using instances_detail::Maf;
  using instances_detail::SplineMaf;
  for (Index context : {0, 2}) {
    check_layer<Maf<double>, Maf<float>>(nullptr, 4, context, 5);
    check_layer<SplineMaf<double>, SplineMaf<float>>(nullptr, 3, context, 6);
  }
}

TEST_CASE("instances: flows of the compiled couplings train with fit", "[instances]") {
  check_fit<AffineCoupling<float>>(true);
  check_fit<SplineCoupling<double>>(false);
  check_fit<instances_detail::Maf<double>>(true);
}
