// The presets (nflow/flows/presets.hpp): every preset passes the bijector laws (with a context for
// Real NVP, MAF and the NSFs), trains on a 2-D toy, seeds its blocks apart and reproducibly, and
// rejects bad options with a message naming them. One scalar type per preset (compile time).
// The spline presets' densities (identity when fresh, normalisation on a grid, bounded domain)
// are checked in neural_spline_test.cpp.
#include <catch2/catch.hpp>
#include <cmath>
#include <nflow/datasets/toy.hpp>
#include <nflow/flows/presets.hpp>
#include <nflow/testing/catch2.hpp>
#include <nflow/train/fit.hpp>
#include <nflow/train/flow_matching.hpp>
#include <random>
#include <string>

#include "support/randomized.hpp"

using namespace nflow;

namespace {

/// The laws on a preset's transform with mild random parameters (a fresh preset only permutes).
/// `context` rows of standard normal context when positive. The presets' conditioners are ReLU
/// MLPs: a small finite-difference step keeps the stencil off their kinks.
template <typename D>
void check_preset_laws(const D& flow, Index context, testing::LawOptions opt = {},
                       double scale = 0.3) {
  opt.parameter_samples = 24;
  if (std::is_same_v<typename D::Scalar, double> && opt.fd_step < 0) opt.fd_step = 1e-5;
  const auto transform = test::randomized(flow.transform(), 5, scale);
  using S = typename D::Scalar;
  if (context > 0) {
    NFLOW_CHECK_LAWS(transform, opt, [context](Index n, std::mt19937_64& gen) {
      return Batch<S, Dynamic, Dynamic>(standard_normal_matrix<S>(context, n, gen));
    });
  } else {
    NFLOW_CHECK_LAWS(transform, opt);
  }
}

/// The test NLL of a toy before and after a short fit, and of the Gaussian with the training
/// data's mean and covariance (what an affine map reaches).
struct ToyFit {
  double fresh = 0;
  double trained = 0;
  double gaussian = 0;
};

/// Fits `flow` by maximum likelihood to two moons for `steps` steps (batch 128, Adam 5e-3).
template <typename D>
ToyFit fit_two_moons(D& flow, Index steps) {
  using S = typename D::Scalar;
  const Batch<S, 2, Dynamic> data = datasets::toy<S>(datasets::Toy::TwoMoons, 4000, 1);
  const Batch<S, 2, Dynamic> test = datasets::toy<S>(datasets::Toy::TwoMoons, 2000, 2);
  ToyFit r;
  const Eigen::MatrixXd centred =
      data.template cast<double>().colwise() - data.template cast<double>().rowwise().mean();
  const Eigen::Matrix2d cov = centred * centred.transpose() / double(data.cols());
  r.gaussian = std::log(2 * M_PI * std::exp(1.0)) + 0.5 * std::log(cov.determinant());
  r.fresh = train::nll_value(flow, test);
  train::FitOptions options;
  options.batch_size = 128;
  options.max_steps = steps;
  options.adam.learning_rate = 5e-3;
  options.seed = 3;
  train::fit(flow, {.samples = data}, options);
  r.trained = train::nll_value(flow, test);
  UNSCOPED_INFO("two moons test NLL: fresh " << r.fresh << ", trained " << r.trained
                                             << ", best Gaussian " << r.gaussian);
  return r;
}

/// Two blocks of one preset start apart; the same seed builds the same flow, another seed another.
template <typename Make>
void check_seeds(Make make) {
  const auto a = make(9);
  CHECK(get_parameters(a.transform().step(0)) != get_parameters(a.transform().step(1)));
  CHECK(get_parameters(a) == get_parameters(make(9)));
  CHECK(get_parameters(a) != get_parameters(make(10)));
}

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const ParameterError& e) {
    return e.what();
  }
  return "no ParameterError";
}

}  // namespace

TEST_CASE("real_nvp: laws with a context, trains on two moons, seeds", "[flows][presets]") {
  check_preset_laws(flows::real_nvp<double, 2>({.hidden_features = 8, .context = 2}), 2);
  auto flow = flows::real_nvp<double, 2>({.transforms = 4, .hidden_features = 16, .seed = 1});
  CHECK(flow.transform().size() == 4);
  const ToyFit r = fit_two_moons(flow, 300);
  CHECK(r.trained < r.gaussian - 0.1);
  check_seeds([](std::uint64_t s) { return flows::real_nvp<double, 2>({.seed = s}); });
}

TEST_CASE("nice: laws, trains on two moons (float), seeds", "[flows][presets]") {
  check_preset_laws(flows::nice<float, 2>({.hidden_features = 8}), 0);
  auto flow = flows::nice<float, 2>({.transforms = 4, .hidden_features = 16, .seed = 1});
  const ToyFit r = fit_two_moons(flow, 300);
  CHECK(r.trained < r.gaussian - 0.1);
  check_seeds([](std::uint64_t s) { return flows::nice<float, 2>({.seed = s}); });
}

TEST_CASE("glow: laws, ActNorm initialisation, trains on two moons, seeds", "[flows][presets]") {
  check_preset_laws(flows::glow<double, 2>({.hidden_features = 8}), 0);
  auto flow = flows::glow<double, 2>({.transforms = 4, .hidden_features = 16, .seed = 1});
  const auto data = datasets::toy(datasets::Toy::TwoMoons, 512, 5);
  initialize_act_norms(flow.transform(), data);
  CHECK(flow.transform().step(0).step<0>().is_initialized());
  CHECK(flow.transform().step(3).step<0>().is_initialized());
  const ToyFit r = fit_two_moons(flow, 300);
  CHECK(r.trained < r.gaussian - 0.1);
  check_seeds([](std::uint64_t s) { return flows::glow<double, 2>({.seed = s}); });
  // The LU layers start as distinct rotations (the couplings as the identity).
  const auto g = flows::glow<double, 2>();
  CHECK(get_parameters(g.transform().step(0).step<1>()) !=
        get_parameters(g.transform().step(1).step<1>()));
}

TEST_CASE("maf: laws with a context (run-time dim), trains on two moons, seeds",
          "[flows][presets]") {
  testing::LawOptions opt;
  opt.skip_all({"inverse_vjp_input", "inverse_vjp_params"},
               "a MAF's inverse takes dim passes and has no vjp");
  check_preset_laws(flows::maf<double>(3, {.hidden_features = 8, .context = 2}), 2, opt);
  auto flow = flows::maf<double>(2, {.transforms = 4, .hidden_features = 16, .seed = 1});
  const ToyFit r = fit_two_moons(flow, 300);
  CHECK(r.trained < r.gaussian - 0.1);
  check_seeds([](std::uint64_t s) {
    return flows::maf<double>(3, {.permutation = flows::Permutations::Random, .seed = s});
  });
}

TEST_CASE("iaf: laws (run-time dim), trains by reverse KL, seeds", "[flows][presets]") {
  testing::LawOptions opt;
  opt.skip_all({"forward_vjp_input", "forward_vjp_params", "forward_vjp_recorded"},
               "an IAF's forward takes dim passes and has no vjp");
  check_preset_laws(flows::iaf<double>(3, {.hidden_features = 8}), 0, opt);
  // Variational inference: fit q to a correlated Gaussian p by reverse KL; KL(q‖p) = loss + log Z.
  auto flow = flows::iaf<double>(2, {.transforms = 3, .hidden_features = 16, .seed = 1});
  Eigen::Matrix2d precision;
  precision << 2.0, 1.6, 1.6, 2.0;
  const double log_z = std::log(2 * M_PI) - 0.5 * std::log(precision.determinant());
  auto target = train::make_target(
      [&](const Eigen::MatrixXd& x) -> Eigen::RowVectorXd {
        return -0.5 * (x.array() * (precision * x).array()).colwise().sum();
      },
      [&](const Eigen::MatrixXd& x) -> Eigen::MatrixXd { return -precision * x; });
  std::mt19937_64 gen(4);
  Vector<double> grad(flow.parameter_count());
  auto kl = [&] {
    std::mt19937_64 g(11);
    grad.setZero();
    return train::reverse_kl(flow, target, 4000, g, grad) + log_z;
  };
  const double fresh = kl();
  train::Adam<double> adam(flow.parameter_count(), {.learning_rate = 5e-3});
  Vector<double> theta = get_parameters(flow);
  for (int step = 0; step < 300; ++step) {
    grad.setZero();
    train::reverse_kl(flow, target, 128, gen, grad);
    adam.step(theta, grad);
    set_parameters(flow, theta);
  }
  const double trained = kl();
  UNSCOPED_INFO("KL(q||p): fresh " << fresh << ", trained " << trained);
  CHECK(fresh > 0.5);
  CHECK(trained < 0.05);
  check_seeds([](std::uint64_t s) { return flows::iaf<double>(2, {.seed = s}); });
}

TEST_CASE("coupling_nsf: laws with a context, trains on two moons, seeds", "[flows][presets]") {
  check_preset_laws(flows::coupling_nsf<double, 2>({.hidden_features = 8, .context = 2}), 2, {},
                    0.2);
  auto flow = flows::coupling_nsf<double, 2>({.transforms = 4, .hidden_features = 16, .seed = 1});
  const ToyFit r = fit_two_moons(flow, 300);
  CHECK(r.trained < r.gaussian - 0.1);
  check_seeds([](std::uint64_t s) { return flows::coupling_nsf<double, 2>({.seed = s}); });
}

TEST_CASE("autoregressive_nsf: laws with a context (run-time dim), trains, seeds",
          "[flows][presets]") {
  testing::LawOptions opt;
  opt.skip_all({"inverse_vjp_input", "inverse_vjp_params"},
               "an autoregressive layer's inverse takes dim passes and has no vjp");
  check_preset_laws(flows::autoregressive_nsf<double>(3, {.hidden_features = 8, .context = 2}), 2,
                    opt, 0.2);
  auto flow =
      flows::autoregressive_nsf<double>(2, {.transforms = 4, .hidden_features = 16, .seed = 1});
  const ToyFit r = fit_two_moons(flow, 300);
  CHECK(r.trained < r.gaussian - 0.1);
  check_seeds([](std::uint64_t s) { return flows::autoregressive_nsf<double>(2, {.seed = s}); });
}

TEST_CASE("cnf: laws (run-time dim), trains by flow matching, seeds", "[flows][presets]") {
  testing::LawOptions opt;
  opt.batch = 3;
  opt.round_trip_tol = 1e-3;
  opt.log_det_tol = 1e-3;
  check_preset_laws(flows::cnf<double>(2, {.hidden_features = 6, .rk4_steps = 5}), 0, opt);
  auto flow = flows::cnf<double>(2, {.hidden_features = 32, .seed = 1, .rk4_steps = 8});
  const auto data = datasets::toy(datasets::Toy::TwoMoons, 4000, 1);
  const auto test = datasets::toy(datasets::Toy::TwoMoons, 1000, 2);
  const double fresh = train::nll_value(flow, test);
  train::FlowMatchingOptions fm;
  fm.steps = 400;
  fm.batch_size = 128;
  fm.adam.learning_rate = 5e-3;
  train::fit_flow_matching(flow.transform().step(0), {.samples = data}, fm);
  const double trained = train::nll_value(flow, test);
  UNSCOPED_INFO("two moons test NLL: fresh " << fresh << ", trained " << trained);
  CHECK(trained < fresh - 0.5);
  check_seeds([](std::uint64_t s) {
    return flows::cnf<double>(2, {.transforms = 2, .hidden_features = 4, .seed = s});
  });
}

TEST_CASE("presets: bad options and contexts give clear errors", "[flows][presets]") {
  using Catch::Matchers::Contains;
  CHECK_THAT(error_of([] { flows::real_nvp<double, 2>({.transforms = 0}); }),
             Contains("nflow::flows::real_nvp: options.transforms must be >= 1, got 0"));
  CHECK_THAT(error_of([] { flows::maf<double>(2, {.hidden_features = -1}); }),
             Contains("nflow::flows::maf: options.hidden_features must be >= 1"));
  CHECK_THAT(error_of([] { flows::real_nvp<double, 2, 16>({.hidden_features = 32}); }),
             Contains("the compile-time Hidden = 16"));
  CHECK_THAT(error_of([] { flows::glow<double, 2>({.hidden_layers = 0}); }),
             Contains("nflow::flows::glow: options.hidden_layers must be >= 1, got 0"));
  CHECK_THAT(error_of([] { flows::coupling_nsf<double, 2>({.bins = -1}); }),
             Contains("options.bins = -1 must be >= 1"));
  CHECK_THAT(error_of([] { flows::autoregressive_nsf<double>(2, {.bins = 16}); }),
             Contains("options.bins = 16 but the flow's compile-time Bins is 8"));
  CHECK_THAT(error_of([] { flows::nice<float, 2>({.context = -1}); }),
             Contains("nflow::flows::nice: options.context must be >= 0, got -1"));
  CHECK_THAT(error_of([] { flows::real_nvp<double>(1); }),
             Contains("nflow::flows::real_nvp: dim must be >= 2, got 1"));
  CHECK_THAT(error_of([] { flows::real_nvp<double, 2>(3); }), Contains("equal Dim = 2, got 3"));
  CHECK_THAT(error_of([] { flows::cnf<double>(2, {.transforms = -2}); }),
             Contains("nflow::flows::cnf: options.transforms must be >= 1, got -2"));
  CHECK_THAT(error_of([] { flows::iaf<double>(0); }), Contains("nflow::flows::iaf: dim must be"));
  // A conditional preset given a context of the wrong size, or none: a ShapeError, never a guess.
  const auto flow = flows::real_nvp<double, 2>({.hidden_features = 4, .context = 3});
  const Eigen::MatrixXd x = Eigen::MatrixXd::Zero(2, 5);
  CHECK_THROWS_AS(flow.log_prob(x, Eigen::MatrixXd::Zero(2, 5)), ShapeError);
  CHECK_THROWS_AS(flow.log_prob(x), ShapeError);
  const auto maf = flows::maf<double>(2, {.hidden_features = 4, .context = 3});
  CHECK_THROWS_AS(maf.log_prob(x, Eigen::MatrixXd::Zero(4, 5)), ShapeError);
  CHECK(maf.log_prob(x, Eigen::MatrixXd::Zero(3, 5)).size() == 5);
}
