#pragma once
/// @file
/// @brief nflow's version (the CMake project version): NFLOW_VERSION_MAJOR, _MINOR, _PATCH and
/// NFLOW_VERSION_STRING. Saved model files record it under the metadata key "nflow.version".

#define NFLOW_VERSION_MAJOR 0
#define NFLOW_VERSION_MINOR 1
#define NFLOW_VERSION_PATCH 0
#define NFLOW_VERSION_STRING "0.1.0"
