// Must not compile: two conditional steps with different fixed ContextDim (2 and 3).
#include <nflow/nflow.hpp>
int main() {
  using A = nflow::MAF<double, 2, 4, nflow::nn::Tanh, 2>;
  using B = nflow::MAF<double, 2, 4, nflow::nn::Tanh, 3>;
  nflow::Flow<A, nflow::Reverse<double, 2>, B> flow{A(), nflow::Reverse<double, 2>(), B()};
  (void)flow;
}
