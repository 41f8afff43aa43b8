// Must not compile: a preset's options given positionally. `{8, 64}` might mean 8 transforms of
// width 64, or anything else after a field is added; designated initialisers
// (`{.transforms = 8, .hidden_features = 64}`) say what is meant.
#include <nflow/nflow.hpp>
int main() {
  const nflow::flows::CouplingFlowOptions options{8, 64};
  (void)options;
}
