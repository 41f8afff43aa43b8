// Gradients with respect to the context: Density::context_score (∇_c log p(x | c)) and the
// optional grad_context of the vjps, for every conditional family (affine, additive and spline
// couplings, MAF, the IAF direction, Flow, Stack, DynamicFlow/AnyBijector), against central finite
// differences of log_prob (or of a loss of the bijector's outputs) in the context. Double, dynamic
// sizes, tanh conditioners (smooth, so that finite differences hold): few instantiations. The
// run-time model and the imported models are checked in tests/io/model_test.cpp and
// tests/interop/interop_test.cpp, where they are instantiated anyway.
#include <catch2/catch.hpp>
#include <limits>
#include <nflow/nflow.hpp>
#include <random>

#include "support/toy_bijectors.hpp"

using namespace nflow;

namespace {

using Mat = Eigen::MatrixXd;
using Row = Eigen::Matrix<double, 1, Eigen::Dynamic>;
using Aff = AffineCoupling<double, Dynamic, Dynamic, nn::Tanh>;
using Add = AdditiveCoupling<double, Dynamic, Dynamic, nn::Tanh>;
using Spl = SplineCoupling<double, Dynamic, Dynamic, 8, nn::Tanh>;
using Maf = MAF<double, Dynamic, Dynamic, nn::Tanh, Dynamic>;
using Iaf = Inverted<Maf>;
using Perm = Permutation<double>;
using Static = Flow<Aff, Perm, Maf, Spl>;
using Blocks = Stack<Aff>;
using Dyn = DynamicFlow<double>;
using Any = AnyBijector<double>;
using Normal = StandardNormal<double>;

constexpr Index kDim = 3;
constexpr Index kCtx = 2;
constexpr Index kN = 7;
constexpr double kTol = 1e-6;

/// Every parameter a scaled standard normal (a fresh coupling or MAF layer is the identity and
/// ignores its context).
template <typename T>
T randomized(T object, std::uint64_t seed, double scale = 0.4) {
  std::mt19937_64 gen(seed);
  set_parameters(
      object,
      Vector<double>(standard_normal_matrix<double>(object.parameter_count(), 1, gen) * scale));
  return object;
}

Aff affine(Index cd, std::uint64_t seed, bool flip = false) {
  return randomized(Aff(CouplingMask::half(kDim, flip),
                        {.hidden_width = 8, .hidden_layers = 2, .context_dim = cd, .seed = seed}),
                    seed);
}
Add additive(Index cd, std::uint64_t seed) {
  return randomized(Add(CouplingMask::alternating(kDim),
                        {.hidden_width = 8, .hidden_layers = 1, .context_dim = cd, .seed = seed}),
                    seed);
}
Spl spline(Index cd, std::uint64_t seed) {
  return randomized(Spl(CouplingMask::half(kDim, true),
                        {.hidden_width = 8, .hidden_layers = 2, .context_dim = cd, .seed = seed}),
                    seed, 0.3);
}
Maf maf(Index cd, std::uint64_t seed) {
  return randomized(Maf(kDim, {.hidden_width = 8,
                               .hidden_layers = 2,
                               .context_dim = cd,
                               .seed = seed,
                               .order = nn::InputOrder::Reversed}),
                    seed);
}

double max_rel(const Mat& a, const Mat& b) {
  REQUIRE(a.rows() == b.rows());
  REQUIRE(a.cols() == b.cols());
  return (a - b).cwiseAbs().maxCoeff() / std::max(1.0, b.cwiseAbs().maxCoeff());
}

/// Central differences of log p(x | c) in each context row (the columns are independent, so one
/// row is stepped in every column at once).
template <typename D>
Mat fd_context_score(const D& density, const Mat& x, const Mat& c, double h = 1e-5) {
  Mat g(c.rows(), c.cols());
  for (Index i = 0; i < c.rows(); ++i) {
    Mat up = c;
    Mat down = c;
    up.row(i).array() += h;
    down.row(i).array() -= h;
    g.row(i) = (density.log_prob(x, up) - density.log_prob(x, down)) / (2 * h);
  }
  return g;
}

/// context_score against finite differences, and its value, non-zero (the context matters).
template <typename T>
void check_context_score(const T& transform, std::uint64_t seed) {
  const Density<Normal, T> density(Normal(kDim), transform);
  std::mt19937_64 gen(seed);
  const Mat x = standard_normal_matrix<double>(kDim, kN, gen);
  const Mat c = standard_normal_matrix<double>(kCtx, kN, gen);
  const Mat g = density.context_score(x, c);
  const Mat fd = fd_context_score(density, x, c);
  CHECK(max_rel(g, fd) <= kTol);
  CHECK(fd.cwiseAbs().maxCoeff() > 1e-3);
}

/// L(c) = Σ w ⊙ value + Σ v ⊙ log_det of the forward (or, Inverse, the inverse) pass.
template <bool Inverse, typename B>
double loss(const B& b, const Mat& x, const Mat& c, const Mat& w, const Row& v) {
  const auto r = [&] {
    if constexpr (Inverse) {
      return b.inverse_and_log_det(x, c);
    } else {
      return b.forward_and_log_det(x, c);
    }
  }();
  return r.value.cwiseProduct(w).sum() + r.log_det.cwiseProduct(v).sum();
}

/// ∂L/∂c from the vjp's grad_context (added into a non-zero start) against central differences
/// of L, for random upstream gradients w (of the value) and v (of the log-det).
template <bool Inverse, typename B>
void check_vjp_context(const B& b, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  const Mat x = standard_normal_matrix<double>(kDim, kN, gen);
  const Mat c = standard_normal_matrix<double>(kCtx, kN, gen);
  const Mat w = standard_normal_matrix<double>(kDim, kN, gen);
  const Row v = standard_normal_matrix<double>(1, kN, gen);
  const Mat start = standard_normal_matrix<double>(kCtx, kN, gen);
  Mat gc = start;
  Vector<double> gp = Vector<double>::Zero(b.parameter_count());
  Vector<double> gp_plain = gp;
  Mat gx;
  Mat gx_plain;
  if constexpr (Inverse) {
    gx = b.inverse_vjp(x, w, v, gp, c, &gc);
    gx_plain = b.inverse_vjp(x, w, v, gp_plain, c);
  } else {
    gx = b.forward_vjp(x, w, v, gp, c, &gc);
    gx_plain = b.forward_vjp(x, w, v, gp_plain, c);
  }
  // Asking for ∂L/∂c changes nothing else.
  CHECK(max_rel(gx, gx_plain) == 0);
  CHECK(max_rel(gp, gp_plain) == 0);
  const double h = 1e-5;
  Mat fd(kCtx, kN);
  for (Index j = 0; j < kN; ++j) {
    for (Index i = 0; i < kCtx; ++i) {
      Mat up = c;
      Mat down = c;
      up(i, j) += h;
      down(i, j) -= h;
      fd(i, j) = (loss<Inverse>(b, x, up, w, v) - loss<Inverse>(b, x, down, w, v)) / (2 * h);
    }
  }
  CHECK(max_rel(Mat(gc - start), fd) <= kTol);
  CHECK(fd.cwiseAbs().maxCoeff() > 1e-3);
}

Static make_static(Index cd, std::uint64_t seed) {
  return Static(affine(cd, seed), Perm::random(kDim, seed + 1), maf(cd, seed + 2),
                spline(cd, seed + 3));
}

Dyn make_dynamic(Index cd, std::uint64_t seed) {
  Dyn flow;
  flow.emplace_back(affine(cd, seed), "affine_coupling");
  flow.emplace_back(Perm::random(kDim, seed + 1), "permutation");
  flow.emplace_back(maf(cd, seed + 2), "maf");
  flow.emplace_back(additive(cd, seed + 3), "additive_coupling");
  flow.emplace_back(spline(cd, seed + 4), "spline_coupling");
  return flow;
}

/// A one-step DynamicFlow: each family behind AnyBijector, alone.
template <typename B>
Dyn alone(B b) {
  Dyn flow;
  flow.emplace_back(std::move(b), "step");
  return flow;
}

}  // namespace

TEST_CASE("context_score of each conditional family matches finite differences of log_prob",
          "[context_gradient]") {
  SECTION("affine coupling") { check_context_score(alone(affine(kCtx, 1)), 11); }
  SECTION("additive coupling") { check_context_score(alone(additive(kCtx, 2)), 12); }
  SECTION("spline coupling") { check_context_score(alone(spline(kCtx, 3)), 13); }
  SECTION("MAF") { check_context_score(alone(maf(kCtx, 4)), 14); }
  SECTION("a Flow of a coupling, a permutation, a MAF and a spline coupling") {
    check_context_score(make_static(kCtx, 5), 15);
  }
  SECTION("a Stack") {
    check_context_score(Blocks(std::vector<Aff>{affine(kCtx, 6), affine(kCtx, 7, true)}), 16);
  }
  SECTION("a DynamicFlow, and the same steps nested in an AnyBijector") {
    check_context_score(make_dynamic(kCtx, 8), 17);
    check_context_score(alone(make_dynamic(kCtx, 9)), 18);
  }
}

TEST_CASE("the vjps add dL/dc for a loss of the value and the log-det", "[context_gradient]") {
  SECTION("a Flow, forward") { check_vjp_context<false>(make_static(kCtx, 21), 31); }
  SECTION("a coupling's inverse and the IAF direction (a MAF's forward, inverted)") {
    check_vjp_context<true>(Stack<Aff>(std::vector<Aff>{affine(kCtx, 22)}), 32);
    check_vjp_context<true>(Iaf(maf(kCtx, 23)), 33);
  }
  SECTION("a DynamicFlow, forward; a Stack, both directions") {
    check_vjp_context<false>(make_dynamic(kCtx, 24), 34);
    const Blocks blocks(std::vector<Aff>{affine(kCtx, 25), affine(kCtx, 26, true)});
    check_vjp_context<false>(blocks, 35);
    check_vjp_context<true>(blocks, 36);
  }
  SECTION("the recorded pass gives what forward_vjp gives") {
    const Static flow = make_static(kCtx, 27);
    std::mt19937_64 gen(37);
    const Mat x = standard_normal_matrix<double>(kDim, kN, gen);
    const Mat c = standard_normal_matrix<double>(kCtx, kN, gen);
    const Mat w = standard_normal_matrix<double>(kDim, kN, gen);
    const Row v = standard_normal_matrix<double>(1, kN, gen);
    Vector<double> gp = Vector<double>::Zero(flow.parameter_count());
    Mat direct = Mat::Zero(kCtx, kN);
    flow.forward_vjp(x, w, v, gp, c, &direct);
    tape_t<Static> tape;
    flow.forward_recorded(x, tape, c);
    Mat recorded = Mat::Zero(kCtx, kN);
    flow.forward_vjp_recorded(tape, w, v, gp, c, &recorded);
    CHECK(max_rel(recorded, direct) <= 1e-12);
    // It adds: a second call doubles it.
    flow.forward_vjp_recorded(tape, w, v, gp, c, &recorded);
    CHECK(max_rel(recorded, Mat(2 * direct)) <= 1e-12);
  }
}

TEST_CASE("context gradients: bad requests are errors with a sentence", "[context_gradient]") {
  std::mt19937_64 gen(41);
  const Mat x = standard_normal_matrix<double>(kDim, kN, gen);
  const Mat c = standard_normal_matrix<double>(kCtx, kN, gen);
  const Mat w = Mat::Ones(kDim, kN);
  const Row v = Row::Ones(kN);
  SECTION("an unconditional model has no context to differentiate") {
    const Density<Normal, Dyn> plain(Normal(kDim), make_dynamic(0, 42));
    CHECK_THROWS_AS(plain.context_score(x, c), ShapeError);
    CHECK_THROWS_WITH(plain.context_score(x, c), Catch::Contains("unconditional"));
    const Perm perm = Perm::random(kDim, 3);
    Vector<double> gp;
    Mat gc = Mat::Zero(kCtx, kN);
    CHECK_THROWS_WITH(perm.forward_vjp(x, w, v, gp, c, &gc), Catch::Contains("unconditional"));
  }
  SECTION("shapes") {
    const Density<Normal, Dyn> density(Normal(kDim), make_dynamic(kCtx, 43));
    CHECK_THROWS_AS(density.context_score(x, Mat(c.topRows(1))), ShapeError);
    CHECK_THROWS_AS(density.context_score(x, Mat(c.leftCols(3))), ShapeError);
    const Dyn& flow = density.transform();
    Vector<double> gp = Vector<double>::Zero(flow.parameter_count());
    Mat wrong = Mat::Zero(kCtx + 1, kN);
    CHECK_THROWS_WITH(flow.forward_vjp(x, w, v, gp, c, &wrong), Catch::Contains("grad_context"));
    wrong = Mat::Zero(kCtx, kN - 1);
    CHECK_THROWS_WITH(flow.forward_vjp(x, w, v, gp, c, &wrong), Catch::Contains("grad_context"));
    Mat gc = Mat::Zero(kCtx, kN);
    CHECK_THROWS_AS(flow.forward_vjp(x, w, v, gp, NoContext{}, &gc), ShapeError);
  }
  SECTION("a conditional step that cannot differentiate its context says so") {
    Dyn flow = make_dynamic(kCtx, 44);
    flow.emplace_back(test::ContextAffine<double, Dynamic, int(kCtx)>(kDim, kCtx, 5),
                      "context_affine");
    const Density<Normal, Dyn> density(Normal(kDim), std::move(flow));
    CHECK_THROWS_AS(density.context_score(x, c), UnsupportedError);
    CHECK(density.score(x, c).allFinite());  // the score does not need it
  }
}

// Conditional reverse KL (train::reverse_kl with contexts): p̃(x | c) = N(x; W c, diag(σ²)) up to
// a constant. The step's numbers against independent computations, and its parameter gradient
// against central differences of the loss at fixed latents; 150 samples go through the transform
// in three chunks (64, 64, 22), each with its own contexts.
TEST_CASE("conditional reverse KL: log-weights, latents and the gradient over chunks",
          "[context_gradient][reverse_kl]") {
  std::mt19937_64 setup(51);
  const Mat weight = standard_normal_matrix<double>(kDim, kCtx, setup);
  const Eigen::Array<double, kDim, 1> sigma(0.7, 1.3, 0.9);
  auto target = train::make_target(
      [&](const Mat& x, const Mat& c) -> Row {
        const Eigen::ArrayXXd u = (x - weight * c).array().colwise() / sigma.matrix().array();
        return -0.5 * u.square().colwise().sum() + 0.25;
      },
      [&](const Mat& x, const Mat& c) -> Mat {
        return -((x - weight * c).array().colwise() / sigma.square()).matrix();
      });
  Density<Normal, Blocks> density(
      Normal(kDim), Blocks(std::vector<Aff>{affine(kCtx, 52), affine(kCtx, 53, true)}));
  const Vector<double> theta = get_parameters(density);
  const Index n = 150;
  const Mat contexts = standard_normal_matrix<double>(kCtx, n, setup);
  auto step = [&](Vector<double>& grad, train::ReverseKlWorkspace<decltype(density)>& ws) {
    std::mt19937_64 g(54);
    grad.setZero(density.parameter_count());
    return train::reverse_kl(density, target, contexts, g, grad, ws);
  };
  train::ReverseKlWorkspace<decltype(density)> ws;
  Vector<double> grad;
  const double loss = step(grad, ws);
  REQUIRE(ws.size() == n);
  CHECK(ws.contexts() == contexts);
  // The samples map forward, each with its context, to the latents the base drew.
  std::mt19937_64 g2(54);
  const Mat z = density.base().sample(n, g2);
  CHECK(ws.latents() == z);
  CHECK(max_rel(density.transform().forward(ws.samples(), contexts), z) < 1e-12);
  // log-weights = log p̃(x | c) − log q(x | c), log q from the forward direction.
  const Row log_q = density.log_prob(ws.samples(), contexts);
  const Row log_p = target.log_prob(ws.samples(), contexts);
  CHECK(max_rel(ws.log_weights(), Row(log_p - log_q)) < 1e-12);
  CHECK(loss == Approx(-(log_p - log_q).mean()).epsilon(1e-13));
  // The contexts matter: the same latents with other contexts give another loss.
  {
    train::ReverseKlWorkspace<decltype(density)> other;
    Vector<double> unused = Vector<double>::Zero(density.parameter_count());
    std::mt19937_64 g(54);
    const Mat shifted = (contexts.array() + 0.5).matrix();
    CHECK(std::abs(train::reverse_kl(density, target, shifted, g, unused, other) - loss) > 1e-3);
  }
  // The gradient, summed over the chunks, against central differences (every 7th parameter).
  for (Index i = 0; i < theta.size(); i += 7) {
    Vector<double> up = theta, down = theta, unused;
    up(i) += 1e-6;
    down(i) -= 1e-6;
    train::ReverseKlWorkspace<decltype(density)> scratch;
    set_parameters(density, up);
    const double lu = step(unused, scratch);
    set_parameters(density, down);
    const double ld = step(unused, scratch);
    CHECK(grad(i) == Approx((lu - ld) / 2e-6).epsilon(1e-5).margin(1e-8));
  }
  set_parameters(density, theta);
  CHECK(grad.cwiseAbs().maxCoeff() > 1e-3);
  // Bad contexts: errors with a sentence, before any step.
  std::mt19937_64 g(55);
  CHECK_THROWS_AS(train::reverse_kl(density, target, Mat(contexts.topRows(1)), g, grad, ws),
                  ShapeError);
  CHECK_THROWS_AS(train::reverse_kl(density, target, Mat(kCtx, 0), g, grad, ws), ShapeError);
  Mat bad = contexts;
  bad(1, 3) = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_AS(train::reverse_kl(density, target, bad, g, grad, ws), ParameterError);
  Density<Normal, Blocks> plain(Normal(kDim), Blocks(std::vector<Aff>{affine(0, 56)}));
  Vector<double> grad_plain = Vector<double>::Zero(plain.parameter_count());
  train::ReverseKlWorkspace<decltype(plain)> ws_plain;
  CHECK_THROWS_WITH(train::reverse_kl(plain, target, contexts, g, grad_plain, ws_plain),
                    Catch::Contains("not conditional"));
}
