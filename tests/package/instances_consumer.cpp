// A downstream program linking nflow::instances: its coupling layers' code comes from the
// installed library (NFLOW_PRECOMPILED_INSTANCES), and it must link and compute a round trip.
#include <cmath>
#include <cstdio>
#include <nflow/nflow.hpp>

#ifndef NFLOW_PRECOMPILED_INSTANCES
#error "nflow::instances did not define NFLOW_PRECOMPILED_INSTANCES"
#endif

int main() {
  using C = nflow::AffineCoupling<double>;
  nflow::Flow<C, nflow::Reverse<double>, C> flow(C(nflow::CouplingMask::half(4), {.seed = 1}),
                                                 nflow::Reverse<double>(4),
                                                 C(nflow::CouplingMask::half(4), {.seed = 2}));
  nflow::set_parameters(flow, Eigen::VectorXd::LinSpaced(flow.parameter_count(), -0.1, 0.1));
  Eigen::MatrixXd x(4, 5);
  for (Eigen::Index j = 0; j < x.cols(); ++j)
    for (Eigen::Index i = 0; i < x.rows(); ++i) x(i, j) = std::sin(double(i + 3 * j));
  const auto z = flow.forward_and_log_det(x);
  const double err = (flow.inverse(z.value) - x).cwiseAbs().maxCoeff();
  std::printf("round trip error %g, log-det %g\n", err, z.log_det(0));
  return err < 1e-12 && z.log_det(0) != 0 ? 0 : 1;
}
