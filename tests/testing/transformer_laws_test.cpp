// Tests of nflow/testing/transformer_laws.hpp: mutants of the additive transformer fail exactly
// the laws they break, and every law runs (nflow's own transformers run through these laws in the
// conformance list, tests/conformance/structures_test.cpp).
#include <catch2/catch.hpp>
#include <cmath>
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

const Laws every_law(testing::transformer_law_names().begin(),
                     testing::transformer_law_names().end());

Laws reported(const std::vector<testing::LawResult>& results) {
  Laws out;
  for (const auto& r : results) out.insert(r.law);
  return out;
}

enum class Mutation {
  None,
  ScaleTwice,
  OverwriteLogDet,
  WrongParamGradient,
  FarOffset,       // far out (|x| > 1e5) forward adds 1e-3 that the inverse does not remove
  FarSlope,        // far out the map doubles, consistently both ways, without its log-det
  FarNaNGradient,  // far out forward_backward's input gradient is NaN
  HugeParameters,  // raw parameters beyond ±1e3 give a NaN value
};

/// z = 2^k (x − μ) with k = 1 when the mutation says so, else the additive transformer; its
/// mutations break one part of the contract each (the Far ones only beyond |x| = 1e5, where only
/// the edge laws look; HugeParameters only where the extreme_parameters law looks).
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
    for (Index i = 0; i < z.size(); ++i) {
      if (std::abs(x(i)) > 1e5 && m_ == Mutation::FarOffset) z(i) += 1e-3;
      if (std::abs(x(i)) > 1e5 && m_ == Mutation::FarSlope) z(i) *= 2.0;
      if (std::abs(params(i)) > 1e3 && m_ == Mutation::HugeParameters) z(i) = std::nan("");
    }
  }
  template <typename Z, typename P, typename X, typename L>
  void inverse(const Eigen::MatrixBase<Z>& z, const Eigen::MatrixBase<P>& params, X&& x,
               L&& /*log_det*/) const {
    x = z + params;
    for (Index i = 0; i < x.size(); ++i)
      if (m_ == Mutation::FarSlope && std::abs(z(i) / 2.0 + params(i)) > 1e5)
        x(i) = z(i) / 2.0 + params(i);
  }
  template <typename X, typename P, typename GZ, typename GL, typename GX, typename GP>
  void forward_backward(const Eigen::MatrixBase<X>& x, const Eigen::MatrixBase<P>&,
                        const Eigen::MatrixBase<GZ>& grad_z, const Eigen::MatrixBase<GL>&,
                        GX&& grad_x, GP&& grad_params) const {
    const double k = m_ == Mutation::ScaleTwice ? 2.0 : 1.0;
    grad_x = k * grad_z;
    grad_params = -k * grad_z;
    if (m_ == Mutation::WrongParamGradient) grad_params *= -1.0;
    if (m_ == Mutation::FarNaNGradient)
      for (Index i = 0; i < grad_x.size(); ++i)
        if (std::abs(x(i)) > 1e5) grad_x(i) = std::nan("");
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
  // A break everywhere is also seen at the edges.
  CHECK(failed(testing::check_transformer_laws(Mutant(Mutation::ScaleTwice))) ==
        Laws{"round_trip", "forward_log_det", "edge_round_trip", "edge_log_det",
             "extreme_parameters"});
  CHECK(failed(testing::check_transformer_laws(Mutant(Mutation::OverwriteLogDet))) ==
        Laws{"log_det_accumulates"});
  CHECK(failed(testing::check_transformer_laws(Mutant(Mutation::WrongParamGradient))) ==
        Laws{"forward_vjp_params"});
  // The edge laws: each far-out mutation fails exactly the law that looks there.
  CHECK(failed(testing::check_transformer_laws(Mutant(Mutation::FarOffset))) ==
        Laws{"edge_round_trip"});
  CHECK(failed(testing::check_transformer_laws(Mutant(Mutation::FarSlope))) ==
        Laws{"edge_log_det"});
  CHECK(failed(testing::check_transformer_laws(Mutant(Mutation::FarNaNGradient))) ==
        Laws{"edge_finite"});
  CHECK(failed(testing::check_transformer_laws(Mutant(Mutation::HugeParameters))) ==
        Laws{"extreme_parameters"});
}

TEST_CASE("any transformer law can be skipped by name with a reason, an unknown name fails",
          "[testing][transformers][laws]") {
  testing::LawOptions opt;
  opt.skip("edge_finite", "the mutant's far gradient is NaN on purpose")
      .skip("inverse_log_det", "not needed here");
  const auto r = testing::check_transformer_laws(Mutant(Mutation::FarNaNGradient), opt);
  CHECK(failed(r).empty());
  CHECK(reported(r) == every_law);
  for (const auto& law : r)
    if (law.law == "edge_finite") CHECK(law.detail.find("on purpose") != std::string::npos);
  testing::LawOptions unknown;
  unknown.skip("edge_roundtrip", "misspelt");
  const auto u = testing::check_transformer_laws(Mutant(Mutation::None), unknown);
  CHECK(failed(u) == Laws{"edge_roundtrip"});
}
