#pragma once
/// @file
/// @brief A small, strict JSON (RFC 8259) parser and string writer, used for safetensors headers.
///
/// Why not nlohmann-json (or another library)? nflow is header-only with Eigen as its only
/// dependency; an optional JSON dependency for one header would make the I/O header compile or not
/// depending on the machine, and would bring a large header into every translation unit that saves
/// a flow. A safetensors header needs only a small subset of JSON (objects, arrays, strings,
/// non-negative integers), and a parser for all of JSON that is *strict* — it rejects duplicate
/// keys, trailing garbage, invalid UTF-8, lone surrogates, leading zeros, control characters in
/// strings and nesting deeper than a fixed limit — is a few hundred lines that are easy to read
/// and to fuzz (tests/fuzz/safetensors_fuzz.cpp). nlohmann-json, for example, accepts duplicate
/// keys by default (the last one wins), which a loader of untrusted files must not do.
///
/// The parser builds a small document tree (Value). Numbers keep the text they were written with;
/// Value::as_uint64() reads the exact non-negative integers that shapes and offsets are.
/// Whitespace (space, tab, CR, LF) may surround the top-level value (safetensors pads its header
/// with spaces). Errors throw nflow::io::FormatError with the byte offset of the problem.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "nflow/io/errors.hpp"

namespace nflow::io::json {

struct Member;

/// @brief A parsed JSON value. Exactly one of the fields is meaningful, chosen by `kind`.
struct Value {
  enum class Kind { Null, Bool, Number, String, Array, Object };

  Kind kind = Kind::Null;
  bool boolean = false;         ///< Kind::Bool
  std::string text;             ///< Kind::String: the decoded UTF-8; Kind::Number: the literal
  std::vector<Value> items;     ///< Kind::Array
  std::vector<Member> members;  ///< Kind::Object, in document order; keys are unique

  bool is_object() const { return kind == Kind::Object; }
  bool is_array() const { return kind == Kind::Array; }
  bool is_string() const { return kind == Kind::String; }
  bool is_number() const { return kind == Kind::Number; }

  /// The member named `key` of an object, or nullptr (also when this is not an object).
  inline const Value* find(std::string_view key) const;

  /// The value of a number written as a plain non-negative integer (digits only: no sign,
  /// fraction or exponent) that fits in 64 bits; std::nullopt otherwise.
  std::optional<std::uint64_t> as_uint64() const {
    if (kind != Kind::Number || text.empty()) return std::nullopt;
    std::uint64_t v = 0;
    for (char c : text) {
      if (c < '0' || c > '9') return std::nullopt;
      const auto digit = std::uint64_t(c - '0');
      if (v > (UINT64_MAX - digit) / 10) return std::nullopt;
      v = v * 10 + digit;
    }
    return v;
  }
};

/// @brief One `"key": value` pair of an object.
struct Member {
  std::string key;
  Value value;
};

inline const Value* Value::find(std::string_view key) const {
  if (kind != Kind::Object) return nullptr;
  for (const Member& m : members) {
    if (m.key == key) return &m.value;
  }
  return nullptr;
}

/// @brief Human-readable name of a kind, for error messages.
inline const char* kind_name(Value::Kind k) {
  switch (k) {
    case Value::Kind::Null:
      return "null";
    case Value::Kind::Bool:
      return "a boolean";
    case Value::Kind::Number:
      return "a number";
    case Value::Kind::String:
      return "a string";
    case Value::Kind::Array:
      return "an array";
    case Value::Kind::Object:
      return "an object";
  }
  return "?";
}

/// Deepest nesting of arrays and objects the parser accepts (bounds its recursion).
inline constexpr int max_depth = 64;
/// Most values (of any kind, nested ones included) in one document. Bounds the memory a hostile
/// header can make the parser use (each value is a tree node of about 100 bytes); a safetensors
/// header needs about six values per tensor, so this allows more than 150,000 tensors.
inline constexpr std::size_t max_values = 1'000'000;

namespace detail {

/// Length of the well-formed UTF-8 sequence that starts at s[pos] (1 for ASCII), or 0 if it is
/// malformed: truncated, overlong, a surrogate, or above U+10FFFF.
inline std::size_t utf8_sequence_length(std::string_view s, std::size_t pos) {
  const auto b0 = static_cast<unsigned char>(s[pos]);
  if (b0 < 0x80) return 1;
  std::size_t len = 0;
  std::uint32_t cp = 0;
  std::uint32_t min = 0;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
    cp = b0 & 0x1Fu;
    min = 0x80;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    cp = b0 & 0x0Fu;
    min = 0x800;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    cp = b0 & 0x07u;
    min = 0x10000;
  } else {
    return 0;
  }
  if (s.size() - pos < len) return 0;
  for (std::size_t i = 1; i < len; ++i) {
    const auto b = static_cast<unsigned char>(s[pos + i]);
    if ((b & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b & 0x3Fu);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return len;
}

class Parser {
 public:
  explicit Parser(std::string_view s) : s_(s) {}

  Value parse_document() {
    skip_ws();
    Value v = parse_value(0);
    skip_ws();
    if (pos_ != s_.size()) fail("unexpected characters after the JSON value");
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw FormatError("nflow::io::json: at byte " + std::to_string(pos_) + ": " + what);
  }

  bool at_end() const { return pos_ >= s_.size(); }
  unsigned char peek() const { return static_cast<unsigned char>(s_[pos_]); }

  void skip_ws() {
    while (!at_end() && (peek() == ' ' || peek() == '\t' || peek() == '\n' || peek() == '\r'))
      ++pos_;
  }

  void expect(char c, const char* what) {
    if (at_end() || s_[pos_] != c) fail(std::string("expected ") + what);
    ++pos_;
  }

  Value parse_value(int depth) {
    if (at_end()) fail("unexpected end of input, expected a value");
    if (++values_ > max_values) fail("more than " + std::to_string(max_values) + " values");
    Value v;
    switch (s_[pos_]) {
      case '{':
        parse_object(v, depth + 1);
        break;
      case '[':
        parse_array(v, depth + 1);
        break;
      case '"':
        v.kind = Value::Kind::String;
        v.text = parse_string();
        break;
      case 't':
        literal("true");
        v.kind = Value::Kind::Bool;
        v.boolean = true;
        break;
      case 'f':
        literal("false");
        v.kind = Value::Kind::Bool;
        break;
      case 'n':
        literal("null");
        break;
      default:
        if (s_[pos_] == '-' || (s_[pos_] >= '0' && s_[pos_] <= '9')) {
          v.kind = Value::Kind::Number;
          v.text = parse_number();
        } else {
          fail("unexpected character, expected a value");
        }
    }
    return v;
  }

  void literal(std::string_view word) {
    if (s_.substr(pos_, word.size()) != word)
      fail("invalid literal, expected '" + std::string(word) + "'");
    pos_ += word.size();
  }

  void parse_object(Value& v, int depth) {
    if (depth > max_depth) fail("nesting deeper than " + std::to_string(max_depth));
    v.kind = Value::Kind::Object;
    ++pos_;  // '{'
    skip_ws();
    if (!at_end() && s_[pos_] == '}') {
      ++pos_;
      return;
    }
    std::set<std::string, std::less<>> seen;
    for (;;) {
      skip_ws();
      if (at_end() || s_[pos_] != '"') fail("expected a string key in an object");
      const std::size_t key_pos = pos_;
      std::string key = parse_string();
      if (!seen.insert(key).second) {
        pos_ = key_pos;
        fail("duplicate key \"" + key + "\" in an object");
      }
      skip_ws();
      expect(':', "':' after an object key");
      skip_ws();
      Value item = parse_value(depth);
      v.members.push_back(Member{std::move(key), std::move(item)});
      skip_ws();
      if (at_end()) fail("unexpected end of input in an object");
      if (s_[pos_] == ',') {
        ++pos_;
        continue;
      }
      expect('}', "',' or '}' in an object");
      return;
    }
  }

  void parse_array(Value& v, int depth) {
    if (depth > max_depth) fail("nesting deeper than " + std::to_string(max_depth));
    v.kind = Value::Kind::Array;
    ++pos_;  // '['
    skip_ws();
    if (!at_end() && s_[pos_] == ']') {
      ++pos_;
      return;
    }
    for (;;) {
      skip_ws();
      v.items.push_back(parse_value(depth));
      skip_ws();
      if (at_end()) fail("unexpected end of input in an array");
      if (s_[pos_] == ',') {
        ++pos_;
        continue;
      }
      expect(']', "',' or ']' in an array");
      return;
    }
  }

  std::string parse_number() {
    const std::size_t start = pos_;
    auto digits = [&] {
      const std::size_t d = pos_;
      while (!at_end() && peek() >= '0' && peek() <= '9') ++pos_;
      return pos_ - d;
    };
    if (s_[pos_] == '-') ++pos_;
    if (at_end()) fail("unexpected end of input in a number");
    if (s_[pos_] == '0') {
      ++pos_;
      if (!at_end() && peek() >= '0' && peek() <= '9')
        fail("leading zeros are not allowed in a number");
    } else if (digits() == 0) {
      fail("expected a digit in a number");
    }
    if (!at_end() && s_[pos_] == '.') {
      ++pos_;
      if (digits() == 0) fail("expected a digit after the decimal point");
    }
    if (!at_end() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
      ++pos_;
      if (!at_end() && (s_[pos_] == '+' || s_[pos_] == '-')) ++pos_;
      if (digits() == 0) fail("expected a digit in an exponent");
    }
    return std::string(s_.substr(start, pos_ - start));
  }

  unsigned hex4() {
    if (s_.size() - pos_ < 4) fail("truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = s_[pos_++];
      v <<= 4;
      if (c >= '0' && c <= '9')
        v |= unsigned(c - '0');
      else if (c >= 'a' && c <= 'f')
        v |= unsigned(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F')
        v |= unsigned(c - 'A' + 10);
      else
        fail("invalid hex digit in a \\u escape");
    }
    return v;
  }

  static void append_utf8(std::string& out, std::uint32_t cp) {
    if (cp < 0x80) {
      out += char(cp);
    } else if (cp < 0x800) {
      out += char(0xC0 | (cp >> 6));
      out += char(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += char(0xE0 | (cp >> 12));
      out += char(0x80 | ((cp >> 6) & 0x3F));
      out += char(0x80 | (cp & 0x3F));
    } else {
      out += char(0xF0 | (cp >> 18));
      out += char(0x80 | ((cp >> 12) & 0x3F));
      out += char(0x80 | ((cp >> 6) & 0x3F));
      out += char(0x80 | (cp & 0x3F));
    }
  }

  /// Copies one UTF-8 encoded code point (first byte >= 0x80) after validating it.
  void copy_utf8(std::string& out) {
    const std::size_t len = utf8_sequence_length(s_, pos_);
    if (len == 0) fail("invalid UTF-8 in a string");
    out.append(s_.substr(pos_, len));
    pos_ += len;
  }

  std::string parse_string() {
    ++pos_;  // opening quote
    std::string out;
    for (;;) {
      if (at_end()) fail("unterminated string");
      const unsigned char c = peek();
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (c < 0x20) fail("unescaped control character in a string");
      if (c >= 0x80) {
        copy_utf8(out);
        continue;
      }
      ++pos_;
      if (c != '\\') {
        out += char(c);
        continue;
      }
      if (at_end()) fail("unterminated escape in a string");
      const char e = s_[pos_++];
      switch (e) {
        case '"':
          out += '"';
          break;
        case '\\':
          out += '\\';
          break;
        case '/':
          out += '/';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u': {
          std::uint32_t cp = hex4();
          if (cp >= 0xDC00 && cp <= 0xDFFF) fail("lone low surrogate in a \\u escape");
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (s_.substr(pos_, 2) != "\\u") fail("high surrogate not followed by a low surrogate");
            pos_ += 2;
            const std::uint32_t lo = hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) fail("high surrogate not followed by a low surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          append_utf8(out, cp);
          break;
        }
        default:
          fail("invalid escape in a string");
      }
    }
  }

  std::string_view s_;
  std::size_t pos_ = 0;
  std::size_t values_ = 0;
};

}  // namespace detail

/// @brief Parses one JSON document (a single value, optionally surrounded by whitespace).
/// @throws nflow::io::FormatError naming the byte offset and the problem.
inline Value parse(std::string_view text) { return detail::Parser(text).parse_document(); }

/// @brief True if `s` is well-formed UTF-8 (no overlong forms, surrogates or values > U+10FFFF).
inline bool is_valid_utf8(std::string_view s) {
  for (std::size_t pos = 0; pos < s.size();) {
    const std::size_t len = detail::utf8_sequence_length(s, pos);
    if (len == 0) return false;
    pos += len;
  }
  return true;
}

/// @brief Appends `s` to `out` as a JSON string literal (quotes, backslashes and control
/// characters escaped; other bytes copied, so `s` must be valid UTF-8).
inline void append_quoted(std::string& out, std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  out += '"';
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c < 0x20) {
      out += "\\u00";
      out += hex[c >> 4];
      out += hex[c & 0xF];
    } else {
      out += char(c);
    }
  }
  out += '"';
}

}  // namespace nflow::io::json
