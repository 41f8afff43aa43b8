// Extending nflow: a bijector and a transformer of your own, checked by nflow's laws.
// Built and run by the test suite (docs/extending.md explains every line); every name it uses
// is public API. Exit status 0 when every law holds.
#include <cmath>
#include <cstdio>
#include <nflow/nflow.hpp>
#include <nflow/testing/bijector_laws.hpp>
#include <nflow/testing/transformer_laws.hpp>
#include <random>
#include <string>
#include <vector>

// ---- 1. A bijector: the sinh-arcsinh map (Jones & Pewsey 2009), elementwise ----------------------
// forward  z = sinh(δ·asinh(x) − ε),   δ = exp(ρ) > 0
// log|dz/dx| = ρ + log cosh(w) − ½·log(1 + x²),   w = δ·asinh(x) − ε
// inverse  x = sinh((asinh(z) + ε)/δ),  log|dx/dz| = −ρ + log cosh(u) − ½·log(1 + z²), u = (asinh(z) + ε)/δ
// Parameters "skew" ε and "log_tail" ρ, one per feature. Starts as the identity (ε = ρ = 0). The
// map is finite for finite input while |w| stays below ~710 (double): it is meant for standardised
// data, where δ is of order one.
template <typename Scalar_, int Dim_ = nflow::Dynamic>
class SinhArcsinh : public nflow::BijectorBase<SinhArcsinh<Scalar_, Dim_>> {
 public:
  using Scalar = Scalar_;
  static constexpr int Dim = Dim_;
  using Column = Eigen::Matrix<Scalar, Dim, 1>;

  explicit SinhArcsinh(nflow::Index dim = Dim_ == nflow::Dynamic ? 1 : Dim_)
      : skew_(Column::Zero(dim)), log_tail_(Column::Zero(dim)) {}

  nflow::Index dim() const { return skew_.size(); }

  // The minimum API: forward_impl and inverse_impl return {value, log_det} for a batch X (or one
  // point); the base checks shapes and scalar types before calling them. The return types are
  // written out, not `auto`: a deduced one makes every concept check on the type instantiate the
  // body (and all it calls), so a program that only evaluates log p would compile the gradients.
  template <typename X, typename C>
  nflow::ResultFor<Scalar, Dim, X> forward_impl(const X& x, const C& /*context*/) const {
    nflow::ResultFor<Scalar, Dim, X> r;
    const auto w =
        (x.array().asinh().colwise() * log_tail_.array().exp()).colwise() - skew_.array();
    r.value = w.sinh().matrix();
    r.log_det =
        (log_cosh(w) - Scalar(0.5) * x.array().square().log1p()).colwise().sum() + log_tail_.sum();
    return r;
  }
  template <typename Z, typename C>
  nflow::ResultFor<Scalar, Dim, Z> inverse_impl(const Z& z, const C& /*context*/) const {
    nflow::ResultFor<Scalar, Dim, Z> r;
    const auto u =
        (z.array().asinh().colwise() + skew_.array()).colwise() * (-log_tail_.array()).exp();
    r.value = u.sinh().matrix();
    r.log_det =
        (log_cosh(u) - Scalar(0.5) * z.array().square().log1p()).colwise().sum() - log_tail_.sum();
    return r;
  }

  // Reverse mode (optional: makes the bijector trainable). For L(z, log_det) with gv = ∂L/∂z and
  // gl = ∂L/∂log_det, return ∂L/∂x and add ∂L/∂θ into gp, in the order of the parameters below.
  template <typename X, typename GV, typename GL, typename C>
  nflow::BatchFor<Scalar, Dim, X> forward_vjp_impl(const X& x, const GV& gv, const GL& gl,
                                                   Eigen::Ref<nflow::Vector<Scalar>> gp,
                                                   const C& /*context*/) const {
    using A = Eigen::Array<Scalar, Dim, X::ColsAtCompileTime>;
    const Column delta = log_tail_.array().exp();
    const A u = x.array().asinh();
    const A w = (u.colwise() * delta.array()).colwise() - skew_.array();
    const A cw = w.cosh(), tw = w.tanh();
    const A root = (Scalar(1) + x.array().square()).sqrt();
    const A glr = gl.array().replicate(x.rows(), 1);  // ∂L/∂log_det, one row per feature
    nflow::BatchFor<Scalar, Dim, X> gx =
        ((gv.array() * cw + glr * tw).colwise() * delta.array() / root -
         glr * x.array() / root.square())
            .matrix();
    nflow::GradientSlicer<Scalar> slicer(gp);
    slicer.next(dim()) -= (gv.array() * cw + glr * tw).rowwise().sum().matrix();  // ε
    slicer.next(dim()) +=
        ((((gv.array() * cw + glr * tw) * u).rowwise().sum() * delta.array()) + gl.sum())
            .matrix();  // ρ: ∂w/∂ρ = δ·u, and log_det has +ρ
    return gx;
  }
  template <typename Z, typename GV, typename GL, typename C>
  nflow::BatchFor<Scalar, Dim, Z> inverse_vjp_impl(const Z& z, const GV& gv, const GL& gl,
                                                   Eigen::Ref<nflow::Vector<Scalar>> gp,
                                                   const C& /*context*/) const {
    using A = Eigen::Array<Scalar, Dim, Z::ColsAtCompileTime>;
    const Column inv_delta = (-log_tail_.array()).exp();
    const A u = (z.array().asinh().colwise() + skew_.array()).colwise() * inv_delta.array();
    const A cu = u.cosh(), tu = u.tanh();
    const A root = (Scalar(1) + z.array().square()).sqrt();
    const A glr = gl.array().replicate(z.rows(), 1);
    const A g = gv.array() * cu + glr * tu;  // ∂L/∂u
    nflow::BatchFor<Scalar, Dim, Z> gz =
        ((g.colwise() * inv_delta.array()) / root - glr * z.array() / root.square()).matrix();
    nflow::GradientSlicer<Scalar> slicer(gp);
    slicer.next(dim()) += (g.rowwise().sum() * inv_delta.array()).matrix();  // ε: ∂u/∂ε = 1/δ
    slicer.next(dim()) -= ((g * u).rowwise().sum() + gl.sum()).matrix();  // ρ: ∂u/∂ρ = −u
    return gz;
  }

  // The one parameter hook: Self is SinhArcsinh or const SinhArcsinh; the base derives
  // visit_parameters (both), parameter_count, get/set_parameters and file I/O from it.
  template <typename Self, typename F>
  static void parameters_impl(Self& self, F&& f) {
    f("skew", self.skew_);
    f("log_tail", self.log_tail_);
  }

 private:
  // log cosh(w) = |w| + log1p(exp(−2|w|)) − log 2, finite for every finite w.
  template <typename E>
  static auto log_cosh(const Eigen::ArrayBase<E>& w) {
    return w.abs() + (Scalar(-2) * w.abs()).exp().log1p() - Scalar(std::log(2.0));
  }

  Column skew_, log_tail_;
};

// ---- 2. A transformer: nflows' affine map with a softplus scale -------------------------------
// For n transformed features, the conditioner gives 2n parameters per sample, blocked: the shifts
// t (rows 0 … n−1), then the raw scales r (rows n … 2n−1).
// forward  z = s ⊙ x + t,  s = softplus(r) + 10⁻³ (never below 10⁻³),  log|det| = Σ log s
// inverse  x = (z − t) / s,                                              log|det| = −Σ log s
// Every call writes its output into the last arguments and ADDS its log-det into `log_det`
// (structures accumulate feature by feature); each column is computed on its own.
template <typename Scalar_>
class SoftplusAffine {
 public:
  using Scalar = Scalar_;
  static constexpr int ParamsPerDim = 2;

  template <typename X, typename P, typename Z, typename L>
  void forward(const Eigen::MatrixBase<X>& x, const Eigen::MatrixBase<P>& params, Z&& z,
               L&& log_det) const {
    const nflow::Index n = x.rows();
    const auto s = scale(params.bottomRows(n));
    z = (x.array() * s + params.topRows(n).array()).matrix();
    log_det += s.log().colwise().sum().matrix();
  }
  template <typename Z, typename P, typename X, typename L>
  void inverse(const Eigen::MatrixBase<Z>& z, const Eigen::MatrixBase<P>& params, X&& x,
               L&& log_det) const {
    const nflow::Index n = z.rows();
    const auto s = scale(params.bottomRows(n));
    x = ((z - params.topRows(n)).array() / s).matrix();
    log_det -= s.log().colwise().sum().matrix();
  }
  // Given ∂L/∂z and ∂L/∂log_det, write ∂L/∂x and ∂L/∂params (same blocked layout as params).
  // ds/dr = σ(r), so ∂log s/∂r = σ(r)/s.
  template <typename X, typename P, typename GZ, typename GL, typename GX, typename GP>
  void forward_backward(const Eigen::MatrixBase<X>& x, const Eigen::MatrixBase<P>& params,
                        const Eigen::MatrixBase<GZ>& grad_z,
                        const Eigen::MatrixBase<GL>& grad_log_det, GX&& grad_x,
                        GP&& grad_params) const {
    const nflow::Index n = x.rows();
    const auto r = params.bottomRows(n).array();
    const auto s = scale(params.bottomRows(n));
    const auto gl = grad_log_det.array().replicate(n, 1);
    grad_x = (grad_z.array() * s).matrix();
    grad_params.topRows(n) = grad_z;
    grad_params.bottomRows(n) =
        ((grad_z.array() * x.array() + gl / s) * nflow::sigmoid(r)).matrix();
  }
  template <typename Z, typename P, typename GX, typename GL, typename GZ, typename GP>
  void inverse_backward(const Eigen::MatrixBase<Z>& z, const Eigen::MatrixBase<P>& params,
                        const Eigen::MatrixBase<GX>& grad_x,
                        const Eigen::MatrixBase<GL>& grad_log_det, GZ&& grad_z,
                        GP&& grad_params) const {
    const nflow::Index n = z.rows();
    const auto r = params.bottomRows(n).array();
    const auto s = scale(params.bottomRows(n));
    const auto gl = grad_log_det.array().replicate(n, 1);
    const auto x = (z - params.topRows(n)).array() / s;
    grad_z = (grad_x.array() / s).matrix();
    grad_params.topRows(n) = -grad_z;
    grad_params.bottomRows(n) = (-(grad_x.array() * x + gl) / s * nflow::sigmoid(r)).matrix();
  }

 private:
  template <typename R>
  static auto scale(const Eigen::MatrixBase<R>& raw) {
    using Array = Eigen::Array<Scalar, Eigen::Dynamic, R::ColsAtCompileTime>;
    return Array(nflow::softplus(raw.array()) + Scalar(1e-3));
  }
};
static_assert(nflow::Transformer<SoftplusAffine<double>>);

// ---- 3. Checking them, and using them ----------------------------------------------------------
namespace {

int failures = 0;

void report(const std::string& what, const std::vector<nflow::testing::LawResult>& results) {
  int failed = 0;
  for (const auto& r : results) {
    if (!r.passed()) {
      ++failed;
      std::printf("  FAILED %s: %s (error %.3g > %.3g) %s\n", what.c_str(), r.law.c_str(), r.error,
                  r.tolerance, r.detail.c_str());
    }
  }
  std::printf("%-52s %zu laws, %d failed\n", what.c_str(), results.size(), failed);
  failures += failed;
}

// Random parameters, so that the laws are not checked at the identity (where a wrong derivative
// can hide): every parameter ~ N(0, 0.3²).
template <typename B>
B randomized(B b, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  nflow::set_parameters(
      b, nflow::standard_normal_matrix<typename B::Scalar>(b.parameter_count(), 1, gen) *
             typename B::Scalar(0.3));
  return b;
}

}  // namespace

int main() {
  using namespace nflow;
  // The bijector, fixed and run-time sizes, double and float (gradient laws run in double).
  report("SinhArcsinh<double, 3>", testing::check_laws(randomized(SinhArcsinh<double, 3>(), 1)));
  report("SinhArcsinh<float> (dim 4)", testing::check_laws(randomized(SinhArcsinh<float>(4), 2)));

  // The transformer on its own, then inside both structures. Smooth activations (Tanh): the
  // gradient laws compare with finite differences, which a ReLU's kink would spoil.
  report("SoftplusAffine<double>", testing::check_transformer_laws(SoftplusAffine<double>()));
  using Coupled = Coupling<SoftplusAffine<double>, 4, Dynamic, nn::Tanh>;
  const Coupled coupling =
      randomized(Coupled(CouplingMask::half(4), {.hidden_width = 16, .seed = 3}), 4);
  report("Coupling<SoftplusAffine<double>, 4>", testing::check_laws(coupling));
  using Autoregressive = MaskedAutoregressive<SoftplusAffine<double>, 4, Dynamic, nn::Tanh>;
  const Autoregressive maf = randomized(Autoregressive(4, {.hidden_width = 16, .seed = 5}), 6);
  testing::LawOptions maf_laws;  // a MAF's inverse takes Dim passes and has no vjp: say so
  maf_laws.skip("inverse_vjp_input", "MaskedAutoregressive has no inverse vjp")
      .skip("inverse_vjp_params", "MaskedAutoregressive has no inverse vjp");
  report("MaskedAutoregressive<SoftplusAffine<double>, 4>", testing::check_laws(maf, maf_laws));

  // All three compose like nflow's own layers: a density to evaluate and sample.
  Density density(StandardNormal<double, 4>{},
                  Flow(randomized(SinhArcsinh<double, 4>(), 7), coupling, maf));
  std::mt19937_64 rng(8);
  const auto x = density.sample(1000, rng);
  std::printf("mean log p(x) over 1000 samples = %.4f (%ld parameters)\n",
              density.log_prob(x).mean(), long(density.parameter_count()));
  std::printf("%s\n", failures == 0 ? "every law holds" : "some laws FAILED");
  return failures == 0 ? 0 : 1;
}
