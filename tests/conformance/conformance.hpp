#pragma once
// The conformance list: every bijector of include/nflow/bijectors/ and the composites of core/
// (Flow, Inverted), each run through the shared laws (nflow/testing/bijector_laws.hpp), like
// cpp-sort's every_sorter tests. One list, three parts, each compiled in its own source so that
// two cores build them side by side:
//   elementwise_test.cpp  Elementwise: the elementwise maps, permutations and the Glow layers
//   structures_test.cpp   Structures: coupling and autoregressive layers (each transformer
//                         through both), Inverted and Flow
//   continuous_test.cpp   Continuous: continuous flows (RK4 and Dormand-Prince, exact and
//                         Hutchinson traces)
// coverage_test.cpp (compiled with elementwise_test.cpp's part) fails when a header under
// include/nflow/bijectors/ has no entry here, or an entry misses float, double, a fixed or a
// Dynamic size, or the context where the family takes one.
//
// An entry is a struct template over Scalar with
//   using Bijector = ...;                          the type under test (one law instantiation)
//   static constexpr const char* Name              the test case's name ("S" is the Scalar)
//   static constexpr std::array Headers            what it covers, relative to include/nflow/
//   static constexpr Index ContextRows             rows of the context its laws run with (0: none)
//   static std::vector<Case<Bijector>> cases()     the objects checked (several per type cost
//                                                  run time, not compile time)
// Each law instantiation costs seconds of compile time under the sanitizers: give a new object of
// an existing type as a further case rather than a new type, and instantiate float only where the
// float path is worth its own check (the gradient laws run in double only).
#include <algorithm>
#include <array>
#include <catch2/catch.hpp>
#include <cstdint>
#include <nflow/bijectors/act_norm.hpp>
#include <nflow/bijectors/continuous.hpp>
#include <nflow/bijectors/conv1x1.hpp>
#include <nflow/bijectors/coupling.hpp>
#include <nflow/bijectors/elementwise_affine.hpp>
#include <nflow/bijectors/logit.hpp>
#include <nflow/bijectors/lu_linear.hpp>
#include <nflow/bijectors/masked_autoregressive.hpp>
#include <nflow/bijectors/permutation.hpp>
#include <nflow/bijectors/reverse.hpp>
#include <nflow/bijectors/sigmoid.hpp>
#include <nflow/bijectors/transformers/scale_shift.hpp>
#include <nflow/core/flow.hpp>
#include <nflow/core/inverted.hpp>
#include <nflow/core/parameters.hpp>
#include <nflow/core/random.hpp>
#include <nflow/testing/bijector_laws.hpp>
#include <random>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "support/maf_test_support.hpp"
#include "support/randomized.hpp"
#include "support/test_conditioners.hpp"

namespace nflow::conformance {

/// A law that does not apply to one case, and why.
struct NotApplicable {
  std::string law;
  std::string reason;
};

/// One object whose laws are checked: a label (for the report), the bijector, the options and
/// the laws that do not apply to it.
template <typename B>
struct Case {
  Case(std::string label_, B bijector_, testing::LawOptions options_ = testing::LawOptions(),
       std::vector<NotApplicable> not_applicable_ = std::vector<NotApplicable>())
      : label(std::move(label_)),
        bijector(std::move(bijector_)),
        options(options_),
        not_applicable(std::move(not_applicable_)) {}
  std::string label;
  B bijector;
  testing::LawOptions options;
  std::vector<NotApplicable> not_applicable;
};

using test::randomized;
using test::shifted_batch;

/// The context batches of conditional laws: rows × n standard normals. One type per Scalar, so
/// that a bijector type is instantiated once whatever its context size.
template <typename S>
struct ContextMaker {
  Index rows;
  Batch<S, Dynamic, Dynamic> operator()(Index n, std::mt19937_64& gen) const {
    return standard_normal_matrix<S>(rows, n, gen);
  }
};

/// The law results of one case; its `not_applicable` laws are opted out of by name, with the
/// reason (the harness reports a law that cannot run, and was not opted out of, as a failure).
template <typename Entry>
std::vector<testing::LawResult> results_of(const Case<typename Entry::Bijector>& c) {
  using S = typename Entry::Bijector::Scalar;
  testing::LawOptions options = c.options;
  for (const NotApplicable& na : c.not_applicable) options.skip(na.law, na.reason);
  if constexpr (Entry::ContextRows > 0) {
    return testing::check_laws(c.bijector, options, ContextMaker<S>{Entry::ContextRows});
  } else {
    return testing::check_laws(c.bijector, options);
  }
}

/// Checks every law of every case of `Entry` with Catch2.
template <typename Entry>
void check_entry() {
  for (const auto& c : Entry::cases()) {
    for (const auto& r : results_of<Entry>(c)) {
      INFO(c.label << ": " << r.law << ": error " << r.error << " (tolerance " << r.tolerance
                   << ") " << r.detail);
      CHECK(r.passed());
    }
  }
}

/// The entry's name with its Scalar spelled out ("<S, 3>" → "<float, 3>"): the test case's name.
template <typename Entry>
const std::string& name_of() {
  static const std::string name = [] {
    const std::string scalar =
        std::is_same_v<typename Entry::Bijector::Scalar, float> ? "float" : "double";
    std::string n = Entry::Name;
    // Only a lone S ("<S," or "<S>"), not the S of a name ("<ScaleShift...").
    for (auto at = n.find("<S"); at != std::string::npos; at = n.find("<S", at + 1))
      if (at + 2 < n.size() && (n[at + 2] == ',' || n[at + 2] == '>')) n.replace(at + 1, 1, scalar);
    return n;
  }();
  return name;
}

/// Registers one Catch2 test case per entry of the tuple `Part`, named by name_of<Entry>().
template <typename Part>
bool register_laws() {
  []<typename... Entries>(std::tuple<Entries...>*) {
    (
        [] {
          REGISTER_TEST_CASE(check_entry<Entries>, name_of<Entries>().c_str(),
                             "[conformance][laws]");
        }(),
        ...);
  }(static_cast<Part*>(nullptr));
  return true;
}

constexpr int Dyn = Dynamic;

// ---- Elementwise: elementwise maps, permutations, Glow's ActNorm, LU linear and 1×1 conv -----

template <typename S>
struct ElementwiseAffineFixed {
  using Bijector = ElementwiseAffine<S, 3>;
  static constexpr const char* Name = "laws: ElementwiseAffine<S, 3>";
  static constexpr std::array Headers{"bijectors/elementwise_affine.hpp"};
  static constexpr Index ContextRows = 0;
  static std::vector<Case<Bijector>> cases() { return {{"random", randomized(Bijector{}, 1)}}; }
};
template <typename S>
struct ElementwiseAffineDynamic {
  using Bijector = ElementwiseAffine<S>;
  static constexpr const char* Name = "laws: ElementwiseAffine<S, Dynamic>";
  static constexpr std::array Headers{"bijectors/elementwise_affine.hpp"};
  static constexpr Index ContextRows = 0;
  static std::vector<Case<Bijector>> cases() {
    return {{"random, dim 5", randomized(Bijector(5), 2)}};
  }
};
template <typename S>
struct ReverseFixed {
  using Bijector = Reverse<S, 4>;
  static constexpr const char* Name = "laws: Reverse<S, 4>";
  static constexpr std::array Headers{"bijectors/reverse.hpp"};
  static constexpr Index ContextRows = 0;
  static std::vector<Case<Bijector>> cases() { return {{"dim 4", Bijector{}}}; }
};
template <typename S>
struct ReverseDynamic {
  using Bijector = Reverse<S>;
  static constexpr const char* Name = "laws: Reverse<S, Dynamic>";
  static constexpr std::array Headers{"bijectors/reverse.hpp"};
  static constexpr Index ContextRows = 0;
  static std::vector<Case<Bijector>> cases() { return {{"dim 3", Bijector(3)}}; }
};
template <typename S>
struct PermutationFixed {
  using Bijector = Permutation<S, 5>;
  static constexpr const char* Name = "laws: Permutation<S, 5>";
  static constexpr std::array Headers{"bijectors/permutation.hpp"};
  static constexpr Index ContextRows = 0;
  static std::vector<Case<Bijector>> cases() {
    return {{"random, seed 7", Bijector::random(5, 7)}};
  }
};
template <typename S>
struct PermutationDynamic {
  using Bijector = Permutation<S>;
  static constexpr const char* Name = "laws: Permutation<S, Dynamic>";
  static constexpr std::array Headers{"bijectors/permutation.hpp"};
  static constexpr Index ContextRows = 0;
  static std::vector<Case<Bijector>> cases() {
    return {{"random, dim 6, seed 8", Bijector::random(6, 8)}};
  }
};

/// Sigmoid maps onto (0, 1): its inverse laws draw from there.
inline testing::LawOptions unit_interval_inverse() {
  testing::LawOptions opt;
  opt.inverse_domain = testing::Domain::UnitInterval;
  return opt;
}
/// Logit maps from (0, 1): its forward laws draw from there.
inline testing::LawOptions unit_interval_forward() {
  testing::LawOptions opt;
  opt.forward_domain = testing::Domain::UnitInterval;
  return opt;
}

template <typename S>
struct SigmoidFixed {
  using Bijector = Sigmoid<S, 2>;
  static constexpr const char* Name = "laws: Sigmoid<S, 2>";
  static constexpr std::array Headers{"bijectors/sigmoid.hpp"};
  static constexpr Index ContextRows = 0;
  static std::vector<Case<Bijector>> cases() {
    return {{"dim 2", Bijector{}, unit_interval_inverse()}};
  }
};
template <typename S>
struct SigmoidDynamic {
  using Bijector = Sigmoid<S>;
  static constexpr const char* Name = "laws: Sigmoid<S, Dynamic>";
  static constexpr std::array Headers{"bijectors/sigmoid.hpp"};
  static constexpr Index ContextRows = 0;
  static std::vector<Case<Bijector>> cases() {
    return {{"dim 4", Bijector(4), unit_interval_inverse()}};
  }
};
template <typename S>
struct LogitFixed {
  using Bijector = Logit<S, 2>;
  static constexpr const char* Name = "laws: Logit<S, 2>";
  static constexpr std::array Headers{"bijectors/logit.hpp"};
  static constexpr Index ContextRows = 0;
  static std::vector<Case<Bijector>> cases() {
    return {{"dim 2", Bijector{}, unit_interval_forward()}};
  }
};
template <typename S>
struct LogitDynamic {
  using Bijector = Logit<S>;
  static constexpr const char* Name = "laws: Logit<S, Dynamic>";
  static constexpr std::array Headers{"bijectors/logit.hpp"};
  static constexpr Index ContextRows = 0;
  static std::vector<Case<Bijector>> cases() {
    return {{"dim 3, alpha 0.05", Bijector(3, S(0.05)), unit_interval_forward()}};
  }
};

template <typename S>
struct ActNormFixed {
  using Bijector = ActNorm<S, 3>;
  static constexpr const char* Name = "laws: ActNorm<S, 3>";
  static constexpr std::array Headers{"bijectors/act_norm.hpp"};
  static constexpr Index ContextRows = 0;
  static std::vector<Case<Bijector>> cases() {
    Bijector initialised;
    initialised.initialize(shifted_batch<S>(3, 64, 3));
    return {{"random", randomized(Bijector{}, 1)}, {"initialised from data", initialised}};
  }
};
template <typename S>
struct ActNormDynamic {
  using Bijector = ActNorm<S>;
  static constexpr const char* Name = "laws: ActNorm<S, Dynamic>";
  static constexpr std::array Headers{"bijectors/act_norm.hpp"};
  static constexpr Index ContextRows = 0;
  static std::vector<Case<Bijector>> cases() {
    return {{"random, dim 5", randomized(Bijector(5), 2)}};
  }
};
template <typename S>
struct LULinearFixed {
  using Bijector = LULinear<S, 3>;
  static constexpr const char* Name = "laws: LULinear<S, 3>";
  static constexpr std::array Headers{"bijectors/lu_linear.hpp", "bijectors/lu_bijector_base.hpp",
                                      "bijectors/lu_parameterization.hpp"};
  static constexpr Index ContextRows = 0;
  static std::vector<Case<Bijector>> cases() {
    return {{"random", randomized(Bijector{}, 1)},
            {"random orthogonal", Bijector::random_orthogonal(3, 11)}};
  }
};
template <typename S>
struct LULinearDynamic {
  using Bijector = LULinear<S>;
  static constexpr const char* Name = "laws: LULinear<S, Dynamic>";
  static constexpr std::array Headers{"bijectors/lu_linear.hpp", "bijectors/lu_bijector_base.hpp",
                                      "bijectors/lu_parameterization.hpp"};
  static constexpr Index ContextRows = 0;
  static std::vector<Case<Bijector>> cases() {
    return {
        {"random, dim 5", randomized(Bijector(5), 3)},
        // a non-trivial permutation and sign
        {"random orthogonal, dim 6, then random",
         randomized(Bijector::random_orthogonal(6, 4), 5, 0.3)},
        {"random orthogonal, dim 2, then random", randomized(Bijector::random_orthogonal(2, 8), 9)},
        {"random orthogonal, dim 7", Bijector::random_orthogonal(7, 12)}};
  }
};
template <typename S>
struct Conv1x1FixedChannels {
  using Bijector = Conv1x1<S, 3>;
  static constexpr const char* Name = "laws: Conv1x1<S, 3>";
  static constexpr std::array Headers{"bijectors/conv1x1.hpp", "bijectors/lu_bijector_base.hpp",
                                      "bijectors/lu_parameterization.hpp"};
  static constexpr Index ContextRows = 0;
  static std::vector<Case<Bijector>> cases() {
    return {{"random, 2 x 2 pixels", randomized(Bijector(2, 2), 1)},
            {"random orthogonal, 2 x 1 pixels", Bijector::random_orthogonal(3, 2, 1, 5)}};
  }
};
template <typename S>
struct Conv1x1DynamicChannels {
  using Bijector = Conv1x1<S>;
  static constexpr const char* Name = "laws: Conv1x1<S, Dynamic>";
  static constexpr std::array Headers{"bijectors/conv1x1.hpp", "bijectors/lu_bijector_base.hpp",
                                      "bijectors/lu_parameterization.hpp"};
  static constexpr Index ContextRows = 0;
  static std::vector<Case<Bijector>> cases() {
    return {{"random, 2 channels, 3 x 2 pixels", randomized(Bijector(2, 3, 2), 2)},
            {"random orthogonal, 4 channels, 1 x 3 pixels, then random",
             randomized(Bijector::random_orthogonal(4, 1, 3, 3), 4, 0.3)}};
  }
};
/// A Glow step without its coupling: ActNorm initialised from data, then a 1×1 convolution.
struct GlowStep {
  using Bijector = Flow<ActNorm<double>, Conv1x1<double>>;
  static constexpr const char* Name = "laws: Flow<ActNorm<double>, Conv1x1<double>>";
  static constexpr std::array Headers{"core/flow.hpp", "bijectors/act_norm.hpp",
                                      "bijectors/conv1x1.hpp"};
  static constexpr Index ContextRows = 0;
  static std::vector<Case<Bijector>> cases() {
    const Index c = 3, h = 2, w = 2;
    Bijector step(ActNorm<double>(c * h * w),
                  randomized(Conv1x1<double>::random_orthogonal(c, h, w, 50), 51, 0.3));
    std::mt19937_64 gen(52);
    const Eigen::MatrixXd data =
        (standard_normal_matrix<double>(c * h * w, 64, gen) * 3.0).array() + 1.0;
    (void)initialize_act_norms(step, data);
    return {{"ActNorm initialised from data", step}};
  }
};

template <template <typename> class... Es>
using FloatAndDouble = std::tuple<Es<float>..., Es<double>...>;

using Elementwise = decltype(std::tuple_cat(
    FloatAndDouble<ElementwiseAffineFixed, ElementwiseAffineDynamic, ReverseFixed, ReverseDynamic,
                   PermutationFixed, PermutationDynamic, SigmoidFixed, SigmoidDynamic, LogitFixed,
                   LogitDynamic, ActNormFixed, ActNormDynamic, LULinearFixed, LULinearDynamic,
                   Conv1x1FixedChannels, Conv1x1DynamicChannels>{},
    std::tuple<GlowStep>{}));

// ---- Structures: coupling and autoregressive layers, Inverted, Flow ---------------------------
// Tanh conditioners throughout: the finite-difference laws need a smooth network.

template <typename S>
struct AffineCouplingFixed {
  using Bijector = AffineCoupling<S, 4, 16, nn::Tanh>;
  static constexpr const char* Name = "laws: AffineCoupling<S, 4, 16, Tanh>";
  static constexpr std::array Headers{"bijectors/coupling.hpp", "bijectors/coupling_instances.hpp",
                                      "bijectors/transformers/affine.hpp"};
  static constexpr Index ContextRows = 0;
  static std::vector<Case<Bijector>> cases() {
    return {{"half mask", randomized(Bijector(CouplingMask::half(4),
                                              {.hidden_width = 16, .hidden_layers = 2, .seed = 1}),
                                     1, 0.3)}};
  }
};
template <typename S>
struct AffineCouplingDynamic {
  using Bijector = AffineCoupling<S, Dyn, Dyn, nn::Tanh>;
  static constexpr const char* Name = "laws: AffineCoupling<S, Dynamic, Dynamic, Tanh>";
  static constexpr std::array Headers{"bijectors/coupling.hpp", "bijectors/coupling_instances.hpp",
                                      "bijectors/transformers/affine.hpp"};
  static constexpr Index ContextRows = 0;
  static std::vector<Case<Bijector>> cases() {
    return {{"alternating mask",
             randomized(Bijector(CouplingMask::alternating(5, true),
                                 {.hidden_width = 12, .hidden_layers = 3, .seed = 2}),
                        2, 0.3)}};
  }
};
template <typename S>
struct AffineCouplingConditional {
  using Bijector = AffineCoupling<S, Dyn, Dyn, nn::Tanh>;
  static constexpr const char* Name =
      "laws: AffineCoupling<S, Dynamic, Dynamic, Tanh> with a context";
  static constexpr std::array Headers{"bijectors/coupling.hpp", "bijectors/coupling_instances.hpp",
                                      "bijectors/transformers/affine.hpp"};
  static constexpr Index ContextRows = 2;
  static std::vector<Case<Bijector>> cases() {
    return {
        {"half mask, context 2",
         randomized(Bijector(CouplingMask::half(3),
                             {.hidden_width = 10, .hidden_layers = 2, .context_dim = 2, .seed = 3}),
                    3, 0.3)}};
  }
};
template <typename S>
struct AdditiveCouplingDynamic {
  using Bijector = AdditiveCoupling<S, Dyn, Dyn, nn::Tanh>;
  static constexpr const char* Name = "laws: AdditiveCoupling<S, Dynamic, Dynamic, Tanh>";
  static constexpr std::array Headers{"bijectors/coupling.hpp", "bijectors/coupling_instances.hpp",
                                      "bijectors/transformers/additive.hpp"};
  static constexpr Index ContextRows = 0;
  static std::vector<Case<Bijector>> cases() {
    return {{"alternating mask",
             randomized(Bijector(CouplingMask::alternating(4),
                                 {.hidden_width = 12, .hidden_layers = 2, .seed = 5}),
                        5)}};
  }
};
template <typename S>
struct AdditiveCouplingFixedConditional {
  using Bijector = AdditiveCoupling<S, 6, 8, nn::Tanh, 3>;
  static constexpr const char* Name =
      "laws: AdditiveCoupling<S, 6, 8, Tanh, 3> (a compile-time context)";
  static constexpr std::array Headers{"bijectors/coupling.hpp", "bijectors/coupling_instances.hpp",
                                      "bijectors/transformers/additive.hpp"};
  static constexpr Index ContextRows = 3;
  static std::vector<Case<Bijector>> cases() {
    return {{"half mask, context 3",
             randomized(Bijector(CouplingMask::half(6), {.hidden_layers = 1, .seed = 6}), 6, 0.3)}};
  }
};

using test_maf::CondMaf;
/// A MAF's inverse (sampling) takes Dim passes and has no vjp; an IAF's forward likewise.
inline std::vector<NotApplicable> no_inverse_vjp() {
  const std::string why = "MaskedAutoregressive has no inverse vjp (its inverse takes Dim passes)";
  return {{"inverse_vjp_input", why}, {"inverse_vjp_params", why}};
}
inline std::vector<NotApplicable> no_forward_vjp() {
  const std::string why =
      "Inverted<MaskedAutoregressive> (IAF) has no forward vjp (its forward takes Dim passes)";
  return {{"forward_vjp_input", why}, {"forward_vjp_params", why}, {"forward_vjp_recorded", why}};
}

using test_maf::DynMaf;
using test_maf::FixedMaf;

template <typename S>
struct MafFixed {
  using Bijector = FixedMaf<S>;
  static constexpr const char* Name = "laws: MAF<S, 3, 8, Tanh>";
  static constexpr std::array Headers{"bijectors/masked_autoregressive.hpp",
                                      "bijectors/masked_autoregressive_instances.hpp",
                                      "bijectors/transformers/affine.hpp"};
  static constexpr Index ContextRows = 0;
  static std::vector<Case<Bijector>> cases() {
    return {
        {"natural order", randomized(Bijector(), 1, 0.3), testing::LawOptions(), no_inverse_vjp()},
        {"no hidden layer, reversed order",
         randomized(Bijector({.hidden_layers = 0, .order = nn::InputOrder::Reversed}), 2, 0.3),
         testing::LawOptions(), no_inverse_vjp()}};
  }
};
template <typename S>
struct MafDynamicConditional {
  using Bijector = DynMaf<S>;
  static constexpr const char* Name =
      "laws: MAF<S, Dynamic, Dynamic, Tanh, Dynamic> with a context";
  static constexpr std::array Headers{"bijectors/masked_autoregressive.hpp",
                                      "bijectors/masked_autoregressive_instances.hpp",
                                      "bijectors/transformers/affine.hpp"};
  static constexpr Index ContextRows = 4;
  static std::vector<Case<Bijector>> cases() {
    return {{"3 hidden layers, random hidden degrees, context 4",
             randomized(Bijector(3, {.hidden_width = 9,
                                     .hidden_layers = 3,
                                     .context_dim = 4,
                                     .seed = 5,
                                     .hidden_degrees = nn::HiddenDegrees::Random}),
                        5, 0.3),
             testing::LawOptions(), no_inverse_vjp()}};
  }
};
/// A Dynamic-ContextDim layer built with context_dim 0 takes no context (the NoContext path).
struct MafDynamic {
  using Bijector = DynMaf<double>;
  static constexpr const char* Name =
      "laws: MAF<double, Dynamic, Dynamic, Tanh, Dynamic> without a context";
  static constexpr std::array Headers{"bijectors/masked_autoregressive.hpp",
                                      "bijectors/masked_autoregressive_instances.hpp",
                                      "bijectors/transformers/affine.hpp"};
  static constexpr Index ContextRows = 0;
  static std::vector<Case<Bijector>> cases() {
    return {
        {"random order",
         randomized(Bijector(5, {.hidden_width = 7, .seed = 3, .order = nn::InputOrder::Random}), 3,
                    0.3),
         testing::LawOptions(), no_inverse_vjp()}};
  }
};
struct MafFixedContext {
  using Bijector = CondMaf<double>;
  static constexpr const char* Name = "laws: MAF<double, 4, Dynamic, Tanh, 2>";
  static constexpr std::array Headers{"bijectors/masked_autoregressive.hpp",
                                      "bijectors/masked_autoregressive_instances.hpp",
                                      "bijectors/transformers/affine.hpp"};
  static constexpr Index ContextRows = 2;
  static std::vector<Case<Bijector>> cases() {
    return {{"reversed order",
             randomized(Bijector({.hidden_width = 6, .order = nn::InputOrder::Reversed}), 4, 0.3),
             testing::LawOptions(), no_inverse_vjp()}};
  }
};
/// NICE's transformer through the autoregressive structure (volume-preserving MAF).
struct AdditiveAutoregressive {
  using Bijector = MaskedAutoregressive<AdditiveTransformer<double>, Dyn, Dyn, nn::Tanh>;
  static constexpr const char* Name =
      "laws: MaskedAutoregressive<AdditiveTransformer<double>, Dynamic, Dynamic, Tanh>";
  static constexpr std::array Headers{"bijectors/masked_autoregressive.hpp",
                                      "bijectors/masked_autoregressive_instances.hpp",
                                      "bijectors/transformers/additive.hpp"};
  static constexpr Index ContextRows = 0;
  static std::vector<Case<Bijector>> cases() {
    return {
        {"dim 4, random order",
         randomized(Bijector(4, {.hidden_width = 6, .seed = 8, .order = nn::InputOrder::Random}), 8,
                    0.3),
         testing::LawOptions(), no_inverse_vjp()}};
  }
};
template <typename S>
struct IafFixed {
  using Bijector = Inverted<FixedMaf<S>>;
  static constexpr const char* Name = "laws: IAF<S, 3, 8, Tanh>";
  static constexpr std::array Headers{"core/inverted.hpp", "bijectors/masked_autoregressive.hpp",
                                      "bijectors/masked_autoregressive_instances.hpp"};
  static constexpr Index ContextRows = 0;
  static std::vector<Case<Bijector>> cases() {
    return {{"reversed order",
             Bijector(randomized(FixedMaf<S>({.order = nn::InputOrder::Reversed}), 6, 0.3)),
             testing::LawOptions(), no_forward_vjp()}};
  }
};
struct IafFixedContext {
  using Bijector = Inverted<CondMaf<double>>;
  static constexpr const char* Name = "laws: IAF<double, 4, Dynamic, Tanh, 2>";
  static constexpr std::array Headers{"core/inverted.hpp", "bijectors/masked_autoregressive.hpp",
                                      "bijectors/masked_autoregressive_instances.hpp"};
  static constexpr Index ContextRows = 2;
  static std::vector<Case<Bijector>> cases() {
    return {{"natural order", Bijector(randomized(CondMaf<double>({.hidden_width = 5}), 7, 0.3)),
             testing::LawOptions(), no_forward_vjp()}};
  }
};
// Neural spline flows: the rational-quadratic spline through both structures, in its three
// domains (inputs ~ N(0, 1) reach the tails of the bounded and circular ones).
template <typename S>
struct SplineCouplingFixed {
  using Bijector = SplineCoupling<S, 4, 16, 4, nn::Tanh>;
  static constexpr const char* Name = "laws: SplineCoupling<S, 4, 16, 4 bins, Tanh>";
  static constexpr std::array Headers{"bijectors/coupling.hpp", "bijectors/coupling_instances.hpp",
                                      "bijectors/transformers/rational_quadratic.hpp"};
  static constexpr Index ContextRows = 0;
  static std::vector<Case<Bijector>> cases() {
    return {{"half mask", randomized(Bijector(CouplingMask::half(4),
                                              {.hidden_width = 16, .hidden_layers = 2, .seed = 1}),
                                     1, 0.3)}};
  }
};
// (The run-time-size entries take their bin count at run time, as run-time and imported models
// do; tests/bijectors/spline_test.cpp checks that it computes what the fixed bin count does.)
struct SplineCouplingBoundedConditional {
  using Bijector =
      Coupling<RationalQuadraticSpline<double, Dyn, SplineDomain::Bounded>, Dyn, Dyn, nn::Tanh>;
  static constexpr const char* Name =
      "laws: Coupling<RationalQuadraticSpline<double, Dynamic (5 bins), Bounded>, Dynamic, "
      "Dynamic, Tanh> with a context";
  static constexpr std::array Headers{"bijectors/coupling.hpp", "bijectors/coupling_instances.hpp",
                                      "bijectors/transformers/rational_quadratic.hpp"};
  static constexpr Index ContextRows = 2;
  static std::vector<Case<Bijector>> cases() {
    return {
        {"alternating mask, context 2, [-1.5, 2]",
         randomized(Bijector(CouplingMask::alternating(5),
                             {.hidden_width = 10, .hidden_layers = 2, .context_dim = 2, .seed = 4},
                             RationalQuadraticSpline<double, Dyn, SplineDomain::Bounded>(
                                 5, {.lower = -1.5, .upper = 2})),
                    4, 0.3)}};
  }
};
template <typename S>
struct SplineAutoregressiveFixed {
  using Bijector = SplineAutoregressive<S, 3, 8, 4, nn::Tanh>;
  static constexpr const char* Name = "laws: SplineAutoregressive<S, 3, 8, 4 bins, Tanh>";
  static constexpr std::array Headers{"bijectors/masked_autoregressive.hpp",
                                      "bijectors/masked_autoregressive_instances.hpp",
                                      "bijectors/transformers/rational_quadratic.hpp"};
  static constexpr Index ContextRows = 0;
  static std::vector<Case<Bijector>> cases() {
    return {{"reversed order",
             randomized(Bijector({.seed = 2, .order = nn::InputOrder::Reversed}), 2, 0.3),
             testing::LawOptions(), no_inverse_vjp()}};
  }
};
struct SplineAutoregressiveCircularConditional {
  using Spline = RationalQuadraticSpline<double, Dyn, SplineDomain::Circular>;
  using Bijector = MaskedAutoregressive<Spline, Dyn, Dyn, nn::Tanh, Dyn>;
  static constexpr const char* Name =
      "laws: MaskedAutoregressive<RationalQuadraticSpline<double, Dynamic (6 bins), Circular>, "
      "Dynamic, Dynamic, Tanh, Dynamic> with a context";
  static constexpr std::array Headers{"bijectors/masked_autoregressive.hpp",
                                      "bijectors/masked_autoregressive_instances.hpp",
                                      "bijectors/transformers/rational_quadratic.hpp"};
  static constexpr Index ContextRows = 3;
  static std::vector<Case<Bijector>> cases() {
    return {
        {"random order, context 3",
         randomized(
             Bijector(
                 4,
                 {.hidden_width = 9, .context_dim = 3, .seed = 6, .order = nn::InputOrder::Random},
                 Spline(6)),
             6, 0.3),
         testing::LawOptions(), no_inverse_vjp()}};
  }
};
// The affine forms of Real NVP, nflows and zuko (ScaleShiftTransformer), one case per scale
// function through each structure (one type each: the kinds are run-time options).
template <typename S>
struct ScaleShiftCouplingFixed {
  using Bijector = Coupling<ScaleShiftTransformer<S>, 4, 16, nn::Tanh>;
  static constexpr const char* Name = "laws: Coupling<ScaleShiftTransformer<S>, 4, 16, Tanh>";
  static constexpr std::array Headers{"bijectors/coupling.hpp", "bijectors/coupling_instances.hpp",
                                      "bijectors/transformers/scale_shift.hpp"};
  static constexpr Index ContextRows = 0;
  static std::vector<Case<Bijector>> cases() {
    using O = ScaleShiftOptions<S>;
    auto layer = [](O o, std::uint64_t seed) {
      return randomized(
          Bijector(CouplingMask::half(4), {.hidden_width = 16, .hidden_layers = 2, .seed = seed},
                   ScaleShiftTransformer<S>(o)),
          seed, 0.3);
    };
    return {{"nflows coupling (sigmoid)", layer(O::nflows_coupling(), 1)},
            {"nflows autoregressive (softplus)", layer(O::nflows_autoregressive(), 2)},
            {"zuko (soft-clipped exp)", layer(O::zuko(), 3)},
            {"Real NVP (tanh exp)", layer(O::real_nvp(), 4)}};
  }
};
struct ScaleShiftAutoregressiveConditional {
  using Bijector = MaskedAutoregressive<ScaleShiftTransformer<double>, Dyn, Dyn, nn::Tanh, Dyn>;
  static constexpr const char* Name =
      "laws: MaskedAutoregressive<ScaleShiftTransformer<double>, Dynamic, Dynamic, Tanh, Dynamic> "
      "with a context";
  static constexpr std::array Headers{"bijectors/masked_autoregressive.hpp",
                                      "bijectors/masked_autoregressive_instances.hpp",
                                      "bijectors/transformers/scale_shift.hpp"};
  static constexpr Index ContextRows = 2;
  static std::vector<Case<Bijector>> cases() {
    using O = ScaleShiftOptions<double>;
    auto layer = [](O o, std::uint64_t seed) {
      return randomized(Bijector(4, {.hidden_width = 8, .context_dim = 2, .seed = seed},
                                 ScaleShiftTransformer<double>(o)),
                        seed, 0.3);
    };
    return {{"nflows autoregressive (softplus), context 2", layer(O::nflows_autoregressive(), 5),
             testing::LawOptions(), no_inverse_vjp()},
            {"nflows coupling (sigmoid), context 2", layer(O::nflows_coupling(), 6),
             testing::LawOptions(), no_inverse_vjp()},
            {"zuko (soft-clipped exp), context 2", layer(O::zuko(), 7), testing::LawOptions(),
             no_inverse_vjp()},
            {"Real NVP (tanh exp), context 2", layer(O::real_nvp(2), 8), testing::LawOptions(),
             no_inverse_vjp()}};
  }
};
/// Real NVP: affine couplings and reversals, conditional, gradients included.
struct RealNvpFlow {
  using A = AffineCoupling<double, 3, 8, nn::Tanh>;
  using Bijector = Flow<A, Reverse<double, 3>, A, Reverse<double, 3>, A>;
  static constexpr const char* Name =
      "laws: Flow<AffineCoupling<double, 3, 8, Tanh>, Reverse<double, 3>, ...>";
  static constexpr std::array Headers{"core/flow.hpp", "bijectors/coupling.hpp",
                                      "bijectors/reverse.hpp"};
  static constexpr Index ContextRows = 2;
  static std::vector<Case<Bijector>> cases() {
    return {{"three couplings, context 2",
             Bijector(
                 randomized(A(CouplingMask::half(3),
                              {.hidden_width = 8, .hidden_layers = 2, .context_dim = 2, .seed = 1}),
                            1, 0.3),
                 Reverse<double, 3>{},
                 randomized(A(CouplingMask::half(3),
                              {.hidden_width = 8, .hidden_layers = 2, .context_dim = 2, .seed = 2}),
                            2, 0.3),
                 Reverse<double, 3>{},
                 randomized(A(CouplingMask::alternating(3),
                              {.hidden_width = 8, .hidden_layers = 2, .context_dim = 2, .seed = 3}),
                            3, 0.3))}};
  }
};
struct MafFlow {
  using M = DynMaf<double>;
  using Bijector = Flow<M, Reverse<double>, M>;
  static constexpr const char* Name =
      "laws: Flow<MAF<double, Dynamic, ...>, Reverse<double>, MAF<...>>";
  static constexpr std::array Headers{"core/flow.hpp", "bijectors/masked_autoregressive.hpp",
                                      "bijectors/masked_autoregressive_instances.hpp"};
  static constexpr Index ContextRows = 2;
  static std::vector<Case<Bijector>> cases() {
    return {{"two layers, context 2",
             Bijector(randomized(M(4, {.hidden_width = 6, .context_dim = 2}), 1, 0.3),
                      Reverse<double>(4),
                      randomized(M(4, {.hidden_width = 6,
                                       .context_dim = 2,
                                       .seed = 9,
                                       .order = nn::InputOrder::Random}),
                                 2, 0.3)),
             testing::LawOptions(), no_inverse_vjp()}};
  }
};
struct IafFlow {
  using M = DynMaf<double>;
  using Bijector = Flow<Inverted<M>, Inverted<M>>;
  static constexpr const char* Name = "laws: Flow<IAF<double, Dynamic, ...>, IAF<...>>";
  static constexpr std::array Headers{"core/flow.hpp", "core/inverted.hpp",
                                      "bijectors/masked_autoregressive.hpp"};
  static constexpr Index ContextRows = 0;
  static std::vector<Case<Bijector>> cases() {
    // The second layer has the default width (64): 4,600 parameters, each a finite difference
    // through Dim passes; 256 of them, spread over every tensor, keep the test to seconds.
    testing::LawOptions opt;
    opt.parameter_samples = 256;
    return {{"two layers",
             Bijector(Inverted(randomized(M(3, {.hidden_width = 5}), 3, 0.3)),
                      Inverted(randomized(M(3, {.order = nn::InputOrder::Reversed}), 4, 0.3))),
             opt, no_forward_vjp()}};
  }
};
/// A float flow of run-time size (the other flows are double).
struct ElementwiseFlowFloat {
  using Bijector = Flow<Permutation<float>, ElementwiseAffine<float>>;
  static constexpr const char* Name = "laws: Flow<Permutation<float>, ElementwiseAffine<float>>";
  static constexpr std::array Headers{"core/flow.hpp"};
  static constexpr Index ContextRows = 0;
  static std::vector<Case<Bijector>> cases() {
    return {{"dim 4", Bijector(Permutation<float>::random(4, 5),
                               randomized(ElementwiseAffine<float>(4), 6))}};
  }
};

// The structures' generic paths: a MADE and an MLP seen only through nn::Conditioner
// (tests/support/test_conditioners.hpp), so the inverse runs passes() whole-network passes and
// the gradients go through the conditioner's tape.
struct OpaqueMadeAutoregressive {
  using Bijector = MaskedAutoregressive<AffineTransformer<double>, Dyn, Dyn, nn::Tanh, Dyn,
                                        test::Opaque<nn::MADE<double, Dyn, Dyn, nn::Tanh, 2>>>;
  static constexpr const char* Name =
      "laws: MaskedAutoregressive<AffineTransformer<double>, ..., Opaque<MADE>> with a context";
  static constexpr std::array Headers{"bijectors/masked_autoregressive.hpp",
                                      "bijectors/masked_autoregressive_instances.hpp",
                                      "nn/conditioner.hpp"};
  static constexpr Index ContextRows = 3;
  static std::vector<Case<Bijector>> cases() {
    const DynMaf<double> made(4, {.hidden_width = 7,
                                  .context_dim = 3,
                                  .seed = 9,
                                  .order = nn::InputOrder::Random,
                                  .hidden_degrees = nn::HiddenDegrees::Random});
    return {{"random order and degrees, context 3",
             randomized(Bijector(test::Opaque(made.made())), 9, 0.3), testing::LawOptions(),
             no_inverse_vjp()}};
  }
};
struct OpaqueMlpCoupling {
  using Bijector = Coupling<AffineTransformer<double>, Dyn, Dyn, nn::Tanh, Dyn,
                            test::Opaque<nn::MLP<double, Dyn, Dyn, Dyn, nn::Tanh>>>;
  static constexpr const char* Name =
      "laws: Coupling<AffineTransformer<double>, ..., Opaque<MLP>> with a context";
  static constexpr std::array Headers{"bijectors/coupling.hpp", "bijectors/coupling_instances.hpp",
                                      "nn/conditioner.hpp"};
  static constexpr Index ContextRows = 2;
  static std::vector<Case<Bijector>> cases() {
    const AffineCoupling<double, Dyn, Dyn, nn::Tanh> c(
        CouplingMask::alternating(5),
        {.hidden_width = 10, .hidden_layers = 2, .context_dim = 2, .seed = 4});
    return {{"alternating mask, context 2",
             randomized(Bijector(c.mask(), test::Opaque(c.conditioner())), 4, 0.3)}};
  }
};

using Structures = decltype(std::tuple_cat(
    FloatAndDouble<AffineCouplingFixed, AffineCouplingDynamic, AffineCouplingConditional,
                   AdditiveCouplingDynamic, AdditiveCouplingFixedConditional, MafFixed,
                   MafDynamicConditional, IafFixed, SplineCouplingFixed, SplineAutoregressiveFixed,
                   ScaleShiftCouplingFixed>{},
    std::tuple<MafDynamic, MafFixedContext, AdditiveAutoregressive, IafFixedContext, RealNvpFlow,
               MafFlow, IafFlow, ElementwiseFlowFloat, SplineCouplingBoundedConditional,
               SplineAutoregressiveCircularConditional, OpaqueMadeAutoregressive, OpaqueMlpCoupling,
               ScaleShiftAutoregressiveConditional>{}));

// ---- Continuous: continuous flows ------------------------------------------------------------

/// The laws a Hutchinson trace cannot meet: its log-det is a stochastic estimate of the exact one.
inline std::vector<NotApplicable> hutchinson_estimate() {
  const std::string why = "the Hutchinson log-det is an unbiased estimate, not the exact log-det";
  return {{"log_det_sum", why},
          {"forward_log_det", why},
          {"inverse_log_det", why},
          {"batch_point", "the estimate's probes depend on the batch"}};
}

/// 40 RK4 steps: the round trip is as good as the solver; gradients are checked on cheaper solves.
template <typename S>
testing::LawOptions rk4_40_steps() {
  testing::LawOptions opt;
  if constexpr (std::is_same_v<S, double>) opt.round_trip_tol = 1e-8;
  opt.skip_all(testing::gradient_law_names(),
               "checked with 5 or 6 RK4 steps in the gradient cases");
  return opt;
}
/// Few RK4 steps for the gradient laws: the round trip is only as good as the solver.
inline testing::LawOptions rk4_few_steps() {
  testing::LawOptions opt;
  opt.batch = 3;
  opt.round_trip_tol = 1e-3;
  opt.log_det_tol = 1e-3;
  return opt;
}

template <typename S>
struct ContinuousFixed {
  using Bijector = ContinuousFlow<S, 2, 8, nn::Tanh>;
  static constexpr const char* Name = "laws: ContinuousFlow<S, 2, 8, Tanh>";
  static constexpr std::array Headers{"bijectors/continuous.hpp"};
  static constexpr Index ContextRows = 0;
  static std::vector<Case<Bijector>> cases() {
    Bijector flow = randomized(Bijector(2, {.hidden_width = 8, .hidden_layers = 2, .seed = 1}), 11);
    flow.set_solver(OdeSolver::RK4, 40);
    return {{"RK4, 40 steps", flow, rk4_40_steps<S>()}};
  }
};
template <typename S>
struct ContinuousDynamicConditional {
  using Bijector = ContinuousFlow<S, Dyn, Dyn, nn::Tanh, Dyn>;
  static constexpr const char* Name =
      "laws: ContinuousFlow<S, Dynamic, Dynamic, Tanh, Dynamic> with a context";
  static constexpr std::array Headers{"bijectors/continuous.hpp"};
  static constexpr Index ContextRows = 2;
  static std::vector<Case<Bijector>> cases() {
    Bijector flow = randomized(
        Bijector(3, {.hidden_width = 6, .hidden_layers = 2, .context_dim = 2, .seed = 2}), 12);
    flow.set_solver(OdeSolver::RK4, 40);
    std::vector<Case<Bijector>> out{{"dim 3, RK4, 40 steps", flow, rk4_40_steps<S>()}};
    if constexpr (std::is_same_v<S, double>) {
      Bijector few = randomized(
          Bijector(2, {.hidden_width = 6, .hidden_layers = 2, .context_dim = 2, .seed = 3}), 26);
      few.set_solver(OdeSolver::RK4, 5);
      out.push_back({"dim 2, RK4, 5 steps (gradients)", few, rk4_few_steps()});
    }
    return out;
  }
};
template <typename S>
struct ContinuousFixedContext {
  using Bijector = ContinuousFlow<S, 2, 8, nn::SiLU, 1>;
  static constexpr const char* Name = "laws: ContinuousFlow<S, 2, 8, SiLU, 1>";
  static constexpr std::array Headers{"bijectors/continuous.hpp"};
  static constexpr Index ContextRows = 1;
  static std::vector<Case<Bijector>> cases() {
    Bijector flow = randomized(
        Bijector(2, {.hidden_width = 8, .hidden_layers = 1, .context_dim = 1, .seed = 3}), 13);
    flow.set_solver(OdeSolver::RK4, 40);
    return {{"RK4, 40 steps", flow, rk4_40_steps<S>()}};
  }
};
/// Gradients through RK4 with the exact trace and with both Hutchinson probes (the gradient of
/// the estimate with its probes fixed).
struct ContinuousGradients {
  using Bijector = ContinuousFlow<double, 3, 8, nn::Tanh>;
  static constexpr const char* Name =
      "laws: ContinuousFlow<double, 3, 8, Tanh>, exact and Hutchinson traces";
  static constexpr std::array Headers{"bijectors/continuous.hpp"};
  static constexpr Index ContextRows = 0;
  static std::vector<Case<Bijector>> cases() {
    Bijector exact = randomized(Bijector(3, {.hidden_width = 8, .hidden_layers = 2, .seed = 1}), 9);
    exact.set_solver(OdeSolver::RK4, 6);
    Bijector rademacher = exact;
    rademacher.set_trace(ode::TraceEstimator::HutchinsonRademacher);
    rademacher.set_probe_seed(17);
    Bijector gaussian = rademacher;
    gaussian.set_trace(ode::TraceEstimator::HutchinsonGaussian);
    return {
        {"RK4, 6 steps, exact trace", exact, rk4_few_steps()},
        {"RK4, 6 steps, Hutchinson (Rademacher)", rademacher, rk4_few_steps(),
         hutchinson_estimate()},
        {"RK4, 6 steps, Hutchinson (Gaussian)", gaussian, rk4_few_steps(), hutchinson_estimate()}};
  }
};
/// Through Dormand-Prince's accepted steps, with SiLU. One column: Dopri5's step sizes depend on
/// the whole batch (see the docs).
struct ContinuousDopri5 {
  using Bijector = ContinuousFlow<double, 2, 8, nn::SiLU>;
  static constexpr const char* Name = "laws: ContinuousFlow<double, 2, 8, SiLU>, Dormand-Prince";
  static constexpr std::array Headers{"bijectors/continuous.hpp"};
  static constexpr Index ContextRows = 0;
  static std::vector<Case<Bijector>> cases() {
    Bijector flow = randomized(Bijector(2, {.hidden_width = 8, .hidden_layers = 2, .seed = 1}), 10);
    ode::Dopri5Options dp;
    dp.rtol = 1e-9;
    dp.atol = 1e-9;
    flow.set_solver(OdeSolver::Dopri5, 20, dp);
    testing::LawOptions one;
    one.batch = 1;
    one.round_trip_tol = 1e-8;
    one.skip("nan_isolation",
             "needs two columns; Dopri5 is checked on one (its steps depend on the batch)");
    return {{"Dopri5, tolerance 1e-9, one column", flow, one}};
  }
};

using Continuous = decltype(std::tuple_cat(
    FloatAndDouble<ContinuousFixed, ContinuousDynamicConditional, ContinuousFixedContext>{},
    std::tuple<ContinuousGradients, ContinuousDopri5>{}));

using Every = decltype(std::tuple_cat(Elementwise{}, Structures{}, Continuous{}));

}  // namespace nflow::conformance
