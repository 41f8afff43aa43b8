// nflow::instances: the compiled hooks of AffineCoupling<double> (nflow/bijectors/coupling_instances.hpp;
// one TU per layer and scalar, so that the library builds in parallel).
#include "nflow/bijectors/coupling_instances.hpp"

namespace nflow {
NFLOW_COUPLING_INSTANCES(, AffineCoupling<double>, double)
}  // namespace nflow
