// The laws on every coupling and autoregressive layer (each transformer through both structures),
// on Inverted and on Flow: the Structures part of the conformance list (conformance.hpp); and the
// transformer laws (nflow/testing/transformer_laws.hpp) on each transformer alone.
#include <nflow/testing/transformer_laws.hpp>

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
