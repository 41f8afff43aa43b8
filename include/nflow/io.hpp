#pragma once
/// @file
/// @brief The file module of nflow: saving and loading any flow, density or bijector as a
/// safetensors file (io::save, io::load), an optimiser's state (io::save_optimizer,
/// io::load_optimizer), and the low-level pieces they are built from (the byte format's
/// TensorFile reader and writer, tensor ↔ matrix conversion, the strict JSON parser). Not part
/// of nflow/nflow.hpp: include this header where files are read or written. See docs/io.md.

#include "nflow/io/errors.hpp"
#include "nflow/io/json.hpp"
#include "nflow/io/optimizer.hpp"
#include "nflow/io/safetensors.hpp"
#include "nflow/io/tensor_conversion.hpp"
#include "nflow/io/tensor_file.hpp"
