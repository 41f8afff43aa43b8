// nflow's Python extension `nflow._nflow`: a thin pybind11 layer over the C ABI
// (include/nflow/c/nflow.h) and nothing else. The package python/nflow/__init__.py puts the user's
// arrays in shape and dtype; this file picks the C ABI's layout and strides from each NumPy array
// (copying only an array that no layout describes), releases the GIL around every C call and turns
// a failed status into a Python exception carrying nflow_last_error()'s sentence.
#include <nflow/c/nflow.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <utility>

namespace py = pybind11;

namespace {

// ---- exceptions ----------------------------------------------------------------------------
// Created once at import and owned by the module (borrowed here).
struct ErrorTypes {
  PyObject* base = nullptr;         // NflowError
  PyObject* format = nullptr;       // FormatError(NflowError)
  PyObject* version = nullptr;      // VersionError(FormatError)
  PyObject* input = nullptr;        // InputError(NflowError, ValueError)
  PyObject* scalar_type = nullptr;  // ScalarTypeError(NflowError, TypeError)
  PyObject* unsupported = nullptr;  // UnsupportedError(NflowError, NotImplementedError)
  PyObject* file = nullptr;         // FileError(NflowError, OSError)
};
ErrorTypes errors;

PyObject* error_type(nflow_status status) {
  switch (status) {
    case NFLOW_ERROR_FORMAT:
      return errors.format;
    case NFLOW_ERROR_VERSION:
      return errors.version;
    case NFLOW_ERROR_NULL_POINTER:
    case NFLOW_ERROR_SIZE:
    case NFLOW_ERROR_INPUT:
    case NFLOW_ERROR_ARGUMENT:
      return errors.input;
    case NFLOW_ERROR_SCALAR_TYPE:
      return errors.scalar_type;
    case NFLOW_ERROR_UNSUPPORTED:
      return errors.unsupported;
    case NFLOW_ERROR_IO:
      return errors.file;
    default:
      return errors.base;
  }
}

// Raises the exception of `status` with `message`; its `status` attribute is the status's name.
[[noreturn]] void raise(nflow_status status, const std::string& message) {
  PyObject* type = error_type(status);
  py::object error = py::reinterpret_borrow<py::object>(type)(message);
  error.attr("status") = py::str(nflow_status_name(status));
  PyErr_SetObject(type, error.ptr());
  throw py::error_already_set();
}

// A Python-side error found here (shapes, dtypes): the same classes, status named as the C ABI's.
[[noreturn]] void raise_input(const std::string& message) {
  raise(NFLOW_ERROR_SIZE, "nflow: " + message);
}

// Copies made because an input array fitted no layout of the C ABI (tests read it).
std::atomic<long> input_copies{0};

// ---- the two scalar types' entry points ------------------------------------------------------
template <typename T>
struct Api;
template <>
struct Api<double> {
  static constexpr nflow_scalar Scalar = NFLOW_FLOAT64;
  static constexpr auto log_prob = &nflow_log_prob_d;
  static constexpr auto forward = &nflow_forward_d;
  static constexpr auto inverse = &nflow_inverse_d;
  static constexpr auto sample_from_uniforms = &nflow_sample_from_uniforms_d;
  static constexpr auto sample = &nflow_sample_d;
  static constexpr auto score = &nflow_score_d;
  static constexpr auto context_gradient = &nflow_context_gradient_d;
  static constexpr auto fit = &nflow_fit_d;
};
template <>
struct Api<float> {
  static constexpr nflow_scalar Scalar = NFLOW_FLOAT32;
  static constexpr auto log_prob = &nflow_log_prob_f;
  static constexpr auto forward = &nflow_forward_f;
  static constexpr auto inverse = &nflow_inverse_f;
  static constexpr auto sample_from_uniforms = &nflow_sample_from_uniforms_f;
  static constexpr auto sample = &nflow_sample_f;
  static constexpr auto score = &nflow_score_f;
  static constexpr auto context_gradient = &nflow_context_gradient_f;
  static constexpr auto fit = &nflow_fit_f;
};

// ---- arrays ----------------------------------------------------------------------------------
// The stride (in elements) with which the C ABI reads the (n, rows) array `a` in `layout`, or
// nothing if it cannot: point j's feature i must sit at data[j * stride + i] (points contiguous)
// or data[i * stride + j] (features contiguous). `repeat_ok` (contexts): one point's contiguous
// features repeated for every point (a point stride of 0, as np.broadcast_to makes) is stride 0,
// which the C ABI reads so in either layout.
std::optional<std::size_t> stride_in(nflow_layout layout, const py::array& a, bool repeat_ok) {
  const py::ssize_t n = a.shape(0);
  const py::ssize_t rows = a.shape(1);
  const py::ssize_t item = a.itemsize();
  if (reinterpret_cast<std::uintptr_t>(a.data()) % static_cast<std::uintptr_t>(item) != 0 ||
      a.strides(0) % item != 0 || a.strides(1) % item != 0) {
    return std::nullopt;
  }
  const py::ssize_t point_stride = a.strides(0) / item;
  const py::ssize_t feature_stride = a.strides(1) / item;
  if (repeat_ok && n > 1 && point_stride == 0 && (rows <= 1 || feature_stride == 1)) return 0;
  if (layout == NFLOW_POINTS_CONTIGUOUS) {
    if (rows > 1 && feature_stride != 1) return std::nullopt;
    if (n <= 1) return static_cast<std::size_t>(rows);
    if (point_stride < rows) return std::nullopt;
    return static_cast<std::size_t>(point_stride);
  }
  if (n > 1 && point_stride != 1) return std::nullopt;
  if (rows <= 1) return static_cast<std::size_t>(n);
  if (feature_stride < n) return std::nullopt;
  return static_cast<std::size_t>(feature_stride);
}

// The layout of a call: the one its first matrix fits (points contiguous when both do), points
// contiguous when it fits neither (it is then copied).
nflow_layout choose_layout(const py::array& first, bool repeat_ok) {
  if (stride_in(NFLOW_POINTS_CONTIGUOUS, first, repeat_ok)) return NFLOW_POINTS_CONTIGUOUS;
  if (stride_in(NFLOW_FEATURES_CONTIGUOUS, first, repeat_ok)) return NFLOW_FEATURES_CONTIGUOUS;
  return NFLOW_POINTS_CONTIGUOUS;
}

// An input matrix as the C ABI reads it: the array (the caller's, or one copy), its stride.
// A default Matrix is an absent one (a null pointer).
template <typename T>
struct Matrix {
  py::object keep;  // the caller's array, or the copy
  const T* data = nullptr;
  std::size_t stride = 0;
};

// Checks that `object` is a 2-D array of T with `rows` columns and `n` rows, then describes it in
// `layout`, copying it into that layout's order if it fits as it is.
template <typename T>
Matrix<T> input(const py::handle& object, const char* name, py::ssize_t n, py::ssize_t rows,
                nflow_layout layout, bool repeat_ok) {
  if (!py::isinstance<py::array_t<T>>(object)) {
    raise(NFLOW_ERROR_SCALAR_TYPE, std::string("nflow: ") + name + " must be a NumPy array of " +
                                       (Api<T>::Scalar == NFLOW_FLOAT32 ? "float32" : "float64") +
                                       " (the model's dtype)");
  }
  auto a = py::reinterpret_borrow<py::array>(object);
  if (a.ndim() != 2) raise_input(std::string(name) + " must be 2-D, (points, features)");
  if (a.shape(1) != rows) {
    raise_input(std::string(name) + " has " + std::to_string(a.shape(1)) +
                " features per point; the model needs " + std::to_string(rows));
  }
  if (a.shape(0) != n) {
    raise_input(std::string(name) + " has " + std::to_string(a.shape(0)) + " points; expected " +
                std::to_string(n));
  }
  if (auto stride = stride_in(layout, a, repeat_ok)) {
    return {a, static_cast<const T*>(a.data()), *stride};
  }
  ++input_copies;
  auto copy = py::reinterpret_borrow<py::array>(py::module_::import("numpy").attr("array")(
      a, py::arg("copy") = true, py::arg("order") = layout == NFLOW_POINTS_CONTIGUOUS ? "C" : "F"));
  auto stride = stride_in(layout, copy, false);
  if (!stride) raise(NFLOW_ERROR_INTERNAL, "nflow: a copied array fits no layout");
  return {copy, static_cast<const T*>(copy.data()), *stride};
}

// A new (n, rows) output in `layout`'s order (C order, or Fortran order), and its stride.
template <typename T>
struct Output {
  py::array_t<T> array;
  T* data;
  std::size_t stride;
};
template <typename T>
Output<T> output(py::ssize_t n, py::ssize_t rows, nflow_layout layout) {
  const auto item = static_cast<py::ssize_t>(sizeof(T));
  const bool points = layout == NFLOW_POINTS_CONTIGUOUS;
  py::array_t<T> array({n, rows}, points ? std::vector<py::ssize_t>{rows * item, item}
                                         : std::vector<py::ssize_t>{item, n * item});
  T* data = array.mutable_data();
  return {std::move(array), data, static_cast<std::size_t>(points ? rows : n)};
}

// ---- the handle ------------------------------------------------------------------------------
// One nflow_model. Const C calls share the lock and may overlap; fit holds it alone. The GIL is
// released before the lock is taken, so a thread waiting for the lock never blocks Python.
class Handle {
 public:
  explicit Handle(nflow_model* model) : model_(model) {
    check(nflow_dim(model_, &dim_));
    check(nflow_context_dim(model_, &context_dim_));
    check(nflow_scalar_type(model_, &scalar_));
    check(nflow_parameter_count(model_, &parameter_count_));
    check(nflow_model_schema_version(model_, &schema_version_));
    const char* description = nullptr;
    check(nflow_describe(model_, &description));
    description_ = description == nullptr ? "" : description;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() { nflow_close(model_); }

  std::size_t dim() const { return dim_; }
  std::size_t context_dim() const { return context_dim_; }
  bool is_float32() const { return scalar_ == NFLOW_FLOAT32; }
  std::size_t parameter_count() const { return parameter_count_; }
  int schema_version() const { return schema_version_; }
  const std::string& description() const { return description_; }

  void save(const std::string& path) {
    check_path(path);
    call(false, [&] { return nflow_save(model_, path.c_str()); });
  }

  template <typename T>
  py::array log_prob(const py::handle& x, const py::handle& context) {
    const auto n = points(x, "x");
    const auto layout = layout_of(x, n);
    py::array_t<T> out(n);
    if (n == 0) return out;
    const auto in = input<T>(x, "x", n, rows(dim_), layout, false);
    const auto c = context_input<T>(context, n, layout);
    T* out_data = out.mutable_data();
    call(false, [&] {
      return Api<T>::log_prob(model_, count(n), layout, in.data, in.stride, c.data, c.stride,
                              out_data);
    });
    return out;
  }

  // forward (inverse = false) or inverse (true): (result, log_det or None).
  template <typename T>
  py::tuple transform(const py::handle& x, const py::handle& context, bool inverse,
                      bool want_log_det) {
    const char* name = inverse ? "z" : "x";
    const auto n = points(x, name);
    const auto layout = layout_of(x, n);
    const auto out = output<T>(n, rows(dim_), layout);
    const auto log_det = per_point<T>(n, want_log_det);
    if (n > 0) {
      const auto in = input<T>(x, name, n, rows(dim_), layout, false);
      const auto c = context_input<T>(context, n, layout);
      const auto fn = inverse ? Api<T>::inverse : Api<T>::forward;
      call(false, [&] {
        return fn(model_, count(n), layout, in.data, in.stride, c.data, c.stride, out.data,
                  out.stride, log_det.data);
      });
    }
    return py::make_tuple(out.array, log_det.array);
  }

  // (x, log_prob or None) from uniforms u.
  template <typename T>
  py::tuple sample_from_uniforms(const py::handle& u, const py::handle& context,
                                 bool want_log_prob) {
    const auto n = points(u, "u");
    const auto layout = layout_of(u, n);
    const auto out = output<T>(n, rows(dim_), layout);
    const auto log_prob = per_point<T>(n, want_log_prob);
    if (n > 0) {
      const auto in = input<T>(u, "u", n, rows(dim_), layout, false);
      const auto c = context_input<T>(context, n, layout);
      call(false, [&] {
        return Api<T>::sample_from_uniforms(model_, count(n), layout, in.data, in.stride, c.data,
                                            c.stride, out.data, out.stride, log_prob.data);
      });
    }
    return py::make_tuple(out.array, log_prob.array);
  }

  // (x, log_prob or None): n samples from the seed, in the layout of the context (if any).
  template <typename T>
  py::tuple sample(py::ssize_t n, std::uint64_t seed, const py::handle& context,
                   bool want_log_prob) {
    if (n < 0) raise_input("the number of samples must not be negative");
    auto layout = NFLOW_POINTS_CONTIGUOUS;
    if (n > 0 && py::isinstance<py::array>(context) &&
        py::reinterpret_borrow<py::array>(context).ndim() == 2) {
      layout = choose_layout(py::reinterpret_borrow<py::array>(context), true);
    }
    const auto out = output<T>(n, rows(dim_), layout);
    const auto log_prob = per_point<T>(n, want_log_prob);
    if (n > 0) {
      const auto c = context_input<T>(context, n, layout);
      call(false, [&] {
        return Api<T>::sample(model_, count(n), seed, layout, c.data, c.stride, out.data,
                              out.stride, log_prob.data);
      });
    }
    return py::make_tuple(out.array, log_prob.array);
  }

  // The score (wrt_context = false, dim values per point) or the context gradient (true).
  template <typename T>
  py::array gradient(const py::handle& x, const py::handle& context, bool wrt_context) {
    const auto n = points(x, "x");
    const auto layout = layout_of(x, n);
    const auto out = output<T>(n, rows(wrt_context ? context_dim_ : dim_), layout);
    if (n > 0) {
      const auto in = input<T>(x, "x", n, rows(dim_), layout, false);
      const auto c = context_input<T>(context, n, layout);
      const auto fn = wrt_context ? Api<T>::context_gradient : Api<T>::score;
      call(false, [&] {
        return fn(model_, count(n), layout, in.data, in.stride, c.data, c.stride, out.data,
                  out.stride);
      });
    }
    return out.array;
  }

  // Trains on x (and context); the mean negative log-likelihood after training.
  template <typename T>
  double fit(const py::handle& x, const py::handle& context,
             const std::optional<std::string>& options) {
    const auto n = points(x, "x");
    if (n == 0) raise_input("fit needs at least one data point");
    const auto layout = layout_of(x, n);
    const auto in = input<T>(x, "x", n, rows(dim_), layout, false);
    const auto c = context_input<T>(context, n, layout);
    const char* options_json = options ? options->c_str() : nullptr;
    T final_nll = 0;
    call(true, [&] {
      return Api<T>::fit(model_, count(n), layout, in.data, in.stride, c.data, c.stride,
                         options_json, &final_nll);
    });
    return static_cast<double>(final_nll);
  }

 private:
  static void check(nflow_status status) {
    if (status != NFLOW_OK) raise(status, nflow_last_error());
  }

  static void check_path(const std::string& path) {
    if (path.find('\0') != std::string::npos) raise_input("a path must not contain a NUL byte");
  }

  static std::size_t count(py::ssize_t n) { return static_cast<std::size_t>(n); }
  static py::ssize_t rows(std::size_t r) { return static_cast<py::ssize_t>(r); }

  static py::ssize_t points(const py::handle& x, const char* name) {
    if (!py::isinstance<py::array>(x) || py::reinterpret_borrow<py::array>(x).ndim() != 2) {
      raise_input(std::string(name) + " must be a 2-D NumPy array, (points, features)");
    }
    return py::reinterpret_borrow<py::array>(x).shape(0);
  }

  static nflow_layout layout_of(const py::handle& x, py::ssize_t n) {
    return n == 0 ? NFLOW_POINTS_CONTIGUOUS
                  : choose_layout(py::reinterpret_borrow<py::array>(x), false);
  }

  // n per-point values (log_det, log_prob) if wanted, else None and a null pointer.
  template <typename T>
  struct PerPoint {
    py::object array;
    T* data;
  };
  template <typename T>
  static PerPoint<T> per_point(py::ssize_t n, bool wanted) {
    if (!wanted) return {py::none(), nullptr};
    py::array_t<T> values(n);
    T* data = values.mutable_data();
    return {std::move(values), data};
  }

  // The context matrix of a call over n points: none for an unconditional model.
  template <typename T>
  Matrix<T> context_input(const py::handle& context, py::ssize_t n, nflow_layout layout) const {
    if (context.is_none()) return {};  // a conditional model's C call then says it is missing
    if (context_dim_ == 0) {
      raise_input("the model is unconditional (context_dim 0) but a context was given");
    }
    return input<T>(context, "context", n, static_cast<py::ssize_t>(context_dim_), layout, true);
  }

  // Runs the C call `f` without the GIL, under the shared (or, `exclusive`, the sole) lock, and
  // raises its failure.
  template <typename F>
  void call(bool exclusive, F&& f) {
    nflow_status status = NFLOW_OK;
    std::string message;
    {
      py::gil_scoped_release release;
      if (exclusive) {
        std::unique_lock lock(mutex_);
        status = f();
      } else {
        std::shared_lock lock(mutex_);
        status = f();
      }
      if (status != NFLOW_OK) message = nflow_last_error();
    }
    if (status != NFLOW_OK) raise(status, message);
  }

  nflow_model* model_;
  std::shared_mutex mutex_;
  std::size_t dim_ = 0;
  std::size_t context_dim_ = 0;
  nflow_scalar scalar_ = NFLOW_FLOAT64;
  std::size_t parameter_count_ = 0;
  int schema_version_ = 0;
  std::string description_;
};

// Opens with the GIL released; `open` returns the status and sets the model.
template <typename F>
std::unique_ptr<Handle> make_handle(F&& open) {
  nflow_model* model = nullptr;
  nflow_status status = NFLOW_OK;
  std::string message;
  {
    py::gil_scoped_release release;
    status = open(&model);
    if (status != NFLOW_OK) message = nflow_last_error();
  }
  if (status != NFLOW_OK) raise(status, message);
  try {
    return std::make_unique<Handle>(model);
  } catch (...) {
    nflow_close(model);
    throw;
  }
}

// None or a str (pybind11/stl.h's optional caster would cost compile time for two arguments).
std::optional<std::string> optional_string(const py::object& object) {
  if (object.is_none()) return std::nullopt;
  return object.cast<std::string>();
}

nflow_scalar scalar_of(int code) {
  if (code < 0 || code > 2) raise(NFLOW_ERROR_SCALAR_TYPE, "nflow: unknown scalar code");
  return static_cast<nflow_scalar>(code);
}

// Calls the float or double instantiation of a member template.
#define NFLOW_DISPATCH(handle, member, ...)                    \
  ((handle).is_float32() ? (handle).member<float>(__VA_ARGS__) \
                         : (handle).member<double>(__VA_ARGS__))

PyObject* new_error(py::module_& m, const char* name, const char* doc, py::tuple bases) {
  const std::string qualified = std::string("nflow.") + name;
  PyObject* type = PyErr_NewExceptionWithDoc(qualified.c_str(), doc, bases.ptr(), /*dict=*/nullptr);
  if (type == nullptr) throw py::error_already_set();
  m.add_object(name, py::reinterpret_steal<py::object>(type));
  return type;
}

}  // namespace

PYBIND11_MODULE(_nflow, m) {
  m.doc() = "nflow's C ABI for Python (use the package nflow, not this module)";
  if (nflow_abi_version() != NFLOW_ABI_VERSION) {
    throw py::import_error("nflow: the C library's ABI version " +
                           std::to_string(nflow_abi_version()) + " differs from the module's " +
                           std::to_string(NFLOW_ABI_VERSION));
  }
  auto builtin = [](const char* name) { return py::module_::import("builtins").attr(name); };
  errors.base =
      new_error(m, "NflowError", "Base class of nflow's errors; `status` names the C status.",
                py::make_tuple(builtin("Exception")));
  auto base = py::reinterpret_borrow<py::object>(errors.base);
  errors.format = new_error(m, "FormatError", "Not an nflow model file, corrupt or truncated.",
                            py::make_tuple(base));
  errors.version = new_error(m, "VersionError", "A model file of a newer schema than this library.",
                             py::make_tuple(py::reinterpret_borrow<py::object>(errors.format)));
  errors.input = new_error(m, "InputError", "A bad array, size, value or option.",
                           py::make_tuple(base, builtin("ValueError")));
  errors.scalar_type = new_error(m, "ScalarTypeError", "An array of the wrong scalar type.",
                                 py::make_tuple(base, builtin("TypeError")));
  errors.unsupported = new_error(m, "UnsupportedError", "The model cannot do this.",
                                 py::make_tuple(base, builtin("NotImplementedError")));
  errors.file = new_error(m, "FileError", "A file that cannot be opened, read or written.",
                          py::make_tuple(base, builtin("OSError")));

  m.attr("ABI_VERSION") = NFLOW_ABI_VERSION;
  m.def("version", [] { return std::string(nflow_version()); });
  m.def("schema_version", [] { return nflow_schema_version(); });
  m.def(
      "input_copies", [] { return input_copies.load(); },
      "Input arrays copied so far because no layout of the C ABI described them.");

  py::class_<Handle>(m, "Handle")
      .def_static(
          "open",
          [](const std::string& path, int scalar) {
            if (path.find('\0') != std::string::npos) {
              raise_input("a path must not contain a NUL byte");
            }
            const auto s = scalar_of(scalar);
            return make_handle([&](nflow_model** out) { return nflow_open(path.c_str(), s, out); });
          })
      .def_static("open_memory",
                  [](const py::buffer& bytes, int scalar) {
                    const py::buffer_info info = bytes.request();
                    if (info.ndim != 1 || info.itemsize != 1 || info.strides[0] != 1) {
                      raise_input("model bytes must be a contiguous buffer of bytes");
                    }
                    const auto s = scalar_of(scalar);
                    return make_handle([&](nflow_model** out) {
                      return nflow_open_memory(info.ptr, static_cast<std::size_t>(info.size), s,
                                               out);
                    });
                  })
      .def_static("preset",
                  [](const std::string& family, std::size_t dim, const py::object& options_json,
                     int scalar) {
                    const auto s = scalar_of(scalar);
                    const auto options = optional_string(options_json);
                    return make_handle([&](nflow_model** out) {
                      return nflow_create_preset(family.c_str(), dim,
                                                 options ? options->c_str() : nullptr, s, out);
                    });
                  })
      .def_property_readonly("dim", &Handle::dim)
      .def_property_readonly("context_dim", &Handle::context_dim)
      .def_property_readonly("is_float32", &Handle::is_float32)
      .def_property_readonly("parameter_count", &Handle::parameter_count)
      .def_property_readonly("schema_version", &Handle::schema_version)
      .def_property_readonly("description", &Handle::description)
      .def("save", &Handle::save)
      .def("log_prob",
           [](Handle& h, const py::handle& x, const py::handle& context) {
             return NFLOW_DISPATCH(h, log_prob, x, context);
           })
      .def("transform",
           [](Handle& h, const py::handle& x, const py::handle& context, bool inverse,
              bool want_log_det) {
             return NFLOW_DISPATCH(h, transform, x, context, inverse, want_log_det);
           })
      .def("sample_from_uniforms",
           [](Handle& h, const py::handle& u, const py::handle& context, bool want_log_prob) {
             return NFLOW_DISPATCH(h, sample_from_uniforms, u, context, want_log_prob);
           })
      .def("sample",
           [](Handle& h, py::ssize_t n, std::uint64_t seed, const py::handle& context,
              bool want_log_prob) {
             return NFLOW_DISPATCH(h, sample, n, seed, context, want_log_prob);
           })
      .def("gradient",
           [](Handle& h, const py::handle& x, const py::handle& context, bool wrt_context) {
             return NFLOW_DISPATCH(h, gradient, x, context, wrt_context);
           })
      .def("fit", [](Handle& h, const py::handle& x, const py::handle& context,
                     const py::object& options_json) {
        return NFLOW_DISPATCH(h, fit, x, context, optional_string(options_json));
      });
}
