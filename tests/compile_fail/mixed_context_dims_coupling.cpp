// Must not compile: two coupling layers with different fixed ContextDim (2 and 3).
#include <nflow/nflow.hpp>
int main() {
  using A = nflow::AffineCoupling<double, 2, 4, nflow::nn::Tanh, 2>;
  using B = nflow::AffineCoupling<double, 2, 4, nflow::nn::Tanh, 3>;
  const auto mask = nflow::CouplingMask::half(2);
  nflow::Flow<A, nflow::Reverse<double, 2>, B> flow{A(mask), nflow::Reverse<double, 2>(), B(mask)};
  (void)flow;
}
