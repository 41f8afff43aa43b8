// Adam/AdamW, clipping and schedules against hand-computed updates; objectives against finite
// differences; the fit loop's determinism, early stopping and non-finite handling.
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <nflow/nflow.hpp>
#include <nflow/train/fit.hpp>
#include <random>
#include <vector>

#include "support/toy_bijectors.hpp"

using namespace nflow;

TEST_CASE("Adam's first steps match the update rule computed by hand", "[train][adam]") {
  train::AdamOptions opt;
  opt.learning_rate = 0.1;
  train::Adam<double> adam(2, opt);
  Vector<double> theta(2);
  theta << 1.0, -2.0;
  Vector<double> g(2);
  g << 0.5, -4.0;
  adam.step(theta, g);
  // Step 1: m̂ = g, v̂ = g², update = lr·g/(|g| + ε) ≈ lr·sign(g).
  CHECK(theta(0) == Approx(1.0 - 0.1 * 0.5 / (0.5 + 1e-8)).epsilon(1e-12));
  CHECK(theta(1) == Approx(-2.0 + 0.1 * 4.0 / (4.0 + 1e-8)).epsilon(1e-12));
  // Step 2 with a different gradient.
  Vector<double> g2(2);
  g2 << 1.0, 0.0;
  // After step 1: m = 0.1·0.5, v = 0.001·0.25.
  const double m = 0.9 * (0.1 * 0.5) + 0.1 * 1.0, v = 0.999 * (0.001 * 0.25) + 0.001 * 1.0;
  const double expected =
      theta(0) - 0.1 * (m / (1 - 0.81)) / (std::sqrt(v / (1 - 0.999 * 0.999)) + 1e-8);
  adam.step(theta, g2);
  CHECK(theta(0) == Approx(expected).epsilon(1e-12));
  CHECK(adam.steps() == 2);
}

TEST_CASE("Adam<float> over several chunks and a partial one follows the update rule in double",
          "[train][adam]") {
  // 600 parameters: two full chunks of 256 and a tail of 88 (padded internally). The reference
  // runs the rule coefficient by coefficient in double on the float values; the moments are kept
  // in double, so the only rounding is the float parameter's.
  train::AdamOptions opt;
  opt.learning_rate = 0.01;
  opt.weight_decay = 0.2;
  const Index n = 600;
  train::Adam<float> adam(n, opt);
  std::mt19937_64 gen(11);
  Vector<float> theta = standard_normal_matrix<float>(n, 1, gen);
  std::vector<double> m(std::size_t(n), 0.0), v(std::size_t(n), 0.0);
  for (int t = 1; t <= 3; ++t) {
    Vector<float> g = standard_normal_matrix<float>(n, 1, gen);
    g(n - 1) = 0.0f;  // a zero gradient in the tail
    Vector<double> expected(n);
    const double c1 = 1 - std::pow(opt.beta1, t), c2 = 1 - std::pow(opt.beta2, t);
    for (Index i = 0; i < n; ++i) {
      const std::size_t k = std::size_t(i);
      m[k] = opt.beta1 * m[k] + (1 - opt.beta1) * double(g(i));
      v[k] = opt.beta2 * v[k] + (1 - opt.beta2) * double(g(i)) * double(g(i));
      expected(i) = double(theta(i)) * (1 - opt.learning_rate * opt.weight_decay) -
                    opt.learning_rate * (m[k] / c1) / (std::sqrt(v[k] / c2) + opt.epsilon);
    }
    adam.step(theta, g);
    const double err = (theta.cast<double>() - expected).cwiseAbs().maxCoeff();
    CHECK(err <=
          4 * double(std::numeric_limits<float>::epsilon()) * expected.cwiseAbs().maxCoeff());
    CHECK(theta.allFinite());
  }
}

TEST_CASE("AdamW decays weights and clipping bounds the gradient norm", "[train][adam]") {
  train::AdamOptions opt;
  opt.learning_rate = 0.01;
  opt.weight_decay = 0.5;
  train::Adam<double> adam(1, opt);
  Vector<double> theta = Vector<double>::Constant(1, 2.0);
  Vector<double> zero = Vector<double>::Zero(1);
  adam.step(theta, zero);
  CHECK(theta(0) == Approx(2.0 * (1 - 0.01 * 0.5)).epsilon(1e-14));
  Vector<double> g(3);
  g << 3.0, 4.0, 0.0;
  CHECK(train::clip_global_norm<double>(g, 1.0) == Approx(5.0));
  CHECK(g.norm() == Approx(1.0));
  CHECK(g(0) == Approx(0.6));
  CHECK_THROWS_AS(train::Adam<double>(3, train::AdamOptions{-1.0}), ParameterError);
}

TEST_CASE("cosine schedule decays from the base rate to the floor", "[train][schedule]") {
  const auto s = train::Schedule::cosine(0.1, 10);
  CHECK(s.rate(1.0, 0, 110) == Approx(0.1));  // warm-up
  CHECK(s.rate(1.0, 9, 110) == Approx(1.0));
  CHECK(s.rate(1.0, 10, 110) == Approx(1.0));   // start of the cosine
  CHECK(s.rate(1.0, 60, 110) == Approx(0.55));  // half way
  CHECK(s.rate(1.0, 110, 110) == Approx(0.1));  // floor
  CHECK(train::Schedule::constant().rate(0.3, 50, 100) == 0.3);
}

namespace {
using Affine2 =
    Flow<ElementwiseAffine<double, 2>, Reverse<double, 2>, ElementwiseAffine<double, 2>>;
Density<DiagonalNormal<double, 2>, Affine2> make_density() {
  Density d(DiagonalNormal<double, 2>{}, Affine2{});
  std::mt19937_64 gen(4);
  set_parameters(d,
                 Vector<double>(standard_normal_matrix<double>(d.parameter_count(), 1, gen) * 0.3));
  return d;
}
Eigen::Matrix<double, 2, Eigen::Dynamic> gaussian_data(Index n, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  Eigen::Matrix<double, 2, Eigen::Dynamic> x = standard_normal_matrix<double, 2>(2, n, gen);
  x.row(0) = x.row(0) * 2.0 + Eigen::RowVectorXd::Constant(n, 3.0);
  x.row(1) = x.row(1) * 0.5 - Eigen::RowVectorXd::Constant(n, 1.0);
  return x;
}
}  // namespace

TEST_CASE("the NLL objective's gradient matches finite differences", "[train][objectives]") {
  auto d = make_density();
  const auto x = gaussian_data(16, 1);
  Vector<double> grad = Vector<double>::Zero(d.parameter_count());
  const double loss = train::nll(d, x, grad);
  CHECK(loss == Approx(train::nll_value(d, x)).epsilon(1e-12));
  const Vector<double> theta = get_parameters(d);
  for (Index i = 0; i < theta.size(); ++i) {
    Vector<double> tp = theta, tm = theta;
    tp(i) += 1e-5;
    tm(i) -= 1e-5;
    set_parameters(d, tp);
    const double up = train::nll_value(d, x);
    set_parameters(d, tm);
    const double down = train::nll_value(d, x);
    CHECK(grad(i) == Approx((up - down) / 2e-5).epsilon(1e-6).margin(1e-9));
  }
}

TEST_CASE(
    "the NLL gradient through coupling and autoregressive layers, with a context, matches finite "
    "differences",
    "[train][objectives]") {
  // train::nll runs one recorded forward pass and the backward from its tapes (coupling
  // conditioners' activations; a MAF layer's input): the gradient must still be the derivative.
  using C = AffineCoupling<double>;
  using M = MAF<double, Dynamic, Dynamic, nn::Tanh, Dynamic>;
  const Index d = 4, k = 3, n = 9;
  auto coupling = [&](bool flip, std::uint64_t seed) {
    return C(
        CouplingMask::half(d, flip),
        CouplingOptions{.hidden_width = 8, .hidden_layers = 2, .context_dim = k, .seed = seed});
  };
  AutoregressiveOptions mo;
  mo.hidden_width = 8;
  mo.context_dim = k;
  mo.seed = 5;
  Density density(StandardNormal<double>(d),
                  Flow<C, M, C>(coupling(false, 1), M(d, mo), coupling(true, 2)));
  std::mt19937_64 gen(11);
  set_parameters(
      density,
      Vector<double>(standard_normal_matrix<double>(density.parameter_count(), 1, gen) * 0.2));
  const Eigen::MatrixXd x = standard_normal_matrix<double>(d, n, gen);
  const Eigen::MatrixXd c = standard_normal_matrix<double>(k, n, gen);
  Vector<double> grad = Vector<double>::Zero(density.parameter_count());
  const double loss = train::nll(density, x, grad, c);
  CHECK(loss == Approx(train::nll_value(density, x, c)).epsilon(1e-12));
  const Vector<double> theta = get_parameters(density);
  double worst = 0;
  for (Index i = 0; i < theta.size(); ++i) {
    Vector<double> tp = theta, tm = theta;
    tp(i) += 1e-5;
    tm(i) -= 1e-5;
    set_parameters(density, tp);
    const double up = train::nll_value(density, x, c);
    set_parameters(density, tm);
    const double down = train::nll_value(density, x, c);
    worst = std::max(worst, std::abs(grad(i) - (up - down) / 2e-5));
  }
  set_parameters(density, theta);
  CHECK(worst < 1e-7);
  // A tape reused from call to call (as train::fit does), across batch sizes, gives the numbers
  // of a fresh one, bit for bit.
  train::NllTape<decltype(density)> tape;
  for (const Index m : {n, Index(4), n}) {
    const Eigen::MatrixXd xm = x.leftCols(m);
    const Eigen::MatrixXd cm = c.leftCols(m);
    Vector<double> fresh = Vector<double>::Zero(density.parameter_count());
    Vector<double> reused = Vector<double>::Zero(density.parameter_count());
    const double loss_fresh = train::nll(density, xm, fresh, cm);
    const double loss_reused = train::nll(density, xm, reused, cm, tape);
    CHECK(loss_fresh == loss_reused);
    CHECK(fresh == reused);
  }
  // Errors: a gradient of the wrong length, a missing context.
  Vector<double> short_grad = Vector<double>::Zero(density.parameter_count() - 1);
  CHECK_THROWS_AS(train::nll(density, x, short_grad, c), ShapeError);
  CHECK_THROWS_AS(train::nll(density, x, grad), ShapeError);
}

TEST_CASE("Adam's step_model updates a model in place exactly as step does on the flat vector",
          "[train][adam]") {
  train::AdamOptions opt;
  opt.learning_rate = 0.03;
  opt.weight_decay = 0.1;
  opt.clip_norm = 0.5;
  auto a = make_density();
  auto b = make_density();
  train::Adam<double> adam_a(a.parameter_count(), opt);
  train::Adam<double> adam_b(b.parameter_count(), opt);
  const auto x = gaussian_data(32, 5);
  const Vector<double> start = get_parameters(a);
  for (int step = 0; step < 5; ++step) {
    Vector<double> ga = Vector<double>::Zero(a.parameter_count());
    Vector<double> gb = Vector<double>::Zero(b.parameter_count());
    train::nll(a, x, ga);
    train::nll(b, x, gb);
    Vector<double> theta = get_parameters(b);
    const double norm_a = adam_a.step_model(a, ga);
    const double norm_b = adam_b.step(theta, gb);
    set_parameters(b, theta);
    CHECK(norm_a == norm_b);
    CHECK(get_parameters(a) == get_parameters(b));  // bit-identical
  }
  CHECK(adam_a.steps() == 5);
  CHECK((get_parameters(a) - start).norm() > 1e-3);
  Vector<double> wrong = Vector<double>::Zero(a.parameter_count() + 1);
  CHECK_THROWS_AS(adam_a.step_model(a, wrong), ShapeError);
}

TEST_CASE("fit recovers a Gaussian's maximum-likelihood fit and is bit-reproducible",
          "[train][fit]") {
  const auto data = gaussian_data(4000, 2);
  const auto valid = gaussian_data(1000, 3);
  train::FitOptions opt;
  opt.batch_size = 200;
  opt.epochs = 60;
  opt.adam.learning_rate = 0.05;
  opt.schedule = train::Schedule::cosine(0.01);
  Index reports = 0;
  opt.callback = [&](const train::Progress& p) {
    ++reports;
    CHECK(std::isfinite(p.train_loss));
    CHECK(p.seconds >= 0);
  };
  auto d1 = make_density();
  const auto result = train::fit(d1, {.samples = data}, opt, {.samples = valid});
  CHECK(reports >= 60);
  CHECK(result.steps == 60 * 20);
  // The model family contains the truth, so the fit reaches the empirical MLE: the Gaussian with
  // the sample mean and (biased) sample variance of each coordinate.
  const Eigen::Vector2d mean = data.rowwise().mean();
  const Eigen::Vector2d var = (data.colwise() - mean).array().square().rowwise().mean();
  const double mle = 0.5 * ((2 * 3.141592653589793 * var.array()).log().sum() + 2.0);
  CHECK(train::nll_value(d1, data) == Approx(mle).margin(2e-3));
  // Same seed, same data: bit-identical parameters.
  auto d2 = make_density();
  opt.callback = nullptr;
  train::fit(d2, {.samples = data}, opt, {.samples = valid});
  CHECK(get_parameters(d1) == get_parameters(d2));
}

TEST_CASE("early stopping restores the best validation parameters", "[train][fit]") {
  const auto data = gaussian_data(400, 5);
  const auto valid = gaussian_data(400, 6);
  train::FitOptions opt;
  opt.batch_size = 100;
  opt.epochs = 200;
  opt.adam.learning_rate = 0.05;
  opt.patience = 3;
  double best_seen = INFINITY;
  opt.callback = [&](const train::Progress& p) {
    best_seen = std::min(best_seen, p.validation_loss);
  };
  auto d = make_density();
  const auto r = train::fit(d, {.samples = data}, opt, {.samples = valid});
  CHECK(r.stopped_early);
  CHECK(r.epochs < 200);
  CHECK(train::nll_value(d, valid) == Approx(best_seen).epsilon(1e-12));
  CHECK(r.best_validation_loss == Approx(best_seen).epsilon(1e-12));
}

TEST_CASE("a non-finite loss stops training with the step and keeps the last finite parameters",
          "[train][fit]") {
  auto data = gaussian_data(100, 7);
  data(0, 57) = std::numeric_limits<double>::quiet_NaN();
  auto d = make_density();
  const Vector<double> before = get_parameters(d);
  train::FitOptions opt;
  opt.batch_size = 100;  // the first batch holds the NaN
  opt.epochs = 3;
  CHECK_THROWS_AS(train::fit(d, {.samples = data}, opt), train::TrainingError);
  try {
    train::fit(d, {.samples = data}, opt);
  } catch (const train::TrainingError& e) {
    CHECK(e.step() == 0);
    CHECK(std::string(e.what()).find("step 0") != std::string::npos);
  }
  CHECK(get_parameters(d) == before);
}

namespace {
// A conditional density: the context shifts and scales the map (test::ContextAffine), and data
// whose first coordinate follows the context, one context column per sample.
using CondAffine = test::ContextAffine<double, 2, 1>;
Density<StandardNormal<double, 2>, CondAffine> make_conditional_density() {
  return {StandardNormal<double, 2>{}, CondAffine(2, 1, 3)};
}
void conditional_data(Index n, std::uint64_t seed, Eigen::MatrixXd& x, Eigen::MatrixXd& c) {
  std::mt19937_64 gen(seed);
  c = standard_normal_matrix<double>(1, n, gen);
  x = 0.5 * standard_normal_matrix<double>(2, n, gen);
  x.row(0) += 2.0 * c;
}
}  // namespace

TEST_CASE("fit on data sets: a conditional fit validates on its own contexts, views fit as copies",
          "[train][fit][context]") {
  Eigen::MatrixXd x, c;
  conditional_data(700, 12, x, c);
  const train::FitOptions opt{.batch_size = 100, .epochs = 8, .adam = {.learning_rate = 0.05}};
  // Views: the samples are the top rows of a larger matrix (an outer stride of 3), the rest are
  // blocks of columns.
  Eigen::MatrixXd big(3, 700);
  big.topRows(2) = x;
  big.row(2).setConstant(99.0);
  auto d1 = make_conditional_density();
  const auto r =
      train::fit(d1, {.samples = big.topRows(2).leftCols(500), .context = c.leftCols(500)}, opt,
                 {.samples = x.rightCols(200), .context = c.rightCols(200)});
  CHECK(r.steps == 8 * 5);
  // The restored parameters are the best on the validation samples given their own contexts.
  const double valid_nll = train::nll_value(d1, x.rightCols(200), c.rightCols(200));
  CHECK(r.best_validation_loss == Approx(valid_nll).epsilon(1e-12));
  // The model learned the dependence on the context: the contexts of other samples fit worse.
  const Eigen::MatrixXd other = c.rightCols(200).rowwise().reverse();
  CHECK(train::nll_value(d1, x.rightCols(200), other) > valid_nll + 0.5);
  // Plain copies (and a row-vector context, which the Data evaluates into itself) give
  // bit-identical parameters.
  const Eigen::MatrixXd xt = x.leftCols(500), xv = x.rightCols(200);
  const Eigen::RowVectorXd ct = c.leftCols(500), cv = c.rightCols(200);
  auto d2 = make_conditional_density();
  train::fit(d2, {.samples = xt, .context = ct}, opt, {.samples = xv, .context = cv});
  CHECK(get_parameters(d1) == get_parameters(d2));
}

TEST_CASE("fit checks its data sets before any step and names the argument", "[train][fit]") {
  Eigen::MatrixXd x, c;
  conditional_data(50, 13, x, c);
  auto cond = make_conditional_density();
  auto uncond = make_density();
  const Vector<double> cond_before = get_parameters(cond), uncond_before = get_parameters(uncond);
  bool called = false;
  const train::FitOptions opt{.epochs = 1,
                              .callback = [&](const train::Progress&) { called = true; }};
  const Eigen::MatrixXd none;
  // A context for an unconditional density; none for a conditional one.
  CHECK_THROWS_AS((train::fit(uncond, {.samples = x, .context = c}, opt)), ShapeError);
  CHECK_THROWS_WITH((train::fit(uncond, {.samples = x, .context = c}, opt)),
                    Catch::Contains("takes no context") && Catch::Contains("train.context"));
  CHECK_THROWS_AS((train::fit(cond, {.samples = x}, opt)), ShapeError);
  CHECK_THROWS_WITH((train::fit(cond, {.samples = x}, opt)),
                    Catch::Contains("conditional") && Catch::Contains("train.context"));
  // Mismatched columns of samples and context; a context of the wrong dimension.
  CHECK_THROWS_WITH((train::fit(cond, {.samples = x, .context = c.leftCols(49)}, opt)),
                    Catch::Contains("train.context") && Catch::Contains("50 columns") &&
                        Catch::Contains("1 x 49"));
  const Eigen::MatrixXd c2 = Eigen::MatrixXd::Zero(2, 50);
  CHECK_THROWS_WITH((train::fit(cond, {.samples = x, .context = c2}, opt)),
                    Catch::Contains("train.context") && Catch::Contains("1 rows"));
  // The same checks on the validation set, and on the samples' shapes.
  CHECK_THROWS_WITH((train::fit(cond, {.samples = x, .context = c}, opt, {.samples = x})),
                    Catch::Contains("validation.context"));
  CHECK_THROWS_WITH((train::fit(cond, {.samples = x, .context = c}, opt, {.context = c})),
                    Catch::Contains("validation.samples") && Catch::Contains("empty"));
  CHECK_THROWS_WITH((train::fit(uncond, {.samples = x}, opt, {.samples = x.topRows(1)})),
                    Catch::Contains("validation.samples") && Catch::Contains("2 rows"));
  CHECK_THROWS_WITH((train::fit(uncond, {.samples = none}, opt)),
                    Catch::Contains("train.samples") && Catch::Contains("empty"));
  CHECK_THROWS_AS((train::fit(uncond, {.samples = none}, opt)), ShapeError);
  CHECK_FALSE(called);
  CHECK(get_parameters(cond) == cond_before);
  CHECK(get_parameters(uncond) == uncond_before);
}

TEST_CASE("reverse KL reaches a Gaussian target with a known normaliser", "[train][reverse_kl]") {
  // Target: N(μ, diag(σ²)) unnormalised by a constant c; log Z = −c.
  const Eigen::Vector2d mu(1.5, -0.5), sigma(0.7, 2.0);
  const double c = 3.0;
  auto target = train::make_target(
      [&](const Eigen::Matrix<double, 2, Eigen::Dynamic>& x) -> Eigen::RowVectorXd {
        const auto u = (x.colwise() - mu).array().colwise() / sigma.array();
        return (-0.5 * u.square().colwise().sum()).matrix().array() -
               std::log(2 * 3.141592653589793) - std::log(sigma.prod()) + c;
      },
      [&](const Eigen::Matrix<double, 2, Eigen::Dynamic>& x)
          -> Eigen::Matrix<double, 2, Eigen::Dynamic> {
        return -((x.colwise() - mu).array().colwise() / sigma.array().square()).matrix();
      });
  Density d(StandardNormal<double, 2>{}, Flow<ElementwiseAffine<double, 2>>{});
  train::Adam<double> adam(d.parameter_count(), train::AdamOptions{0.05});
  std::mt19937_64 gen(9);
  double kl = 0;
  for (int step = 0; step < 800; ++step) {
    Vector<double> grad = Vector<double>::Zero(d.parameter_count());
    const double loss = train::reverse_kl(d, target, 256, gen, grad);
    kl = loss + c;  // KL = loss + log Z, and log Z = c
    // KL is never negative beyond Monte Carlo noise: a check of the log-det's sign.
    CHECK(kl > -0.05);
    adam.step_model(d, grad);
  }
  Vector<double> grad = Vector<double>::Zero(d.parameter_count());
  kl = train::reverse_kl(d, target, 20000, gen, grad) + c;
  CHECK(kl < 0.05);
  CHECK(kl > -0.01);
}

TEST_CASE("reverse KL's workspace: the step's samples and log-weights, the plain call's numbers",
          "[train][reverse_kl]") {
  // Target: an unnormalised correlated Gaussian; flow: an elementwise affine map with parameters
  // away from the identity. n = 150 goes through the transform in three chunks (64, 64, 22).
  using Points = Eigen::Matrix<double, 2, Eigen::Dynamic>;
  const Eigen::Matrix2d precision{{1.5, 0.6}, {0.6, 0.8}};
  auto target = train::make_target(
      [&](const Points& x) -> Eigen::RowVectorXd {
        return -0.5 * (x.array() * (precision * x).array()).colwise().sum() + 0.3;
      },
      [&](const Points& x) -> Points { return -precision * x; });
  Density d(StandardNormal<double, 2>{}, Flow<ElementwiseAffine<double, 2>>{});
  const Vector<double> theta{{0.4, -0.3, 0.7, -1.1}};
  set_parameters(d, theta);
  const Index n = 150;
  auto plain = [&](Vector<double>& grad) {
    std::mt19937_64 g(5);
    grad.setZero(d.parameter_count());
    return train::reverse_kl(d, target, n, g, grad);
  };
  Vector<double> grad;
  const double loss = plain(grad);

  // A workspace used before for another batch size gives the plain call's numbers, bit for bit.
  train::ReverseKlWorkspace<decltype(d)> ws;
  CHECK(ws.size() == 0);
  CHECK_THROWS_AS(ws.ess(), UnsupportedError);
  Vector<double> other = Vector<double>::Zero(d.parameter_count());
  std::mt19937_64 g0(1);
  train::reverse_kl(d, target, 7, g0, other, ws);
  CHECK(ws.size() == 7);
  std::mt19937_64 g(5);
  Vector<double> grad_ws = Vector<double>::Zero(d.parameter_count());
  CHECK(train::reverse_kl(d, target, n, g, grad_ws, ws) == loss);
  CHECK(grad_ws == grad);

  // What the workspace holds, against independent computations: the latents are the base's
  // draws from the same seed, the samples map back to them through the forward transform, and
  // the log-weights are log p̃(x) − log q(x) with log q from the forward direction.
  REQUIRE(ws.size() == n);
  std::mt19937_64 g2(5);
  const Points z = d.base().sample(n, g2);
  CHECK(ws.latents() == z);
  CHECK((d.transform().forward(ws.samples()) - z).cwiseAbs().maxCoeff() < 1e-12);
  const Eigen::RowVectorXd log_q = d.log_prob(ws.samples());
  const Eigen::RowVectorXd log_p = target.log_prob(ws.samples());
  CHECK((ws.log_prob() - log_q).cwiseAbs().maxCoeff() < 1e-12);
  CHECK(ws.target_log_prob() == log_p);
  CHECK((ws.log_weights() - (log_p - log_q)).cwiseAbs().maxCoeff() < 1e-12);
  CHECK(loss == Approx(-(log_p - log_q).mean()).epsilon(1e-13));
  // log Ẑ and Kish's ESS of the batch, from the weights themselves (moderate here: no overflow).
  const Eigen::ArrayXd w = (log_p - log_q).array().exp().transpose();
  CHECK(ws.log_z() == Approx(std::log(w.mean())).epsilon(1e-12));
  CHECK(ws.ess() == Approx(w.sum() * w.sum() / w.square().sum()).epsilon(1e-12));
  CHECK(ws.ess() <= double(n));

  // The gradient (summed over the chunks) against central differences of the loss at fixed
  // latents (the same seed).
  for (Index i = 0; i < theta.size(); ++i) {
    Vector<double> tp = theta, tm = theta, unused;
    tp(i) += 1e-6;
    tm(i) -= 1e-6;
    set_parameters(d, tp);
    const double up = plain(unused);
    set_parameters(d, tm);
    const double down = plain(unused);
    CHECK(grad(i) == Approx((up - down) / 2e-6).epsilon(1e-6).margin(1e-8));
  }
  set_parameters(d, theta);

  // A target whose log_prob or gradient has the wrong shape: ShapeError before anything is
  // stored into the workspace's fixed-size buffers.
  auto wide = train::make_target(
      [](const Points& x) -> Eigen::RowVectorXd { return Eigen::RowVectorXd::Zero(x.cols() + 1); },
      [](const Points& x) -> Points { return Points::Zero(2, x.cols()); });
  auto tall = train::make_target(
      [](const Points& x) -> Eigen::RowVectorXd { return Eigen::RowVectorXd::Zero(x.cols()); },
      [](const Points& x) -> Eigen::MatrixXd { return Eigen::MatrixXd::Zero(3, x.cols()); });
  CHECK_THROWS_AS(train::reverse_kl(d, wide, n, g, grad_ws, ws), ShapeError);
  CHECK_THROWS_AS(train::reverse_kl(d, tall, n, g, grad_ws, ws), ShapeError);
  // A call that threw leaves no step to report on.
  CHECK(ws.size() == 0);
  CHECK_THROWS_AS(ws.log_z(), UnsupportedError);
  CHECK_THROWS_AS(train::reverse_kl(d, target, 0, g, grad_ws, ws), ShapeError);
}

TEST_CASE("fit from a sampler: replaying a data set's batches gives fit's parameters bit for bit",
          "[train][fit][sampler]") {
  const auto data = gaussian_data(400, 31);
  const auto valid = gaussian_data(200, 32);
  const train::FitOptions opt{
      .batch_size = 100, .max_steps = 23, .seed = 9, .adam = {.learning_rate = 0.05}};
  auto d1 = make_density();
  const auto r1 = train::fit(d1, {.samples = data}, opt, {.samples = valid});
  // The sampler draws fit's permutation from the generator it is handed (seeded with opt.seed)
  // at the start of each pass and copies the columns of the step's batch.
  Eigen::VectorXi order;
  Index calls = 0;
  auto replay = [&](auto& x, auto& c, Index step, std::mt19937_64& gen) {
    CHECK(step == calls++);
    CHECK(x.cols() == 100);
    CHECK(c.size() == 0);
    if (step % 4 == 0) order = random_permutation(400, gen);
    for (Index j = 0; j < 100; ++j) x.col(j) = data.col(order((step % 4) * 100 + j));
  };
  auto d2 = make_density();
  const auto r2 = train::fit(d2, train::sampler(replay), opt, {.samples = valid});
  CHECK(calls == 23);
  CHECK(r2.steps == 23);
  CHECK(r2.epochs == 0);
  CHECK(get_parameters(d1) == get_parameters(d2));
  CHECK(r1.best_validation_loss == r2.best_validation_loss);
}

TEST_CASE("fit from a sampler learns a Gaussian drawn fresh each step, and a conditional one",
          "[train][fit][sampler]") {
  // x ~ N((3, −1), diag(4, 0.25)), never materialised: a new batch every step.
  const train::FitOptions opt{.batch_size = 128,
                              .max_steps = 1500,
                              .seed = 3,
                              .adam = {.learning_rate = 0.05},
                              .schedule = train::Schedule::cosine(0.01),
                              .report_every_steps = 500};
  auto d = make_density();
  const auto r = train::fit(d, train::sampler([](auto& x, auto&, std::mt19937_64& gen) {
                              x = standard_normal_matrix<double, 2>(2, x.cols(), gen);
                              x.row(0) = 2.0 * x.row(0).array() + 3.0;
                              x.row(1) = 0.5 * x.row(1).array() - 1.0;
                            }),
                            opt);
  CHECK(r.steps == 1500);
  // The model is Gaussian (an affine flow of a Gaussian): log p is quadratic, so its mean and
  // covariance follow exactly from log p at six points (second differences give −Σ⁻¹, first ones
  // Σ⁻¹μ).
  auto log_p = [&](double u, double v) {
    Eigen::Matrix<double, 2, Eigen::Dynamic> point(2, 1);
    point << u, v;
    return -train::nll_value(d, point);
  };
  const double f0 = log_p(0, 0);
  Eigen::Matrix2d precision;
  precision(0, 0) = 2 * f0 - log_p(1, 0) - log_p(-1, 0);
  precision(1, 1) = 2 * f0 - log_p(0, 1) - log_p(0, -1);
  precision(0, 1) = precision(1, 0) = -(log_p(1, 1) - log_p(1, 0) - log_p(0, 1) + f0);
  const Eigen::Vector2d slope((log_p(1, 0) - log_p(-1, 0)) / 2, (log_p(0, 1) - log_p(0, -1)) / 2);
  const Eigen::Matrix2d cov = precision.inverse();
  const Eigen::Vector2d mean = cov * slope;
  CHECK(mean(0) == Approx(3.0).margin(0.05));
  CHECK(mean(1) == Approx(-1.0).margin(0.02));
  CHECK(cov(0, 0) == Approx(4.0).epsilon(0.04));
  CHECK(cov(1, 1) == Approx(0.25).epsilon(0.04));
  CHECK(std::abs(cov(0, 1)) < 0.03);

  // Simulation-based: c ~ N(0, 1), then x | c ~ N((2c, 0), I) (in the model's family), drawn
  // each step; the held-out set is the same simulator run once on a fixed seed.
  auto simulate = [](auto& x, auto& c, std::mt19937_64& gen) {
    c = standard_normal_matrix<double>(1, x.cols(), gen);
    x = standard_normal_matrix<double>(2, x.cols(), gen);
    x.row(0) += 2.0 * c;
  };
  Eigen::MatrixXd xv(2, 1000), cv(1, 1000);
  std::mt19937_64 validation_gen(33);
  simulate(xv, cv, validation_gen);
  auto q = make_conditional_density();
  train::fit(q, train::sampler(simulate),
             {.batch_size = 100,
              .max_steps = 800,
              .adam = {.learning_rate = 0.05},
              .schedule = train::Schedule::cosine(0.01)},
             {.samples = xv, .context = cv});
  // Against the truth's NLL, log(2π) + 1, on the same held-out set.
  const double valid_nll = train::nll_value(q, xv, cv);
  Eigen::MatrixXd residual = xv;
  residual.row(0) -= 2.0 * cv;
  const double true_nll = std::log(2 * 3.141592653589793) + 0.5 * residual.squaredNorm() / 1000.0;
  CHECK(valid_nll == Approx(true_nll).margin(0.02));
  const Eigen::MatrixXd other = cv.rowwise().reverse();
  CHECK(train::nll_value(q, xv, other) > valid_nll + 0.5);
}

TEST_CASE("fit from a sampler checks its options and every batch the sampler returns",
          "[train][fit][sampler]") {
  auto cond = make_conditional_density();
  auto uncond = make_density();
  const Vector<double> cond_before = get_parameters(cond), uncond_before = get_parameters(uncond);
  const train::FitOptions opt{.batch_size = 10, .max_steps = 5};
  auto fill = [](auto& x, auto& c, std::mt19937_64& gen) {
    x = standard_normal_matrix<double>(2, x.cols(), gen);
    if (c.rows() > 0) c = standard_normal_matrix<double>(1, x.cols(), gen);
  };
  // No max_steps: a sampler has no epochs. Patience without periodic reports.
  CHECK_THROWS_WITH((train::fit(uncond, train::sampler(fill), {.batch_size = 10})),
                    Catch::Contains("max_steps") && Catch::Contains("sampler"));
  CHECK_THROWS_AS((train::fit(uncond, train::sampler(fill), {.epochs = 5})), ParameterError);
  CHECK_THROWS_AS((train::fit(uncond, train::sampler(fill), {.max_steps = 5, .patience = 2})),
                  ParameterError);
  // Shapes: an empty batch, a context for an unconditional density, a context with the wrong
  // rows or columns.
  CHECK_THROWS_WITH(
      (train::fit(uncond, train::sampler([](auto& x, auto&, std::mt19937_64&) { x.resize(2, 0); }),
                  opt)),
      Catch::Contains("the sampler") && Catch::Contains("empty"));
  CHECK_THROWS_WITH((train::fit(uncond, train::sampler([](auto& x, auto& c, std::mt19937_64&) {
                                  x.setZero();
                                  c.setZero(1, x.cols());
                                }),
                                opt)),
                    Catch::Contains("the sampler") && Catch::Contains("no context"));
  CHECK_THROWS_WITH(
      (train::fit(cond, train::sampler([&](auto& x, auto& c, std::mt19937_64& g) {
                    fill(x, c, g);
                    c.conservativeResize(2, Eigen::NoChange);
                  }),
                  opt)),
      Catch::Contains("the sampler") && Catch::Contains("2 x 10") && Catch::Contains("1 rows"));
  CHECK_THROWS_WITH((train::fit(cond, train::sampler([&](auto& x, auto& c, std::mt19937_64& g) {
                                  fill(x, c, g);
                                  c.conservativeResize(Eigen::NoChange, 9);
                                }),
                                opt)),
                    Catch::Contains("the sampler") && Catch::Contains("1 x 9"));
  // A conditional density's sampler that forgets the contexts (its buffer is 1 x 10 of NaN).
  CHECK_THROWS_WITH(
      (train::fit(cond, train::sampler([](auto& x, auto&, std::mt19937_64& g) {
                    x = standard_normal_matrix<double>(2, x.cols(), g);
                  }),
                  opt)),
      Catch::Contains("the sampler") && Catch::Contains("context c") && Catch::Contains("step 0"));
  // A sampler that leaves part of x unwritten.
  CHECK_THROWS_AS((train::fit(uncond, train::sampler([](auto& x, auto&, std::mt19937_64&) {
                                x.leftCols(9).setZero();
                              }),
                              opt)),
                  train::TrainingError);
  CHECK(get_parameters(cond) == cond_before);
  CHECK(get_parameters(uncond) == uncond_before);
}
