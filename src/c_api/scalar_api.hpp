#pragma once
/// @file
/// @brief The C ABI's calls for one scalar type: ScalarModel<S> (the handle) and ScalarApi<S>
/// (the _d or _f entry points' bodies). Included by scalar_double.cpp and scalar_float.cpp only,
/// each of which instantiates it once.

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <memory>
#include <nflow/core/random.hpp>
#include <nflow/io/model.hpp>
#include <nflow/train/fit.hpp>
#include <optional>
#include <random>
#include <string>
#include <type_traits>
#include <utility>

#include "handle.hpp"

namespace nflow::c_api {

template <typename S>
using Matrix = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;
template <typename S>
using Row = Eigen::Matrix<S, 1, Eigen::Dynamic>;

template <typename S>
constexpr nflow_scalar scalar_of = std::is_same_v<S, float> ? NFLOW_FLOAT32 : NFLOW_FLOAT64;

/// @brief The handle of a model evaluated in scalar type S.
template <typename S>
class ScalarModel final : public nflow_model {
 public:
  ScalarModel(io::RuntimeModel<S> m, int schema) : model(std::move(m)) {
    description = io::describe(model);
    schema_version = schema;
  }
  nflow_scalar scalar() const override { return scalar_of<S>; }
  std::size_t dim() const override { return std::size_t(model.dim()); }
  std::size_t context_dim() const override { return std::size_t(model.context_dim()); }
  std::size_t parameter_count() const override { return std::size_t(model.parameter_count()); }
  void save(const char* path) const override { io::save(model, std::filesystem::path(path)); }

  io::RuntimeModel<S> model;
};

/// A size_t count as an Index (SIZE when it does not fit).
inline Index to_index(std::size_t v, const char* name) {
  if (v > std::size_t(std::numeric_limits<Index>::max())) {
    throw Failure(NFLOW_ERROR_SIZE,
                  std::string(name) + " = " + std::to_string(v) + " is too large");
  }
  return Index(v);
}

inline void check_layout(const nflow_layout& layout) {
  const int v = raw_enum(layout);
  if (v != NFLOW_POINTS_CONTIGUOUS && v != NFLOW_FEATURES_CONTIGUOUS) {
    throw Failure(
        NFLOW_ERROR_ARGUMENT,
        "layout must be NFLOW_POINTS_CONTIGUOUS (0) or NFLOW_FEATURES_CONTIGUOUS (1), got " +
            std::to_string(v));
  }
}

/// Checks one matrix argument of `rows` features by `n` points: not null, its stride large enough
/// for the layout, its extent addressable. `repeatable` (contexts): a stride of 0 means one
/// column of `rows` contiguous values shared by every point.
template <typename S>
void check_matrix(const char* name, nflow_layout layout, const S* data, std::size_t stride,
                  Index rows, Index n, bool repeatable) {
  require(data, name);
  if (repeatable && stride == 0) return;
  const bool points = layout == NFLOW_POINTS_CONTIGUOUS;
  const Index inner = points ? rows : n;  // values one stride covers
  const Index outer = points ? n : rows;  // strides
  if (stride < std::size_t(inner)) {
    throw Failure(NFLOW_ERROR_SIZE,
                  std::string(name) + "_stride is " + std::to_string(stride) +
                      " but must be at least " +
                      (points ? "the number of features, " : "the number of points n, ") +
                      std::to_string(inner) + ", with " +
                      (points ? "NFLOW_POINTS_CONTIGUOUS (point j's features start at " +
                                    std::string(name) + "[j * stride])"
                              : "NFLOW_FEATURES_CONTIGUOUS (feature i's values start at " +
                                    std::string(name) + "[i * stride])"));
  }
  const auto max = std::uint64_t(std::numeric_limits<std::ptrdiff_t>::max()) / sizeof(S);
  if (stride > max || std::uint64_t(outer - 1) > (max - std::uint64_t(inner)) / stride) {
    throw Failure(NFLOW_ERROR_SIZE, std::string(name) + "_stride " + std::to_string(stride) +
                                        " with " + std::to_string(outer) +
                                        " strides spans more memory than can be addressed");
  }
}

/// Throws INPUT, naming the point and the feature, unless every value of `m` is finite.
template <typename S>
void check_finite(const char* name, const Matrix<S>& m) {
  if (m.allFinite()) return;
  for (Index j = 0; j < m.cols(); ++j) {
    for (Index i = 0; i < m.rows(); ++i) {
      if (!std::isfinite(m(i, j))) {
        throw Failure(NFLOW_ERROR_INPUT, std::string(name) + " of point " + std::to_string(j) +
                                             ", feature " + std::to_string(i) + " is " +
                                             (std::isnan(m(i, j)) ? "NaN" : "infinite"));
      }
    }
  }
}

/// A checked input (check_matrix first) as a rows x n column-major matrix, one point per column:
/// the one copy the run-time model needs (its steps take plain matrices).
template <typename S>
Matrix<S> read_matrix(const char* name, nflow_layout layout, const S* data, std::size_t stride,
                      Index rows, Index n, bool repeatable) {
  using Outer = Eigen::OuterStride<>;
  Matrix<S> m(rows, n);
  if (repeatable && stride == 0) {
    m = Eigen::Map<const Eigen::Matrix<S, Eigen::Dynamic, 1>>(data, rows).replicate(1, n);
  } else if (layout == NFLOW_POINTS_CONTIGUOUS) {
    m = Eigen::Map<const Matrix<S>, 0, Outer>(data, rows, n, Outer(Index(stride)));
  } else {
    using RowMajor = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    m = Eigen::Map<const RowMajor, 0, Outer>(data, rows, n, Outer(Index(stride)));
  }
  check_finite(name, m);
  return m;
}

/// Writes a rows x n result into a checked output in the call's layout.
template <typename S>
void write_matrix(nflow_layout layout, S* data, std::size_t stride, const Matrix<S>& m) {
  using Outer = Eigen::OuterStride<>;
  if (layout == NFLOW_POINTS_CONTIGUOUS) {
    Eigen::Map<Matrix<S>, 0, Outer>(data, m.rows(), m.cols(), Outer(Index(stride))) = m;
  } else {
    using RowMajor = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    Eigen::Map<RowMajor, 0, Outer>(data, m.rows(), m.cols(), Outer(Index(stride))) = m;
  }
}

template <typename S>
void write_row(S* data, const Row<S>& r) {
  if (data) std::copy(r.data(), r.data() + r.size(), data);
}

/// The base distribution's quantile of uniforms u (each in (0, 1)), coordinate by coordinate.
template <typename S>
Matrix<S> base_quantile(const io::RuntimeBase<S>& base, const Matrix<S>& u);

/// @brief The bodies of the _d (S = double) or _f (S = float) entry points. `fn` is the entry
/// point's name, for the message.
template <typename S>
struct ScalarApi {
  using Model = ScalarModel<S>;
  using Context = std::optional<Matrix<S>>;

  /// The arguments every evaluation shares, checked: the model, the layout, n.
  struct Call {
    const Model& model;
    nflow_layout layout;
    Index n;
  };

  static Call begin(const nflow_model* handle, const nflow_layout& layout, std::size_t n) {
    check_handle(handle, scalar_of<S>, suffix());
    const Model& m = static_cast<const Model&>(*handle);
    check_layout(layout);
    return {m, layout, to_index(n, "n")};
  }
  static const char* suffix() { return std::is_same_v<S, float> ? "f" : "d"; }

  /// The context of a call: none for an unconditional model (a given one is ARGUMENT), and for
  /// a conditional one context_dim x n (a missing one is NULL_POINTER). Checked, not read.
  static void check_context(const Call& c, const S* context, std::size_t stride) {
    const Index cd = c.model.model.context_dim();
    if (cd == 0) {
      if (context) {
        throw Failure(NFLOW_ERROR_ARGUMENT,
                      "a context is given but the model is unconditional (context_dim 0): pass "
                      "a null context");
      }
      return;
    }
    if (!context) {
      throw Failure(NFLOW_ERROR_NULL_POINTER,
                    "context is null but the model is conditional: give " + std::to_string(cd) +
                        " context values per point (a context stride of 0 repeats one context)");
    }
    check_matrix("context", c.layout, context, stride, cd, c.n, true);
  }
  static Context read_context(const Call& c, const S* context, std::size_t stride) {
    if (c.model.model.context_dim() == 0) return std::nullopt;
    return read_matrix("context", c.layout, context, stride, c.model.model.context_dim(), c.n,
                       true);
  }
  template <typename F>
  static decltype(auto) with_context(const Context& context, F&& f) {
    if (context) return f(*context);
    return f(NoContext{});
  }

  static Index dim(const Call& c) { return c.model.model.dim(); }
  /// The score and the context gradient differentiate the density direction: UNSUPPORTED
  /// when a step has no forward vjp.
  static void require_forward_vjp(const Call& c) {
    const auto& transform = c.model.model.transform();
    if (!transform.has_forward_vjp()) {
      throw Failure(NFLOW_ERROR_UNSUPPORTED,
                    "the model has no fast gradient of its density (a step without a forward "
                    "vjp, such as an inverse autoregressive layer): " +
                        transform.summary());
    }
  }

  static nflow_status log_prob(const char* fn, const nflow_model* handle, std::size_t n,
                               const nflow_layout& layout, const S* x, std::size_t x_stride,
                               const S* context, std::size_t context_stride, S* out) {
    return guarded(fn, Phase::Call, [&] {
      const Call c = begin(handle, layout, n);
      if (c.n == 0) return;
      check_matrix("x", layout, x, x_stride, dim(c), c.n, false);
      check_context(c, context, context_stride);
      require(out, "log_prob");
      const Matrix<S> xm = read_matrix("x", layout, x, x_stride, dim(c), c.n, false);
      const Context cm = read_context(c, context, context_stride);
      const Row<S> lp =
          with_context(cm, [&](const auto& cc) { return Row<S>(c.model.model.log_prob(xm, cc)); });
      write_row(out, lp);
    });
  }

  /// forward (Inverse = false) or inverse: the shared body of both.
  template <bool Inverse>
  static nflow_status transform(const char* fn, const nflow_model* handle, std::size_t n,
                                const nflow_layout& layout, const S* in, std::size_t in_stride,
                                const S* context, std::size_t context_stride, S* out,
                                std::size_t out_stride, S* log_det) {
    const char* in_name = Inverse ? "z" : "x";
    const char* out_name = Inverse ? "x" : "z";
    return guarded(fn, Phase::Call, [&] {
      const Call c = begin(handle, layout, n);
      if (c.n == 0) return;
      check_matrix(in_name, layout, in, in_stride, dim(c), c.n, false);
      check_context(c, context, context_stride);
      check_matrix(out_name, layout, out, out_stride, dim(c), c.n, false);
      const Matrix<S> im = read_matrix(in_name, layout, in, in_stride, dim(c), c.n, false);
      const Context cm = read_context(c, context, context_stride);
      auto r = apply<Inverse>(c, im, cm);
      write_matrix(layout, out, out_stride, r.value);
      write_row(log_det, Row<S>(r.log_det));
    });
  }

  template <bool Inverse>
  static auto apply(const Call& c, const Matrix<S>& in, const Context& cm) {
    return with_context(cm, [&](const auto& cc) {
      if constexpr (Inverse) {
        return c.model.model.transform().inverse_and_log_det(in, cc);
      } else {
        return c.model.model.transform().forward_and_log_det(in, cc);
      }
    });
  }

  /// x = f⁻¹(z) from latents z, and log p(x) = log p_base(z) − log|det ∂f⁻¹/∂z|: written out.
  static void sample_from_latents(const Call& c, const Matrix<S>& z, const Context& cm, S* x,
                                  std::size_t x_stride, S* log_prob) {
    auto r = apply<true>(c, z, cm);
    Row<S> lp;
    if (log_prob) lp = c.model.model.base().log_prob(z) - r.log_det;
    write_matrix(c.layout, x, x_stride, r.value);
    write_row(log_prob, lp);
  }

  static nflow_status sample_from_uniforms(const char* fn, const nflow_model* handle, std::size_t n,
                                           const nflow_layout& layout, const S* u,
                                           std::size_t u_stride, const S* context,
                                           std::size_t context_stride, S* x, std::size_t x_stride,
                                           S* log_prob) {
    return guarded(fn, Phase::Call, [&] {
      const Call c = begin(handle, layout, n);
      if (c.n == 0) return;
      check_matrix("u", layout, u, u_stride, dim(c), c.n, false);
      check_context(c, context, context_stride);
      check_matrix("x", layout, x, x_stride, dim(c), c.n, false);
      const Matrix<S> um = read_matrix("u", layout, u, u_stride, dim(c), c.n, false);
      for (Index j = 0; j < um.cols(); ++j) {
        for (Index i = 0; i < um.rows(); ++i) {
          if (!(um(i, j) > S(0) && um(i, j) < S(1))) {
            throw Failure(NFLOW_ERROR_INPUT, "u of point " + std::to_string(j) + ", feature " +
                                                 std::to_string(i) + " is " +
                                                 std::to_string(um(i, j)) +
                                                 ", not in the open interval (0, 1)");
          }
        }
      }
      const Context cm = read_context(c, context, context_stride);
      const Matrix<S> z = base_quantile(c.model.model.base(), um);
      check_finite("the base's quantile of u", z);
      sample_from_latents(c, z, cm, x, x_stride, log_prob);
    });
  }

  static nflow_status sample(const char* fn, const nflow_model* handle, std::size_t n,
                             std::uint64_t seed, const nflow_layout& layout, const S* context,
                             std::size_t context_stride, S* x, std::size_t x_stride, S* log_prob) {
    return guarded(fn, Phase::Call, [&] {
      const Call c = begin(handle, layout, n);
      if (c.n == 0) return;
      check_context(c, context, context_stride);
      check_matrix("x", layout, x, x_stride, dim(c), c.n, false);
      const Context cm = read_context(c, context, context_stride);
      std::mt19937_64 gen(seed);
      const Matrix<S> z = c.model.model.base().sample(c.n, gen);
      sample_from_latents(c, z, cm, x, x_stride, log_prob);
    });
  }

  static nflow_status score(const char* fn, const nflow_model* handle, std::size_t n,
                            const nflow_layout& layout, const S* x, std::size_t x_stride,
                            const S* context, std::size_t context_stride, S* grad,
                            std::size_t grad_stride) {
    return guarded(fn, Phase::Call, [&] {
      const Call c = begin(handle, layout, n);
      if (c.n == 0) return;
      check_matrix("x", layout, x, x_stride, dim(c), c.n, false);
      check_context(c, context, context_stride);
      check_matrix("grad", layout, grad, grad_stride, dim(c), c.n, false);
      require_forward_vjp(c);
      const Matrix<S> xm = read_matrix("x", layout, x, x_stride, dim(c), c.n, false);
      const Context cm = read_context(c, context, context_stride);
      const Matrix<S> g =
          with_context(cm, [&](const auto& cc) { return Matrix<S>(c.model.model.score(xm, cc)); });
      write_matrix(layout, grad, grad_stride, g);
    });
  }

  static nflow_status context_gradient(const char* fn, const nflow_model* handle, std::size_t n,
                                       const nflow_layout& layout, const S* x, std::size_t x_stride,
                                       const S* context, std::size_t context_stride, S* grad,
                                       std::size_t grad_stride) {
    return guarded(fn, Phase::Call, [&] {
      const Call c = begin(handle, layout, n);
      const Index cd = c.model.model.context_dim();
      if (cd == 0) {
        throw Failure(NFLOW_ERROR_ARGUMENT,
                      "the model is unconditional (context_dim 0): it has no context gradient");
      }
      if (c.n == 0) return;
      check_matrix("x", layout, x, x_stride, dim(c), c.n, false);
      check_context(c, context, context_stride);
      check_matrix("grad", layout, grad, grad_stride, cd, c.n, false);
      require_forward_vjp(c);
      const Matrix<S> xm = read_matrix("x", layout, x, x_stride, dim(c), c.n, false);
      const Context cm = read_context(c, context, context_stride);
      const Matrix<S> g = c.model.model.context_score(xm, *cm);
      write_matrix(layout, grad, grad_stride, g);
    });
  }

  static nflow_status fit(const char* fn, nflow_model* handle, std::size_t n,
                          const nflow_layout& layout, const S* x, std::size_t x_stride,
                          const S* context, std::size_t context_stride, const char* options_json,
                          S* final_nll) {
    return guarded(fn, Phase::Call, [&] {
      const Call c = begin(handle, layout, n);
      const FitArguments args = parse_fit_options(options_json);
      if (c.n == 0) return;  // as every call: n = 0 does nothing (the model is unchanged)
      check_matrix("x", layout, x, x_stride, dim(c), c.n, false);
      check_context(c, context, context_stride);
      const Matrix<S> xm = read_matrix("x", layout, x, x_stride, dim(c), c.n, false);
      const Context cm = read_context(c, context, context_stride);
      train::FitOptions options;
      options.epochs = args.epochs;
      options.batch_size = args.batch_size;
      options.adam.learning_rate = args.learning_rate;
      options.seed = args.seed;
      // The one non-const use of a handle (the header says fit needs it to itself).
      auto& model = static_cast<Model&>(*handle).model;
      try {
        if (cm) {
          train::fit(model, {.samples = xm, .context = *cm}, options);
        } else {
          train::fit(model, {.samples = xm}, options);
        }
      } catch (const train::TrainingError& e) {
        throw Failure(NFLOW_ERROR_INPUT,
                      std::string(e.what()) +
                          " (the model keeps the parameters of the last finite step; a smaller "
                          "learning_rate may help)");
      }
      if (final_nll) {
        const Row<S> lp =
            with_context(cm, [&](const auto& cc) { return Row<S>(model.log_prob(xm, cc)); });
        *final_nll = S(-lp.template cast<double>().mean());
      }
    });
  }
};

/// Opens a file's bytes as a ScalarModel<S>.
template <typename S>
nflow_model* open_model(std::span<const std::byte> bytes) {
  const int schema = io::model_schema_version_of(bytes);
  return std::make_unique<ScalarModel<S>>(io::load_model<S>(bytes), schema).release();
}

template <typename S>
nflow_model* create_preset(std::string_view family, std::size_t dim, const char* options_json) {
  const PresetArguments a = parse_preset_options(options_json);
  if (dim == 0) throw Failure(NFLOW_ERROR_SIZE, "dim is 0: a flow needs at least one feature");
  const io::RuntimePresetOptions options{.transforms = a.transforms,
                                         .hidden_features = a.hidden_features,
                                         .hidden_layers = a.hidden_layers,
                                         .context = a.context,
                                         .bins = a.bins,
                                         .bound = a.bound,
                                         .seed = a.seed};
  return std::make_unique<ScalarModel<S>>(io::make_preset<S>(family, to_index(dim, "dim"), options),
                                          io::schema_version())
      .release();
}

}  // namespace nflow::c_api

namespace nflow::c_api {

/// The base's quantile, in double then rounded to S: a standard normal Φ⁻¹(u); a diagonal normal
/// loc + exp(log_scale)·Φ⁻¹(u); a uniform box lower + (upper − lower)·u.
template <typename S>
Matrix<S> base_quantile(const io::RuntimeBase<S>& base, const Matrix<S>& u) {
  Matrix<S> z(u.rows(), u.cols());
  const auto* normal = base.diagonal_normal();
  const auto* box = base.box();
  for (Index j = 0; j < u.cols(); ++j) {
    for (Index i = 0; i < u.rows(); ++i) {
      const double v = double(u(i, j));
      if (box) {
        const double lower = double(box->lower()(i));
        z(i, j) = S(lower + (double(box->upper()(i)) - lower) * v);
      } else if (normal) {
        z(i, j) = S(double(normal->loc()(i)) +
                    std::exp(double(normal->log_scale()(i))) * standard_normal_quantile(v));
      } else {
        z(i, j) = S(standard_normal_quantile(v));
      }
    }
  }
  return z;
}

}  // namespace nflow::c_api
