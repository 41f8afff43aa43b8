// Must not compile: a float batch given to a double flow. nflow's sentence must come first,
// before any error inside Eigen.
#include <nflow/nflow.hpp>
int main() {
  nflow::Flow<nflow::AffineCoupling<double, 2>, nflow::Reverse<double, 2>> flow(
      nflow::AffineCoupling<double, 2>(nflow::CouplingMask::half(2),
                                       {.hidden_width = 4, .hidden_layers = 1}),
      nflow::Reverse<double, 2>());
  const Eigen::Matrix<float, 2, Eigen::Dynamic> x =
      Eigen::Matrix<float, 2, Eigen::Dynamic>::Zero(2, 3);
  return flow.forward(x).allFinite() ? 0 : 1;
}
