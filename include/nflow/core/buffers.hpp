#pragma once
/// @file
/// @brief Buffers by name: the integer state that defines a map but is not trained —
/// permutations, MADE orders and hidden degrees, coupling masks, LU permutations and signs,
/// ActNorm's initialised flag.
///
/// An object with buffers exposes `visit_buffers(f)`, next to `visit_parameters(f)`:
/// - const: calls `f(name, const BufferVector&)` once per buffer, in a fixed order;
/// - non-const: calls `f(name, BufferVector&)` once per buffer with its current value; `f` may
///   overwrite the value (with any length). When the object's visit ends it validates every new
///   value together and applies them, or throws nflow::ParameterError naming the buffer and
///   leaves itself unchanged (so a Flow whose third layer rejects a value keeps the values its
///   first two layers accepted: io::load works on a copy for that reason).
/// Names compose like parameter names: a Flow prefixes "<index>.", a Density "transform.".
/// Objects without buffers simply have no visit_buffers; the helpers below treat them as empty.

#include <Eigen/Core>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "nflow/core/errors.hpp"
#include "nflow/core/parameters.hpp"
#include "nflow/core/types.hpp"

namespace nflow {

/// @brief The value of one buffer: a vector of 64-bit integers (stored as I64 in files).
using BufferVector = Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1>;

/// @brief Calls `f(name, buffer)` for every buffer of `object` (nothing if it has none).
template <typename T, typename F>
void visit_buffers(T& object, F&& f) {
  if constexpr (requires { object.visit_buffers(f); }) object.visit_buffers(f);
}

/// @brief Names of all buffers of `object`, in visit order.
template <typename T>
std::vector<std::string> buffer_names(const T& object) {
  std::vector<std::string> names;
  visit_buffers(object,
                [&](const std::string& name, const BufferVector&) { names.push_back(name); });
  return names;
}

/// @brief All buffers of `object` by name.
template <typename T>
std::map<std::string, BufferVector, std::less<>> get_buffers(const T& object) {
  std::map<std::string, BufferVector, std::less<>> out;
  visit_buffers(object,
                [&](const std::string& name, const BufferVector& b) { out.emplace(name, b); });
  return out;
}

/// @brief Sets every buffer of `object` from `values` (which must hold each of its names; other
/// entries are ignored). Throws ParameterError naming a missing buffer, or the object's own
/// ParameterError for a value it rejects (see the file comment for what is then left applied).
template <typename T>
void set_buffers(T& object, const std::map<std::string, BufferVector, std::less<>>& values) {
  visit_buffers(object, [&](const std::string& name, BufferVector& b) {
    const auto it = values.find(name);
    if (it == values.end())
      throw ParameterError("nflow::set_buffers: no value for buffer '" + name + "'");
    b = it->second;
  });
}

namespace detail {

/// Visits the buffers of a member or step `b` under `prefix` (nothing if it has none).
template <typename B, typename F>
void visit_prefixed_buffers(B& b, std::string prefix, F& f) {
  if constexpr (requires { b.visit_buffers(f); })
    b.visit_buffers(prefixed_visitor(std::move(prefix), f));
}

/// An index vector as a buffer.
inline BufferVector to_buffer(const Eigen::VectorXi& v) { return v.cast<std::int64_t>(); }

/// A buffer read back as indices: exactly `size` entries, each in [lo, hi]; otherwise a
/// ParameterError "<owner>: buffer '<name>' ...".
inline Eigen::VectorXi buffer_to_indices(const char* owner, const std::string& name,
                                         const BufferVector& b, Index size, std::int64_t lo,
                                         std::int64_t hi) {
  if (b.size() != size) {
    throw ParameterError(std::string(owner) + ": buffer '" + name + "' has " +
                         std::to_string(b.size()) + " entries, expected " + std::to_string(size));
  }
  Eigen::VectorXi out(size);
  for (Index i = 0; i < size; ++i) {
    if (b(i) < lo || b(i) > hi) {
      throw ParameterError(std::string(owner) + ": buffer '" + name + "' entry " +
                           std::to_string(i) + " is " + std::to_string(b(i)) + ", outside [" +
                           std::to_string(lo) + ", " + std::to_string(hi) + "]");
    }
    out(i) = int(b(i));
  }
  return out;
}

/// A buffer that must be a permutation of 0 … size−1.
inline Eigen::VectorXi buffer_to_permutation(const char* owner, const std::string& name,
                                             const BufferVector& b, Index size) {
  Eigen::VectorXi p = buffer_to_indices(owner, name, b, size, 0, std::int64_t(size) - 1);
  std::vector<bool> seen(std::size_t(size), false);
  for (Index i = 0; i < size; ++i) {
    if (seen[std::size_t(p(i))]) {
      throw ParameterError(std::string(owner) + ": buffer '" + name + "' is not a permutation (" +
                           std::to_string(p(i)) + " appears twice)");
    }
    seen[std::size_t(p(i))] = true;
  }
  return p;
}

}  // namespace detail
}  // namespace nflow
