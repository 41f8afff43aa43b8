// Must not compile: conditioner options given positionally. `{64, 2, 7}` reads as width 64,
// 2 layers and seed 7, but the third field is the context dimension; designated initialisers
// (`{.hidden_width = 64, .hidden_layers = 2, .seed = 7}`) say what is meant.
#include <nflow/nflow.hpp>
int main() {
  const nflow::CouplingOptions options{64, 2, 7};
  (void)options;
}
