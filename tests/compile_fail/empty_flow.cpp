// Must not compile: a flow with no steps.
#include <nflow/nflow.hpp>
int main() {
  nflow::Flow<> flow;
  (void)flow;
}
