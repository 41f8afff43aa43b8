// The laws on continuous flows (RK4 and Dormand-Prince, exact and Hutchinson traces): the
// Continuous part of the conformance list (conformance.hpp).
#include "conformance/conformance.hpp"

namespace {
[[maybe_unused]] const bool registered =
    nflow::conformance::register_laws<nflow::conformance::Continuous>();
}  // namespace
