// Must not compile: a duck-typed bijector (not derived from BijectorBase) with parameter_count()
// and only the non-const visit_parameters. io::save and get_parameters would silently drop its
// tensors, while set_parameters wrote them.
#include <nflow/nflow.hpp>
#include <string>
struct Shift {
  using Scalar = double;
  static constexpr int Dim = 2;
  Eigen::Vector2d shift = Eigen::Vector2d::Zero();
  nflow::Index dim() const { return 2; }
  template <typename X>
  auto forward_and_log_det(const Eigen::MatrixBase<X>& x) const {
    return nflow::ResultFor<double, 2, X>{x.colwise() + shift,
                                          nflow::PerSampleFor<double, X>::Zero(1, x.cols())};
  }
  template <typename Z>
  auto inverse_and_log_det(const Eigen::MatrixBase<Z>& z) const {
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
  nflow::Flow<Shift, nflow::Reverse<double, 2>> flow;
  (void)flow;
}
