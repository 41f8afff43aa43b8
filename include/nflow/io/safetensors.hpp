#pragma once
/// @file
/// @brief Saving and loading objects as safetensors files: nflow::io::save and nflow::io::load
/// of any object with parameters (a bijector, a Flow, a Density), with its buffers. The byte
/// format is in nflow/io/tensor_file.hpp, the matrix ↔ tensor conversion in
/// nflow/io/tensor_conversion.hpp (both included here).
///
/// Layout conventions (see docs/io.md):
/// - A parameter is an Eigen matrix of rows × cols stored with shape [rows, cols] in row-major
///   order (the PyTorch layout of the same matrix), or as a 1-D tensor [rows] when it has one
///   column (a bias, a log-scale). On load, a one-column parameter also accepts [rows, 1] (the
///   same bytes).
/// - Names are the composed names of visit_parameters ("transform.3.conditioner.layers.0.weight").
///
/// Strictness: loading checks the whole file before it changes anything. Malformed content, a
/// missing or unexpected tensor name, a wrong shape and an unsupported dtype throw
/// nflow::io::FormatError; a non-finite value, a double too large for a float parameter, or a
/// value the object itself rejects (an LU diagonal that makes W singular) throws
/// nflow::ParameterError; every message names the tensor. On any exception the object is
/// unchanged (strong guarantee: load fills a copy, then move-assigns it). The loader is fuzzed by
/// tests/fuzz/safetensors_fuzz.cpp.
///
/// What is saved: the trainable parameters (visit_parameters), as F32 or F64, and the buffers
/// that define the map without being trained (visit_buffers, see nflow/core/buffers.hpp:
/// permutations, MADE orders and hidden degrees, coupling masks, LU permutations and signs,
/// ActNorm's initialised flag), as I64 vectors. Sizes are not saved as such: an object is
/// constructed with the same architecture (dimensions, widths, layer types) before loading into
/// it, and the loader checks every shape against it.

#include <cmath>
#include <concepts>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <istream>
#include <map>
#include <optional>
#include <ostream>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "nflow/core/buffers.hpp"
#include "nflow/core/errors.hpp"
#include "nflow/core/types.hpp"
#include "nflow/io/architecture.hpp"
#include "nflow/io/errors.hpp"
#include "nflow/io/tensor_conversion.hpp"
#include "nflow/io/tensor_file.hpp"

namespace nflow::io {

/// @brief An object that can describe its architecture: `describe_architecture(object)`, found
/// by argument-dependent lookup, returns its description as a json::Value (Null when this
/// particular object cannot be described, e.g. a DynamicFlow holding a user's bijector).
/// nflow/io/describe.hpp (included by nflow/io/model.hpp) declares it for nflow's layers,
/// flows and densities; a TU that does not include it saves and loads exactly as before
/// (without descriptions), at no compile-time cost. save() and load() take the answer as a
/// defaulted template argument, so the two kinds of TU instantiate different functions.
template <typename T>
concept SelfDescribing = requires(const T& object) {
  { describe_architecture(object) } -> std::same_as<json::Value>;
};

/// @brief Options of save(): the dtype of the file (default: the object's Scalar; F32 or F64)
/// and string metadata stored under "__metadata__".
struct SaveOptions {
  std::optional<DType> dtype;
  Metadata metadata;
};

/// @brief The tensors of every parameter of `object` (any type with `Scalar` and
/// `visit_parameters`: a bijector, a Flow, a Density), by their composed names, and of every
/// buffer (as I64 vectors).
/// When the object describes itself (SelfDescribing, and its description is not Null), the
/// metadata also gets "nflow.version", "nflow.schema" and "nflow.architecture" (see
/// docs/model_files.md).
/// @throws ParameterError if a value is not finite (it could not be loaded back) or does not fit
/// the chosen dtype; std::invalid_argument for an integer dtype or a metadata key of the user's
/// that starts with "nflow." (reserved).
template <typename T, bool Describe = SelfDescribing<T>>
TensorFile to_tensor_file(const T& object, const SaveOptions& options = {}) {
  using Scalar = typename T::Scalar;
  const DType dtype = options.dtype.value_or(dtype_of<Scalar>());
  if (dtype != DType::F32 && dtype != DType::F64) {
    throw std::invalid_argument("nflow::io::save: parameters are saved as F32 or F64, not " +
                                std::string(dtype_name(dtype)));
  }
  for (const auto& entry : options.metadata) {
    if (entry.first.starts_with("nflow.")) {
      throw std::invalid_argument("nflow::io::save: metadata key '" + entry.first +
                                  "' starts with \"nflow.\", which is reserved for nflow's own "
                                  "keys (version, schema, architecture); choose another name");
    }
  }
  TensorFile file;
  file.metadata = options.metadata;
  if constexpr (Describe) {
    const json::Value description = describe_architecture(object);
    if (description.kind != json::Value::Kind::Null) {
      file.metadata.emplace(version_key, NFLOW_VERSION_STRING);
      file.metadata.emplace(schema_key, std::to_string(schema_version()));
      file.metadata.emplace(architecture_key, json::write(description));
    }
  }
  object.visit_parameters([&](const std::string& name, const auto& tensor) {
    for (Index j = 0; j < tensor.cols(); ++j) {
      for (Index i = 0; i < tensor.rows(); ++i) {
        if (!std::isfinite(tensor(i, j))) {
          throw ParameterError("nflow::io::save: tensor " + detail::quote_name(name) +
                               " has a non-finite value at [" + std::to_string(i) + ", " +
                               std::to_string(j) + "]");
        }
      }
    }
    if (!file.tensors.emplace(name, make_tensor(tensor, dtype, name)).second) {
      throw std::logic_error("nflow::io::save: the object visits two parameters named " +
                             detail::quote_name(name));
    }
  });
  visit_buffers(object, [&](const std::string& name, const BufferVector& b) {
    if (!file.tensors.emplace(name, make_tensor(b, DType::I64, name)).second) {
      throw std::logic_error("nflow::io::save: the object visits two tensors named " +
                             detail::quote_name(name));
    }
  });
  return file;
}

/// @brief Saves every parameter of `object` to `out` as a safetensors file.
template <typename T, bool Describe = SelfDescribing<T>>
void save(const T& object, std::ostream& out, const SaveOptions& options = {}) {
  write_safetensors(out, to_tensor_file<T, Describe>(object, options));
}

/// @brief Saves every parameter of `object` to the file at `path` (created or truncated).
template <typename T, bool Describe = SelfDescribing<T>>
void save(const T& object, const std::filesystem::path& path, const SaveOptions& options = {}) {
  write_safetensors(path, to_tensor_file<T, Describe>(object, options));
}

namespace detail {

/// Adds the full tensor name to a ParameterError thrown by a layer while it re-validated what the
/// loader wrote. The layer names the tensor by its own name ("parameter 'log_s'", "buffer
/// 'order'"); the full name is the latest of the names written so far (`written`) that ends
/// with it ("3.log_s").
inline std::string annotate_layer_error(const std::vector<std::string>& written,
                                        const std::string& message) {
  std::string local;
  for (const char* kind : {"parameter '", "buffer '"}) {
    const std::size_t p = message.find(kind);
    if (p == std::string::npos) continue;
    const std::size_t b = p + std::char_traits<char>::length(kind);
    const std::size_t e = message.find('\'', b);
    if (e != std::string::npos) local = message.substr(b, e - b);
    break;
  }
  if (!local.empty()) {
    for (auto it = written.rbegin(); it != written.rend(); ++it) {
      const std::string& n = *it;
      if (n == local || (n.size() > local.size() && n.ends_with("." + local))) {
        return "nflow::io::load: tensor " + quote_name(n) + " rejected by its layer: " + message;
      }
    }
  }
  const std::string last = written.empty() ? std::string("?") : written.back();
  return "nflow::io::load: the layer of tensor " + quote_name(last) +
         " rejected the loaded values: " + message;
}

}  // namespace detail

/// @brief Loads every parameter of `object` from `file`, strictly: each name the object visits
/// must be present with the object's shape (a one-column parameter: [rows] or [rows, 1]) and a
/// floating dtype (F32 or F64, converted to the object's Scalar), each value finite, and the file
/// must hold no other tensor. Likewise each buffer the object visits must be present as an I32
/// or I64 vector of its current length; the object validates the values (a permutation must be
/// a permutation, ...). Buffers are applied before parameters. Returns the file's metadata.
/// @throws FormatError for a missing or unexpected name, a wrong shape or dtype;
/// ParameterError for a non-finite value, a value out of float range, or a value the object
/// rejects (the message names the tensor). On any exception `object` is unchanged.
///
/// Before that, a file of a newer model-file schema throws VersionError, and when the object
/// describes itself (SelfDescribing) and the file has a description ("nflow.architecture"),
/// the two must agree: otherwise FormatError naming the first difference ("the model, transform
/// (repeat), step (sequence), step 0 (coupling), transformer: bins 8 in the file, 10 in the
/// type"). Files without a description (written before the schema) load as before.
template <typename T, bool Check = SelfDescribing<T>>
Metadata load(T& object, const TensorFile& file) {
  using Scalar = typename T::Scalar;
  static_assert(std::is_floating_point_v<Scalar>,
                "nflow::io::load: the object's Scalar must be float or double");
  if constexpr (Check) {
    detail::check_description(file.metadata, describe_architecture(std::as_const(object)),
                              std::is_same_v<Scalar, float>);
  } else {
    check_schema(file.metadata);
  }
  // Pass 1 (reads only): check every name, dtype, shape and value, and convert.
  std::map<std::string, ParameterMatrix<Scalar>, std::less<>> values;
  std::as_const(object).visit_parameters([&](const std::string& name, const auto& expected) {
    const auto it = file.tensors.find(name);
    const std::string want =
        expected.cols() == 1
            ? "[" + std::to_string(expected.rows()) + "] (or [" + std::to_string(expected.rows()) +
                  ", 1])"
            : "[" + std::to_string(expected.rows()) + ", " + std::to_string(expected.cols()) + "]";
    if (it == file.tensors.end()) {
      throw FormatError("nflow::io::load: missing tensor " + detail::quote_name(name) +
                        " (expected shape " + want + ")");
    }
    const Tensor& t = it->second;
    if (t.dtype != DType::F32 && t.dtype != DType::F64) {
      throw FormatError("nflow::io::load: tensor " + detail::quote_name(name) + " has dtype " +
                        std::string(dtype_name(t.dtype)) + "; a parameter needs F32 or F64");
    }
    const auto rows = std::uint64_t(expected.rows());
    const auto cols = std::uint64_t(expected.cols());
    const bool shape_ok = cols == 1 ? (t.shape == std::vector<std::uint64_t>{rows} ||
                                       t.shape == std::vector<std::uint64_t>{rows, 1})
                                    : t.shape == std::vector<std::uint64_t>{rows, cols};
    if (!shape_ok) {
      throw FormatError("nflow::io::load: tensor " + detail::quote_name(name) + " has shape " +
                        detail::shape_string(t.shape) + ", expected " + want);
    }
    ParameterMatrix<Scalar> m(expected.rows(), expected.cols());
    std::size_t k = 0;
    for (Index i = 0; i < m.rows(); ++i) {
      for (Index j = 0; j < m.cols(); ++j) {
        const double v = detail::element_as_double(t, k++);
        if (!std::isfinite(v)) {
          throw ParameterError("nflow::io::load: tensor " + detail::quote_name(name) +
                               " has a non-finite value (" + std::to_string(v) + ") at [" +
                               std::to_string(i) + ", " + std::to_string(j) + "]");
        }
        m(i, j) = detail::checked_narrow<Scalar>(v, name, "load");
      }
    }
    if (!values.emplace(name, std::move(m)).second) {
      throw std::logic_error("nflow::io::load: the object visits two parameters named " +
                             detail::quote_name(name));
    }
  });
  std::map<std::string, BufferVector, std::less<>> buffers;
  visit_buffers(std::as_const(object), [&](const std::string& name, const BufferVector& expected) {
    const auto it = file.tensors.find(name);
    const std::string want = "[" + std::to_string(expected.size()) + "]";
    if (it == file.tensors.end()) {
      throw FormatError("nflow::io::load: missing buffer " + detail::quote_name(name) +
                        " (expected I64 of shape " + want + ")");
    }
    const Tensor& t = it->second;
    if (t.dtype != DType::I32 && t.dtype != DType::I64) {
      throw FormatError("nflow::io::load: buffer " + detail::quote_name(name) + " has dtype " +
                        std::string(dtype_name(t.dtype)) + "; a buffer needs I64 (or I32)");
    }
    if (t.shape != std::vector<std::uint64_t>{std::uint64_t(expected.size())}) {
      throw FormatError("nflow::io::load: buffer " + detail::quote_name(name) + " has shape " +
                        detail::shape_string(t.shape) + ", expected " + want);
    }
    BufferVector b(expected.size());
    for (Index i = 0; i < b.size(); ++i) b(i) = detail::element_as_int64(t, std::size_t(i));
    if (values.contains(name) || !buffers.emplace(name, std::move(b)).second) {
      throw std::logic_error("nflow::io::load: the object visits two tensors named " +
                             detail::quote_name(name));
    }
  });
  for (const auto& entry : file.tensors) {
    if (!values.contains(entry.first) && !buffers.contains(entry.first)) {
      throw FormatError("nflow::io::load: unexpected tensor " + detail::quote_name(entry.first) +
                        " (the object has no parameter or buffer of that name)");
    }
  }
  // Pass 2: write into a copy (layers re-validate and may throw), buffers first, then commit.
  T copy = object;
  std::vector<std::string> written;
  try {
    visit_buffers(copy, [&](const std::string& name, BufferVector& b) {
      written.push_back(name);
      const auto it = buffers.find(name);
      if (it == buffers.end()) {
        throw std::logic_error(
            "nflow::io::load: the object's const and non-const visit_buffers disagree at " +
            detail::quote_name(name));
      }
      b = it->second;
    });
    copy.visit_parameters([&](const std::string& name, auto&& tensor) {
      written.push_back(name);
      const auto it = values.find(name);
      if (it == values.end() || it->second.rows() != tensor.rows() ||
          it->second.cols() != tensor.cols()) {
        throw std::logic_error(
            "nflow::io::load: the object's const and non-const visit_parameters disagree at " +
            detail::quote_name(name));
      }
      tensor = it->second;
    });
  } catch (const ParameterError& e) {
    throw ParameterError(detail::annotate_layer_error(written, e.what()));
  }
  object = std::move(copy);
  return file.metadata;
}

/// @brief Loads `object` from one safetensors file read from `in` (see read_safetensors).
template <typename T, bool Check = SelfDescribing<T>>
Metadata load(T& object, std::istream& in) {
  return load<T, Check>(object, read_safetensors(in));
}

/// @brief Loads `object` from the safetensors file at `path`.
template <typename T, bool Check = SelfDescribing<T>>
Metadata load(T& object, const std::filesystem::path& path) {
  return load<T, Check>(object, read_safetensors(path));
}

/// @brief Loads `object` from a whole safetensors file held in memory.
template <typename T, bool Check = SelfDescribing<T>>
Metadata load(T& object, std::span<const unsigned char> bytes) {
  return load<T, Check>(object, parse_safetensors(bytes));
}

}  // namespace nflow::io
