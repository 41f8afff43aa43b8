// Must not compile: a BijectorBase type that writes forward_impl but no inverse_impl. The first
// error is the Flow's sentence (the base's deduced calls are constrained on the hooks), not an
// error inside bijector_base.hpp.
#include <nflow/nflow.hpp>
struct NoInverse : nflow::BijectorBase<NoInverse> {
  using Scalar = double;
  static constexpr int Dim = 2;
  nflow::Index dim() const { return 2; }
  template <typename X, typename C>
  auto forward_impl(const X& x, const C&) const {
    return nflow::ResultFor<double, 2, X>{x, nflow::PerSampleFor<double, X>::Zero(1, x.cols())};
  }
};
int main() {
  nflow::Flow<nflow::Reverse<double, 2>, NoInverse> flow;
  return flow.forward(Eigen::Vector2d(1.0, 2.0)).allFinite() ? 0 : 1;
}
