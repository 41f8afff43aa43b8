#pragma once
/// @file
/// @brief Everything of nflow::interop: importers for models trained with nflows 0.14 and zuko 1.6
/// (load_nflows_flow, load_nflows_maf, load_nflows_simple_realnvp, load_zuko_maf,
/// load_zuko_realnvp), the ImportedFlow they return, and the library-exact layer variants.
/// See docs/interop.md.

#include "nflow/interop/imported_flow.hpp"
#include "nflow/interop/layers.hpp"
#include "nflow/interop/masks.hpp"
#include "nflow/interop/nflows.hpp"
#include "nflow/interop/state_dict.hpp"
#include "nflow/interop/zuko.hpp"
