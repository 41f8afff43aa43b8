#pragma once
/// @file
/// @brief The C ABI's handle and its error plumbing (private to the nflow_c library).
///
/// `struct nflow_model` (opaque in include/nflow/c/nflow.h) is an abstract base here: each scalar
/// type's translation unit (scalar_float.cpp, scalar_double.cpp) derives ScalarModel<S>, which
/// owns an io::RuntimeModel<S>. api.cpp, which holds the entry points that do not depend on the
/// scalar type, sees only this interface and includes no flow header.

#include <nflow/c/nflow.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>

struct nflow_model {
  virtual ~nflow_model() = default;
  nflow_model() = default;
  nflow_model(const nflow_model&) = delete;
  nflow_model& operator=(const nflow_model&) = delete;

  virtual nflow_scalar scalar() const = 0;
  virtual std::size_t dim() const = 0;
  virtual std::size_t context_dim() const = 0;
  virtual std::size_t parameter_count() const = 0;
  /// Writes the model to a self-describing file (io::save of the run-time model).
  virtual void save(const char* path) const = 0;

  std::string description;  ///< io::describe(model): the architecture as JSON
  int schema_version = 0;   ///< of the file it came from (the library's own for a preset)
};

namespace nflow::c_api {

/// @brief A failure the C layer detects itself, with the status to return.
class Failure : public std::runtime_error {
 public:
  Failure(nflow_status status, const std::string& what)
      : std::runtime_error(what), status_(status) {}
  nflow_status status() const { return status_; }

 private:
  nflow_status status_;
};

/// How nflow's exceptions map to statuses depends on the call: while a model is being opened, a
/// shape or parameter error means the file describes an impossible model (NFLOW_ERROR_FORMAT).
enum class Phase { Open, Call };

/// Records `message` as the calling thread's last error (prefixed with the entry point's name)
/// and returns `status`.
nflow_status fail(const char* function, nflow_status status, std::string_view message) noexcept;

/// The status and message of the exception being handled (call only inside a catch block).
nflow_status fail_current(const char* function, Phase phase) noexcept;

/// Runs `body` (which returns nothing) and turns every exception into a status and the thread's
/// last-error message: the entry points' only way out.
template <typename F>
nflow_status guarded(const char* function, Phase phase, F&& body) noexcept {
  try {
    body();
    return NFLOW_OK;
  } catch (...) {
    return fail_current(function, phase);
  }
}

/// Throws NULL_POINTER for a null handle and SCALAR_TYPE unless it evaluates in `expected`
/// (`suffix`: "d" or "f", the entry point's).
void check_handle(const nflow_model* model, nflow_scalar expected, const char* suffix);

/// The value a C caller passed for an enum, read without a load of the enum type: a C caller may
/// pass any int, and in C++ a value outside the enumeration's range is undefined behaviour (UBSan
/// reports it). Take enum arguments by reference until they are checked.
template <typename E>
int raw_enum(const E& e) {
  static_assert(sizeof(E) == sizeof(int), "nflow.h's enums are int-sized");
  int v = 0;
  std::memcpy(&v, &e, sizeof v);
  return v;
}

/// Throws ARGUMENT unless `scalar` is NFLOW_FLOAT32, NFLOW_FLOAT64 or (if `file_allowed`)
/// NFLOW_SCALAR_FILE.
void check_scalar_argument(const nflow_scalar& scalar, bool file_allowed);

/// Throws NULL_POINTER naming `name` if `p` is null.
void require(const void* p, const char* name);

/// The options of nflow_create_preset (0: the preset's default), parsed from its JSON (null:
/// all defaults). Unknown keys, wrong types and invalid JSON are NFLOW_ERROR_ARGUMENT.
struct PresetArguments {
  std::ptrdiff_t transforms = 0, hidden_features = 0, hidden_layers = 0, context = 0, bins = 0;
  double bound = 0;
  std::uint64_t seed = 0;
};
PresetArguments parse_preset_options(const char* options_json);

/// The options of nflow_fit_* (defaults: nflow::train::FitOptions' and AdamOptions').
struct FitArguments {
  std::ptrdiff_t epochs = 10, batch_size = 256;
  double learning_rate = 1e-3;
  std::uint64_t seed = 1;
};
FitArguments parse_fit_options(const char* options_json);

/// The standard normal quantile Φ⁻¹(u) of u in (0, 1), to double precision.
double standard_normal_quantile(double u);

/// Opens a model from a file's bytes in scalar type S (the file's own type is decided by the
/// caller). Defined in scalar_<S>.cpp.
template <typename S>
nflow_model* open_model(std::span<const std::byte> bytes);

/// A fresh preset in scalar type S; `options_json` may be null. Defined in scalar_<S>.cpp.
template <typename S>
nflow_model* create_preset(std::string_view family, std::size_t dim, const char* options_json);

}  // namespace nflow::c_api
