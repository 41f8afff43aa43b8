// Tests of the generic conditioner paths of nflow/bijectors/coupling.hpp and
// nflow/bijectors/masked_autoregressive.hpp (nflow/nn/conditioner.hpp): a MADE or an MLP seen
// only through the nn::Conditioner contract (tests/support/test_conditioners.hpp) reproduces the
// structures' own fast paths; a two-group conditioner inverts in 2 passes and reproduces a
// coupling layer; graphs with a self-loop or a cycle and networks of the wrong size are refused.
// Their laws run in the conformance list (tests/conformance/conformance.hpp).
#include <catch2/catch.hpp>
#include <nflow/bijectors/coupling.hpp>
#include <nflow/bijectors/masked_autoregressive.hpp>
#include <nflow/core/buffers.hpp>
#include <nflow/core/parameters.hpp>
#include <nflow/core/random.hpp>
#include <random>
#include <string>
#include <vector>

#include "support/maf_test_support.hpp"
#include "support/randomized.hpp"
#include "support/test_conditioners.hpp"

using namespace nflow;

namespace {
constexpr int Dyn = Dynamic;
using Made = nn::MADE<double, Dyn, Dyn, nn::Tanh, 2>;
using Mlp = nn::MLP<double, Dyn, Dyn, Dyn, nn::Tanh>;
using FastMaf = test_maf::DynMaf<double>;
using GenericMaf =
    MaskedAutoregressive<AffineTransformer<double>, Dyn, Dyn, nn::Tanh, Dyn, test::Opaque<Made>>;
using SplitMaf = MaskedAutoregressive<AffineTransformer<double>, Dyn, Dyn, nn::Tanh, Dyn,
                                      test::SplitConditioner<double>>;
using FastCoupling = AffineCoupling<double, Dyn, Dyn, nn::Tanh>;
using GenericCoupling =
    Coupling<AffineTransformer<double>, Dyn, Dyn, nn::Tanh, Dyn, test::Opaque<Mlp>>;
static_assert(std::is_same_v<FastMaf::Made, Made> && FastMaf::HasMade && !GenericMaf::HasMade);
static_assert(nn::Conditioner<Made> && nn::PointConditioner<Made> &&
              nn::BufferedConditioner<Made> && nn::InitializableConditioner<Mlp>);
static_assert(nn::ConnectedConditioner<test::Opaque<Made>> &&
              !nn::PointConditioner<test::Opaque<Mlp>> &&
              !nn::BufferedConditioner<test::Opaque<Mlp>> &&
              !nn::ConnectedConditioner<test::Opaque<Mlp>>);

Eigen::MatrixXd normals(Index rows, Index cols, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  return standard_normal_matrix<double>(rows, cols, gen);
}

/// ∂L/∂x and ∂L/∂θ of forward_vjp with fixed upstream gradients.
template <typename B>
std::pair<Eigen::MatrixXd, Eigen::VectorXd> forward_gradients(const B& b, const Eigen::MatrixXd& x,
                                                              const Eigen::MatrixXd& c) {
  const Eigen::MatrixXd gv = normals(x.rows(), x.cols(), 90);
  const Eigen::RowVectorXd gl = normals(1, x.cols(), 91);
  Eigen::VectorXd gp = Eigen::VectorXd::Zero(b.parameter_count());
  Eigen::MatrixXd gx = b.forward_vjp(x, gv, gl, gp, c);
  return {gx, gp};
}

double max_abs(const Eigen::MatrixXd& m) { return m.cwiseAbs().maxCoeff(); }

/// `b` computes what `reference` computes at (x, c): both directions with their log-dets, and
/// the forward gradients (those of reference's parameters, which b's visit first), to `tol`.
template <typename B, typename R>
void check_same_map(const B& b, const R& reference, const Eigen::MatrixXd& x,
                    const Eigen::MatrixXd& c, double tol) {
  const auto f0 = reference.forward_and_log_det(x, c);
  const auto f1 = b.forward_and_log_det(x, c);
  CHECK(max_abs(f1.value - f0.value) < tol);
  CHECK(max_abs(f1.log_det - f0.log_det) < tol);
  const auto i0 = reference.inverse_and_log_det(x, c);
  const auto i1 = b.inverse_and_log_det(x, c);
  CHECK(max_abs(i1.value - i0.value) < tol);
  CHECK(max_abs(i1.log_det - i0.log_det) < tol);
  const auto [gx0, gp0] = forward_gradients(reference, x, c);
  const auto [gx1, gp1] = forward_gradients(b, x, c);
  CHECK(max_abs(gx1 - gx0) < tol);
  CHECK(max_abs(gp1.head(gp0.size()) - gp0) < tol);
}
}  // namespace

TEST_CASE("MaskedAutoregressive with an opaque MADE reproduces the MADE fast path",
          "[bijectors][maf][conditioner]") {
  const Index d = 4;
  const Index cd = 2;
  const FastMaf fast = test::randomized(FastMaf(d, {.hidden_width = 7,
                                                    .hidden_layers = 2,
                                                    .context_dim = cd,
                                                    .seed = 4,
                                                    .order = nn::InputOrder::Random,
                                                    .hidden_degrees = nn::HiddenDegrees::Random}),
                                        4, 0.4);
  const GenericMaf generic{test::Opaque<Made>(fast.made())};
  // Every output of degree k reaches an input of degree k - 1 here: the longest chain is D - 1.
  CHECK(generic.passes() == d);
  CHECK(generic.dim() == d);
  CHECK(generic.context_dim() == cd);
  CHECK(get_parameters(generic) == get_parameters(fast));
  const std::vector<std::string> names = parameter_names(generic);
  REQUIRE(names.size() == parameter_names(fast).size());
  CHECK(names.front() == "conditioner.layers.0.weight");
  CHECK(parameter_names(fast).front() == "made.layers.0.weight");
  const std::vector<std::string> buffers = buffer_names(generic);
  REQUIRE(!buffers.empty());
  CHECK(buffers.front() == "conditioner.order");

  const Eigen::MatrixXd x = normals(d, 37, 1);
  const Eigen::MatrixXd c = normals(cd, 37, 2);
  check_same_map(generic, fast, x, c, 1e-12);
  // The MADE given to the constructor keeps the fast path.
  const FastMaf again{fast.made()};
  CHECK(again.passes() == d);
  CHECK(again.forward(x, c) == fast.forward(x, c));
  CHECK(again.inverse(x, c) == fast.inverse(x, c));
  // One point.
  const Eigen::VectorXd x0 = x.col(3);
  const Eigen::VectorXd c0 = c.col(3);
  CHECK(max_abs(generic.inverse(x0, c0) - fast.inverse(x0, c0)) < 1e-12);
}

TEST_CASE("MaskedAutoregressive's generic inverse needs all its passes",
          "[bijectors][maf][conditioner]") {
  // A MADE in natural order with wide hidden layers: feature i depends on feature i - 1, so a
  // chain of length D - 1 and D passes; one pass fewer leaves the last feature wrong.
  const Index d = 5;
  const FastMaf fast = test::randomized(FastMaf(d, {.hidden_width = 12, .seed = 3}), 3, 0.5);
  GenericMaf generic{test::Opaque<Made>(fast.made())};
  REQUIRE(generic.passes() == d);
  const Eigen::MatrixXd z = normals(d, 6, 5);
  const Eigen::MatrixXd x = fast.inverse(z);
  CHECK(max_abs(generic.inverse(z) - x) < 1e-12);
  // The same network claiming a chain one shorter (feature 4 independent of feature 3): the
  // layer then stops a pass early and misses.
  test::Opaque<Made> shorter(fast.made());
  nn::Connectivity claim = shorter.connectivity();
  for (Index p = 0; p < 2; ++p) claim(p * d + 4, 3) = false;
  shorter.claimed = claim;
  const GenericMaf early{shorter};
  CHECK(early.passes() == d - 1);
  CHECK(max_abs(early.inverse(z) - x) > 1e-6);
}

TEST_CASE("A two-group conditioner inverts in 2 passes and reproduces a coupling layer",
          "[bijectors][maf][conditioner]") {
  const Index d = 4;
  const Index cd = 2;
  // Features 2, 3 from an MLP of features 0, 1 and the context; features 0, 1 from biases only.
  const test::SplitConditioner<double> split(d, 2, {0, 1}, {2, 3}, 9, cd, 6);
  SplitMaf layer(split);
  CHECK(layer.passes() == 2);
  CHECK(layer.conditioner().connectivity().count() == 2 * 2 * 2);
  // With zero biases the features 0, 1 pass unchanged (shift 0, log-scale 0): a coupling layer
  // with the same MLP, computed by the coupling structure.
  FastCoupling coupling(CouplingMask::half(d),
                        {.hidden_width = 9, .hidden_layers = 1, .context_dim = cd, .seed = 0});
  set_parameters(coupling, get_parameters(split.mlp()));
  const Eigen::MatrixXd x = normals(d, 11, 7);
  const Eigen::MatrixXd c = normals(cd, 11, 8);
  check_same_map(layer, coupling, x, c, 1e-12);
  CHECK(parameter_names(layer).back() == "conditioner.bias");

  // With biases the first group is transformed too, and two passes still invert exactly.
  Eigen::VectorXd theta = get_parameters(layer);
  theta.tail(2 * d) = normals(2 * d, 1, 9) * 0.5;
  set_parameters(layer, theta);
  const auto f = layer.forward_and_log_det(x, c);
  CHECK(max_abs(f.value.topRows(2) - x.topRows(2)) > 1e-3);
  const auto back = layer.inverse_and_log_det(f.value, c);
  CHECK(max_abs(back.value - x) < 1e-12);
  CHECK(max_abs(back.log_det + f.log_det) < 1e-12);
}

TEST_CASE("MaskedAutoregressive refuses conditioners that are not autoregressive or misfit",
          "[bijectors][maf][conditioner][errors]") {
  using Catch::Matchers::Contains;
  // Feature 1 is both an input and a target: it depends on itself.
  CHECK_THROWS_WITH(SplitMaf(test::SplitConditioner<double>(3, 2, {0, 1}, {1, 2}, 4, 0, 1)),
                    Contains("'conditioner'") && Contains("feature 1 depends on itself"));
  // A cycle 0 -> 1 -> 2 -> 0 without self-loops.
  const FastMaf fast(3);
  test::Opaque<Made> cyclic(fast.made());
  nn::Connectivity claim = nn::Connectivity::Constant(6, 3, false);
  for (Index p = 0; p < 2; ++p) {
    claim(p * 3 + 0, 2) = claim(p * 3 + 1, 0) = claim(p * 3 + 2, 1) = true;
  }
  cyclic.claimed = claim;
  CHECK_THROWS_WITH(GenericMaf(cyclic), Contains("'conditioner'") && Contains("cycle"));
  cyclic.claimed = nn::Connectivity::Constant(6, 2, false);
  CHECK_THROWS_WITH(GenericMaf(cyclic), Contains("'conditioner'") && Contains("6 x 2"));
  // One parameter per feature for a two-parameter transformer.
  CHECK_THROWS_WITH(SplitMaf(test::SplitConditioner<double>(3, 1, {0}, {1, 2}, 4, 0, 1)),
                    Contains("'conditioner'") && Contains("out_dim 3"));
}

TEST_CASE("Coupling with an opaque MLP reproduces the default coupling",
          "[bijectors][coupling][conditioner]") {
  const Index cd = 2;
  const FastCoupling fast = test::randomized(
      FastCoupling(CouplingMask::alternating(5),
                   {.hidden_width = 8, .hidden_layers = 2, .context_dim = cd, .seed = 1}),
      1, 0.5);
  const GenericCoupling generic(fast.mask(), test::Opaque<Mlp>(fast.conditioner()));
  CHECK(parameter_names(generic) == parameter_names(fast));
  CHECK(get_parameters(generic) == get_parameters(fast));
  CHECK(buffer_names(generic) == std::vector<std::string>{"mask"});
  CHECK(generic.context_dim() == cd);
  const Eigen::MatrixXd x = normals(5, 13, 2);
  const Eigen::MatrixXd c = normals(cd, 13, 3);
  check_same_map(generic, fast, x, c, 1e-13);
  const Eigen::MatrixXd gv = normals(5, 13, 4);
  const Eigen::RowVectorXd gl = normals(1, 13, 5);
  Eigen::VectorXd gq0 = Eigen::VectorXd::Zero(fast.parameter_count());
  Eigen::VectorXd gq1 = gq0;
  const Eigen::MatrixXd gz0 = fast.inverse_vjp(x, gv, gl, gq0, c);
  const Eigen::MatrixXd gz1 = generic.inverse_vjp(x, gv, gl, gq1, c);
  CHECK(max_abs(gz1 - gz0) < 1e-13);
  CHECK(max_abs(gq1 - gq0) < 1e-13);
}

TEST_CASE("Coupling refuses a conditioner of the wrong size",
          "[bijectors][coupling][conditioner][errors]") {
  using Catch::Matchers::Contains;
  const CouplingMask mask = CouplingMask::half(5);  // A = {0, 1}, B = {2, 3, 4}: in 2, out 6
  CHECK_NOTHROW(GenericCoupling(mask, test::Opaque<Mlp>(Mlp(2, 6, 4, 1))));
  CHECK_THROWS_WITH(GenericCoupling(mask, test::Opaque<Mlp>(Mlp(3, 6, 4, 1))),
                    Contains("'conditioner'") && Contains("maps 3 inputs to 6 outputs"));
  CHECK_THROWS_WITH(GenericCoupling(mask, test::Opaque<Mlp>(Mlp(2, 5, 4, 1))),
                    Contains("'conditioner'") && Contains("6 outputs (2 per transformed"));
  // A mask with no conditioning feature, and a conditioner of the context alone.
  const CouplingMask all(std::vector<bool>{true, true});
  CHECK_NOTHROW(GenericCoupling(all, test::Opaque<Mlp>(Mlp(0, 4, 4, 1, 3))));
}
