// Tests of nflow/testing/transformer_laws.hpp: mutants of the additive transformer fail exactly
// the laws they break, and every law runs (nflow's own transformers run through these laws in the
// conformance list, tests/conformance/structures_test.cpp).
#include <catch2/catch.hpp>
#include <nflow/core/types.hpp>
#include <nflow/testing/transformer_laws.hpp>
#include <set>
#include <string>
#include <vector>

using namespace nflow;

namespace {

using Laws = std::set<std::string>;

Laws failed(const std::vector<testing::LawResult>& results) {
  Laws out;
  for (const auto& r : results) {
    UNSCOPED_INFO(r.law << ": error " << r.error << " (tolerance " << r.tolerance << ") "
                        << r.detail);
    if (!r.passed()) out.insert(r.law);
  }
  return out;
}

const Laws every_law{"round_trip",         "log_det_sum",         "forward_log_det",
                     "inverse_log_det",    "log_det_accumulates", "forward_vjp_input",
                     "forward_vjp_params", "inverse_vjp_input",   "inverse_vjp_params"};

Laws reported(const std::vector<testing::LawResult>& results) {
  Laws out;
  for (const auto& r : results) out.insert(r.law);
  return out;
}

enum class Mutation { None, ScaleTwice, OverwriteLogDet, WrongParamGradient };

/// z = 2^k (x − μ) with k = 1 when the mutation says so, else the additive transformer; its
/// mutations break one part of the contract each.
class Mutant {
 public:
  using Scalar = double;
  static constexpr int ParamsPerDim = 1;
  explicit Mutant(Mutation m) : m_(m) {}

  template <typename X, typename P, typename Z, typename L>
  void forward(const Eigen::MatrixBase<X>& x, const Eigen::MatrixBase<P>& params, Z&& z,
               L&& log_det) const {
    z = x - params;
    if (m_ == Mutation::ScaleTwice)
      z *= 2.0;  // the inverse does not undo it, the log-det misses it
    if (m_ == Mutation::OverwriteLogDet) log_det.setZero();  // must add 0, not reset to 0
  }
  template <typename Z, typename P, typename X, typename L>
  void inverse(const Eigen::MatrixBase<Z>& z, const Eigen::MatrixBase<P>& params, X&& x,
               L&& /*log_det*/) const {
    x = z + params;
  }
  template <typename X, typename P, typename GZ, typename GL, typename GX, typename GP>
  void forward_backward(const Eigen::MatrixBase<X>&, const Eigen::MatrixBase<P>&,
                        const Eigen::MatrixBase<GZ>& grad_z, const Eigen::MatrixBase<GL>&,
                        GX&& grad_x, GP&& grad_params) const {
    const double k = m_ == Mutation::ScaleTwice ? 2.0 : 1.0;
    grad_x = k * grad_z;
    grad_params = -k * grad_z;
    if (m_ == Mutation::WrongParamGradient) grad_params *= -1.0;
  }
  template <typename Z, typename P, typename GX, typename GL, typename GZ, typename GP>
  void inverse_backward(const Eigen::MatrixBase<Z>&, const Eigen::MatrixBase<P>&,
                        const Eigen::MatrixBase<GX>& grad_x, const Eigen::MatrixBase<GL>&,
                        GZ&& grad_z, GP&& grad_params) const {
    grad_z = grad_x;
    grad_params = grad_x;
  }

 private:
  Mutation m_;
};

}  // namespace

TEST_CASE("the transformer laws catch what they promise", "[testing][transformers][laws]") {
  const auto correct = testing::check_transformer_laws(Mutant(Mutation::None));
  CHECK(failed(correct).empty());
  CHECK(reported(correct) == every_law);
  CHECK(failed(testing::check_transformer_laws(Mutant(Mutation::ScaleTwice))) ==
        Laws{"round_trip", "forward_log_det"});
  CHECK(failed(testing::check_transformer_laws(Mutant(Mutation::OverwriteLogDet))) ==
        Laws{"log_det_accumulates"});
  CHECK(failed(testing::check_transformer_laws(Mutant(Mutation::WrongParamGradient))) ==
        Laws{"forward_vjp_params"});
}
