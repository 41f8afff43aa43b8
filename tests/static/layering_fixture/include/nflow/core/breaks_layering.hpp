#pragma once
// A fixture for the layering test's self-check (tests/CMakeLists.txt, static:layering_detects):
// core/ may not include io/, so tests/static/layering.cmake must reject this tree.
#include "nflow/io/safetensors.hpp"
