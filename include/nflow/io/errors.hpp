#pragma once
/// @file
/// @brief The exceptions nflow's file I/O throws.
///
/// - nflow::io::IoError: a file or stream could not be opened, read or written.
/// - nflow::io::FormatError (an IoError): the bytes are not a valid file of the expected format,
///   or do not match the object being filled (a missing or unexpected tensor name, a wrong shape
///   or dtype). The message names the tensor and the problem.
/// - Values that are well-formed but invalid for the object (NaN, ±inf, a double too large for a
///   float, or a value a layer rejects such as a singular LU diagonal) throw nflow::ParameterError
///   instead, naming the tensor.
/// - nflow::io::VersionError (a FormatError): a model file of a newer schema.

#include <stdexcept>
#include <string>

namespace nflow::io {

/// @brief A file or stream could not be opened, read or written.
class IoError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// @brief The content is malformed, or does not match the object it is loaded into.
class FormatError : public IoError {
 public:
  using IoError::IoError;
};

/// @brief The file was written with a newer model-file schema than this library reads (see
/// docs/model_files.md); the message names both versions.
class VersionError : public FormatError {
 public:
  using FormatError::FormatError;
};

}  // namespace nflow::io
