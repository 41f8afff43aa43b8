#pragma once
/// @file
/// @brief Raw safetensors tensors ↔ Eigen matrices: make_tensor (a matrix into the bytes of any
/// DType), to_matrix (a tensor of rank ≤ 2, of any DType, into a matrix of float or double) and
/// load_parameters (every tensor of a file as a matrix, for inspection).
///
/// Layout conventions (see docs/io.md):
/// - A matrix (column-major in memory) of rows × cols is stored with shape [rows, cols] in
///   row-major order, so element (i, j) is at flat index i·cols + j, the PyTorch layout of the
///   same matrix (a Linear weight is [out, in] in both).
/// - A matrix with one column (a bias, a log-scale) is stored as a 1-D tensor [rows], like a
///   PyTorch bias.
///
/// Conversions are checked: a finite double beyond the range of a float throws
/// nflow::ParameterError naming the tensor (the conversion would be undefined), an integer that
/// does not fit its dtype std::invalid_argument, a tensor of rank > 2 nflow::io::FormatError.

#include <Eigen/Core>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <istream>
#include <limits>
#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "nflow/core/errors.hpp"
#include "nflow/core/types.hpp"
#include "nflow/io/tensor_file.hpp"

namespace nflow::io {

namespace detail {

/// Element `i` of a tensor of an integer dtype (I64, I32, I8, U8, BOOL), exactly.
inline std::int64_t element_as_int64(const Tensor& t, std::size_t i) {
  const unsigned char* p = t.data.data() + i * dtype_size(t.dtype);
  switch (t.dtype) {
    case DType::I32:
      return std::bit_cast<std::int32_t>(load_le<std::uint32_t>(p));
    case DType::I8:
      return std::bit_cast<std::int8_t>(*p);
    case DType::U8:
    case DType::BOOL:  // 0 or 1: the reader rejects other bytes
      return *p;
    case DType::I64:
    case DType::F32:
    case DType::F64:
      break;
  }
  return std::bit_cast<std::int64_t>(load_le<std::uint64_t>(p));
}

/// Element `i` of `t` as a double (exact for every dtype but I64, which rounds beyond 2^53).
inline double element_as_double(const Tensor& t, std::size_t i) {
  const unsigned char* p = t.data.data() + i * dtype_size(t.dtype);
  if (t.dtype == DType::F32) return double(std::bit_cast<float>(load_le<std::uint32_t>(p)));
  if (t.dtype == DType::F64) return std::bit_cast<double>(load_le<std::uint64_t>(p));
  return double(element_as_int64(t, i));
}

/// Converts a double to Scalar; throws ParameterError (naming the tensor) if a finite value is
/// out of Scalar's range (a float cannot hold 1e300; the conversion would be undefined).
template <typename Scalar>
Scalar checked_narrow(double v, std::string_view name, const char* where) {
  if constexpr (std::is_same_v<Scalar, float>) {
    if (std::isfinite(v) && std::abs(v) > double(std::numeric_limits<float>::max())) {
      throw ParameterError(std::string("nflow::io::") + where + ": tensor " + quote_name(name) +
                           " holds " + std::to_string(v) + ", outside the range of a float");
    }
  }
  return static_cast<Scalar>(v);
}

}  // namespace detail

/// @brief A tensor holding matrix `m` in `dtype`: shape [rows, cols] row-major, or [rows] when
/// `m` has one column. Floating values go to F32 or F64 (NaN and ±inf are stored as they are; a
/// finite value beyond the float range throws ParameterError naming `name`); integer matrices
/// may also go to I64, I32, I8, U8 or BOOL (values must fit: std::invalid_argument otherwise;
/// BOOL takes 0 and 1 only).
template <typename Derived>
Tensor make_tensor(const Eigen::MatrixBase<Derived>& m, DType dtype, std::string_view name = "") {
  using S = typename Derived::Scalar;
  static_assert(std::is_arithmetic_v<S>,
                "nflow::io::make_tensor: the matrix must hold float, double or integers");
  if (!is_floating(dtype) && std::is_floating_point_v<S>) {
    throw std::invalid_argument("nflow::io::make_tensor: tensor " + detail::quote_name(name) +
                                ": a floating-point matrix cannot be stored as " +
                                std::string(dtype_name(dtype)));
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
        const float f = std::is_floating_point_v<S>
                            ? detail::checked_narrow<float>(double(v), name, "make_tensor")
                            : static_cast<float>(v);
        detail::store_le(p, std::bit_cast<std::uint32_t>(f));
      } else if (dtype == DType::F64) {
        detail::store_le(p, std::bit_cast<std::uint64_t>(static_cast<double>(v)));
      } else if constexpr (std::is_integral_v<S>) {
        const auto [lo, hi] = detail::integer_range(dtype);
        if (!std::in_range<std::int64_t>(v) || std::int64_t(v) < lo || std::int64_t(v) > hi) {
          throw std::invalid_argument("nflow::io::make_tensor: tensor " + detail::quote_name(name) +
                                      ": value " + std::to_string(v) + " does not fit " +
                                      std::string(dtype_name(dtype)));
        }
        // Two's complement, little-endian, truncated to the element size.
        const auto u = static_cast<std::uint64_t>(static_cast<std::int64_t>(v));
        for (std::size_t b = 0; b < size; ++b) p[b] = static_cast<unsigned char>(u >> (8 * b));
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
    detail::format_error("tensor " + detail::quote_name(name) + ": shape " +
                         detail::shape_string(t.shape) + " has more than 2 dimensions");
  }
  const auto rows = Index(t.shape.empty() ? 1 : t.shape[0]);
  const auto cols = Index(t.shape.size() == 2 ? t.shape[1] : 1);
  ParameterMatrix<Scalar> m(rows, cols);
  std::size_t k = 0;
  for (Index i = 0; i < rows; ++i) {
    for (Index j = 0; j < cols; ++j)
      m(i, j) =
          detail::checked_narrow<Scalar>(detail::element_as_double(t, k++), name, "to_matrix");
  }
  return m;
}

/// @brief Every tensor of rank ≤ 2 in a file as a matrix (see to_matrix), for inspection;
/// throws FormatError if a tensor has rank > 2.
template <typename Scalar = double>
std::map<std::string, ParameterMatrix<Scalar>, std::less<>> load_parameters(
    const TensorFile& file) {
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
std::map<std::string, ParameterMatrix<Scalar>, std::less<>> load_parameters(
    const std::filesystem::path& path) {
  return load_parameters<Scalar>(read_safetensors(path));
}

}  // namespace nflow::io
