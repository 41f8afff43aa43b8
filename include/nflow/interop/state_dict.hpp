#pragma once
/// @file
/// @brief StateDict: strict, key-by-key access to a PyTorch `state_dict()` saved as safetensors,
/// used by the nflows and zuko importers.
///
/// Every accessor names the key in its exception. Structure problems (a missing key, a key that
/// no layer uses, a wrong rank or shape) throw nflow::io::FormatError; well-formed values that
/// are invalid (NaN or ±inf, a mask entry other than 0/1, a non-integer index, an index out of
/// range, a permutation with a repeated index) throw nflow::ParameterError. Tensors of every
/// DType nflow reads (F64, F32, I64, I32, I8, U8, BOOL) are accepted for every key: PyTorch's
/// int64 buffers, bool masks and float32 weights convert exactly (BOOL to 0 and 1) or by rounding
/// to the requested Scalar.

#include <Eigen/Core>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "nflow/core/errors.hpp"
#include "nflow/core/types.hpp"
#include "nflow/io/errors.hpp"
#include "nflow/io/tensor_conversion.hpp"
#include "nflow/io/tensor_file.hpp"

namespace nflow::interop {

/// @brief A state dict being consumed by an importer: each key must be taken exactly once, and
/// finish() rejects keys nobody took.
class StateDict {
 public:
  /// @param file the tensors. @param source a name for messages (the file path).
  explicit StateDict(io::TensorFile file, std::string source = "state dict")
      : file_(std::move(file)), source_(std::move(source)) {}
  /// The state dict of the safetensors file at `path` (see from_file). Implicit, so that every
  /// importer, which takes a StateDict, also takes a file path: `load_zuko_maf("model.safetensors")`.
  template <typename Path>
  requires std::convertible_to<const Path&, std::filesystem::path> StateDict(
      const Path& path)  // NOLINT(google-explicit-constructor): a path is a state dict's source
      : StateDict(from_file(std::filesystem::path(path))) {}

  /// Reads the safetensors file at `path` with io::read_safetensors: the one strict reader, which
  /// also reads PyTorch's one-byte dtypes (BOOL: zuko's masks; U8; I8), so that
  /// `safetensors.torch.save_file(model.state_dict(), path)` loads as written.
  static StateDict from_file(const std::filesystem::path& path) {
    return StateDict(io::read_safetensors(path), path.string());
  }

  const std::string& source() const { return source_; }
  const io::TensorFile& file() const { return file_; }

  bool contains(std::string_view key) const {
    return file_.tensors.find(key) != file_.tensors.end();
  }

  /// True if some key starts with `prefix`.
  bool has_prefix(std::string_view prefix) const {
    auto it = file_.tensors.lower_bound(prefix);
    return it != file_.tensors.end() &&
           std::string_view(it->first).substr(0, prefix.size()) == prefix;
  }

  /// Every key that starts with `prefix`, in lexicographic order.
  std::vector<std::string> keys_with_prefix(std::string_view prefix) const {
    std::vector<std::string> out;
    for (auto it = file_.tensors.lower_bound(prefix); it != file_.tensors.end(); ++it) {
      if (std::string_view(it->first).substr(0, prefix.size()) != prefix) break;
      out.push_back(it->first);
    }
    return out;
  }

  /// The set of integers n such that some key starts with `prefix` + "n." (e.g. the layer
  /// indices under "transform.transforms."), ascending.
  std::vector<Index> child_indices(std::string_view prefix) const {
    std::set<Index> found;
    for (const std::string& k : keys_with_prefix(prefix)) {
      const std::string_view rest = std::string_view(k).substr(prefix.size());
      std::size_t n = 0;
      Index v = 0;
      while (n < rest.size() && rest[n] >= '0' && rest[n] <= '9' && n < 9) {
        v = v * 10 + Index(rest[n] - '0');
        ++n;
      }
      if (n > 0 && n < rest.size() && rest[n] == '.') found.insert(v);
    }
    return {found.begin(), found.end()};
  }

  /// The shape of `key` (FormatError if missing). Does not mark the key as used.
  const std::vector<std::uint64_t>& shape(std::string_view key) const { return tensor(key).shape; }

  /// Rows of a rank-2 tensor `key` ([rows, cols]); FormatError if missing or not rank 2.
  Index rows_of(std::string_view key) const { return Index(rank2(key).first); }
  Index cols_of(std::string_view key) const { return Index(rank2(key).second); }
  /// Length of a rank-1 tensor `key`; FormatError if missing or not rank 1.
  Index length_of(std::string_view key) const {
    const auto& s = shape(key);
    if (s.size() != 1) shape_error(key, "a 1-d tensor");
    return Index(s[0]);
  }

  /// A rank-2 tensor [rows, cols] as an Eigen matrix with the same (i, j); finite values only.
  template <typename Scalar>
  ParameterMatrix<Scalar> matrix(std::string_view key, Index rows, Index cols) {
    const io::Tensor& t = take(key);
    if (t.shape.size() != 2 || Index(t.shape[0]) != rows || Index(t.shape[1]) != cols) {
      shape_error(key, "[" + std::to_string(rows) + ", " + std::to_string(cols) + "]");
    }
    return finite(key, io::to_matrix<Scalar>(t, key));
  }

  /// A rank-1 tensor [n] as a column vector; finite values only.
  template <typename Scalar>
  Vector<Scalar> vector(std::string_view key, Index n) {
    const io::Tensor& t = take(key);
    if (t.shape.size() != 1 || Index(t.shape[0]) != n)
      shape_error(key, "[" + std::to_string(n) + "]");
    return finite(key, io::to_matrix<Scalar>(t, key)).col(0);
  }

  /// A 0/1 mask of shape [rows, cols] (float 0.0/1.0, integer or bool-as-number) as a bool-valued
  /// double matrix; ParameterError for any other value.
  Eigen::MatrixXd mask(std::string_view key, Index rows, Index cols) {
    const io::Tensor& t = take(key);
    if (t.shape.size() != 2 || Index(t.shape[0]) != rows || Index(t.shape[1]) != cols) {
      shape_error(key, "[" + std::to_string(rows) + ", " + std::to_string(cols) + "]");
    }
    return zero_one(key, io::to_matrix<double>(t, key));
  }
  /// A 0/1 vector of length n.
  Eigen::VectorXd mask_vector(std::string_view key, Index n) {
    const io::Tensor& t = take(key);
    if (t.shape.size() != 1 || Index(t.shape[0]) != n)
      shape_error(key, "[" + std::to_string(n) + "]");
    return zero_one(key, io::to_matrix<double>(t, key)).col(0);
  }

  /// An integer vector of length n (a degrees, order or index buffer) with values in [lo, hi].
  Eigen::VectorXi integers(std::string_view key, Index n, Index lo, Index hi) {
    const io::Tensor& t = take(key);
    if (t.shape.size() != 1 || Index(t.shape[0]) != n)
      shape_error(key, "[" + std::to_string(n) + "]");
    const Eigen::MatrixXd m = io::to_matrix<double>(t, key);
    Eigen::VectorXi out(n);
    for (Index i = 0; i < n; ++i) {
      const double v = m(i, 0);
      if (!std::isfinite(v) || v != std::floor(v) || v < double(lo) || v > double(hi)) {
        throw ParameterError("nflow::interop: tensor '" + std::string(key) + "' in " + source_ +
                             ": entry " + std::to_string(i) + " is " + std::to_string(v) +
                             ", expected an integer in [" + std::to_string(lo) + ", " +
                             std::to_string(hi) + "]");
      }
      out(i) = int(v);
    }
    return out;
  }

  /// A permutation of 0 … n−1 (ParameterError naming the key for a repeated or missing index).
  Eigen::VectorXi permutation(std::string_view key, Index n) {
    Eigen::VectorXi p = integers(key, n, 0, n - 1);
    std::vector<bool> seen(std::size_t(n), false);
    for (Index i = 0; i < n; ++i) {
      if (seen[std::size_t(p(i))]) {
        throw ParameterError("nflow::interop: tensor '" + std::string(key) + "' in " + source_ +
                             " is not a permutation: index " + std::to_string(p(i)) +
                             " appears twice");
      }
      seen[std::size_t(p(i))] = true;
    }
    return p;
  }

  /// Marks a key as used without reading it (BatchNorm1d's num_batches_tracked: one element).
  void skip_counter(std::string_view key) {
    const io::Tensor& t = take(key);
    if (t.element_count() != 1) shape_error(key, "one element ([] or [1])");
  }

  /// @brief Checks an option the caller gave against what the file holds (an unset option is
  /// not checked): FormatError "<what> = <given> was given, but the file holds a model with
  /// <what> = <found>". Every importer checks its options this way.
  void check_option(const char* what, const std::optional<Index>& given, Index found) const {
    if (given && *given != found) {
      fail(std::string(what) + " = " + std::to_string(*given) +
           " was given, but the file holds a model with " + what + " = " + std::to_string(found));
    }
  }
  void check_option(const char* what, const std::optional<bool>& given, bool found) const {
    if (given && *given != found) {
      fail(std::string(what) + " = " + (*given ? "True" : "False") +
           " was given, but the file holds a model with " + what + " = " +
           (found ? "True" : "False"));
    }
  }

  /// Throws FormatError naming the first keys that no importer step used.
  void finish(std::string_view what) const {
    std::vector<std::string> left;
    for (const auto& [k, t] : file_.tensors) {
      if (used_.find(k) == used_.end()) left.push_back(k);
    }
    if (left.empty()) return;
    std::string list;
    for (std::size_t i = 0; i < left.size() && i < 5; ++i)
      list += (i ? ", '" : "'") + left[i] + "'";
    if (left.size() > 5) list += ", ... (" + std::to_string(left.size()) + " in all)";
    throw io::FormatError("nflow::interop: " + std::string(what) + ": unexpected tensor(s) in " +
                          source_ + ": " + list + " (not part of the model this loader expects)");
  }

  /// Throws FormatError "<what>: <problem>" naming the source.
  [[noreturn]] void fail(std::string_view problem) const {
    throw io::FormatError("nflow::interop: " + std::string(problem) + " (in " + source_ + ")");
  }

 private:
  const io::Tensor& tensor(std::string_view key) const {
    auto it = file_.tensors.find(key);
    if (it == file_.tensors.end()) {
      throw io::FormatError("nflow::interop: missing tensor '" + std::string(key) + "' in " +
                            source_);
    }
    return it->second;
  }
  const io::Tensor& take(std::string_view key) {
    const io::Tensor& t = tensor(key);
    used_.insert(std::string(key));
    return t;
  }
  std::pair<std::uint64_t, std::uint64_t> rank2(std::string_view key) const {
    const auto& s = shape(key);
    if (s.size() != 2) shape_error(key, "a 2-d tensor");
    return {s[0], s[1]};
  }
  [[noreturn]] void shape_error(std::string_view key, const std::string& expected) const {
    throw io::FormatError("nflow::interop: tensor '" + std::string(key) + "' in " + source_ +
                          " has shape " + io::detail::shape_string(tensor(key).shape) +
                          ", expected " + expected);
  }
  template <typename Scalar>
  ParameterMatrix<Scalar> finite(std::string_view key, ParameterMatrix<Scalar> m) const {
    for (Index j = 0; j < m.cols(); ++j) {
      for (Index i = 0; i < m.rows(); ++i) {
        if (!std::isfinite(m(i, j))) {
          throw ParameterError("nflow::interop: tensor '" + std::string(key) + "' in " + source_ +
                               " holds a non-finite value at (" + std::to_string(i) + ", " +
                               std::to_string(j) + ")");
        }
      }
    }
    return m;
  }
  Eigen::MatrixXd zero_one(std::string_view key, Eigen::MatrixXd m) const {
    for (Index j = 0; j < m.cols(); ++j) {
      for (Index i = 0; i < m.rows(); ++i) {
        if (m(i, j) != 0.0 && m(i, j) != 1.0) {
          throw ParameterError("nflow::interop: mask '" + std::string(key) + "' in " + source_ +
                               " holds " + std::to_string(m(i, j)) + " at (" + std::to_string(i) +
                               ", " + std::to_string(j) + "); a mask must be 0 or 1");
        }
      }
    }
    return m;
  }

  io::TensorFile file_;
  std::string source_;
  std::set<std::string, std::less<>> used_;
};

}  // namespace nflow::interop
