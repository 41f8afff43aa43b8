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
  const Add b = randomize(
      Add(CouplingMask::alternating(4), {.hidden_width = 12, .hidden_layers = 2, .seed = 5}), 5,
      0.5);
  STATIC_REQUIRE(Add::IsConstantLogDet);
  std::mt19937_64 gen(1);
  const Batch<S, Dynamic, Dynamic> x = standard_normal_matrix<S>(4, 9, gen);
  CHECK(b.forward_log_det(x).cwiseAbs().maxCoeff() == S(0));
  CHECK(b.inverse_log_det(x).cwiseAbs().maxCoeff() == S(0));
}

TEST_CASE("a coupling layer leaves its conditioning features unchanged", "[coupling]") {
  const auto b =
      randomize(AffineCoupling<double>(CouplingMask::alternating(6),
                                       {.hidden_width = 16, .hidden_layers = 2, .seed = 1}),
                7, 1.0);
  std::mt19937_64 gen(2);
  const Eigen::MatrixXd x = standard_normal_matrix<double>(6, 20, gen);
  const Eigen::MatrixXd z = b.forward(x);
  for (int i : b.mask().conditioning()) CHECK(z.row(i) == x.row(i));
  for (int i : b.mask().transformed()) CHECK((z.row(i) - x.row(i)).norm() > 1e-6);
}

TEST_CASE("a fresh coupling layer is the identity", "[coupling]") {
  const AffineCoupling<double> b(CouplingMask::half(4),
                                 {.hidden_width = 32, .hidden_layers = 2, .seed = 9});
  std::mt19937_64 gen(3);
  const Eigen::MatrixXd x = standard_normal_matrix<double>(4, 10, gen);
  const auto r = b.forward_and_log_det(x);
  CHECK(r.value == x);
  CHECK(r.log_det.cwiseAbs().maxCoeff() == 0.0);
  // Reproducible initialisation: same seed, same parameters.
  const AffineCoupling<double> c(CouplingMask::half(4),
                                 {.hidden_width = 32, .hidden_layers = 2, .seed = 9});
  const AffineCoupling<double> d(CouplingMask::half(4),
                                 {.hidden_width = 32, .hidden_layers = 2, .seed = 10});
  CHECK(get_parameters(b) == get_parameters(c));
  CHECK(get_parameters(b) != get_parameters(d));
}

TEST_CASE("the affine coupling's log-scale is bounded", "[coupling]") {
  // Huge conditioner outputs cannot push the scale past e^{±B}.
  auto b = randomize(AffineCoupling<double>(CouplingMask::half(2),
                                            {.hidden_width = 8, .hidden_layers = 1, .seed = 1}),
                     11, 50.0);
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
  CHECK_NOTHROW(
      AffineCoupling<double>(CouplingMask(std::vector<bool>{true, true}),
                             {.hidden_width = 8, .hidden_layers = 1, .context_dim = 2, .seed = 0}));
  CHECK_THROWS_AS((AffineCoupling<double, 3>(CouplingMask::half(4))), ParameterError);
  const auto m = CouplingMask::half(5);
  CHECK(m.conditioning() == std::vector<int>{0, 1});
  CHECK(m.flipped().conditioning() == std::vector<int>{2, 3, 4});
  const auto a = CouplingMask::alternating(5);
  CHECK(a.conditioning() == std::vector<int>{0, 2, 4});
}

TEST_CASE("checkerboard masks alternate across a periodic lattice's boundary", "[coupling]") {
  // Independent truth: on a 4 x 6 torus every site's four neighbours (with wrap-around) have the
  // other role, and a flipped mask swaps the roles.
  const Index rows = 4, cols = 6;
  const auto m = CouplingMask::checkerboard(rows, cols);
  const auto f = CouplingMask::checkerboard(rows, cols, true);
  REQUIRE(m.dim() == rows * cols);
  CHECK(m.transformed().size() == std::size_t(rows * cols / 2));
  CHECK(m.conditioning() == f.transformed());
  CHECK(m.flipped().transformed() == f.transformed());
  std::vector<bool> t(std::size_t(rows * cols), false);
  for (int s : m.transformed()) t[std::size_t(s)] = true;
  CHECK_FALSE(t[0]);  // site (0, 0) conditions
  for (Index i = 0; i < rows; ++i) {
    for (Index j = 0; j < cols; ++j) {
      const bool here = t[std::size_t(i * cols + j)];
      CHECK(t[std::size_t(((i + 1) % rows) * cols + j)] != here);
      CHECK(t[std::size_t(i * cols + (j + 1) % cols)] != here);
    }
  }
  CHECK_THROWS_WITH(CouplingMask::checkerboard(3, 4), Catch::Contains("even"));
  CHECK(CouplingMask::checkerboard(3, 3, false, false).transformed() ==
        std::vector<int>{1, 3, 5, 7});
  CHECK_THROWS_AS(CouplingMask::checkerboard(0, 4), ParameterError);
  CHECK_THROWS_AS(CouplingMask::checkerboard(1, 1, false, false), ParameterError);
}

TEST_CASE("the score of a conditional Real NVP density matches finite differences",
          "[coupling][flow][gradients]") {
  using A = AffineCoupling<double, 3, 8, nn::Tanh>;
  using RealNVP = Flow<A, Reverse<double, 3>, A, Reverse<double, 3>, A>;
  const RealNVP flow(
      randomize(A(CouplingMask::half(3),
                  {.hidden_width = 8, .hidden_layers = 2, .context_dim = 2, .seed = 1}),
                1),
      Reverse<double, 3>{},
      randomize(A(CouplingMask::half(3),
                  {.hidden_width = 8, .hidden_layers = 2, .context_dim = 2, .seed = 2}),
                2),
      Reverse<double, 3>{},
      randomize(A(CouplingMask::alternating(3),
                  {.hidden_width = 8, .hidden_layers = 2, .context_dim = 2, .seed = 3}),
                3));
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

TEST_CASE("a coupling's options: 0 means the compile-time Hidden and ContextDim",
          "[coupling][errors]") {
  // The width is given once, in the type; the options may repeat it but not contradict it.
  const AffineCoupling<double, 2, 32> fixed(CouplingMask::half(2));
  CHECK(fixed.conditioner().hidden_width() == 32);
  CHECK(AffineCoupling<double, 2, 32>(CouplingMask::half(2), {.hidden_width = 32})
            .conditioner()
            .hidden_width() == 32);
  CHECK(AffineCoupling<double>(CouplingMask::half(2)).conditioner().hidden_width() == 64);
  CHECK_THROWS_AS((AffineCoupling<double, 2, 32>(CouplingMask::half(2), {.hidden_width = 64})),
                  ParameterError);
  CHECK_THROWS_WITH(
      (AffineCoupling<double, 2, 32>(CouplingMask::half(2), {.hidden_width = 64})),
      Catch::Contains("'hidden_width'") && Catch::Contains("64") && Catch::Contains("32"));
}

TEST_CASE("a coupling with a compile-time context computes what the run-time one does",
          "[coupling][context]") {
  using Fixed = AffineCoupling<double, 3, 8, nn::Tanh, 2>;
  using Run = AffineCoupling<double, 3, 8, nn::Tanh>;
  STATIC_REQUIRE(Fixed::ContextDim == 2);
  STATIC_REQUIRE(AffineCoupling<double, 3, 8, nn::Tanh, 0>::ContextDim == 0);
  STATIC_REQUIRE(SplineCoupling<double, 3, 8, 4, nn::Tanh, 2>::ContextDim == 2);
  STATIC_REQUIRE(AdditiveCoupling<double, 3, 8, nn::Tanh, 2>::ContextDim == 2);
  // context_dim 0 in the options means ContextDim; the same seed gives the same parameters.
  const Fixed fixed = randomize(Fixed(CouplingMask::half(3), {.seed = 1}), 1);
  const Run run = randomize(Run(CouplingMask::half(3), {.context_dim = 2, .seed = 1}), 1);
  CHECK(fixed.context_dim() == 2);
  std::mt19937_64 gen(2);
  const Eigen::MatrixXd x = standard_normal_matrix<double>(3, 5, gen);
  const Eigen::MatrixXd c = standard_normal_matrix<double>(2, 5, gen);
  const auto a = fixed.forward_and_log_det(x, c);
  const auto b = run.forward_and_log_det(x, c);
  CHECK(a.value == b.value);
  CHECK(a.log_det == b.log_det);
  CHECK_THROWS_AS(fixed.forward(x), ShapeError);
  // A Flow of steps with the same fixed context has that ContextDim.
  using Conditional = Flow<Fixed, Reverse<double, 3>, Fixed>;
  STATIC_REQUIRE(Conditional::ContextDim == 2);
}

TEST_CASE("a coupling rejects a context_dim that contradicts its ContextDim",
          "[coupling][context][errors]") {
  using Fixed = AffineCoupling<double, 3, 8, nn::Tanh, 2>;
  CHECK_THROWS_WITH(Fixed(CouplingMask::half(3), {.context_dim = 3}),
                    Catch::Contains("'context_dim'") && Catch::Contains("ContextDim 2"));
  CHECK_THROWS_WITH(
      (AffineCoupling<double, 3, 8, nn::Tanh, 0>(CouplingMask::half(3), {.context_dim = 2})),
      Catch::Contains("'context_dim'") && Catch::Contains("ContextDim is 0"));
  // A given conditioner must take the layer's context too.
  using Net = Fixed::Conditioner;
  CHECK_NOTHROW(Fixed(CouplingMask::half(3), Net(1, 4, 8, 2, 2)));
  CHECK_THROWS_WITH(Fixed(CouplingMask::half(3), Net(1, 4, 8, 2, 3)),
                    Catch::Contains("'conditioner'") && Catch::Contains("ContextDim is 2"));
}
