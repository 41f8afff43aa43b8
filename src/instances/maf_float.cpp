// nflow::instances: the compiled hooks of instances_detail::Maf<float>
// (nflow/bijectors/masked_autoregressive_instances.hpp; one TU per layer and scalar).
#include "nflow/bijectors/masked_autoregressive_instances.hpp"

namespace nflow {
NFLOW_AUTOREGRESSIVE_INSTANCES(, instances_detail::Maf<float>, float)
}  // namespace nflow
