// Must not compile: a type with forward_and_log_det but no inverse_and_log_det.
#include <nflow/nflow.hpp>
struct HalfBijector {
  using Scalar = double;
  static constexpr int Dim = 2;
  nflow::Index dim() const { return 2; }
  template <typename X>
  auto forward_and_log_det(const X& x) const {
    return nflow::ValueAndLogDet<double, 2, Eigen::Dynamic>{x, Eigen::RowVectorXd::Zero(x.cols())};
  }
};
int main() {
  nflow::Flow<HalfBijector, nflow::Reverse<double, 2>> flow;
  (void)flow;
}
