// nflow::instances: every compiled layer's hooks for double (nflow/bijectors/coupling_instances.hpp,
// masked_autoregressive_instances.hpp). One TU per scalar: the layers share the networks' and
// Eigen's instantiations, which one TU compiles once (clang -O0: 20 s for the six double layers
// together, 73 s for the six apart).
#include "nflow/bijectors/coupling_instances.hpp"
#include "nflow/bijectors/masked_autoregressive_instances.hpp"

namespace nflow {
NFLOW_COUPLING_INSTANCE_LAYERS(, double)
NFLOW_AUTOREGRESSIVE_INSTANCES(, instances_detail::Maf<double>, double)
NFLOW_AUTOREGRESSIVE_INSTANCES(, instances_detail::SplineMaf<double>, double)
}  // namespace nflow
