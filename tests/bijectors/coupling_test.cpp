// Tests of nflow/bijectors/coupling.hpp (NICE's additive, Real NVP's affine coupling): volume
// preservation, masks, identity at initialisation, the bounded log-scale, the score through a
// flow. Their laws (float and double, fixed and dynamic sizes, with and without a context) run in
// the conformance list (tests/conformance/conformance.hpp).
#include <catch2/catch.hpp>
#include <nflow/bijectors/coupling.hpp>
#include <nflow/nflow.hpp>
#include <random>

using namespace nflow;

namespace {
template <typename B>
B randomize(B b, std::uint64_t seed, double scale = 0.3) {
  using S = typename B::Scalar;
  std::mt19937_64 g(seed);
  set_parameters(b, Vector<S>(standard_normal_matrix<S>(b.parameter_count(), 1, g) * S(scale)));
  return b;
}
}  // namespace

TEMPLATE_TEST_CASE("additive coupling preserves volume", "[coupling]", float, double) {
  using S = TestType;
  using Add = AdditiveCoupling<S, Dynamic, Dynamic, nn::Tanh>;
  const Add b = randomize(Add(CouplingMask::alternating(4), {12, 2, 0, 5}), 5, 0.5);
  STATIC_REQUIRE(Add::IsConstantLogDet);
  std::mt19937_64 gen(1);
  const Batch<S, Dynamic, Dynamic> x = standard_normal_matrix<S>(4, 9, gen);
  CHECK(b.forward_log_det(x).cwiseAbs().maxCoeff() == S(0));
  CHECK(b.inverse_log_det(x).cwiseAbs().maxCoeff() == S(0));
}

TEST_CASE("a coupling layer leaves its conditioning features unchanged", "[coupling]") {
  const auto b =
      randomize(AffineCoupling<double>(CouplingMask::alternating(6), {16, 2, 0, 1}), 7, 1.0);
  std::mt19937_64 gen(2);
  const Eigen::MatrixXd x = standard_normal_matrix<double>(6, 20, gen);
  const Eigen::MatrixXd z = b.forward(x);
  for (int i : b.mask().conditioning()) CHECK(z.row(i) == x.row(i));
  for (int i : b.mask().transformed()) CHECK((z.row(i) - x.row(i)).norm() > 1e-6);
}

TEST_CASE("a fresh coupling layer is the identity", "[coupling]") {
  const AffineCoupling<double> b(CouplingMask::half(4), {32, 2, 0, 9});
  std::mt19937_64 gen(3);
  const Eigen::MatrixXd x = standard_normal_matrix<double>(4, 10, gen);
  const auto r = b.forward_and_log_det(x);
  CHECK(r.value == x);
  CHECK(r.log_det.cwiseAbs().maxCoeff() == 0.0);
  // Reproducible initialisation: same seed, same parameters.
  const AffineCoupling<double> c(CouplingMask::half(4), {32, 2, 0, 9});
  const AffineCoupling<double> d(CouplingMask::half(4), {32, 2, 0, 10});
  CHECK(get_parameters(b) == get_parameters(c));
  CHECK(get_parameters(b) != get_parameters(d));
}

TEST_CASE("the affine coupling's log-scale is bounded", "[coupling]") {
  // Huge conditioner outputs cannot push the scale past e^{±B}.
  auto b = randomize(AffineCoupling<double>(CouplingMask::half(2), {8, 1, 0, 1}), 11, 50.0);
  std::mt19937_64 gen(4);
  const Eigen::MatrixXd x = standard_normal_matrix<double>(2, 200, gen) * 10.0;
  const auto r = b.forward_and_log_det(x);
  CHECK(r.log_det.cwiseAbs().maxCoeff() <= Constants<double>::default_log_scale_bound);
  CHECK(r.value.allFinite());
  CHECK((b.inverse(r.value) - x).cwiseAbs().maxCoeff() < 1e-9);
}

TEST_CASE("coupling masks are validated", "[coupling][errors]") {
  CHECK_THROWS_AS(CouplingMask(std::vector<bool>{false, false}), ParameterError);
  CHECK_THROWS_AS(CouplingMask::half(1), ParameterError);
  CHECK_THROWS_WITH(AffineCoupling<double>(CouplingMask(std::vector<bool>{true, true})),
                    Catch::Contains("mask"));
  CHECK_NOTHROW(AffineCoupling<double>(CouplingMask(std::vector<bool>{true, true}), {8, 1, 2, 0}));
  CHECK_THROWS_AS((AffineCoupling<double, 3>(CouplingMask::half(4))), ParameterError);
  const auto m = CouplingMask::half(5);
  CHECK(m.conditioning() == std::vector<int>{0, 1});
  CHECK(m.flipped().conditioning() == std::vector<int>{2, 3, 4});
  const auto a = CouplingMask::alternating(5);
  CHECK(a.conditioning() == std::vector<int>{0, 2, 4});
}

TEST_CASE("the score of a conditional Real NVP density matches finite differences",
          "[coupling][flow][gradients]") {
  using A = AffineCoupling<double, 3, 8, nn::Tanh>;
  using RealNVP = Flow<A, Reverse<double, 3>, A, Reverse<double, 3>, A>;
  const RealNVP flow(randomize(A(CouplingMask::half(3), {8, 2, 2, 1}), 1), Reverse<double, 3>{},
                     randomize(A(CouplingMask::half(3), {8, 2, 2, 2}), 2), Reverse<double, 3>{},
                     randomize(A(CouplingMask::alternating(3), {8, 2, 2, 3}), 3));
  // The score of a density made of coupling layers, against finite differences (the flow's own
  // laws, gradients included, run in the conformance list).
  const Density density(StandardNormal<double, 3>{}, flow);
  std::mt19937_64 gen(5);
  const Eigen::MatrixXd x = standard_normal_matrix<double>(3, 4, gen);
  const Eigen::MatrixXd c = standard_normal_matrix<double>(2, 4, gen);
  const Eigen::MatrixXd s = density.score(x, c);
  for (Index i = 0; i < x.size(); ++i) {
    Eigen::MatrixXd xp = x, xm = x;
    xp(i) += 1e-5;
    xm(i) -= 1e-5;
    const double fd = (density.log_prob(xp, c) - density.log_prob(xm, c)).sum() / 2e-5;
    CHECK(s(i) == Approx(fd).epsilon(1e-6).margin(1e-8));
  }
}
