// Must not compile: a flow mixing dimensions 2 and 3.
#include <nflow/nflow.hpp>
int main() {
  nflow::Flow<nflow::Reverse<double, 2>, nflow::Reverse<double, 3>> flow;
  (void)flow;
}
