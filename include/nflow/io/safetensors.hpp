#pragma once
/// @file
/// @brief Saving and loading parameters as safetensors files (the format of PyTorch and Hugging
/// Face): nflow::io::save, nflow::io::load and the low-level TensorFile reader and writer.
///
/// The format: an 8-byte little-endian unsigned length N, then N bytes of a UTF-8 JSON object
///
///     {"__metadata__": {"key": "value", ...},                       (optional)
///      "<name>": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}
///
/// (padded with trailing spaces), then the data buffer. Offsets are relative to the start of the
/// buffer; each tensor is row-major (C order), little-endian. The tensors must be laid out
/// contiguously from offset 0, without gaps or overlaps, and cover the buffer exactly (as the
/// reference implementation enforces).
///
/// Layout conventions (see docs/io.md):
/// - A parameter is an Eigen matrix (column-major in memory) of rows × cols; it is stored with
///   shape [rows, cols] in row-major order, so element (i, j) is at flat index i·cols + j, the
///   PyTorch layout of the same matrix (a Linear weight is [out, in] in both).
/// - A parameter with one column (a bias, a log-scale) is stored as a 1-D tensor [rows], like a
///   PyTorch bias. On load, a one-column parameter also accepts [rows, 1] (the same bytes).
/// - Names are the composed names of visit_parameters ("transform.3.conditioner.layers.0.weight").
///
/// Strictness: loading checks the whole file before it changes anything. Malformed content, a
/// missing or unexpected tensor name, a wrong shape and an unsupported dtype throw
/// nflow::io::FormatError; a non-finite value, a double too large for a float parameter, or a
/// value the object itself rejects (an LU diagonal that makes W singular) throws
/// nflow::ParameterError; every message names the tensor. On any exception the object is
/// unchanged (strong guarantee: load fills a copy, then move-assigns it).
///
/// Hostile input: every length and offset is checked against the bytes actually present before it
/// is used (no read out of bounds, no allocation larger than the input; the JSON nesting depth is
/// bounded). The loader is fuzzed by tests/fuzz/safetensors_fuzz.cpp.
///
/// What is saved: the trainable parameters (visit_parameters), as F32 or F64, and the buffers
/// that define the map without being trained (visit_buffers, see nflow/core/buffers.hpp:
/// permutations, MADE orders and hidden degrees, coupling masks, LU permutations and signs,
/// ActNorm's initialised flag), as I64 vectors. Sizes are not saved as such: an object is
/// constructed with the same architecture (dimensions, widths, layer types) before loading into
/// it, and the loader checks every shape against it.

#include "nflow/core/buffers.hpp"
#include "nflow/core/errors.hpp"
#include "nflow/core/types.hpp"
#include "nflow/io/errors.hpp"
#include "nflow/io/json.hpp"

#include <Eigen/Core>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <istream>
#include <limits>
#include <map>
#include <optional>
#include <ostream>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace nflow::io {

/// @brief Element types nflow reads: F32 and F64 for parameter values, I32 and I64 for integer
/// buffers (nflow writes I64). Other safetensors dtypes (F16, BF16, U8, BOOL, ...)
/// are rejected with a FormatError that names them.
enum class DType { F32, F64, I32, I64 };

/// The safetensors name of a dtype ("F32", ...).
inline std::string_view dtype_name(DType d) {
  switch (d) {
    case DType::F32: return "F32";
    case DType::F64: return "F64";
    case DType::I32: return "I32";
    case DType::I64: return "I64";
  }
  return "?";
}

/// Bytes per element.
inline std::size_t dtype_size(DType d) { return d == DType::F32 || d == DType::I32 ? 4 : 8; }

/// The dtype called `name`, or std::nullopt if nflow does not support it.
inline std::optional<DType> dtype_from_name(std::string_view name) {
  for (DType d : {DType::F32, DType::F64, DType::I32, DType::I64}) {
    if (dtype_name(d) == name) return d;
  }
  return std::nullopt;
}

/// The dtype that stores `S` exactly (float → F32, double → F64, int32 → I32, int64 → I64).
template <typename S>
constexpr DType dtype_of() {
  if constexpr (std::is_same_v<S, float>) {
    return DType::F32;
  } else if constexpr (std::is_same_v<S, double>) {
    return DType::F64;
  } else if constexpr (std::is_same_v<S, std::int32_t>) {
    return DType::I32;
  } else {
    static_assert(std::is_same_v<S, std::int64_t>, "nflow::io::dtype_of<S>: S must be float, double, int32_t or int64_t");
    return DType::I64;
  }
}

/// @brief String metadata of a file (the "__metadata__" object).
using Metadata = std::map<std::string, std::string, std::less<>>;

/// @brief One tensor as stored: dtype, shape (row-major) and its raw little-endian bytes.
struct Tensor {
  DType dtype = DType::F64;
  std::vector<std::uint64_t> shape;  ///< empty for a scalar
  std::vector<unsigned char> data;   ///< element_count() · dtype_size(dtype) bytes

  /// Product of the shape (1 for a scalar).
  std::uint64_t element_count() const {
    std::uint64_t n = 1;
    for (std::uint64_t s : shape) n *= s;
    return n;
  }
};

/// @brief The content of a safetensors file: metadata and tensors by name.
struct TensorFile {
  Metadata metadata;
  std::map<std::string, Tensor, std::less<>> tensors;
};

namespace detail {

/// The reference implementation's limit on the header length (100 MB).
inline constexpr std::uint64_t max_header_size = 100'000'000;

inline std::string shape_string(const std::vector<std::uint64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

inline std::string quote_name(std::string_view name) { return "'" + std::string(name) + "'"; }

template <typename U>
U load_le(const unsigned char* p) {
  U v = 0;
  for (std::size_t i = 0; i < sizeof(U); ++i) v |= U(p[i]) << (8 * i);
  return v;
}

template <typename U>
void store_le(unsigned char* p, U v) {
  for (std::size_t i = 0; i < sizeof(U); ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}

/// Element `i` of `t` as a double (exact for F32, F64 and I32; I64 rounds beyond 2^53).
inline double element_as_double(const Tensor& t, std::size_t i) {
  const unsigned char* p = t.data.data() + i * dtype_size(t.dtype);
  switch (t.dtype) {
    case DType::F32: return double(std::bit_cast<float>(load_le<std::uint32_t>(p)));
    case DType::F64: return std::bit_cast<double>(load_le<std::uint64_t>(p));
    case DType::I32: return double(std::bit_cast<std::int32_t>(load_le<std::uint32_t>(p)));
    case DType::I64: return double(std::bit_cast<std::int64_t>(load_le<std::uint64_t>(p)));
  }
  return 0.0;
}

/// Element `i` of an I32 or I64 tensor, exactly.
inline std::int64_t element_as_int64(const Tensor& t, std::size_t i) {
  const unsigned char* p = t.data.data() + i * dtype_size(t.dtype);
  if (t.dtype == DType::I32) return std::bit_cast<std::int32_t>(load_le<std::uint32_t>(p));
  return std::bit_cast<std::int64_t>(load_le<std::uint64_t>(p));
}

/// Converts a double to Scalar; throws ParameterError (naming the tensor) if a finite value is
/// out of Scalar's range (a float cannot hold 1e300; the conversion would be undefined).
template <typename Scalar>
Scalar checked_narrow(double v, std::string_view name, const char* where) {
  if constexpr (std::is_same_v<Scalar, float>) {
    if (std::isfinite(v) && std::abs(v) > double(std::numeric_limits<float>::max())) {
      throw ParameterError(std::string("nflow::io::") + where + ": tensor " + quote_name(name) + " holds " +
                           std::to_string(v) + ", outside the range of a float");
    }
  }
  return static_cast<Scalar>(v);
}

/// One tensor's entry in a header, before its bytes are attached.
struct HeaderEntry {
  std::string name;
  DType dtype = DType::F64;
  std::vector<std::uint64_t> shape;
  std::uint64_t begin = 0;
  std::uint64_t end = 0;
};

struct Header {
  Metadata metadata;
  std::vector<HeaderEntry> entries;
  std::uint64_t data_size = 0;  ///< bytes of tensor data the header describes
};

[[noreturn]] inline void format_error(const std::string& what) {
  throw FormatError("nflow::io::safetensors: " + what);
}

inline std::uint64_t header_uint(const json::Value& v, const std::string& name, const char* field) {
  const auto u = v.as_uint64();
  if (!u) format_error("tensor " + quote_name(name) + ": every entry of '" + field + "' must be a non-negative integer");
  return *u;
}

/// Parses and validates a header: the JSON, each entry's fields, and that the tensors tile
/// [0, data_size) exactly (contiguous, no gaps, no overlaps).
inline Header parse_header(std::string_view text) {
  if (text.empty() || text.front() != '{') format_error("the header does not start with '{'");
  json::Value root;
  try {
    root = json::parse(text);
  } catch (const FormatError& e) {
    format_error(std::string("the header is not valid JSON: ") + e.what());
  }
  if (!root.is_object()) format_error("the header is not a JSON object");
  Header h;
  for (json::Member& m : root.members) {
    if (m.key == "__metadata__") {
      if (!m.value.is_object()) format_error("'__metadata__' must be an object of strings");
      for (json::Member& kv : m.value.members) {
        if (!kv.value.is_string()) format_error("'__metadata__' entry " + quote_name(kv.key) + " must be a string");
        h.metadata.emplace(kv.key, std::move(kv.value.text));
      }
      continue;
    }
    const std::string& name = m.key;
    const json::Value& info = m.value;
    if (!info.is_object()) format_error("tensor " + quote_name(name) + ": the entry must be an object");
    for (const json::Member& f : info.members) {
      if (f.key != "dtype" && f.key != "shape" && f.key != "data_offsets") {
        format_error("tensor " + quote_name(name) + ": unexpected field " + quote_name(f.key));
      }
    }
    const json::Value* dtype = info.find("dtype");
    const json::Value* shape = info.find("shape");
    const json::Value* offsets = info.find("data_offsets");
    if (!dtype || !shape || !offsets) {
      format_error("tensor " + quote_name(name) + ": the entry needs 'dtype', 'shape' and 'data_offsets'");
    }
    HeaderEntry e;
    e.name = name;
    if (!dtype->is_string()) format_error("tensor " + quote_name(name) + ": 'dtype' must be a string");
    const auto d = dtype_from_name(dtype->text);
    if (!d) {
      format_error("tensor " + quote_name(name) + ": dtype " + quote_name(dtype->text) +
                   " is not supported (nflow reads F32, F64, I32 and I64)");
    }
    e.dtype = *d;
    if (!shape->is_array()) format_error("tensor " + quote_name(name) + ": 'shape' must be an array");
    std::uint64_t count = 1;
    bool overflow = false;
    for (const json::Value& s : shape->items) {
      const std::uint64_t n = header_uint(s, name, "shape");
      e.shape.push_back(n);
      if (n != 0 && count > std::numeric_limits<std::uint64_t>::max() / n) overflow = true;
      count *= n;
    }
    if (!offsets->is_array() || offsets->items.size() != 2) {
      format_error("tensor " + quote_name(name) + ": 'data_offsets' must be an array [begin, end]");
    }
    e.begin = header_uint(offsets->items[0], name, "data_offsets");
    e.end = header_uint(offsets->items[1], name, "data_offsets");
    if (e.end < e.begin) {
      format_error("tensor " + quote_name(name) + ": data_offsets [" + std::to_string(e.begin) + ", " +
                   std::to_string(e.end) + "] end before they begin");
    }
    const std::uint64_t size = dtype_size(e.dtype);
    if (overflow || count > std::numeric_limits<std::uint64_t>::max() / size || count * size != e.end - e.begin) {
      format_error("tensor " + quote_name(name) + ": data_offsets [" + std::to_string(e.begin) + ", " +
                   std::to_string(e.end) + "] span " + std::to_string(e.end - e.begin) + " bytes, but shape " +
                   shape_string(e.shape) + " of " + std::string(dtype_name(e.dtype)) + " needs " +
                   (overflow || count > std::numeric_limits<std::uint64_t>::max() / size
                        ? std::string("more than 2^64")
                        : std::to_string(count * size)));
    }
    h.entries.push_back(std::move(e));
  }
  std::vector<const HeaderEntry*> sorted;
  for (const HeaderEntry& e : h.entries) sorted.push_back(&e);
  std::sort(sorted.begin(), sorted.end(), [](const HeaderEntry* a, const HeaderEntry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  std::uint64_t expected = 0;
  const HeaderEntry* previous = nullptr;
  for (const HeaderEntry* e : sorted) {
    if (e->begin < expected) {
      format_error("tensor " + quote_name(e->name) + ": data_offsets [" + std::to_string(e->begin) + ", " +
                   std::to_string(e->end) + "] overlap tensor " + quote_name(previous->name));
    }
    if (e->begin > expected) {
      format_error("tensor " + quote_name(e->name) + ": data_offsets [" + std::to_string(e->begin) + ", " +
                   std::to_string(e->end) + "] leave a gap: the previous tensor ends at byte " +
                   std::to_string(expected));
    }
    expected = e->end;
    previous = e;
  }
  h.data_size = expected;
  return h;
}

/// Attaches the bytes (exactly h.data_size of them) to the entries.
inline TensorFile assemble(Header&& h, const unsigned char* data) {
  TensorFile f;
  f.metadata = std::move(h.metadata);
  for (HeaderEntry& e : h.entries) {
    Tensor t;
    t.dtype = e.dtype;
    t.shape = std::move(e.shape);
    t.data.assign(data + e.begin, data + e.end);
    f.tensors.emplace(std::move(e.name), std::move(t));
  }
  return f;
}

/// Reads exactly `n` bytes, growing the buffer as bytes arrive (a hostile length costs no more
/// memory than the stream really holds). Throws FormatError naming `what` if the stream ends.
inline std::vector<unsigned char> read_exact(std::istream& in, std::uint64_t n, const std::string& what) {
  std::vector<unsigned char> out;
  constexpr std::uint64_t chunk = std::uint64_t(1) << 20;
  while (out.size() < n) {
    const std::uint64_t want = std::min<std::uint64_t>(chunk, n - out.size());
    const std::size_t old = out.size();
    out.resize(old + std::size_t(want));
    in.read(reinterpret_cast<char*>(out.data() + old), std::streamsize(want));
    const auto got = std::uint64_t(in.gcount());
    if (got < want) {
      format_error("truncated: the stream ended after " + std::to_string(old + got) + " of the " +
                   std::to_string(n) + " bytes of " + what);
    }
  }
  return out;
}

inline void check_header_length(std::uint64_t n) {
  if (n > max_header_size) {
    format_error("the header length " + std::to_string(n) + " exceeds the limit of " +
                 std::to_string(max_header_size) + " bytes");
  }
}

}  // namespace detail

// ---- low level: files of tensors ----------------------------------------------------------------

/// @brief Parses a whole safetensors file held in memory. The tensors must cover the data buffer
/// exactly: trailing bytes after the last tensor are an error.
/// @throws FormatError on any malformed content.
inline TensorFile parse_safetensors(std::span<const unsigned char> bytes) {
  if (bytes.size() < 8) {
    detail::format_error("truncated: the file has " + std::to_string(bytes.size()) +
                         " bytes, fewer than the 8-byte header length");
  }
  const auto n = detail::load_le<std::uint64_t>(bytes.data());
  detail::check_header_length(n);
  if (n > bytes.size() - 8) {
    detail::format_error("the header length " + std::to_string(n) + " runs past the end of the file (" +
                         std::to_string(bytes.size() - 8) + " bytes follow the length)");
  }
  detail::Header h =
      detail::parse_header(std::string_view(reinterpret_cast<const char*>(bytes.data() + 8), std::size_t(n)));
  const std::uint64_t available = bytes.size() - 8 - n;
  if (available < h.data_size) {
    detail::format_error("truncated: the tensors need " + std::to_string(h.data_size) + " bytes of data, the file has " +
                         std::to_string(available));
  }
  if (available > h.data_size) {
    detail::format_error("the data buffer has " + std::to_string(available) + " bytes but the tensors cover only " +
                         std::to_string(h.data_size));
  }
  return detail::assemble(std::move(h), bytes.data() + 8 + n);
}

/// @brief Reads one safetensors file from `in`, from its current position to the end of the last
/// tensor (the stream is left just after it; bytes beyond are not read, so a file can be embedded
/// in a larger stream). Throws FormatError if the stream ends early or the content is malformed,
/// IoError if the stream was not readable to begin with.
inline TensorFile read_safetensors(std::istream& in) {
  if (!in) throw IoError("nflow::io::safetensors: the input stream is not readable");
  try {
    const std::vector<unsigned char> length = detail::read_exact(in, 8, "the header length");
    const auto n = detail::load_le<std::uint64_t>(length.data());
    detail::check_header_length(n);
    const std::vector<unsigned char> header = detail::read_exact(in, n, "the header");
    detail::Header h =
        detail::parse_header(std::string_view(reinterpret_cast<const char*>(header.data()), header.size()));
    const std::vector<unsigned char> data = detail::read_exact(in, h.data_size, "tensor data");
    return detail::assemble(std::move(h), data.data());
  } catch (const std::ios_base::failure& e) {  // a stream with exceptions() enabled
    throw IoError(std::string("nflow::io::safetensors: reading failed: ") + e.what());
  }
}

/// @brief Reads the safetensors file at `path` (which must hold exactly one file).
inline TensorFile read_safetensors(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError("nflow::io::safetensors: cannot open '" + path.string() + "' for reading");
  std::vector<unsigned char> bytes;
  char buffer[1 << 16];
  while (in.read(buffer, sizeof buffer) || in.gcount() > 0) {
    bytes.insert(bytes.end(), buffer, buffer + in.gcount());
  }
  if (in.bad()) throw IoError("nflow::io::safetensors: reading '" + path.string() + "' failed");
  try {
    return parse_safetensors(bytes);
  } catch (const FormatError& e) {
    throw FormatError(std::string(e.what()) + " (in '" + path.string() + "')");
  }
}

/// @brief The bytes of a safetensors file holding `file`. Tensors are laid out 8-byte types
/// first, then by name, after a header padded with spaces to a multiple of 8 bytes, so every
/// tensor is aligned to its element size (as the reference writer does).
/// @throws FormatError if a name or metadata string is not valid UTF-8, a tensor is named
/// "__metadata__", or a tensor's byte count does not match its shape and dtype.
inline std::vector<unsigned char> serialize_safetensors(const TensorFile& file) {
  auto check_utf8 = [](std::string_view s, const char* what) {
    if (!json::is_valid_utf8(s)) detail::format_error(std::string(what) + " " + detail::quote_name(s) + " is not valid UTF-8");
  };
  std::vector<std::pair<const std::string*, const Tensor*>> order;
  for (const auto& [name, t] : file.tensors) {
    check_utf8(name, "tensor name");
    if (name == "__metadata__") detail::format_error("a tensor cannot be named '__metadata__'");
    std::uint64_t count = 1;
    for (std::uint64_t s : t.shape) {
      if (s != 0 && count > std::numeric_limits<std::uint64_t>::max() / s) {
        detail::format_error("tensor " + detail::quote_name(name) + ": shape too large");
      }
      count *= s;
    }
    if (count > t.data.size() || count * dtype_size(t.dtype) != t.data.size()) {
      detail::format_error("tensor " + detail::quote_name(name) + ": " + std::to_string(t.data.size()) +
                           " bytes of data do not match shape " + detail::shape_string(t.shape) + " of " +
                           std::string(dtype_name(t.dtype)));
    }
    order.emplace_back(&name, &t);
  }
  std::stable_sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
    return dtype_size(a.second->dtype) > dtype_size(b.second->dtype);
  });
  std::string header = "{";
  bool first = true;
  if (!file.metadata.empty()) {
    header += "\"__metadata__\":{";
    for (const auto& [key, value] : file.metadata) {
      check_utf8(key, "metadata key");
      check_utf8(value, "metadata value");
      if (!first) header += ',';
      first = false;
      json::append_quoted(header, key);
      header += ':';
      json::append_quoted(header, value);
    }
    header += '}';
    first = false;
  }
  std::uint64_t offset = 0;
  for (const auto& [name, t] : order) {
    if (!first) header += ',';
    first = false;
    json::append_quoted(header, *name);
    header += ":{\"dtype\":\"";
    header += dtype_name(t->dtype);
    header += "\",\"shape\":[";
    for (std::size_t i = 0; i < t->shape.size(); ++i) {
      if (i) header += ',';
      header += std::to_string(t->shape[i]);
    }
    header += "],\"data_offsets\":[" + std::to_string(offset) + ',' + std::to_string(offset + t->data.size()) + "]}";
    offset += t->data.size();
  }
  header += '}';
  while ((8 + header.size()) % 8 != 0) header += ' ';
  std::vector<unsigned char> out(8 + header.size());
  detail::store_le<std::uint64_t>(out.data(), header.size());
  std::copy(header.begin(), header.end(), out.begin() + 8);
  out.reserve(out.size() + std::size_t(offset));
  for (const auto& entry : order) out.insert(out.end(), entry.second->data.begin(), entry.second->data.end());
  return out;
}

/// @brief Writes `file` to `out` (see serialize_safetensors). Throws IoError if writing fails.
inline void write_safetensors(std::ostream& out, const TensorFile& file) {
  const std::vector<unsigned char> bytes = serialize_safetensors(file);
  out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  if (!out) throw IoError("nflow::io::safetensors: writing to the output stream failed");
}

/// @brief Writes `file` to `path` (created or truncated). Throws IoError if that fails.
inline void write_safetensors(const std::filesystem::path& path, const TensorFile& file) {
  const std::vector<unsigned char> bytes = serialize_safetensors(file);  // before touching the file
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw IoError("nflow::io::safetensors: cannot open '" + path.string() + "' for writing");
  out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  out.close();
  if (!out) throw IoError("nflow::io::safetensors: writing '" + path.string() + "' failed");
}

/// @brief A tensor holding matrix `m` in `dtype`: shape [rows, cols] row-major, or [rows] when
/// `m` has one column. Floating values go to F32 or F64 (NaN and ±inf are stored as they are; a
/// finite value beyond the float range throws ParameterError naming `name`); integer matrices
/// may also go to I32 or I64 (values must fit).
template <typename Derived>
Tensor make_tensor(const Eigen::MatrixBase<Derived>& m, DType dtype, std::string_view name = "") {
  using S = typename Derived::Scalar;
  static_assert(std::is_arithmetic_v<S>, "nflow::io::make_tensor: the matrix must hold float, double or integers");
  const bool integer_dtype = dtype == DType::I32 || dtype == DType::I64;
  if (integer_dtype && std::is_floating_point_v<S>) {
    throw std::invalid_argument("nflow::io::make_tensor: tensor " + detail::quote_name(name) +
                                ": a floating-point matrix cannot be stored as " + std::string(dtype_name(dtype)));
  }
  Tensor t;
  t.dtype = dtype;
  if (m.cols() == 1) {
    t.shape = {std::uint64_t(m.rows())};
  } else {
    t.shape = {std::uint64_t(m.rows()), std::uint64_t(m.cols())};
  }
  const std::size_t size = dtype_size(dtype);
  t.data.resize(std::size_t(m.size()) * size);
  unsigned char* p = t.data.data();
  for (Index i = 0; i < m.rows(); ++i) {
    for (Index j = 0; j < m.cols(); ++j, p += size) {
      const S v = m(i, j);
      if (dtype == DType::F32) {
        const float f = std::is_floating_point_v<S> ? detail::checked_narrow<float>(double(v), name, "make_tensor")
                                                    : static_cast<float>(v);
        detail::store_le(p, std::bit_cast<std::uint32_t>(f));
      } else if (dtype == DType::F64) {
        detail::store_le(p, std::bit_cast<std::uint64_t>(static_cast<double>(v)));
      } else if constexpr (std::is_integral_v<S>) {
        if (dtype == DType::I64 ? !std::in_range<std::int64_t>(v) : !std::in_range<std::int32_t>(v)) {
          throw std::invalid_argument("nflow::io::make_tensor: tensor " + detail::quote_name(name) + ": value " +
                                      std::to_string(v) + " does not fit " + std::string(dtype_name(dtype)));
        }
        if (dtype == DType::I64) {
          detail::store_le(p, std::bit_cast<std::uint64_t>(static_cast<std::int64_t>(v)));
        } else {
          detail::store_le(p, std::bit_cast<std::uint32_t>(static_cast<std::int32_t>(v)));
        }
      }
    }
  }
  return t;
}

/// @brief A tensor of rank ≤ 2 as a (column-major) matrix: a scalar is 1 × 1, [n] is n × 1,
/// [r, c] is r × c. Values are converted to `Scalar` (ParameterError if a finite value does not
/// fit a float). Throws FormatError for rank > 2.
template <typename Scalar>
ParameterMatrix<Scalar> to_matrix(const Tensor& t, std::string_view name = "") {
  if (t.shape.size() > 2) {
    detail::format_error("tensor " + detail::quote_name(name) + ": shape " + detail::shape_string(t.shape) +
                         " has more than 2 dimensions");
  }
  const auto rows = Index(t.shape.empty() ? 1 : t.shape[0]);
  const auto cols = Index(t.shape.size() == 2 ? t.shape[1] : 1);
  ParameterMatrix<Scalar> m(rows, cols);
  std::size_t k = 0;
  for (Index i = 0; i < rows; ++i) {
    for (Index j = 0; j < cols; ++j) m(i, j) = detail::checked_narrow<Scalar>(detail::element_as_double(t, k++), name, "to_matrix");
  }
  return m;
}

// ---- high level: objects with parameters --------------------------------------------------------

/// @brief Options of save(): the dtype of the file (default: the object's Scalar; F32 or F64)
/// and string metadata stored under "__metadata__".
struct SaveOptions {
  std::optional<DType> dtype;
  Metadata metadata;
};

/// @brief The tensors of every parameter of `object` (any type with `Scalar` and
/// `visit_parameters`: a bijector, a Flow, a Density), by their composed names, and of every
/// buffer (as I64 vectors).
/// @throws ParameterError if a value is not finite (it could not be loaded back) or does not fit
/// the chosen dtype; std::invalid_argument for an integer dtype.
template <typename T>
TensorFile to_tensor_file(const T& object, const SaveOptions& options = {}) {
  using Scalar = typename T::Scalar;
  const DType dtype = options.dtype.value_or(dtype_of<Scalar>());
  if (dtype != DType::F32 && dtype != DType::F64) {
    throw std::invalid_argument("nflow::io::save: parameters are saved as F32 or F64, not " +
                                std::string(dtype_name(dtype)));
  }
  TensorFile file;
  file.metadata = options.metadata;
  object.visit_parameters([&](const std::string& name, const auto& tensor) {
    for (Index j = 0; j < tensor.cols(); ++j) {
      for (Index i = 0; i < tensor.rows(); ++i) {
        if (!std::isfinite(tensor(i, j))) {
          throw ParameterError("nflow::io::save: tensor " + detail::quote_name(name) + " has a non-finite value at [" +
                               std::to_string(i) + ", " + std::to_string(j) + "]");
        }
      }
    }
    if (!file.tensors.emplace(name, make_tensor(tensor, dtype, name)).second) {
      throw std::logic_error("nflow::io::save: the object visits two parameters named " + detail::quote_name(name));
    }
  });
  visit_buffers(object, [&](const std::string& name, const BufferVector& b) {
    if (!file.tensors.emplace(name, make_tensor(b, DType::I64, name)).second) {
      throw std::logic_error("nflow::io::save: the object visits two tensors named " + detail::quote_name(name));
    }
  });
  return file;
}

/// @brief Saves every parameter of `object` to `out` as a safetensors file.
template <typename T>
void save(const T& object, std::ostream& out, const SaveOptions& options = {}) {
  write_safetensors(out, to_tensor_file(object, options));
}

/// @brief Saves every parameter of `object` to the file at `path` (created or truncated).
template <typename T>
void save(const T& object, const std::filesystem::path& path, const SaveOptions& options = {}) {
  write_safetensors(path, to_tensor_file(object, options));
}

namespace detail {

/// Adds the full tensor name to a ParameterError thrown by a layer while it re-validated what the
/// loader wrote. The layer names the tensor by its own name ("parameter 'log_s'", "buffer
/// 'order'"); the full name is the latest of the names written so far (`written`) that ends
/// with it ("3.log_s").
inline std::string annotate_layer_error(const std::vector<std::string>& written, const std::string& message) {
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
  return "nflow::io::load: the layer of tensor " + quote_name(last) + " rejected the loaded values: " + message;
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
template <typename T>
Metadata load(T& object, const TensorFile& file) {
  using Scalar = typename T::Scalar;
  static_assert(std::is_floating_point_v<Scalar>, "nflow::io::load: the object's Scalar must be float or double");
  // Pass 1 (reads only): check every name, dtype, shape and value, and convert.
  std::map<std::string, ParameterMatrix<Scalar>, std::less<>> values;
  std::as_const(object).visit_parameters([&](const std::string& name, const auto& expected) {
    const auto it = file.tensors.find(name);
    const std::string want = expected.cols() == 1
                                 ? "[" + std::to_string(expected.rows()) + "] (or [" + std::to_string(expected.rows()) + ", 1])"
                                 : "[" + std::to_string(expected.rows()) + ", " + std::to_string(expected.cols()) + "]";
    if (it == file.tensors.end()) {
      throw FormatError("nflow::io::load: missing tensor " + detail::quote_name(name) + " (expected shape " + want + ")");
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
          throw ParameterError("nflow::io::load: tensor " + detail::quote_name(name) + " has a non-finite value (" +
                               std::to_string(v) + ") at [" + std::to_string(i) + ", " + std::to_string(j) + "]");
        }
        m(i, j) = detail::checked_narrow<Scalar>(v, name, "load");
      }
    }
    if (!values.emplace(name, std::move(m)).second) {
      throw std::logic_error("nflow::io::load: the object visits two parameters named " + detail::quote_name(name));
    }
  });
  std::map<std::string, BufferVector, std::less<>> buffers;
  visit_buffers(std::as_const(object), [&](const std::string& name, const BufferVector& expected) {
    const auto it = file.tensors.find(name);
    const std::string want = "[" + std::to_string(expected.size()) + "]";
    if (it == file.tensors.end()) {
      throw FormatError("nflow::io::load: missing buffer " + detail::quote_name(name) + " (expected I64 of shape " +
                        want + ")");
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
      throw std::logic_error("nflow::io::load: the object visits two tensors named " + detail::quote_name(name));
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
        throw std::logic_error("nflow::io::load: the object's const and non-const visit_buffers disagree at " +
                               detail::quote_name(name));
      }
      b = it->second;
    });
    copy.visit_parameters([&](const std::string& name, auto&& tensor) {
      written.push_back(name);
      const auto it = values.find(name);
      if (it == values.end() || it->second.rows() != tensor.rows() || it->second.cols() != tensor.cols()) {
        throw std::logic_error("nflow::io::load: the object's const and non-const visit_parameters disagree at " +
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
template <typename T>
Metadata load(T& object, std::istream& in) {
  return load(object, read_safetensors(in));
}

/// @brief Loads `object` from the safetensors file at `path`.
template <typename T>
Metadata load(T& object, const std::filesystem::path& path) {
  return load(object, read_safetensors(path));
}

/// @brief Loads `object` from a whole safetensors file held in memory.
template <typename T>
Metadata load(T& object, std::span<const unsigned char> bytes) {
  return load(object, parse_safetensors(bytes));
}

/// @brief Every tensor of rank ≤ 2 in a file as a matrix (see to_matrix), for inspection;
/// throws FormatError if a tensor has rank > 2.
template <typename Scalar = double>
std::map<std::string, ParameterMatrix<Scalar>, std::less<>> load_parameters(const TensorFile& file) {
  std::map<std::string, ParameterMatrix<Scalar>, std::less<>> out;
  for (const auto& [name, t] : file.tensors) out.emplace(name, to_matrix<Scalar>(t, name));
  return out;
}

/// @brief load_parameters() of the file read from `in`.
template <typename Scalar = double>
std::map<std::string, ParameterMatrix<Scalar>, std::less<>> load_parameters(std::istream& in) {
  return load_parameters<Scalar>(read_safetensors(in));
}

/// @brief load_parameters() of the file at `path`.
template <typename Scalar = double>
std::map<std::string, ParameterMatrix<Scalar>, std::less<>> load_parameters(const std::filesystem::path& path) {
  return load_parameters<Scalar>(read_safetensors(path));
}

}  // namespace nflow::io
