// Must not compile: a flow mixing float and double.
#include <nflow/nflow.hpp>
int main() {
  nflow::Flow<nflow::Reverse<float, 2>, nflow::Reverse<double, 2>> flow;
  (void)flow;
}
