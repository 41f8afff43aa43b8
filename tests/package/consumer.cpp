// A downstream program: builds a small flow and checks a round trip.
#include <cstdio>
#include <nflow/nflow.hpp>

int main() {
  nflow::Flow<nflow::ElementwiseAffine<double, 2>, nflow::Reverse<double, 2>> flow;
  const Eigen::Vector2d x(0.5, -1.0);
  const double err = (flow.inverse(flow.forward(x)) - x).norm();
  std::printf("round trip error %g\n", err);
  return err < 1e-12 ? 0 : 1;
}
