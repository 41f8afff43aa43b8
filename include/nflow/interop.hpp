#pragma once
/// @file
/// @brief The interop module of nflow: importers for models trained with nflows 0.14 and zuko 1.6
/// (load_nflows_flow, load_nflows_maf, load_nflows_simple_realnvp, load_zuko_maf,
/// load_zuko_realnvp), the ImportedFlow they return, the library-exact layer variants and the
/// StateDict reader. Not part of nflow/nflow.hpp (it brings in the safetensors reader and its
/// JSON parser): include this header where models are imported. See docs/interop.md.

#include "nflow/interop/imported_flow.hpp"
#include "nflow/interop/masks.hpp"
#include "nflow/interop/native.hpp"
#include "nflow/interop/nflows.hpp"
#include "nflow/interop/state_dict.hpp"
#include "nflow/interop/typed.hpp"
#include "nflow/interop/zuko.hpp"
