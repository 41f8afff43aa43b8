// The entry points of the C ABI that do not depend on the scalar type: versions, errors, opening,
// building, saving, closing and the queries. The _d and _f calls are in scalar_double.cpp and
// scalar_float.cpp. This file includes no flow header (only the exception types), so it compiles
// in a second or two.
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <memory>
#include <new>
#include <nflow/core/errors.hpp>
#include <nflow/io/errors.hpp>
#include <nflow/io/json.hpp>
#include <nflow/io/tensor_file.hpp>
#include <nflow/version.hpp>
#include <string>
#include <vector>

#include "handle.hpp"

namespace nflow::c_api {
namespace {

thread_local std::string last_error;

nflow_status status_of_current(Phase phase) {
  const bool open = phase == Phase::Open;
  try {
    throw;
  } catch (const Failure& e) {
    return e.status();
  } catch (const io::VersionError&) {
    return NFLOW_ERROR_VERSION;
  } catch (const io::FormatError&) {
    return NFLOW_ERROR_FORMAT;
  } catch (const io::IoError&) {
    return NFLOW_ERROR_IO;
  } catch (const ShapeError&) {
    return open ? NFLOW_ERROR_FORMAT : NFLOW_ERROR_SIZE;
  } catch (const ParameterError&) {
    return open ? NFLOW_ERROR_FORMAT : NFLOW_ERROR_ARGUMENT;
  } catch (const UnsupportedError&) {
    return open ? NFLOW_ERROR_FORMAT : NFLOW_ERROR_UNSUPPORTED;
  } catch (const std::bad_alloc&) {
    return NFLOW_ERROR_INTERNAL;
  } catch (const std::length_error&) {
    return NFLOW_ERROR_SIZE;
  } catch (const std::invalid_argument&) {
    return open ? NFLOW_ERROR_FORMAT : NFLOW_ERROR_ARGUMENT;
  } catch (const std::out_of_range&) {
    return open ? NFLOW_ERROR_FORMAT : NFLOW_ERROR_ARGUMENT;
  } catch (...) {
    return NFLOW_ERROR_INTERNAL;
  }
}

std::string message_of_current() {
  try {
    throw;
  } catch (const std::bad_alloc&) {
    return "out of memory";
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "an unknown exception";
  }
}

/// The handle's scalar type for a file: the requested one, or with NFLOW_SCALAR_FILE float if
/// every floating-point tensor of the file is F32 (and there is at least one), else double.
nflow_scalar scalar_of_file(std::span<const std::byte> bytes) {
  const io::TensorFile file = io::parse_safetensors(std::span<const unsigned char>(
      reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size()));
  bool any = false;
  for (const auto& [name, tensor] : file.tensors) {
    if (!io::is_floating(tensor.dtype)) continue;
    if (tensor.dtype != io::DType::F32) return NFLOW_FLOAT64;
    any = true;
  }
  return any ? NFLOW_FLOAT32 : NFLOW_FLOAT64;
}

nflow_model* open_bytes(std::span<const std::byte> bytes, nflow_scalar scalar) {
  if (scalar == NFLOW_SCALAR_FILE) scalar = scalar_of_file(bytes);
  if (scalar == NFLOW_FLOAT32) return open_model<float>(bytes);
  return open_model<double>(bytes);
}

}  // namespace

void check_scalar_argument(const nflow_scalar& scalar, bool file_allowed) {
  const int v = raw_enum(scalar);
  if (v == NFLOW_FLOAT32 || v == NFLOW_FLOAT64) return;
  if (file_allowed && v == NFLOW_SCALAR_FILE) return;
  throw Failure(NFLOW_ERROR_ARGUMENT,
                "scalar must be " + std::string(file_allowed ? "NFLOW_SCALAR_FILE (0), " : "") +
                    "NFLOW_FLOAT32 (1) or NFLOW_FLOAT64 (2), got " + std::to_string(v));
}

/// The options object of `what` (null: an empty one); invalid JSON or another value is ARGUMENT.
io::json::Value parse_object(const char* text, const char* what) {
  io::json::Value v;
  v.kind = io::json::Value::Kind::Object;
  if (!text) return v;
  try {
    v = io::json::parse(text);
  } catch (const io::FormatError& e) {
    throw Failure(NFLOW_ERROR_ARGUMENT, std::string(what) + " is not valid JSON: " + e.what());
  }
  if (!v.is_object()) {
    throw Failure(NFLOW_ERROR_ARGUMENT,
                  std::string(what) + " must be a JSON object, got " + io::json::kind_name(v.kind));
  }
  return v;
}

std::string option_label(const char* what, const io::json::Member& m) {
  return std::string(what) + "'s \"" + m.key + "\"";
}

std::uint64_t option_uint(const char* what, const io::json::Member& m, std::uint64_t max) {
  const auto u = m.value.as_uint64();
  if (!u || *u > max) {
    throw Failure(NFLOW_ERROR_ARGUMENT,
                  option_label(what, m) + " must be an integer from 0 to " + std::to_string(max) +
                      ", got " +
                      (m.value.is_number() ? m.value.text : io::json::kind_name(m.value.kind)));
  }
  return *u;
}

std::ptrdiff_t option_count(const char* what, const io::json::Member& m) {
  return std::ptrdiff_t(option_uint(what, m, std::uint64_t(1) << 40));
}

/// A positive finite number.
double option_positive(const char* what, const io::json::Member& m) {
  double v = 0;
  if (m.value.is_number()) {
    const std::string& t = m.value.text;
    const auto r = std::from_chars(t.data(), t.data() + t.size(), v);
    if (r.ec != std::errc() || r.ptr != t.data() + t.size()) v = 0;
  }
  if (!(v > 0) || !std::isfinite(v)) {
    throw Failure(NFLOW_ERROR_ARGUMENT,
                  option_label(what, m) + " must be a positive number, got " +
                      (m.value.is_number() ? m.value.text : io::json::kind_name(m.value.kind)));
  }
  return v;
}

[[noreturn]] void unknown_option(const char* what, const io::json::Member& m, const char* known) {
  throw Failure(NFLOW_ERROR_ARGUMENT,
                std::string(what) + " has an unknown key \"" + m.key + "\" (known: " + known + ")");
}

namespace {

/// The query entry points: a non-null handle and output.
template <typename T, typename F>
nflow_status query(const char* function, const nflow_model* model, T* out, F&& get) noexcept {
  return guarded(function, Phase::Call, [&] {
    require(model, "model");
    require(out, "out");
    *out = get(*model);
  });
}

}  // namespace

void require(const void* p, const char* name) {
  if (!p) throw Failure(NFLOW_ERROR_NULL_POINTER, std::string(name) + " is null");
}

void check_handle(const nflow_model* model, nflow_scalar expected, const char* suffix) {
  require(model, "model");
  if (model->scalar() == expected) return;
  const bool is_float = model->scalar() == NFLOW_FLOAT32;
  throw Failure(NFLOW_ERROR_SCALAR_TYPE,
                std::string("the handle evaluates in ") + (is_float ? "float" : "double") +
                    ": call the _" + (is_float ? "f" : "d") + " entry point instead of the _" +
                    suffix + " one, or open the model with NFLOW_FLOAT" + (is_float ? "64" : "32"));
}

PresetArguments parse_preset_options(const char* options_json) {
  const char* what = "options_json";
  const io::json::Value v = parse_object(options_json, what);
  PresetArguments a;
  for (const io::json::Member& m : v.members) {
    if (m.key == "transforms") {
      a.transforms = option_count(what, m);
    } else if (m.key == "hidden_features") {
      a.hidden_features = option_count(what, m);
    } else if (m.key == "hidden_layers") {
      a.hidden_layers = option_count(what, m);
    } else if (m.key == "context") {
      a.context = option_count(what, m);
    } else if (m.key == "bins") {
      a.bins = option_count(what, m);
    } else if (m.key == "bound") {
      a.bound = option_positive(what, m);
    } else if (m.key == "seed") {
      a.seed = option_uint(what, m, std::numeric_limits<std::uint64_t>::max());
    } else {
      unknown_option(what, m,
                     "transforms, hidden_features, hidden_layers, context, bins, bound, seed");
    }
  }
  return a;
}

FitArguments parse_fit_options(const char* options_json) {
  const char* what = "options_json";
  const io::json::Value v = parse_object(options_json, what);
  FitArguments a;
  for (const io::json::Member& m : v.members) {
    if (m.key == "epochs") {
      a.epochs = option_count(what, m);
    } else if (m.key == "batch_size") {
      a.batch_size = option_count(what, m);
      if (a.batch_size == 0) {
        throw Failure(NFLOW_ERROR_ARGUMENT, option_label(what, m) + " must be positive");
      }
    } else if (m.key == "learning_rate") {
      a.learning_rate = option_positive(what, m);
    } else if (m.key == "seed") {
      a.seed = option_uint(what, m, std::numeric_limits<std::uint64_t>::max());
    } else {
      unknown_option(what, m, "epochs, batch_size, learning_rate, seed");
    }
  }
  return a;
}

double standard_normal_quantile(double u) {
  if (u == 0.5) return 0.0;
  // p = the smaller tail (1 - u is exact for u >= 0.5); z is the upper quantile, Q(z) = p, with
  // Q(z) = erfc(z / sqrt 2) / 2. Start from Abramowitz & Stegun 26.2.23 (error < 4.5e-4), then
  // Halley's iteration on Q(z) - p (Q' = -phi, Q'' = z phi): each step triples the digits.
  const double p = u < 0.5 ? u : 1.0 - u;
  const double t = std::sqrt(-2.0 * std::log(p));
  double z = t - (2.515517 + t * (0.802853 + t * 0.010328)) /
                     (1.0 + t * (1.432788 + t * (0.189269 + t * 0.001308)));
  const double sqrt_2pi = 2.50662827463100050242;
  for (int k = 0; k < 3; ++k) {
    const double e = 0.5 * std::erfc(z * 0.70710678118654752440) - p;
    const double d = e * sqrt_2pi * std::exp(0.5 * z * z);  // e / phi(z)
    if (!std::isfinite(d)) break;
    z += d / (1.0 - 0.5 * z * d);
  }
  return u < 0.5 ? -z : z;
}

nflow_status fail(const char* function, nflow_status status, std::string_view message) noexcept {
  try {
    last_error.assign(function);
    last_error += ": ";
    last_error += message;
  } catch (...) {
    // Out of memory while recording the message: keep what fits (the status still says it).
  }
  return status;
}

nflow_status fail_current(const char* function, Phase phase) noexcept {
  nflow_status status = NFLOW_ERROR_INTERNAL;
  std::string message;
  try {
    status = status_of_current(phase);
    message = message_of_current();
  } catch (...) {
    status = NFLOW_ERROR_INTERNAL;
  }
  return fail(function, status, message);
}

}  // namespace nflow::c_api

using namespace nflow::c_api;

extern "C" {

int nflow_abi_version(void) { return NFLOW_ABI_VERSION; }

const char* nflow_version(void) { return NFLOW_VERSION_STRING; }

const char* nflow_last_error(void) { return nflow::c_api::last_error.c_str(); }

const char* nflow_status_name(nflow_status status) {
  switch (raw_enum(status)) {
    case NFLOW_OK:
      return "NFLOW_OK";
    case NFLOW_ERROR_NULL_POINTER:
      return "NFLOW_ERROR_NULL_POINTER";
    case NFLOW_ERROR_SIZE:
      return "NFLOW_ERROR_SIZE";
    case NFLOW_ERROR_INPUT:
      return "NFLOW_ERROR_INPUT";
    case NFLOW_ERROR_IO:
      return "NFLOW_ERROR_IO";
    case NFLOW_ERROR_FORMAT:
      return "NFLOW_ERROR_FORMAT";
    case NFLOW_ERROR_VERSION:
      return "NFLOW_ERROR_VERSION";
    case NFLOW_ERROR_SCALAR_TYPE:
      return "NFLOW_ERROR_SCALAR_TYPE";
    case NFLOW_ERROR_UNSUPPORTED:
      return "NFLOW_ERROR_UNSUPPORTED";
    case NFLOW_ERROR_ARGUMENT:
      return "NFLOW_ERROR_ARGUMENT";
    case NFLOW_ERROR_INTERNAL:
      return "NFLOW_ERROR_INTERNAL";
  }
  return "NFLOW_STATUS_UNKNOWN";
}

nflow_status nflow_open(const char* path, nflow_scalar scalar, nflow_model** out) {
  return guarded("nflow_open", Phase::Open, [&] {
    require(path, "path");
    require(out, "out");
    check_scalar_argument(scalar, true);
    std::ifstream in(path, std::ios::binary);
    if (!in) throw nflow::io::IoError("cannot open '" + std::string(path) + "' for reading");
    std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (in.bad()) throw nflow::io::IoError("cannot read '" + std::string(path) + "'");
    *out = open_bytes(std::as_bytes(std::span<const char>(bytes)), scalar);
  });
}

nflow_status nflow_open_memory(const void* bytes, size_t size, nflow_scalar scalar,
                               nflow_model** out) {
  return guarded("nflow_open_memory", Phase::Open, [&] {
    if (size > 0) require(bytes, "bytes");
    require(out, "out");
    check_scalar_argument(scalar, true);
    *out =
        open_bytes(std::span<const std::byte>(static_cast<const std::byte*>(bytes), size), scalar);
  });
}

nflow_status nflow_create_preset(const char* family, size_t dim, const char* options_json,
                                 nflow_scalar scalar, nflow_model** out) {
  return guarded("nflow_create_preset", Phase::Call, [&] {
    require(family, "family");
    require(out, "out");
    check_scalar_argument(scalar, false);
    *out = scalar == NFLOW_FLOAT32 ? nflow::c_api::create_preset<float>(family, dim, options_json)
                                   : nflow::c_api::create_preset<double>(family, dim, options_json);
  });
}

nflow_status nflow_save(const nflow_model* model, const char* path) {
  return guarded("nflow_save", Phase::Call, [&] {
    require(model, "model");
    require(path, "path");
    model->save(path);
  });
}

void nflow_close(nflow_model* model) { delete model; }

nflow_status nflow_dim(const nflow_model* model, size_t* out) {
  return query("nflow_dim", model, out, [](const nflow_model& m) { return m.dim(); });
}

nflow_status nflow_context_dim(const nflow_model* model, size_t* out) {
  return query("nflow_context_dim", model, out,
               [](const nflow_model& m) { return m.context_dim(); });
}

nflow_status nflow_scalar_type(const nflow_model* model, nflow_scalar* out) {
  return query("nflow_scalar_type", model, out, [](const nflow_model& m) { return m.scalar(); });
}

nflow_status nflow_parameter_count(const nflow_model* model, size_t* out) {
  return query("nflow_parameter_count", model, out,
               [](const nflow_model& m) { return m.parameter_count(); });
}

nflow_status nflow_model_schema_version(const nflow_model* model, int* out) {
  return query("nflow_model_schema_version", model, out,
               [](const nflow_model& m) { return m.schema_version; });
}

nflow_status nflow_describe(const nflow_model* model, const char** out) {
  return query("nflow_describe", model, out,
               [](const nflow_model& m) { return m.description.c_str(); });
}

}  // extern "C"
