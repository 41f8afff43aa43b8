// The shared bijector laws (nflow/testing/bijector_laws.hpp) for MAF and IAF layers and flows of
// them: float and double, fixed and dynamic Dim, with and without a context, gradients included
// (double). Split from maf_test.cpp to keep each file's compile time reasonable.

// Both files of the test binary define it (Eigen's allocation functions must be the same in
// every translation unit); see maf_test.cpp.
#define EIGEN_RUNTIME_NO_MALLOC

#include <catch2/catch.hpp>

#include <type_traits>

#include "nflow/bijectors/masked_autoregressive.hpp"
#include "nflow/bijectors/reverse.hpp"
#include "nflow/core/flow.hpp"
#include "nflow/testing/catch2.hpp"
#include "support/maf_test_support.hpp"

using namespace nflow;
using namespace nflow::test_maf;

// Each law instantiation costs compile time, so float covers one fixed unconditional layer and
// one dynamic conditional layer; double adds the run-time Dim without context and the fixed
// ContextDim.
// MAF has no inverse vjp (its inverse takes Dim passes); IAF, its inverse, has no forward vjp.
testing::LawOptions maf_options() {
  return testing::LawOptions{}
      .skip("inverse_vjp_input", "MAF has no inverse vjp")
      .skip("inverse_vjp_params", "MAF has no inverse vjp");
}
testing::LawOptions iaf_options() {
  return testing::LawOptions{}
      .skip("forward_vjp_input", "IAF has no forward vjp")
      .skip("forward_vjp_params", "IAF has no forward vjp")
      .skip("forward_vjp_recorded", "IAF has no forward vjp");
}

TEMPLATE_TEST_CASE("MAF obeys the bijector laws", "[bijectors][maf][laws]", float, double) {
  using S = TestType;
  NFLOW_CHECK_LAWS(randomized(FixedMaf<S>(), 1), maf_options());
  NFLOW_CHECK_LAWS(randomized(FixedMaf<S>({.hidden_layers = 0, .order = InputOrder::Reversed}), 2), maf_options());
  NFLOW_CHECK_LAWS(
      randomized(DynMaf<S>(3, {.hidden_width = 9, .hidden_layers = 3, .context_dim = 4,
                               .hidden_degrees = nn::HiddenDegrees::Random, .seed = 5}),
                 5),
      maf_options(), context_maker<S>(4));
}

TEST_CASE("MAF obeys the bijector laws: run-time Dim without context, fixed ContextDim",
          "[bijectors][maf][laws][context]") {
  // A Dynamic-ContextDim layer built with context_dim 0 takes no context (the NoContext path).
  NFLOW_CHECK_LAWS(randomized(DynMaf<double>(5, {.hidden_width = 7, .order = InputOrder::Random, .seed = 3}), 3),
                   maf_options());
  NFLOW_CHECK_LAWS(randomized(CondMaf<double>({.hidden_width = 6, .order = InputOrder::Reversed}), 4), maf_options(),
                   context_maker<double>(2));
}

TEMPLATE_TEST_CASE("IAF obeys the bijector laws", "[bijectors][iaf][laws]", float, double) {
  using S = TestType;
  NFLOW_CHECK_LAWS(Inverted(randomized(FixedMaf<S>({.order = InputOrder::Reversed}), 6)), iaf_options());
  if constexpr (std::is_same_v<S, double>) {
    NFLOW_CHECK_LAWS(Inverted(randomized(CondMaf<S>({.hidden_width = 5}), 7)), iaf_options(), context_maker<S>(2));
  }
}

TEST_CASE("Flows of MAF and IAF layers obey the laws, gradients included", "[bijectors][maf][iaf][flow][laws]") {
  using M = DynMaf<double>;
  Flow<M, Reverse<double>, M> maf(randomized(M(4, {.hidden_width = 6, .context_dim = 2}), 1), Reverse<double>(4),
                                  randomized(M(4, {.hidden_width = 6, .context_dim = 2, .order = InputOrder::Random,
                                                   .seed = 9}),
                                             2));
  NFLOW_CHECK_LAWS(maf, maf_options(), context_maker<double>(2));
  Flow<Inverted<M>, Inverted<M>> iaf(Inverted(randomized(M(3, {.hidden_width = 5}), 3)),
                                     Inverted(randomized(M(3, {.order = InputOrder::Reversed}), 4)));
  NFLOW_CHECK_LAWS(iaf, iaf_options());
}
