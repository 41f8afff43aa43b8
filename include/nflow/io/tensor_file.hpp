#pragma once
/// @file
/// @brief The safetensors byte format (the format of PyTorch and Hugging Face): a table of named
/// raw tensors (TensorFile) read from and written to bytes, streams and files. Nothing here knows
/// about Eigen or nflow's objects; nflow/io/tensor_conversion.hpp turns a raw Tensor into a matrix
/// and back, nflow/io/safetensors.hpp saves and loads whole objects.
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
/// Hostile input: every length and offset is checked against the bytes actually present before it
/// is used (no read out of bounds, no allocation larger than the input; the JSON nesting depth is
/// bounded). Malformed content throws nflow::io::FormatError, an unreadable stream or file
/// nflow::io::IoError. The reader is fuzzed by tests/fuzz/safetensors_fuzz.cpp.

#include <algorithm>
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
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "nflow/io/errors.hpp"
#include "nflow/io/json.hpp"

namespace nflow::io {

/// @brief Element types nflow reads: F32 and F64 for parameter values, I32 and I64 for integer
/// buffers (nflow writes I64), and PyTorch's one-byte types I8, U8 and BOOL (zuko's masks), which
/// the importers read as `safetensors.torch.save_file` writes them. Each is named as in the file
/// ("F32", ..., "BOOL"). Other safetensors dtypes (F16, BF16, I16, U64, ...) are rejected with a
/// FormatError that names the tensor and the dtype.
///
/// A BOOL element is one byte, 0 or 1 (the reader rejects any other byte); it converts to 0 or 1.
enum class DType { F32, F64, I32, I64, I8, U8, BOOL };

/// Every dtype nflow reads, in the order of the enumeration.
inline constexpr DType all_dtypes[] = {DType::F32, DType::F64, DType::I32, DType::I64,
                                       DType::I8,  DType::U8,  DType::BOOL};

/// The safetensors name of a dtype ("F32", ...).
inline std::string_view dtype_name(DType d) {
  switch (d) {
    case DType::F32:
      return "F32";
    case DType::F64:
      return "F64";
    case DType::I32:
      return "I32";
    case DType::I64:
      return "I64";
    case DType::I8:
      return "I8";
    case DType::U8:
      return "U8";
    case DType::BOOL:
      return "BOOL";
  }
  return "?";
}

/// Bytes per element: 8 for F64 and I64, 4 for F32 and I32, 1 for I8, U8 and BOOL.
inline std::size_t dtype_size(DType d) {
  switch (d) {
    case DType::F64:
    case DType::I64:
      return 8;
    case DType::F32:
    case DType::I32:
      return 4;
    case DType::I8:
    case DType::U8:
    case DType::BOOL:
      return 1;
  }
  return 0;
}

/// True for F32 and F64; every other dtype holds integers (BOOL: 0 and 1).
inline bool is_floating(DType d) { return d == DType::F32 || d == DType::F64; }

/// The dtype called `name`, or std::nullopt if nflow does not support it.
inline std::optional<DType> dtype_from_name(std::string_view name) {
  for (DType d : all_dtypes) {
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
    static_assert(std::is_same_v<S, std::int64_t>,
                  "nflow::io::dtype_of<S>: S must be float, double, int32_t or int64_t");
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

/// "tensor 'x.mask' (BOOL, shape [4, 3])": how every message about one tensor names it, in the
/// file's own dtype.
inline std::string tensor_label(std::string_view name, DType dtype,
                                const std::vector<std::uint64_t>& shape) {
  return "tensor " + quote_name(name) + " (" + std::string(dtype_name(dtype)) + ", shape " +
         shape_string(shape) + ")";
}

/// The values an integer dtype holds, [lo, hi] (BOOL: [0, 1]).
inline std::pair<std::int64_t, std::int64_t> integer_range(DType d) {
  switch (d) {
    case DType::I8:
      return {-128, 127};
    case DType::U8:
      return {0, 255};
    case DType::BOOL:
      return {0, 1};
    case DType::I32:
      return {std::numeric_limits<std::int32_t>::min(), std::numeric_limits<std::int32_t>::max()};
    case DType::I64:
    case DType::F32:
    case DType::F64:
      break;
  }
  return {std::numeric_limits<std::int64_t>::min(), std::numeric_limits<std::int64_t>::max()};
}

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
  if (!u)
    format_error("tensor " + quote_name(name) + ": every entry of '" + field +
                 "' must be a non-negative integer");
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
        if (!kv.value.is_string())
          format_error("'__metadata__' entry " + quote_name(kv.key) + " must be a string");
        h.metadata.emplace(kv.key, std::move(kv.value.text));
      }
      continue;
    }
    const std::string& name = m.key;
    const json::Value& info = m.value;
    if (!info.is_object())
      format_error("tensor " + quote_name(name) + ": the entry must be an object");
    for (const json::Member& f : info.members) {
      if (f.key != "dtype" && f.key != "shape" && f.key != "data_offsets") {
        format_error("tensor " + quote_name(name) + ": unexpected field " + quote_name(f.key));
      }
    }
    const json::Value* dtype = info.find("dtype");
    const json::Value* shape = info.find("shape");
    const json::Value* offsets = info.find("data_offsets");
    if (!dtype || !shape || !offsets) {
      format_error("tensor " + quote_name(name) +
                   ": the entry needs 'dtype', 'shape' and 'data_offsets'");
    }
    HeaderEntry e;
    e.name = name;
    if (!dtype->is_string())
      format_error("tensor " + quote_name(name) + ": 'dtype' must be a string");
    const auto d = dtype_from_name(dtype->text);
    if (!d) {
      format_error("tensor " + quote_name(name) + ": dtype " + quote_name(dtype->text) +
                   " is not supported (nflow reads F32, F64, I32, I64, I8, U8 and BOOL)");
    }
    e.dtype = *d;
    if (!shape->is_array())
      format_error("tensor " + quote_name(name) + ": 'shape' must be an array");
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
      format_error("tensor " + quote_name(name) + ": data_offsets [" + std::to_string(e.begin) +
                   ", " + std::to_string(e.end) + "] end before they begin");
    }
    const std::uint64_t size = dtype_size(e.dtype);
    overflow = overflow || count > std::numeric_limits<std::uint64_t>::max() / size;
    if (overflow || count * size != e.end - e.begin) {
      format_error(tensor_label(name, e.dtype, e.shape) + " needs " +
                   (overflow ? std::string("more than 2^64") : std::to_string(count * size)) +
                   " bytes, but its data_offsets [" + std::to_string(e.begin) + ", " +
                   std::to_string(e.end) + "] span " + std::to_string(e.end - e.begin));
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
      format_error("tensor " + quote_name(e->name) + ": data_offsets [" + std::to_string(e->begin) +
                   ", " + std::to_string(e->end) + "] overlap tensor " +
                   quote_name(previous->name));
    }
    if (e->begin > expected) {
      format_error("tensor " + quote_name(e->name) + ": data_offsets [" + std::to_string(e->begin) +
                   ", " + std::to_string(e->end) +
                   "] leave a gap: the previous tensor ends at byte " + std::to_string(expected));
    }
    expected = e->end;
    previous = e;
  }
  h.data_size = expected;
  return h;
}

/// FormatError if `dtype` is BOOL and one of the `n` bytes at `p` is neither 0 nor 1.
inline void check_bool_bytes(std::string_view name, DType dtype,
                             const std::vector<std::uint64_t>& shape, const unsigned char* p,
                             std::uint64_t n) {
  if (dtype != DType::BOOL) return;
  for (std::uint64_t k = 0; k < n; ++k) {
    if (p[k] > 1) {
      format_error(tensor_label(name, dtype, shape) + " holds the byte " +
                   std::to_string(int(p[k])) + " at element " + std::to_string(k) +
                   "; a BOOL element is 0 or 1");
    }
  }
}

/// Checks that the `available` bytes of data hold every tensor of `h` (FormatError "truncated",
/// naming the first tensor cut short, if not) and, if `exact`, nothing more. `source` is "file"
/// or "stream", for the message.
inline void check_data_size(const Header& h, std::uint64_t available, bool exact,
                            const char* source) {
  if (available < h.data_size) {
    const HeaderEntry* cut = nullptr;
    for (const HeaderEntry& e : h.entries) {
      if (e.end > available && (!cut || e.begin < cut->begin)) cut = &e;
    }
    format_error("truncated: the tensors need " + std::to_string(h.data_size) +
                 " bytes of data, the " + source + " has " + std::to_string(available) + "; " +
                 tensor_label(cut->name, cut->dtype, cut->shape) + " at data_offsets [" +
                 std::to_string(cut->begin) + ", " + std::to_string(cut->end) + "] is cut short");
  }
  if (exact && available > h.data_size) {
    format_error("the data buffer has " + std::to_string(available) +
                 " bytes but the tensors cover only " + std::to_string(h.data_size));
  }
}

/// Attaches the bytes (exactly h.data_size of them) to the entries; FormatError for a BOOL
/// element other than 0 or 1.
inline TensorFile assemble(Header&& h, const unsigned char* data) {
  TensorFile f;
  f.metadata = std::move(h.metadata);
  for (HeaderEntry& e : h.entries) {
    check_bool_bytes(e.name, e.dtype, e.shape, data + e.begin, e.end - e.begin);
    Tensor t;
    t.dtype = e.dtype;
    t.shape = std::move(e.shape);
    t.data.assign(data + e.begin, data + e.end);
    f.tensors.emplace(std::move(e.name), std::move(t));
  }
  return f;
}

/// Reads up to `n` bytes (fewer if the stream ends first), growing the buffer as bytes arrive (a
/// hostile length costs no more memory than the stream really holds).
inline std::vector<unsigned char> read_up_to(std::istream& in, std::uint64_t n) {
  std::vector<unsigned char> out;
  constexpr std::uint64_t chunk = std::uint64_t(1) << 20;
  while (out.size() < n) {
    const std::uint64_t want = std::min<std::uint64_t>(chunk, n - out.size());
    const std::size_t old = out.size();
    out.resize(old + std::size_t(want));
    in.read(reinterpret_cast<char*>(out.data() + old), std::streamsize(want));
    const auto got = std::uint64_t(in.gcount());
    if (got < want) {
      out.resize(old + std::size_t(got));
      break;
    }
  }
  return out;
}

/// Reads exactly `n` bytes; throws FormatError naming `what` if the stream ends first.
inline std::vector<unsigned char> read_exact(std::istream& in, std::uint64_t n,
                                             const std::string& what) {
  std::vector<unsigned char> out = read_up_to(in, n);
  if (out.size() < n) {
    format_error("truncated: the stream ended after " + std::to_string(out.size()) + " of the " +
                 std::to_string(n) + " bytes of " + what);
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
    detail::format_error("the header length " + std::to_string(n) +
                         " runs past the end of the file (" + std::to_string(bytes.size() - 8) +
                         " bytes follow the length)");
  }
  detail::Header h = detail::parse_header(
      std::string_view(reinterpret_cast<const char*>(bytes.data() + 8), std::size_t(n)));
  detail::check_data_size(h, bytes.size() - 8 - n, true, "file");
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
    detail::Header h = detail::parse_header(
        std::string_view(reinterpret_cast<const char*>(header.data()), header.size()));
    const std::vector<unsigned char> data = detail::read_up_to(in, h.data_size);
    detail::check_data_size(h, data.size(), false, "stream");
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
/// "__metadata__", a tensor's byte count does not match its shape and dtype, or a BOOL byte is
/// neither 0 nor 1 (the writer never writes what the reader rejects).
inline std::vector<unsigned char> serialize_safetensors(const TensorFile& file) {
  auto check_utf8 = [](std::string_view s, const char* what) {
    if (!json::is_valid_utf8(s))
      detail::format_error(std::string(what) + " " + detail::quote_name(s) + " is not valid UTF-8");
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
      detail::format_error(detail::tensor_label(name, t.dtype, t.shape) + ": " +
                           std::to_string(t.data.size()) + " bytes of data do not match the shape");
    }
    detail::check_bool_bytes(name, t.dtype, t.shape, t.data.data(), t.data.size());
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
    header += "],\"data_offsets\":[" + std::to_string(offset) + ',' +
              std::to_string(offset + t->data.size()) + "]}";
    offset += t->data.size();
  }
  header += '}';
  while ((8 + header.size()) % 8 != 0) header += ' ';
  std::vector<unsigned char> out(8 + header.size());
  detail::store_le<std::uint64_t>(out.data(), header.size());
  std::copy(header.begin(), header.end(), out.begin() + 8);
  out.reserve(out.size() + std::size_t(offset));
  for (const auto& entry : order)
    out.insert(out.end(), entry.second->data.begin(), entry.second->data.end());
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
  if (!out)
    throw IoError("nflow::io::safetensors: cannot open '" + path.string() + "' for writing");
  out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  out.close();
  if (!out) throw IoError("nflow::io::safetensors: writing '" + path.string() + "' failed");
}

}  // namespace nflow::io
