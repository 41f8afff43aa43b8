// Flow<...>: composition order, log-det accumulation, nesting, context threading, parameter
// names and gradients, and the laws on whole flows.
#include <catch2/catch.hpp>
#include <nflow/nflow.hpp>
#include <nflow/testing/catch2.hpp>

#include "support/toy_bijectors.hpp"

using namespace nflow;

namespace {
template <typename S, int D>
ElementwiseAffine<S, D> random_affine(Index dim, std::uint64_t seed) {
  ElementwiseAffine<S, D> b(dim);
  std::mt19937_64 gen(seed);
  set_parameters(b, Vector<S>(standard_normal_matrix<S>(b.parameter_count(), 1, gen) * S(0.4)));
  return b;
}
}  // namespace

TEST_CASE("Flow applies B1 first in forward and B1^-1 last in inverse", "[flow]") {
  // affine then reverse differs from reverse then affine, so the order is observable.
  auto a = random_affine<double, 2>(2, 1);
  Flow<ElementwiseAffine<double, 2>, Reverse<double, 2>> flow(a, Reverse<double, 2>{});
  const Eigen::Vector2d x(0.3, -0.7);
  const Eigen::Vector2d expected = a.forward(x).reverse();
  CHECK((flow.forward(x) - expected).norm() < 1e-15);
  CHECK((flow.inverse(expected) - x).norm() < 1e-14);
  CHECK(flow.forward_log_det(x)(0) == Approx(a.log_scale().sum()));
}

TEST_CASE("Flow adds its steps' log-dets", "[flow]") {
  auto a = random_affine<double, Dynamic>(3, 2);
  auto b = random_affine<double, Dynamic>(3, 3);
  Flow<ElementwiseAffine<double>, Sigmoid<double>, ElementwiseAffine<double>> flow(
      a, Sigmoid<double>(3), b);
  std::mt19937_64 gen(5);
  const Eigen::MatrixXd x = standard_normal_matrix<double>(3, 6, gen);
  const auto r1 = a.forward_and_log_det(x);
  const auto r2 = Sigmoid<double>(3).forward_and_log_det(r1.value);
  const auto r3 = b.forward_and_log_det(r2.value);
  const auto r = flow.forward_and_log_det(x);
  CHECK((r.value - r3.value).norm() < 1e-14);
  CHECK((r.log_det - (r1.log_det + r2.log_det + r3.log_det)).norm() < 1e-12);
}

TEMPLATE_TEST_CASE("Flows obey the bijector laws", "[flow][laws]", float, double) {
  using S = TestType;
  Flow<ElementwiseAffine<S, 3>, Permutation<S, 3>, ElementwiseAffine<S, 3>, Reverse<S, 3>> fixed(
      random_affine<S, 3>(3, 1), Permutation<S, 3>::random(3, 2), random_affine<S, 3>(3, 3),
      Reverse<S, 3>{});
  NFLOW_CHECK_LAWS(fixed);
  Flow<ElementwiseAffine<S>, Reverse<S>, Sigmoid<S>> dynamic(random_affine<S, Dynamic>(4, 4),
                                                             Reverse<S>(4), Sigmoid<S>(4));
  testing::LawOptions opt;
  opt.inverse_domain = testing::Domain::UnitInterval;
  NFLOW_CHECK_LAWS(dynamic, opt);
  // Nested flows are bijectors too.
  Flow<decltype(fixed), Flow<Reverse<S, 3>, ElementwiseAffine<S, 3>>> nested(
      fixed,
      Flow<Reverse<S, 3>, ElementwiseAffine<S, 3>>(Reverse<S, 3>{}, random_affine<S, 3>(3, 9)));
  NFLOW_CHECK_LAWS(nested);
}

TEST_CASE("A flow with conditional steps threads the context to them", "[flow][context][laws]") {
  using CA = test::ContextAffine<double, 3, 2>;
  Flow<CA, Reverse<double, 3>, CA> flow(CA(3, 2, 1), Reverse<double, 3>{}, CA(3, 2, 2));
  STATIC_REQUIRE(decltype(flow)::ContextDim == 2);
  CHECK(flow.context_dim() == 2);
  // ContextAffine (a test bijector) has no inverse vjp.
  testing::LawOptions opt;
  opt.skip("inverse_vjp_input", "ContextAffine has no inverse vjp")
      .skip("inverse_vjp_params", "ContextAffine has no inverse vjp");
  NFLOW_CHECK_LAWS(flow, opt, test::context_maker<double>(2));
  NFLOW_CHECK_LAWS(CA(3, 2, 5), opt, test::context_maker<double>(2));
  using CF = test::ContextAffine<float, 3, 2>;
  NFLOW_CHECK_LAWS((Flow<CF, Reverse<float, 3>>(CF(3, 2, 1), Reverse<float, 3>{})),
                   testing::LawOptions{}, test::context_maker<float>(2));

  // The context changes the result; a missing or wrong context is a ShapeError.
  Eigen::Matrix<double, 3, 4> x = Eigen::Matrix<double, 3, 4>::Random();
  Eigen::Matrix<double, 2, 4> c1 = Eigen::Matrix<double, 2, 4>::Random();
  CHECK((flow.forward(x, c1) - flow.forward(x, Eigen::Matrix<double, 2, 4>(c1 * 2.0))).norm() >
        1e-3);
  CHECK_THROWS_AS(flow.forward(x), ShapeError);
  CHECK_THROWS_AS(flow.forward(x, Eigen::MatrixXd::Zero(3, 4)), ShapeError);
  CHECK_THROWS_AS(flow.forward(x, Eigen::MatrixXd::Zero(2, 3)), ShapeError);
  CHECK_THROWS_AS((Reverse<double, 3>{}.forward(x, c1)), ShapeError);
}

TEST_CASE("A user's bijector without BijectorBase composes in a Flow", "[flow]") {
  Flow<test::PlainShift<double, 2>, Reverse<double, 2>> flow;
  CHECK((flow.forward(Eigen::Vector2d(1, 2)) - Eigen::Vector2d(3, 2)).norm() == 0.0);
  // A minimal user type: no parameters, no gradients, no recorded pass (each opted out by name).
  testing::LawOptions opt;
  opt.skip_all(testing::gradient_law_names(), "PlainShift writes no vjp");
  opt.skip_all({"parameter_count", "parameter_visits", "parameter_round_trip"},
               "PlainShift has no parameters");
  NFLOW_CHECK_LAWS(test::PlainShift<double, 2>{}, opt);
  STATIC_REQUIRE(decltype(flow)::IsConstantLogDet);
}

TEST_CASE("A law that cannot run fails, naming why, unless the caller opts out by name", "[laws]") {
  auto find = [](const std::vector<testing::LawResult>& results, const std::string& law) {
    for (const auto& r : results) {
      if (r.law == law) return r;
    }
    return testing::LawResult{"(missing)", 1.0, 0.0, ""};
  };
  // PlainShift has no vjp and no parameter members: those laws cannot run.
  testing::LawOptions none;
  const auto loud = testing::check_laws(test::PlainShift<double, 2>{}, none);
  const auto vjp = find(loud, "forward_vjp_input");
  CHECK_FALSE(vjp.passed());
  CHECK_THAT(vjp.detail, Catch::Matchers::Contains("not ForwardDifferentiable"));
  CHECK_FALSE(find(loud, "inverse_vjp_params").passed());
  CHECK_FALSE(find(loud, "forward_vjp_recorded").passed());
  const auto count = find(loud, "parameter_count");
  CHECK_FALSE(count.passed());
  CHECK_THAT(count.detail,
             Catch::Matchers::Contains("not Parameterized because parameter_count() is missing"));
  CHECK(find(loud, "round_trip").passed());
  // Every law is reported, by one of the names law_names() lists.
  for (const std::string& law : testing::law_names()) CHECK(find(loud, law).law == law);
  // Opted out: passed, with the reason; a skip that names no law fails.
  testing::LawOptions opt;
  opt.skip("forward_vjp_input", "no vjp here").skip("no_such_law", "typo");
  const auto quiet = testing::check_laws(test::PlainShift<double, 2>{}, opt);
  const auto skipped = find(quiet, "forward_vjp_input");
  CHECK(skipped.passed());
  CHECK_THAT(skipped.detail, Catch::Matchers::Contains("no vjp here"));
  CHECK_FALSE(find(quiet, "no_such_law").passed());
  // Harness policy is a pass with a note: gradient laws run in double only.
  const auto in_float = testing::check_laws(test::PlainShift<float, 2>{}, none);
  CHECK(find(in_float, "forward_vjp_input").passed());
  CHECK_THAT(find(in_float, "forward_vjp_input").detail, Catch::Matchers::Contains("double only"));
}

TEST_CASE("BijectorBase derives both visits and the count from the one hook",
          "[flow][parameters]") {
  const auto a = random_affine<double, 3>(3, 5);
  std::vector<std::string> names_const, names;
  Index total = 0;
  a.visit_parameters([&](const std::string& name, const auto& t) {
    names_const.push_back(name);
    total += t.size();
  });
  auto b = a;
  b.visit_parameters([&](const std::string& name, Eigen::Ref<ParameterMatrix<double>> t) {
    names.push_back(name);
    t.setZero();
  });
  CHECK(names_const == std::vector<std::string>{"shift", "log_scale"});
  CHECK(names == names_const);
  CHECK(a.parameter_count() == total);
  CHECK(a.parameter_count() == 6);
  CHECK(get_parameters(b).isZero());  // the non-const visit writes the layer's own storage
  // A type without the hook has no parameters.
  CHECK(Reverse<double, 3>{}.parameter_count() == 0);
  CHECK(parameter_names(Reverse<double, 3>{}).empty());
  // set_parameters(get_parameters()) leaves a flow's density unchanged (the measured fault of a
  // visit the const path did not see).
  Flow<ElementwiseAffine<double, 3>, Reverse<double, 3>, ElementwiseAffine<double, 3>> flow(
      a, Reverse<double, 3>{}, random_affine<double, 3>(3, 6));
  const Density density(StandardNormal<double, 3>{}, flow);
  auto copy = density;
  set_parameters(copy, get_parameters(density));
  std::mt19937_64 gen(7);
  const Eigen::MatrixXd x = standard_normal_matrix<double>(3, 9, gen);
  CHECK((copy.log_prob(x) - density.log_prob(x)).cwiseAbs().maxCoeff() == 0.0);
  CHECK(copy.parameter_count() == 12);
}

TEST_CASE("Flow names parameters by step index, like a state_dict", "[flow][parameters]") {
  Flow<ElementwiseAffine<double, 2>, Reverse<double, 2>,
       Flow<Reverse<double, 2>, ElementwiseAffine<double, 2>>>
      flow;
  const std::vector<std::string> expected{"0.shift", "0.log_scale", "2.1.shift", "2.1.log_scale"};
  CHECK(parameter_names(flow) == expected);
  CHECK(flow.parameter_count() == 8);
  Vector<double> theta = Vector<double>::LinSpaced(8, 1.0, 8.0);
  set_parameters(flow, theta);
  CHECK(get_parameters(flow) == theta);
  CHECK(flow.step<0>().shift()(1) == 2.0);
  CHECK(flow.step<2>().step<1>().log_scale()(0) == 7.0);
  CHECK_THROWS_AS(set_parameters(flow, Vector<double>::Zero(3)), ShapeError);
}

TEST_CASE("Flow rejects steps whose run-time dimensions disagree", "[flow][errors]") {
  using F = Flow<Reverse<double>, ElementwiseAffine<double>>;
  CHECK_THROWS_AS(F(Reverse<double>(3), ElementwiseAffine<double>(4)), ShapeError);
  CHECK_THROWS_WITH(F(Reverse<double>(3), ElementwiseAffine<double>(4)),
                    Catch::Contains("step 1 has dimension 4"));
}

TEST_CASE("Flow gradients match finite differences and accumulate", "[flow][gradients]") {
  Flow<ElementwiseAffine<double>, Sigmoid<double>, ElementwiseAffine<double>> flow(
      random_affine<double, Dynamic>(2, 11), Sigmoid<double>(2),
      random_affine<double, Dynamic>(2, 12));
  // The laws compare both vjps with finite differences; here, accumulation into grad_params.
  const Eigen::MatrixXd x = Eigen::MatrixXd::Random(2, 5);
  const Eigen::MatrixXd gv = Eigen::MatrixXd::Random(2, 5);
  const Eigen::RowVectorXd gl = Eigen::RowVectorXd::Random(5);
  Vector<double> once = Vector<double>::Zero(flow.parameter_count());
  flow.forward_vjp(x, gv, gl, once);
  Vector<double> twice = Vector<double>::Zero(flow.parameter_count());
  flow.forward_vjp(x, gv, gl, twice);
  flow.forward_vjp(x, gv, gl, twice);
  CHECK((twice - 2.0 * once).norm() < 1e-12);
  CHECK(once.norm() > 0.0);
  Vector<double> wrong(3);
  CHECK_THROWS_AS(flow.forward_vjp(x, gv, gl, wrong), ShapeError);
}
