// AnyBijector and DynamicFlow: run-time composition of native bijectors, checked against the
// compile-time Flow of the same steps (the independent truth), the bijector laws, files, training,
// errors, copies and threads. One TU, double only, dynamic sizes: few instantiations.
#include <catch2/catch.hpp>
#include <nflow/io.hpp>
#include <nflow/nflow.hpp>
#include <nflow/testing/catch2.hpp>
#include <sstream>
#include <thread>

#include "support/same_map.hpp"
#include "support/toy_bijectors.hpp"

using namespace nflow;
using nflow::test::check_same_map;
using nflow::test::max_diff;

namespace {

using Coupling4 = AffineCoupling<double, Dynamic, Dynamic, nn::Tanh>;
using Perm = Permutation<double>;
using Maf = MAF<double, Dynamic, Dynamic, nn::Tanh, Dynamic>;
using Norm = ActNorm<double>;
using Static = Flow<Coupling4, Perm, Maf, Norm>;
using Dyn = DynamicFlow<double>;
using Any = AnyBijector<double>;

constexpr Index kDim = 4;

/// The four steps, with random parameters (a fresh coupling or MAF layer is the identity).
Static make_static(Index context_dim, std::uint64_t seed) {
  Static flow(
      Coupling4(
          CouplingMask::half(kDim),
          CouplingOptions{
              .hidden_width = 8, .hidden_layers = 1, .context_dim = context_dim, .seed = seed}),
      Perm::random(kDim, seed + 1),
      Maf(kDim,
          {.hidden_width = 8, .hidden_layers = 1, .context_dim = context_dim, .seed = seed + 2}),
      Norm(kDim));
  std::mt19937_64 gen(seed + 3);
  set_parameters(
      flow, Vector<double>(standard_normal_matrix<double>(flow.parameter_count(), 1, gen) * 0.3));
  return flow;
}

/// The same steps as a DynamicFlow.
Dyn to_dynamic(const Static& s) {
  Dyn flow;
  flow.emplace_back(s.step<0>(), "affine_coupling");
  flow.push_back(Any(s.step<1>(), "permutation"));
  flow.emplace_back(s.step<2>(), "maf");
  flow.emplace_back(s.step<3>(), "act_norm");
  return flow;
}

}  // namespace

TEST_CASE("A DynamicFlow computes what the Flow of the same steps computes", "[dynamic_flow]") {
  std::mt19937_64 gen(3);
  const Eigen::MatrixXd x = standard_normal_matrix<double>(kDim, 9, gen);
  SECTION("unconditional") {
    const Static s = make_static(0, 1);
    const Dyn d = to_dynamic(s);
    CHECK(d.size() == 4);
    CHECK(d.dim() == kDim);
    CHECK(d.context_dim() == 0);
    CHECK(parameter_names(d) == parameter_names(s));
    CHECK(buffer_names(d) == buffer_names(s));
    CHECK(max_diff(get_parameters(d), get_parameters(s)) == 0);
    check_same_map(d, s, x);
  }
  SECTION("conditional: the context reaches the coupling and the MAF only") {
    const Static s = make_static(3, 5);
    const Dyn d = to_dynamic(s);
    CHECK(d.context_dim() == 3);
    CHECK(d.step(1).context_dim() == 0);
    const Eigen::MatrixXd c = standard_normal_matrix<double>(3, x.cols(), gen);
    check_same_map(d, s, x, c);
    // A context expression (not a plain matrix) is evaluated once and gives the same numbers.
    CHECK(max_diff(d.forward(x, c * 1.0), s.forward(x, c)) < 1e-12);
    CHECK_THROWS_AS(d.forward(x), ShapeError);
  }
  SECTION("an AnyBijector alone, and AnyBijectors in a compile-time Flow") {
    const Static s = make_static(0, 7);
    const Any coupling(s.step<0>(), "coupling");
    check_same_map(coupling, s.step<0>(), x);
    const Flow<Any, Any, Any, Any> f(coupling, Any(s.step<1>()), Any(s.step<2>()),
                                     Any(s.step<3>()));
    check_same_map(f, s, x);
    CHECK(parameter_names(f) == parameter_names(s));
    // A DynamicFlow nests in an AnyBijector (and so in another DynamicFlow).
    Dyn outer;
    outer.emplace_back(to_dynamic(s), "inner");
    check_same_map(outer.step(0), s, x);
  }
}

TEST_CASE("A DynamicFlow obeys the bijector laws, gradients included", "[dynamic_flow][laws]") {
  testing::LawOptions opt;
  opt.skip_all({"inverse_vjp_input", "inverse_vjp_params"},
               "MAF has no inverse vjp (its inverse takes Dim passes)");
  NFLOW_CHECK_LAWS(to_dynamic(make_static(0, 21)), opt);
  NFLOW_CHECK_LAWS(to_dynamic(make_static(2, 22)), opt, test::context_maker<double>(2));
  // Without the MAF every step has an inverse vjp, and the flow chains them.
  Dyn no_maf = to_dynamic(make_static(2, 23));
  Dyn chain;
  for (Index i : {0, 1, 3}) chain.push_back(no_maf.step(i));
  REQUIRE(chain.has_inverse_vjp());
  NFLOW_CHECK_LAWS(chain, testing::LawOptions{}, test::context_maker<double>(2));
}

TEST_CASE("DynamicFlow and Flow load each other's files", "[dynamic_flow][io]") {
  std::mt19937_64 gen(4);
  const Eigen::MatrixXd x = standard_normal_matrix<double>(kDim, 5, gen);
  const Static source = make_static(0, 31);
  Static s = make_static(0, 41);
  Dyn d = to_dynamic(make_static(0, 51));
  REQUIRE(max_diff(d.forward(x), source.forward(x)) > 1e-3);  // really different to start with
  d.step(3).get_if<Norm>()->set_initialized(false);

  std::stringstream from_static;
  io::save(source, from_static);
  io::load(d, from_static);
  CHECK(max_diff(d.forward(x), source.forward(x)) < 1e-12);
  CHECK(get_buffers(d) == get_buffers(source));
  CHECK(d.step(3).get_if<Norm>()->is_initialized() == source.step<3>().is_initialized());

  const Dyn other = to_dynamic(make_static(0, 61));
  std::stringstream from_dynamic;
  io::save(other, from_dynamic);
  io::load(s, from_dynamic);
  CHECK(max_diff(s.forward(x), other.forward(x)) < 1e-12);
  CHECK(max_diff(get_parameters(s), get_parameters(other)) == 0);
}

TEST_CASE("A Density over a DynamicFlow trains with train::fit", "[dynamic_flow][train]") {
  std::mt19937_64 gen(8);
  Eigen::MatrixXd data = standard_normal_matrix<double>(kDim, 512, gen);
  data.row(1) = 0.5 * data.row(0) + 0.3 * data.row(1);  // correlated, not standard normal
  data.row(3).array() += 2.0;
  Density density(StandardNormal<double>(kDim), to_dynamic(make_static(0, 71)));
  const double before = -density.log_prob(data).mean();
  train::FitOptions opt;
  opt.batch_size = 128;
  opt.max_steps = 40;
  opt.epochs = 100;
  opt.adam.learning_rate = 1e-2;
  const train::FitResult r = train::fit(density, {.samples = data}, opt);
  const double after = -density.log_prob(data).mean();
  CHECK(r.steps == 40);
  CHECK(std::isfinite(after));
  CHECK(after < before - 0.1);
  // The score comes from the same backward pass.
  const Eigen::MatrixXd score = density.score(data.leftCols(3));
  CHECK(score.allFinite());
}

TEST_CASE("Missing capabilities are answered at run time", "[dynamic_flow][errors]") {
  std::mt19937_64 gen(9);
  const Eigen::MatrixXd x = standard_normal_matrix<double>(3, 4, gen);
  const Eigen::MatrixXd c = standard_normal_matrix<double>(2, 4, gen);
  Eigen::VectorXd gp(0);

  // A user's bijector without BijectorBase and without vjps.
  const Any plain(test::PlainShift<double, 3>{}, "plain shift");
  CHECK(plain.name() == "plain shift");
  CHECK_FALSE(plain.has_forward_vjp());
  CHECK_FALSE(plain.has_inverse_vjp());
  CHECK_FALSE(plain.has_buffers());
  CHECK(plain.is_constant_log_det());
  CHECK(max_diff(plain.forward(x), x.array() + 1.0) == 0);
  CHECK_THROWS_WITH(plain.forward_vjp(x, x, Eigen::RowVectorXd::Zero(4), gp),
                    Catch::Contains("'plain shift' has no forward vjp"));
  CHECK_THROWS_AS(plain.inverse_vjp(x, x, Eigen::RowVectorXd::Zero(4), gp), UnsupportedError);
  CHECK(plain.get_if<test::PlainShift<double, 3>>() != nullptr);
  CHECK(plain.get_if<Perm>() == nullptr);

  // A conditional step without an inverse vjp: the flow says so, naming the step.
  using CA = test::ContextAffine<double, 3, 2>;
  Dyn flow;
  flow.emplace_back(Perm::random(3, 1), "permutation");
  flow.emplace_back(CA(3, 2, 1), "context affine");
  CHECK(flow.context_dim() == 2);
  CHECK(flow.has_forward_vjp());
  CHECK_FALSE(flow.has_inverse_vjp());
  CHECK_FALSE(flow.step(1).has_buffers());
  CHECK(flow.step(0).has_buffers());
  Eigen::VectorXd g = Eigen::VectorXd::Zero(flow.parameter_count());
  CHECK(flow.forward_vjp(x, x, Eigen::RowVectorXd::Ones(4), g, c).allFinite());
  CHECK_THROWS_WITH(flow.inverse_vjp(x, x, Eigen::RowVectorXd::Ones(4), g, c),
                    Catch::Contains("step 1 ('context affine') has no inverse vjp"));
  CHECK(flow.summary() ==
        "0: permutation (dim 3, 0 parameters)\n"
        "1: context affine (dim 3, context 2, 12 parameters)\n");

  // The static traits are conservative; the run-time queries are the held types'.
  STATIC_REQUIRE(Any::InverseCost == Cost::Iterative);
  STATIC_REQUIRE_FALSE(Dyn::IsConstantLogDet);
  const Any maf(Maf(3), "maf");
  CHECK(maf.forward_cost() == Cost::OnePass);
  CHECK(maf.inverse_cost() == Cost::DimPasses);
  CHECK_FALSE(maf.is_constant_log_det());

  // An empty flow is rejected when called.
  const Dyn empty;
  CHECK(empty.parameter_count() == 0);
  CHECK_THROWS_AS(empty.forward(x), UnsupportedError);
}

TEST_CASE("Steps must agree on dim and context dim", "[dynamic_flow][errors]") {
  Dyn flow;
  flow.emplace_back(Perm::random(4, 1), "permutation");
  flow.emplace_back(Maf(4, {.hidden_width = 4, .context_dim = 2}), "maf");
  CHECK_THROWS_WITH(flow.emplace_back(Norm(3), "act_norm"),
                    Catch::Contains("step 2 ('act_norm') has dimension 3") &&
                        Catch::Contains("step 0 ('permutation') has dimension 4"));
  CHECK_THROWS_AS(flow.push_back(Any(Maf(4, {.hidden_width = 4, .context_dim = 3}), "maf")),
                  ParameterError);
  CHECK(flow.size() == 2);  // unchanged
  flow.emplace_back(Maf(4, {.hidden_width = 4, .context_dim = 2}), "maf");
  CHECK(flow.size() == 3);
  std::vector<Any> steps{Any(Norm(4)), Any(Norm(5), "wide")};
  CHECK_THROWS_WITH(Dyn(steps), Catch::Contains("step 1 ('wide')"));
  CHECK_THROWS_AS(Dyn(steps), ParameterError);
}

TEST_CASE("Copies are deep", "[dynamic_flow]") {
  std::mt19937_64 gen(10);
  const Eigen::MatrixXd x = standard_normal_matrix<double>(kDim, 3, gen);
  const Dyn original = to_dynamic(make_static(0, 81));
  const Eigen::VectorXd theta = get_parameters(original);
  const Eigen::MatrixXd z = original.forward(x);
  Dyn copy = original;
  set_parameters(copy, Eigen::VectorXd(theta.array() + 0.5));
  CHECK(max_diff(get_parameters(original), theta) == 0);
  CHECK(max_diff(original.forward(x), z) == 0);
  CHECK(max_diff(copy.forward(x), z) > 1e-3);
  // Buffers too, through the held object.
  copy.step(3).get_if<Norm>()->set_initialized(!original.step(3).get_if<Norm>()->is_initialized());
  CHECK(get_buffers(copy) != get_buffers(original));
  // Assignment copies deeply as well; a moved-from AnyBijector says so instead of crashing.
  Any a = original.step(0);
  Any b = std::move(a);
  a = b;
  set_parameters(b, Eigen::VectorXd::Zero(b.parameter_count()));
  CHECK(max_diff(get_parameters(a), get_parameters(original.step(0))) == 0);
  Any moved = std::move(b);
  CHECK_THROWS_AS(b.dim(), UnsupportedError);  // NOLINT(bugprone-use-after-move): on purpose
}

TEST_CASE("A const DynamicFlow gives the same results from two threads", "[dynamic_flow]") {
  // Each thread its own input: a flow that kept per-call state in the object would mix them up.
  std::mt19937_64 gen(12);
  const Dyn flow = to_dynamic(make_static(2, 91));
  std::vector<Eigen::MatrixXd> x, c, expected, expected_inverse;
  for (int t = 0; t < 2; ++t) {
    x.push_back(standard_normal_matrix<double>(kDim, 64, gen));
    c.push_back(standard_normal_matrix<double>(2, 64, gen));
    expected.push_back(flow.forward(x.back(), c.back()));
    expected_inverse.push_back(flow.inverse(x.back(), c.back()));
  }
  std::vector<int> mismatches(2, 0);
  std::vector<std::thread> threads;
  for (std::size_t t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 50; ++rep) {
        if (!(flow.forward(x[t], c[t]).array() == expected[t].array()).all()) ++mismatches[t];
        if (!(flow.inverse(x[t], c[t]).array() == expected_inverse[t].array()).all())
          ++mismatches[t];
      }
    });
  }
  for (std::thread& t : threads) t.join();
  CHECK(mismatches[0] == 0);
  CHECK(mismatches[1] == 0);
}
