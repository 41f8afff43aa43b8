// Tests of nflow/testing/bijector_laws.hpp: the law harness must catch what it promises. Mutants
// of a correct elementwise affine bijector each break one part of the contract, and the test
// asserts exactly which laws fail for each (and that the correct one passes every law).
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <nflow/bijectors/coupling.hpp>
#include <nflow/core/errors.hpp>
#include <nflow/core/types.hpp>
#include <nflow/testing/bijector_laws.hpp>
#include <set>
#include <string>
#include <vector>

using namespace nflow;

namespace {

/// What a mutant gets wrong.
enum class Mutation {
  None,            ///< a correct bijector
  LogDetSign,      ///< the forward log-det has the wrong sign (and its vjp agrees with it)
  NanLeak,         ///< a non-finite column also poisons the next column
  WrongInputVjp,   ///< forward_vjp's input gradient is 10 % too large
  WrongParamVjp,   ///< forward_vjp's gradient of `shift` is 10 % too large
  NotInverse,      ///< the inverse is off by 0.01
  FusedUnfused,    ///< forward(x) differs from forward_and_log_det(x).value
  BatchDiffers,    ///< a batch is shifted by 0.001 (both ways, consistently) but a point is not
  CountMismatch,   ///< parameter_count() is one more than the visited tensors hold
  VisitsDisagree,  ///< the const visit lists the tensors in another order than the non-const one
};

/// z = exp(log_scale) ⊙ x + shift on 2 features, written without BijectorBase so that each
/// member can be wrong on its own. With ConstVisit false it has no const visit_parameters.
/// Parameters: "log_scale" (2 × 1), then "shift" (2 × 1).
// With ConstVisit = false it cannot enter a Flow, Density or Inverted (a static_assert), and
// check_laws reports the laws it cannot run as failures.
template <bool ConstVisit>
class Mutant {
 public:
  using Scalar = double;
  static constexpr int Dim = 2;
  static constexpr bool IsConstantLogDet = true;
  using Column = Eigen::Matrix<double, 2, 1>;
  using Result = ValueAndLogDet<double, 2, Dynamic>;

  explicit Mutant(Mutation m) : mutation_(m), log_scale_(2, 1), shift_(2, 1) {
    log_scale_ << 0.3, -0.4;
    shift_ << 0.5, -1.2;
  }
  Index dim() const { return 2; }

  template <typename X>
  Result forward_and_log_det(const Eigen::MatrixBase<X>& x) const {
    nflow::detail::check_rows("Mutant", "x", 2, x.rows(), x.cols());
    Result r;
    r.value = (x.array().colwise() * scale().array()).matrix().colwise() + shift();
    if (mutation_ == Mutation::BatchDiffers && x.cols() > 1) r.value.array() += 1e-3;
    const double ld = mutation_ == Mutation::LogDetSign ? -log_scale_.sum() : log_scale_.sum();
    r.log_det = PerSample<double>::Constant(x.cols(), ld);
    if (mutation_ == Mutation::NanLeak) {
      for (Index j = 0; j + 1 < x.cols(); ++j) {
        if (!x.col(j).allFinite())
          r.value.col(j + 1).setConstant(std::numeric_limits<double>::quiet_NaN());
      }
    }
    return r;
  }
  template <typename Z>
  Result inverse_and_log_det(const Eigen::MatrixBase<Z>& z) const {
    nflow::detail::check_rows("Mutant", "z", 2, z.rows(), z.cols());
    Result r;
    Batch<double, 2> shifted = z.colwise() - shift();
    if (mutation_ == Mutation::BatchDiffers && z.cols() > 1) shifted.array() -= 1e-3;
    r.value = (shifted.array().colwise() / scale().array()).matrix();
    if (mutation_ == Mutation::NotInverse) r.value.array() += 1e-2;
    r.log_det = PerSample<double>::Constant(z.cols(), -log_scale_.sum());
    return r;
  }
  template <typename X>
  Batch<double, 2> forward(const Eigen::MatrixBase<X>& x) const {
    Batch<double, 2> v = forward_and_log_det(x).value;
    if (mutation_ == Mutation::FusedUnfused) v.array() += 1e-3;
    return v;
  }
  template <typename X>
  PerSample<double> forward_log_det(const Eigen::MatrixBase<X>& x) const {
    return forward_and_log_det(x).log_det;
  }
  template <typename Z>
  Batch<double, 2> inverse(const Eigen::MatrixBase<Z>& z) const {
    return inverse_and_log_det(z).value;
  }
  template <typename Z>
  PerSample<double> inverse_log_det(const Eigen::MatrixBase<Z>& z) const {
    return inverse_and_log_det(z).log_det;
  }

  /// L = Σ gv ⊙ z + Σ gl ⊙ log_det: ∂L/∂x = gv ⊙ e^a, ∂L/∂a = Σ_j gv ⊙ e^a ⊙ x ± Σ_j gl,
  /// ∂L/∂shift = Σ_j gv.
  template <typename X, typename GV, typename GL>
  Batch<double, 2> forward_vjp(const Eigen::MatrixBase<X>& x, const Eigen::MatrixBase<GV>& gv,
                               const Eigen::MatrixBase<GL>& gl,
                               Eigen::Ref<Vector<double>> gp) const {
    const double sign = mutation_ == Mutation::LogDetSign ? -1.0 : 1.0;
    gp.head(2) += (gv.array() * x.array()).rowwise().sum().matrix().cwiseProduct(scale()) +
                  Column::Constant(sign * gl.sum());
    gp.tail(2) += gv.rowwise().sum() * (mutation_ == Mutation::WrongParamVjp ? 1.1 : 1.0);
    Batch<double, 2> gx = (gv.array().colwise() * scale().array()).matrix();
    if (mutation_ == Mutation::WrongInputVjp) gx *= 1.1;
    return gx;
  }
  /// x = (z − shift) ⊙ e^{−a}, log_det = −Σ a: ∂L/∂z = gv ⊙ e^{−a},
  /// ∂L/∂a = −Σ_j gv ⊙ x − Σ_j gl, ∂L/∂shift = −Σ_j gv ⊙ e^{−a}.
  template <typename Z, typename GV, typename GL>
  Batch<double, 2> inverse_vjp(const Eigen::MatrixBase<Z>& z, const Eigen::MatrixBase<GV>& gv,
                               const Eigen::MatrixBase<GL>& gl,
                               Eigen::Ref<Vector<double>> gp) const {
    Batch<double, 2> x = inverse(z);
    if (mutation_ == Mutation::NotInverse) x.array() -= 1e-2;  // the gradient of the true inverse
    gp.head(2) -= (gv.array() * x.array()).rowwise().sum().matrix() + Column::Constant(gl.sum());
    gp.tail(2) -= gv.rowwise().sum().cwiseQuotient(scale());
    return (gv.array().colwise() / scale().array()).matrix();
  }

  Index parameter_count() const { return mutation_ == Mutation::CountMismatch ? 5 : 4; }
  template <typename F>
  void visit_parameters(F&& f) {
    f(std::string("log_scale"), Eigen::Ref<ParameterMatrix<double>>(log_scale_));
    f(std::string("shift"), Eigen::Ref<ParameterMatrix<double>>(shift_));
  }
  template <typename F>
  void visit_parameters(F&& f) const requires ConstVisit {
    if (mutation_ == Mutation::VisitsDisagree) {
      f(std::string("shift"), Eigen::Ref<const ParameterMatrix<double>>(shift_));
      f(std::string("log_scale"), Eigen::Ref<const ParameterMatrix<double>>(log_scale_));
    } else {
      f(std::string("log_scale"), Eigen::Ref<const ParameterMatrix<double>>(log_scale_));
      f(std::string("shift"), Eigen::Ref<const ParameterMatrix<double>>(shift_));
    }
  }

 private:
  Column scale() const { return log_scale_.col(0).array().exp(); }
  Column shift() const { return shift_.col(0); }

  Mutation mutation_;
  ParameterMatrix<double> log_scale_;
  ParameterMatrix<double> shift_;
};

using Full = Mutant<true>;

std::set<std::string> failed(const std::vector<testing::LawResult>& results) {
  std::set<std::string> out;
  for (const auto& r : results) {
    if (!r.passed()) out.insert(r.law);
  }
  return out;
}

std::set<std::string> reported(const std::vector<testing::LawResult>& results) {
  std::set<std::string> out;
  for (const auto& r : results) out.insert(r.law);
  return out;
}

/// The laws that fail for `m` (with `opt`), every law's result in the message.
std::set<std::string> failing_laws(Mutation m, const testing::LawOptions& opt = {}) {
  testing::LawOptions o = opt;
  o.skip("forward_vjp_recorded",
         "the mutant records no tape (it does not derive from BijectorBase)");
  const auto results = testing::check_laws(Full(m), o);
  for (const auto& r : results)
    UNSCOPED_INFO(r.law << ": error " << r.error << " (tolerance " << r.tolerance << ")");
  return failed(results);
}

using Laws = std::set<std::string>;

}  // namespace

TEST_CASE("a correct bijector passes every law, and every law runs", "[testing][laws]") {
  // forward_vjp_recorded cannot run (no tape): without the opt-out it is a failure.
  const auto unskipped = testing::check_laws(Full(Mutation::None));
  CHECK(failed(unskipped) == Laws{"forward_vjp_recorded"});
  testing::LawOptions opt;
  opt.skip("forward_vjp_recorded", "no tape");
  const auto results = testing::check_laws(Full(Mutation::None), opt);
  CHECK(failed(results).empty());
  const auto& all = testing::law_names();
  CHECK(reported(results) == Laws(all.begin(), all.end()));
}

TEST_CASE("the laws catch a wrong log-det sign", "[testing][laws]") {
  CHECK(failing_laws(Mutation::LogDetSign) == Laws{"forward_log_det", "log_det_sum"});
}

TEST_CASE("the laws catch a NaN leaking into another column", "[testing][laws]") {
  CHECK(failing_laws(Mutation::NanLeak) == Laws{"nan_isolation"});
}

TEST_CASE("the laws catch a wrong vjp, of the input and of the parameters", "[testing][laws]") {
  CHECK(failing_laws(Mutation::WrongInputVjp) == Laws{"forward_vjp_input"});
  CHECK(failing_laws(Mutation::WrongParamVjp) == Laws{"forward_vjp_params"});
}

TEST_CASE("the laws catch an inverse that is not the inverse", "[testing][laws]") {
  CHECK(failing_laws(Mutation::NotInverse) == Laws{"round_trip"});
}

TEST_CASE("the laws catch fused and unfused calls that disagree", "[testing][laws]") {
  CHECK(failing_laws(Mutation::FusedUnfused) == Laws{"fused_unfused"});
}

TEST_CASE("the laws catch a batch that differs from its points", "[testing][laws]") {
  CHECK(failing_laws(Mutation::BatchDiffers) == Laws{"batch_point"});
}

TEST_CASE("the laws catch parameter_count disagreeing with the visit", "[testing][laws]") {
  // The gradient laws would read the flat vector's extra, never visited, entry.
  // For BijectorBase types the count is derived from the visit and cannot disagree.
  testing::LawOptions opt;
  opt.skip_all(testing::gradient_law_names(), "parameter_count is wrong on purpose");
  CHECK(failing_laws(Mutation::CountMismatch, opt) == Laws{"parameter_count"});
}

TEST_CASE("the laws catch const and non-const visits that disagree", "[testing][laws]") {
  // get_parameters (const visit) and set_parameters (non-const) then scramble the parameters, so
  // the finite-difference parameter gradients disagree with the vjp.
  CHECK(failing_laws(Mutation::VisitsDisagree) == Laws{"forward_vjp_params", "inverse_vjp_params",
                                                       "parameter_visits", "parameter_round_trip"});
}

TEST_CASE("a bijector without a const visit does not pass the parameter laws", "[testing][laws]") {
  // Such a type is not Parameterized: the parameter and gradient laws cannot run, and the harness
  // reports each of them as a failure ("not run: ...") instead of leaving it out.
  const auto results = testing::check_laws(Mutant<false>(Mutation::None));
  const Laws f = failed(results);
  for (const char* law : {"parameter_count", "parameter_visits", "forward_vjp_input",
                          "forward_vjp_params", "inverse_vjp_input", "inverse_vjp_params"}) {
    INFO(law);
    CHECK(f.count(law) == 1);
  }
  STATIC_REQUIRE_FALSE(Parameterized<Mutant<false>>);
  STATIC_REQUIRE(Parameterized<Mutant<true>>);
}

namespace {
using ReluCoupling = AffineCoupling<double, Dynamic, Dynamic, nn::ReLU>;
/// nflow's ReLU affine coupling, whose forward_vjp multiplies its parameter gradient by `factor`
/// (1: the correct layer; 1.02: a mutant whose gradient is 2 % off).
struct ScaledParameterGradient : ReluCoupling {
  ScaledParameterGradient(double factor, std::uint64_t seed)
      : ReluCoupling(CouplingMask::half(4), {.hidden_width = 16, .hidden_layers = 2, .seed = 1}),
        factor_(factor) {
    std::mt19937_64 gen(seed);
    set_parameters(*this,
                   Vector<double>(standard_normal_matrix<double>(parameter_count(), 1, gen)));
  }
  template <typename X, typename GV, typename GL>
  Batch<double, Dynamic, Dynamic> forward_vjp(const X& x, const GV& gv, const GL& gl,
                                              Eigen::Ref<Vector<double>> gp) const {
    Vector<double> mine = Vector<double>::Zero(gp.size());
    Batch<double, Dynamic, Dynamic> gx = ReluCoupling::forward_vjp(x, gv, gl, mine);
    gp += factor_ * mine;
    return gx;
  }

 private:
  double factor_;
};
}  // namespace

TEST_CASE("the gradient laws judge a ReLU coupling at random parameters: right passes, wrong fails",
          "[testing][laws][kinks]") {
  // Unit-scale random parameters put many ReLU kinks within a finite-difference step of the
  // points (a plain fourth-order stencil errs by up to 0.1 here); the recorded path is not this
  // wrapper's (the tape is the coupling's own), so its law is left out.
  testing::LawOptions opt;
  opt.batch = 16;
  opt.skip("forward_vjp_recorded", "the wrapper changes forward_vjp only");
  for (std::uint64_t seed : {11, 12, 13}) {
    INFO("seed " << seed);
    const auto right = testing::check_laws(ScaledParameterGradient(1.0, seed), opt);
    for (const auto& r : right) {
      INFO(r.law << ": error " << r.error << ", " << r.detail);
      CHECK(r.passed());
    }
    CHECK(failed(testing::check_laws(ScaledParameterGradient(1.02, seed), opt)) ==
          Laws{"forward_vjp_params"});
  }
}
