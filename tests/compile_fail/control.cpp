// Must compile: the same shape of program as the compile-fail tests, on a valid flow.
#include <nflow/nflow.hpp>
int main() {
  nflow::Flow<nflow::Reverse<double, 2>, nflow::ElementwiseAffine<double, 2>> flow;
  return flow.forward(Eigen::Vector2d(1.0, 2.0)).allFinite() ? 0 : 1;
}
