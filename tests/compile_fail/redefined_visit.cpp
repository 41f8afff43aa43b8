// Must not compile: a BijectorBase type that writes its own visit_parameters and parameter_count
// instead of the one hook parameters_impl (here the const visit is missing: the base's empty one
// would have been used by get_parameters and io::save).
#include <nflow/nflow.hpp>
#include <string>
struct Shift : nflow::BijectorBase<Shift> {
  using Scalar = double;
  static constexpr int Dim = 2;
  Eigen::Vector2d shift = Eigen::Vector2d::Zero();
  nflow::Index dim() const { return 2; }
  template <typename X, typename C>
  auto forward_impl(const X& x, const C&) const {
    return nflow::ResultFor<double, 2, X>{x.colwise() + shift,
                                          nflow::PerSampleFor<double, X>::Zero(1, x.cols())};
  }
  template <typename Z, typename C>
  auto inverse_impl(const Z& z, const C&) const {
    return nflow::ResultFor<double, 2, Z>{z.colwise() - shift,
                                          nflow::PerSampleFor<double, Z>::Zero(1, z.cols())};
  }
  nflow::Index parameter_count() const { return 2; }
  template <typename F>
  void visit_parameters(F&& f) {
    f(std::string("shift"), Eigen::Ref<nflow::ParameterMatrix<double>>(shift));
  }
};
int main() {
  Shift s;
  return s.forward(Eigen::Vector2d(1.0, 2.0)).allFinite() ? 0 : 1;
}
