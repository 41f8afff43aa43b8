#pragma once
/// @file
/// @brief Catch2 (2.13 or 3.x) glue for the bijector laws: `NFLOW_CHECK_LAWS(bijector, options)`
/// makes one CHECK per law, with the law's name, error and tolerance in the message.
/// Include Catch2 before this header.

#include "nflow/testing/bijector_laws.hpp"

/// Checks every law of nflow::testing::check_laws(...) with Catch2's CHECK.
#define NFLOW_CHECK_LAWS(...)                                                               \
  do {                                                                                      \
    for (const auto& nflow_law_result_ : ::nflow::testing::check_laws(__VA_ARGS__)) {       \
      INFO(nflow_law_result_.law << ": error " << nflow_law_result_.error << " (tolerance " \
                                 << nflow_law_result_.tolerance << ") "                     \
                                 << nflow_law_result_.detail);                              \
      CHECK(nflow_law_result_.passed());                                                    \
    }                                                                                       \
  } while (false)
