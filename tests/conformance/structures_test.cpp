// The laws on every coupling and autoregressive layer (each transformer through both structures),
// on Inverted and on Flow: the Structures part of the conformance list (conformance.hpp); and the
// transformer laws (nflow/testing/transformer_laws.hpp) on each transformer alone.
#include <cmath>
#include <nflow/testing/transformer_laws.hpp>
#include <string>
#include <type_traits>

#include "conformance/conformance.hpp"

namespace {
[[maybe_unused]] const bool registered =
    nflow::conformance::register_laws<nflow::conformance::Structures>();

std::vector<std::string> failed(const std::vector<nflow::testing::LawResult>& results) {
  std::vector<std::string> out;
  for (const auto& r : results) {
    UNSCOPED_INFO(r.law << ": error " << r.error << " (tolerance " << r.tolerance << ") "
                        << r.detail);
    if (!r.passed()) out.push_back(r.law);
  }
  return out;
}

}  // namespace

using namespace nflow;

// The transformers on their own (they also run above through Coupling and MaskedAutoregressive).
TEST_CASE("transformer laws: AffineTransformer and AdditiveTransformer",
          "[conformance][transformers][laws]") {
  const auto affine = testing::check_transformer_laws(AffineTransformer<double>());
  CHECK(failed(affine).empty());
  // A small bound: the tanh of the bounded log-scale is far from linear.
  testing::LawOptions wide;
  wide.input_scale = 2.0;
  CHECK(failed(testing::check_transformer_laws(AffineTransformer<double>(0.5), wide, 4)).empty());
  CHECK(failed(testing::check_transformer_laws(AdditiveTransformer<double>())).empty());
  // Float: the laws other than the gradients (those run in double).
  CHECK(failed(testing::check_transformer_laws(AffineTransformer<float>())).empty());
}

// The spline in its three domains, double and float, with non-default intervals: the edge laws
// then also run at its knots, bounds and one ulp either side (TransformerWithKnots).
TEST_CASE("transformer laws: RationalQuadraticSpline, every domain, double and float",
          "[conformance][transformers][laws]") {
  STATIC_REQUIRE(testing::TransformerWithKnots<RationalQuadraticSpline<double>>);
  STATIC_REQUIRE(!testing::TransformerWithKnots<AffineTransformer<double>>);
  // (Inputs ~ N(0, 1) reach the tails of [-2, 3] and [0, 1] and the circle's next period; the edge
  // laws reach the rest.)
  auto run = [&](const auto& spline) {
    using S = typename std::decay_t<decltype(spline)>::Scalar;
    testing::LawOptions opt;
    if constexpr (std::is_same_v<S, double>) {
      opt.fd_step = 1e-5;  // bins can be 1e-3 of the interval wide: stay inside one
    } else {
      const std::string why =
          "float finite differences need steps >= 1e-2, wider than the narrowest bins, and so "
          "reach over knots (tests/bijectors/spline_test.cpp checks float log-dets directly)";
      opt.skip("forward_log_det", why).skip("inverse_log_det", why).skip("edge_log_det", why);
    }
    const auto results = testing::check_transformer_laws(spline, opt);
    CHECK(failed(results).size() == 0);
    CHECK(results.size() == testing::transformer_law_names().size());
  };
  run(RationalQuadraticSpline<double, 8, SplineDomain::Unbounded>({.lower = -2, .upper = 3}));
  run(RationalQuadraticSpline<double, 5, SplineDomain::Bounded>());
  run(RationalQuadraticSpline<double, 6, SplineDomain::Circular>());
  run(RationalQuadraticSpline<float, 8, SplineDomain::Unbounded>({.lower = -2, .upper = 3}));
  run(RationalQuadraticSpline<float, 5, SplineDomain::Bounded>());
  run(RationalQuadraticSpline<float, 6, SplineDomain::Circular>());
  // The libraries' parameterisations (SplineOptions::nflows, ::zuko): soft clip, raw_scale,
  // Softplus and Exp derivatives through the backward passes too.
  using Unbounded8 = RationalQuadraticSpline<double, 8, SplineDomain::Unbounded>;
  using Unbounded8f = RationalQuadraticSpline<float, 8, SplineDomain::Unbounded>;
  run(Unbounded8(SplineOptions<double>::nflows(3, 1 / std::sqrt(20.0))));
  run(Unbounded8(SplineOptions<double>::nflows(2)));
  run(Unbounded8(SplineOptions<double>::zuko()));
  run(Unbounded8(SplineOptions<double>::zuko(2, 1e-2)));
  run(Unbounded8f(SplineOptions<float>::nflows(3, 0.25f)));
  run(Unbounded8f(SplineOptions<float>::zuko()));
}
