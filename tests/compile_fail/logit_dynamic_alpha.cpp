// Must not compile: alpha alone for a Logit of run-time dimension (its dimension comes first).
#include <nflow/nflow.hpp>
int main() {
  const nflow::Logit<double> logit(0.05);
  (void)logit;
}
