// nflow::instances: the symbol whose name says which settings the library was compiled with
// (see nflow/core/instances.hpp).
#include "nflow/core/instances.hpp"

namespace nflow::instances_detail {
NFLOW_DETAIL_SETTINGS_DEFINITION()
}  // namespace nflow::instances_detail
