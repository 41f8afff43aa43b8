// nflow::instances: the symbol whose name says which settings the library was compiled with
// (see nflow/core/instances.hpp).
#include "nflow/core/instances.hpp"

namespace nflow::instances_detail {
extern const int NFLOW_DETAIL_INSTANCES_TAG;
const int NFLOW_DETAIL_INSTANCES_TAG = 1;
}  // namespace nflow::instances_detail
