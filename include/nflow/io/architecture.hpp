#pragma once
/// @file
/// @brief The light half of self-describing model files (docs/model_files.md): the schema
/// version, the metadata keys, JSON values built and written in code, and the comparison of two
/// descriptions that a typed io::load runs. No layer header is included here: the descriptions
/// of the layers are in nflow/io/describe.hpp, found through the ADL hook
/// `describe_architecture(object)` (see SelfDescribing in nflow/io/safetensors.hpp).

#include <charconv>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include "nflow/io/errors.hpp"
#include "nflow/io/json.hpp"
#include "nflow/io/tensor_file.hpp"
#include "nflow/version.hpp"

namespace nflow::io {

/// The model-file schema this library writes and the newest it reads.
inline int schema_version() { return 1; }

/// Metadata keys nflow writes (users may not write keys starting "nflow.").
inline constexpr std::string_view version_key = "nflow.version";
inline constexpr std::string_view schema_key = "nflow.schema";
inline constexpr std::string_view architecture_key = "nflow.architecture";

namespace json {

/// A JSON number of an integer.
inline Value integer(std::int64_t v) {
  Value out;
  out.kind = Value::Kind::Number;
  out.text = std::to_string(v);
  return out;
}
/// A JSON number of a floating value, in the shortest text that reads back as the same value of
/// its own type (a float's 10⁻³ is written "0.001", as a double's). Must be finite.
template <typename T>
requires std::is_floating_point_v<T> Value number(T v) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof(buf), v);
  Value out;
  out.kind = Value::Kind::Number;
  out.text.assign(buf, r.ptr);
  return out;
}
inline Value string(std::string s) {
  Value out;
  out.kind = Value::Kind::String;
  out.text = std::move(s);
  return out;
}
inline Value boolean(bool b) {
  Value out;
  out.kind = Value::Kind::Bool;
  out.boolean = b;
  return out;
}
inline Value array(std::vector<Value> items = {}) {
  Value out;
  out.kind = Value::Kind::Array;
  out.items = std::move(items);
  return out;
}
/// An object of the given members, in that order.
inline Value object(std::vector<Member> members) {
  Value out;
  out.kind = Value::Kind::Object;
  out.members = std::move(members);
  return out;
}

/// Appends `v` as compact JSON (no whitespace; members in their order).
inline void write(std::string& out, const Value& v) {
  switch (v.kind) {
    case Value::Kind::Null:
      out += "null";
      return;
    case Value::Kind::Bool:
      out += v.boolean ? "true" : "false";
      return;
    case Value::Kind::Number:
      out += v.text;
      return;
    case Value::Kind::String:
      append_quoted(out, v.text);
      return;
    case Value::Kind::Array:
      out += '[';
      for (std::size_t i = 0; i < v.items.size(); ++i) {
        if (i) out += ',';
        write(out, v.items[i]);
      }
      out += ']';
      return;
    case Value::Kind::Object:
      out += '{';
      for (std::size_t i = 0; i < v.members.size(); ++i) {
        if (i) out += ',';
        append_quoted(out, v.members[i].key);
        out += ':';
        write(out, v.members[i].value);
      }
      out += '}';
      return;
  }
}
inline std::string write(const Value& v) {
  std::string s;
  write(s, v);
  return s;
}

/// The value of a JSON number as a double (any literal the parser accepted), or nullopt.
inline std::optional<double> as_double(const Value& v) {
  if (v.kind != Value::Kind::Number) return std::nullopt;
  double d = 0;
  const char* b = v.text.data();
  const auto r = std::from_chars(b, b + v.text.size(), d);
  if (r.ec != std::errc() || r.ptr != b + v.text.size()) return std::nullopt;
  return d;
}
/// The value of a JSON number written as an integer (optional minus sign, digits), or nullopt.
inline std::optional<std::int64_t> as_int64(const Value& v) {
  if (v.kind != Value::Kind::Number) return std::nullopt;
  std::int64_t i = 0;
  const char* b = v.text.data();
  const auto r = std::from_chars(b, b + v.text.size(), i);
  if (r.ec != std::errc() || r.ptr != b + v.text.size()) return std::nullopt;
  return i;
}

}  // namespace json

/// @brief The schema number of a file's metadata: 0 when it has no "nflow.schema" (written
/// before the schema, or not by nflow).
/// @throws FormatError if the value is not a positive integer.
inline int schema_of(const Metadata& metadata) {
  const auto it = metadata.find(schema_key);
  if (it == metadata.end()) return 0;
  const std::string& s = it->second;
  int v = 0;
  const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  if (r.ec != std::errc() || r.ptr != s.data() + s.size() || v < 1) {
    throw FormatError("nflow::io: the file's metadata \"nflow.schema\" is '" + s +
                      "', not a positive integer");
  }
  return v;
}

/// @throws VersionError if the file's schema is newer than schema_version() (naming both).
inline void check_schema(const Metadata& metadata) {
  const int v = schema_of(metadata);
  if (v > schema_version()) {
    throw VersionError("nflow::io: the file was written with model-file schema " +
                       std::to_string(v) + " (nflow " +
                       (metadata.contains(version_key) ? metadata.find(version_key)->second
                                                       : std::string("unknown")) +
                       "); this library (nflow " NFLOW_VERSION_STRING ") reads schema " +
                       std::to_string(schema_version()) + " and older: update nflow");
  }
}

namespace detail {

inline std::string json_text_short(const json::Value& v) {
  std::string s = json::write(v);
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

/// "step 3 (coupling)"-style name of member `key` (index `i` for arrays) holding `v`.
inline std::string path_element(const std::string& key, const json::Value& v, std::size_t i,
                                bool in_array) {
  std::string s = in_array ? "step " + std::to_string(i) : key;
  if (in_array || key == "step" || key == "base" || key == "transform") {
    if (const json::Value* t = v.find("type"); t != nullptr && t->is_string()) {
      s += " (" + t->text + ")";
    }
  }
  return s;
}

inline bool same_number(const json::Value& a, const json::Value& b, bool as_float) {
  const auto x = json::as_double(a);
  const auto y = json::as_double(b);
  if (!x || !y) return a.text == b.text;
  return as_float ? float(*x) == float(*y) : *x == *y;
}

/// The first difference between a file's description and a type's, as "<where>: <what> in the
/// file, <what> in the type", or nullopt when they agree. Numbers are compared as values (as
/// floats when `as_float`, so a double file loads into a float type).
inline std::optional<std::string> first_difference(const json::Value& file, const json::Value& type,
                                                   bool as_float,
                                                   const std::string& where = "the model") {
  using K = json::Value::Kind;
  const auto differ = [&](const std::string& what_file, const std::string& what_type) {
    return std::optional<std::string>(where + ": " + what_file + " in the file, " + what_type +
                                      " in the type");
  };
  if (file.kind != type.kind) return differ(json_text_short(file), json_text_short(type));
  switch (file.kind) {
    case K::Null:
      return std::nullopt;
    case K::Bool:
      if (file.boolean != type.boolean) return differ(json::write(file), json::write(type));
      return std::nullopt;
    case K::Number:
      if (!same_number(file, type, as_float)) return differ(file.text, type.text);
      return std::nullopt;
    case K::String:
      if (file.text != type.text) return differ("'" + file.text + "'", "'" + type.text + "'");
      return std::nullopt;
    case K::Array:
      if (file.items.size() != type.items.size()) {
        return differ(std::to_string(file.items.size()) + " entries",
                      std::to_string(type.items.size()));
      }
      for (std::size_t i = 0; i < file.items.size(); ++i) {
        const bool steps = file.items[i].is_object();
        const std::string w = where + (steps ? ", " + path_element("", file.items[i], i, true)
                                             : " entry " + std::to_string(i));
        if (auto d = first_difference(file.items[i], type.items[i], as_float, w)) return d;
      }
      return std::nullopt;
    case K::Object:
      for (const json::Member& m : type.members) {
        const json::Value* f = file.find(m.key);
        if (f == nullptr)
          return std::optional<std::string>(where + ": no '" + m.key + "' in the file, " +
                                            json_text_short(m.value) + " in the type");
        if (f->is_object()) {
          const std::string w = where + ", " + path_element(m.key, *f, 0, false);
          if (auto d = first_difference(*f, m.value, as_float, w)) return d;
        } else if (f->is_array()) {
          const std::string w = m.key == "steps" ? where : where + ", " + m.key;
          if (auto d = first_difference(*f, m.value, as_float, w)) return d;
        } else if (f->kind != m.value.kind ||
                   (f->kind == K::Number ? !same_number(*f, m.value, as_float)
                                         : json::write(*f) != json::write(m.value))) {
          return std::optional<std::string>(where + ": " + m.key + " " + json_text_short(*f) +
                                            " in the file, " + json_text_short(m.value) +
                                            " in the type");
        }
      }
      for (const json::Member& m : file.members) {
        if (type.find(m.key) == nullptr) {
          return std::optional<std::string>(where + ": '" + m.key + "' " +
                                            json_text_short(m.value) +
                                            " in the file, which the type does not have");
        }
      }
      return std::nullopt;
  }
  return std::nullopt;
}

/// Checks a file's description (if any) against the type's `mine` (Null: the type cannot
/// describe itself, nothing to check).
/// @throws VersionError (newer schema), FormatError (unreadable or different description).
inline void check_description(const Metadata& metadata, const json::Value& mine, bool as_float) {
  check_schema(metadata);
  const auto it = metadata.find(architecture_key);
  if (it == metadata.end() || mine.kind == json::Value::Kind::Null) return;
  json::Value file;
  try {
    file = json::parse(it->second);
  } catch (const FormatError& e) {
    throw FormatError(std::string("nflow::io::load: the file's description (metadata "
                                  "\"nflow.architecture\") is not valid JSON: ") +
                      e.what());
  }
  if (auto d = first_difference(file, mine, as_float)) {
    throw FormatError(
        "nflow::io::load: the file describes another architecture than the type "
        "it is loaded into: " +
        *d);
  }
}

}  // namespace detail
}  // namespace nflow::io
