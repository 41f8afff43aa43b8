// Must not compile: a compile-time repetition of no blocks.
#include <nflow/nflow.hpp>
int main() {
  nflow::Repeat<0, nflow::Reverse<double, 2>> flow;
  (void)flow;
}
