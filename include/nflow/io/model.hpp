#pragma once
/// @file
/// @brief The run-time model: a model file loaded without naming its C++ type (load_model), a
/// fresh preset built from a family name (make_preset), and their description (describe). See
/// docs/model_files.md for the schema and what is supported.
///
/// A RuntimeModel<S> is an ordinary nflow::Density of a RuntimeBase<S> (standard normal,
/// diagonal normal or uniform box) and a DynamicFlow<S> whose steps mirror the description's
/// tree: a "repeat" or "sequence" becomes a DynamicFlow, a layer the same layer template the
/// typed presets and the importers use, at run-time sizes (Coupling and MaskedAutoregressive with
/// the presets' nn::MLP and nn::MADE conditioners, or the importers' nn::BlockNetwork; ActNorm,
/// LULinear, Permutation, Reverse, ElementwiseAffine). Its parameter and buffer names are
/// therefore those of the typed model the file came from, the tensors load with the ordinary
/// strict io::load, and io::save of a RuntimeModel writes a file that the typed model loads too.
///
/// Compile time: the loader instantiates every supported layer behind AnyBijector (about 25 per
/// scalar). Link the compiled library nflow::runtime (CMake target nflow_runtime): it defines
/// NFLOW_RUNTIME_PRECOMPILED, under which this header declares load_model, make_preset and the
/// builders `extern template` for float and double, so a TU that includes it instantiates none.

#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "nflow/core/errors.hpp"
#include "nflow/core/instances.hpp"
#include "nflow/flows/presets.hpp"
#include "nflow/interop/imported_flow.hpp"
#include "nflow/io/describe.hpp"
#include "nflow/io/safetensors.hpp"

namespace nflow::io {

/// @brief The base distribution of a run-time model, chosen at run time: the standard normal
/// N(0, I), a diagonal normal N(loc, diag(exp(log_scale))²) with trainable "loc" and
/// "log_scale" (nflow::DiagonalNormal: NICE's base, and imported models' N(loc, scale)), or the
/// uniform distribution on a box [lower, upper] (nflow::UniformBox: bounded spline flows).
/// Every call goes to the held distribution.
template <typename Scalar_>
class RuntimeBase {
 public:
  using Scalar = Scalar_;
  static constexpr int Dim = Dynamic;
  enum class Kind { StandardNormal, DiagonalNormal, UniformBox };

  static RuntimeBase standard_normal(Index dim) {
    return RuntimeBase(Kind::StandardNormal, StandardNormal<Scalar>(dim));
  }
  /// loc 0, log_scale 0 (set them through visit_parameters, or load them).
  static RuntimeBase diagonal_normal(Index dim) {
    RuntimeBase b(Kind::DiagonalNormal, StandardNormal<Scalar>(dim));
    b.diagonal_.emplace(dim);
    return b;
  }
  static RuntimeBase uniform_box(const Vector<Scalar>& lower, const Vector<Scalar>& upper) {
    RuntimeBase b(Kind::UniformBox, StandardNormal<Scalar>(lower.size() > 0 ? lower.size() : 1));
    b.box_.emplace(lower, upper);
    return b;
  }

  Kind kind() const { return kind_; }
  Index dim() const { return normal_.dim(); }
  /// The held diagonal normal (kind DiagonalNormal) or uniform box (kind UniformBox), else null.
  const DiagonalNormal<Scalar>* diagonal_normal() const {
    return diagonal_ ? &*diagonal_ : nullptr;
  }
  const UniformBox<Scalar>* box() const { return box_ ? &*box_ : nullptr; }

  template <typename Z>
  PerSample<Scalar, Z::ColsAtCompileTime> log_prob(const Eigen::MatrixBase<Z>& z) const {
    if (diagonal_) return diagonal_->log_prob(z);
    if (box_) return box_->log_prob(z);
    return normal_.log_prob(z);
  }
  template <typename Z, typename G>
  Batch<Scalar, Dynamic, Z::ColsAtCompileTime> log_prob_vjp(
      const Eigen::MatrixBase<Z>& z, const Eigen::MatrixBase<G>& grad_log_prob,
      Eigen::Ref<Vector<Scalar>> grad_params) const {
    if (diagonal_) return diagonal_->log_prob_vjp(z, grad_log_prob, grad_params);
    if (box_) return box_->log_prob_vjp(z, grad_log_prob, grad_params);
    return normal_.log_prob_vjp(z, grad_log_prob, grad_params);
  }
  template <std::uniform_random_bit_generator G>
  Batch<Scalar, Dynamic, Dynamic> sample(Index n, G& gen) const {
    if (diagonal_) return diagonal_->sample(n, gen);
    if (box_) return box_->sample(n, gen);
    return normal_.sample(n, gen);
  }

  Index parameter_count() const { return diagonal_ ? diagonal_->parameter_count() : 0; }
  template <typename F>
  void visit_parameters(F&& f) const {
    if (diagonal_) diagonal_->visit_parameters(std::forward<F>(f));
  }
  template <typename F>
  void visit_parameters(F&& f) {
    if (diagonal_) diagonal_->visit_parameters(std::forward<F>(f));
  }

 private:
  RuntimeBase(Kind kind, StandardNormal<Scalar> normal) : kind_(kind), normal_(normal) {}
  Kind kind_;
  StandardNormal<Scalar> normal_;
  std::optional<DiagonalNormal<Scalar>> diagonal_;
  std::optional<UniformBox<Scalar>> box_;
};

/// @brief A model whose architecture is known at run time (see the file comment).
template <typename Scalar>
using RuntimeModel = Density<RuntimeBase<Scalar>, DynamicFlow<Scalar>>;

/// @brief Options of make_preset(): the fields of the typed presets' options (0 = the preset's
/// default: 3 transforms, 64 hidden features, 2 hidden layers, 8 spline bins, spline bound 5).
struct RuntimePresetOptions {
  Index transforms = 0, hidden_features = 0, hidden_layers = 0, context = 0, bins = 0;
  double bound = 0;
  std::uint64_t seed = 0;
};

namespace describe_detail {
template <typename S>
Value node(const RuntimeBase<S>& b, Rank<1>) {
  switch (b.kind()) {
    case RuntimeBase<S>::Kind::DiagonalNormal:
      return typed("diagonal_normal");
    case RuntimeBase<S>::Kind::UniformBox:
      return node(*b.box(), Rank<1>{});
    default:
      return typed("standard_normal");
  }
}
}  // namespace describe_detail

/// @brief The description of `model` (schema 1) as the JSON text a file stores.
/// @throws nflow::UnsupportedError if a step is of a kind schema 1 cannot describe.
template <typename Scalar>
std::string describe(const RuntimeModel<Scalar>& model) {
  const json::Value d = describe_architecture(model);
  if (d.kind == json::Value::Kind::Null) {
    throw UnsupportedError(
        "nflow::io::describe: the model holds a step that model-file schema 1 cannot describe "
        "(see docs/model_files.md for the supported layers)");
  }
  return json::write(d);
}

/// The model-file schema of a file held in memory (0: written before the schema, or by another
/// program). @throws FormatError if the bytes are not a safetensors file.
inline int model_schema_version_of(std::span<const std::byte> bytes) {
  return schema_of(
      parse_safetensors(std::span<const unsigned char>(
                            reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size()))
          .metadata);
}
/// The model-file schema of the file at `file`. @throws IoError, FormatError.
inline int model_schema_version_of(const std::filesystem::path& file) {
  return schema_of(read_safetensors(file).metadata);
}

namespace model_detail {

using json::Value;

/// The most layers a model may have (after expanding repeats).
inline constexpr Index max_layers = 4096;
/// The most values a fresh model (make_preset) may allocate.
inline constexpr double max_fresh_values = 2e9;

/// What the builder carries down the description tree.
struct BuildContext {
  const TensorFile* file = nullptr;  ///< null: a fresh model (make_preset)
  double budget = 0;                 ///< values of the file not yet claimed by a layer
  Index layers = 0;
  Index dim = 0, context = 0;
  std::string prefix;  ///< tensor-name prefix of the current node ("transform.3.0.")
  // A fresh model: the seed and the block of the top-level repeat (as the typed presets).
  std::uint64_t seed = 0;
  Index block = 0, blocks = 1;
};

[[noreturn]] inline void bad(const BuildContext& ctx, const std::string& where,
                             const std::string& what) {
  const std::string m = "nflow::io::" + std::string(ctx.file ? "load_model" : "make_preset") +
                        ": " + where + ": " + what;
  if (ctx.file) throw FormatError(m);
  throw ParameterError(m);
}

inline const Value& member(const BuildContext& ctx, const Value& node, const char* key,
                           const std::string& where) {
  if (!node.is_object()) bad(ctx, where, "the description is not a JSON object");
  const Value* v = node.find(key);
  if (v == nullptr) bad(ctx, where, std::string("the description has no '") + key + "'");
  return *v;
}
inline std::string text(const BuildContext& ctx, const Value& node, const char* key,
                        const std::string& where) {
  const Value& v = member(ctx, node, key, where);
  if (!v.is_string()) bad(ctx, where, std::string("'") + key + "' must be a string");
  return v.text;
}
inline Index size(const BuildContext& ctx, const Value& node, const char* key,
                  const std::string& where, Index lo, Index hi = Index(1) << 40) {
  const auto v = json::as_int64(member(ctx, node, key, where));
  if (!v || *v < lo || *v > hi) {
    bad(ctx, where,
        std::string("'") + key + "' must be an integer in [" + std::to_string(lo) + ", " +
            std::to_string(hi) + "], got " + json::write(member(ctx, node, key, where)));
  }
  return Index(*v);
}
inline double number(const BuildContext& ctx, const Value& node, const char* key,
                     const std::string& where) {
  const auto v = json::as_double(member(ctx, node, key, where));
  if (!v) bad(ctx, where, std::string("'") + key + "' must be a number");
  return *v;
}
inline bool flag(const BuildContext& ctx, const Value& node, const char* key,
                 const std::string& where) {
  const Value& v = member(ctx, node, key, where);
  if (v.kind != Value::Kind::Bool) bad(ctx, where, std::string("'") + key + "' must be a bool");
  return v.boolean;
}

/// Claims `values` of the file for a layer about to be built: a description asking for more
/// than the file holds is refused before anything is allocated.
inline void claim(BuildContext& ctx, double values, const std::string& where) {
  if (++ctx.layers > max_layers) {
    bad(ctx, where, "the model has more than " + std::to_string(max_layers) + " layers");
  }
  if (ctx.file == nullptr) {
    ctx.budget += values;
    if (ctx.budget > max_fresh_values) bad(ctx, where, "the model is too large to allocate");
    return;
  }
  if (values > ctx.budget) {
    // A hostile size may exceed every integer type: print the double itself.
    char count[48];
    std::snprintf(count, sizeof count, values < 1e15 ? "%.0f" : "%.3g", values);
    bad(ctx, where,
        "the description needs at least " + std::string(count) +
            " more values than the file's tensors hold (a description that does not match the "
            "tensors)");
  }
  ctx.budget -= values;
}

inline void check_dim(BuildContext& ctx, const Value& node, const std::string& where) {
  const Index d = size(ctx, node, "dim", where, 1);
  if (d != ctx.dim) {
    bad(ctx, where,
        "dim " + std::to_string(d) + " differs from the model's " + std::to_string(ctx.dim));
  }
}
inline void check_activation(BuildContext& ctx, const Value& net, const std::string& where) {
  const std::string a = text(ctx, net, "activation", where);
  if (a != "relu") {
    bad(ctx, where,
        "activation '" + a + "' is not supported by the run-time model (ReLU conditioners only)");
  }
}
inline void check_context(BuildContext& ctx, const Value& net, const std::string& where) {
  const Index c = size(ctx, net, "context", where, 0);
  if (c != ctx.context) {
    bad(ctx, where,
        "context " + std::to_string(c) + " differs from the model's " +
            std::to_string(ctx.context));
  }
}

/// Runs make(); a ParameterError or ShapeError of a layer becomes the builder's error at `where`.
template <typename F>
auto guarded(const BuildContext& ctx, const std::string& where, F&& make) -> decltype(make()) {
  try {
    return make();
  } catch (const ParameterError& e) {
    bad(ctx, where, e.what());
  } catch (const ShapeError& e) {
    bad(ctx, where, e.what());
  }
}

/// Calls f(K, integral_constant<SplineDomain, D>, options) for the spline node's bins (1 to
/// MaxDynamicBins: one compiled spline type per domain, RationalQuadraticSpline<S, Dynamic, D>) and
/// domain (bounded domains only when `bounded_ok`); options into `o`.
template <typename S, typename F>
auto with_spline(BuildContext& ctx, const Value& tr, const std::string& where, bool bounded_ok,
                 F&& f) {
  const Index bins = size(ctx, tr, "bins", where, 1, 256);
  const std::string domain = text(ctx, tr, "domain", where);
  SplineOptions<S> o;
  o.lower = S(number(ctx, tr, "lower", where));
  o.upper = S(number(ctx, tr, "upper", where));
  o.min_bin_width = S(number(ctx, tr, "min_bin_width", where));
  o.min_bin_height = S(number(ctx, tr, "min_bin_height", where));
  o.min_derivative = S(number(ctx, tr, "min_derivative", where));
  const std::string d = text(ctx, tr, "derivative", where);
  if (d == "shifted") {
    o.derivative = SplineDerivative::Shifted;
  } else if (d == "softplus") {
    o.derivative = SplineDerivative::Softplus;
  } else if (d == "exp") {
    o.derivative = SplineDerivative::Exp;
  } else {
    bad(ctx, where, "unknown spline derivative '" + d + "' (shifted, softplus, exp)");
  }
  o.raw_scale = S(number(ctx, tr, "raw_scale", where));
  o.soft_clip_slope = S(number(ctx, tr, "soft_clip_slope", where));
  constexpr int max_bins = RationalQuadraticSpline<S, Dynamic>::MaxDynamicBins;
  if (bins > max_bins) {
    bad(ctx, where,
        "splines of " + std::to_string(bins) +
            " bins are not supported by the run-time model (1 to " + std::to_string(max_bins) +
            ")");
  }
  const bool bounded = domain == "bounded";
  if (!bounded && domain != "unbounded") {
    bad(ctx, where,
        "spline domain '" + domain + "' is not supported by the run-time model (" +
            (bounded_ok ? "unbounded, bounded" : "unbounded") + ")");
  }
  if (bounded && !bounded_ok) {
    bad(ctx, where, "a bounded spline needs an mlp or made conditioner in the run-time model");
  }
  using U = std::integral_constant<SplineDomain, SplineDomain::Unbounded>;
  using B = std::integral_constant<SplineDomain, SplineDomain::Bounded>;
  return bounded ? f(int(bins), B{}, o) : f(int(bins), U{}, o);
}

template <typename S>
ScaleShiftOptions<S> scale_shift_options(BuildContext& ctx, const Value& tr,
                                         const std::string& where) {
  ScaleShiftOptions<S> o;
  const std::string k = text(ctx, tr, "scale_function", where);
  if (k == "softplus") {
    o.kind = ScaleFunction::Softplus;
  } else if (k == "sigmoid") {
    o.kind = ScaleFunction::Sigmoid;
  } else if (k == "soft_clipped_exp") {
    o.kind = ScaleFunction::SoftClippedExp;
  } else if (k == "tanh_exp") {
    o.kind = ScaleFunction::TanhExp;
  } else {
    bad(ctx, where, "unknown scale function '" + k + "'");
  }
  o.offset = S(number(ctx, tr, "offset", where));
  o.min_scale = S(number(ctx, tr, "min_scale", where));
  o.bound = S(number(ctx, tr, "bound", where));
  return o;
}

/// The options of a block_network conditioner node, after claiming its weights.
inline nn::BlockNetworkOptions block_options(BuildContext& ctx, const Value& net,
                                             const std::string& where) {
  nn::BlockNetworkOptions o;
  check_activation(ctx, net, where);
  check_context(ctx, net, where);
  o.in_dim = size(ctx, net, "in", where, 0);
  o.out_dim = size(ctx, net, "out", where, 1);
  o.blocks = size(ctx, net, "blocks", where, 0, max_layers);
  o.context_dim = ctx.context;
  o.residual = flag(ctx, net, "residual", where);
  o.batch_norm = flag(ctx, net, "batch_norm", where);
  o.batch_norm_eps = number(ctx, net, "batch_norm_eps", where);
  o.masked = flag(ctx, net, "masked", where);
  const std::string c = text(ctx, net, "context_input", where);
  const std::string b = text(ctx, net, "block_context", where);
  if (c == "none") {
    o.context = nn::BlockContext::None;
  } else if (c == "initial_layer") {
    o.context = nn::BlockContext::InitialLayer;
  } else if (c == "made_input") {
    o.context = nn::BlockContext::MadeInput;
  } else {
    bad(ctx, where, "unknown context_input '" + c + "'");
  }
  if (b == "none") {
    o.block_context = nn::BlockContextMode::None;
  } else if (b == "additive") {
    o.block_context = nn::BlockContextMode::Additive;
  } else if (b == "gated") {
    o.block_context = nn::BlockContextMode::Gated;
  } else {
    bad(ctx, where, "unknown block_context '" + b + "'");
  }
  const Value& w = member(ctx, net, "hidden_widths", where);
  if (!w.is_array() || Index(w.items.size()) != o.blocks + 1) {
    bad(ctx, where, "'hidden_widths' must be an array of blocks + 1 integers");
  }
  double values = 0;
  Index previous = o.in_dim;
  for (const Value& item : w.items) {
    const auto h = json::as_int64(item);
    if (!h || *h < 1 || *h > (std::int64_t(1) << 40)) {
      bad(ctx, where, "'hidden_widths' must hold positive integers");
    }
    o.hidden_widths.push_back(Index(*h));
    values += double(*h) * double(previous + (previous == o.in_dim ? o.context_dim : 0));
    previous = Index(*h);
  }
  values += double(o.out_dim) * double(previous);
  if (o.residual) values *= 2;
  claim(ctx, values, where);
  bool uniform = true;
  for (Index h : o.hidden_widths) uniform = uniform && h == o.hidden_widths.front();
  if (uniform) {
    o.hidden_width = o.hidden_widths.front();
    o.hidden_widths.clear();
  }
  return o;
}

/// Builds a block network and, for a file, sets its masks and statistics from the file (an
/// autoregressive layer checks its connectivity at construction).
template <typename S>
nn::BlockNetwork<S, nn::ReLU> block_network(BuildContext& ctx, const nn::BlockNetworkOptions& o,
                                            const std::string& where) {
  auto net = guarded(ctx, where, [&] { return nn::BlockNetwork<S, nn::ReLU>(o); });
  if (ctx.file == nullptr) return net;
  const std::string p = ctx.prefix + "conditioner.";
  guarded(ctx, where, [&] {
    net.visit_buffers([&](const std::string& name, BufferVector& b) {
      const auto it = ctx.file->tensors.find(p + name);
      if (it == ctx.file->tensors.end()) bad(ctx, where, "missing buffer '" + p + name + "'");
      const Tensor& t = it->second;
      if ((t.dtype != DType::I64 && t.dtype != DType::I32) ||
          t.shape != std::vector<std::uint64_t>{std::uint64_t(b.size())}) {
        bad(ctx, where,
            "buffer '" + p + name + "' must be an integer vector of " + std::to_string(b.size()) +
                " entries");
      }
      for (Index i = 0; i < b.size(); ++i)
        b(i) = ::nflow::io::detail::element_as_int64(t, std::size_t(i));
    });
    return 0;
  });
  return net;
}

/// A coupling layer (see docs/model_files.md for the supported transformers and conditioners).
template <typename S>
AnyBijector<S> build_coupling(const Value& node, BuildContext& ctx, const std::string& where);
/// An autoregressive layer or an inverted one ("inverse").
template <typename S>
AnyBijector<S> build_autoregressive(const Value& node, BuildContext& ctx, const std::string& where);
/// A continuous flow (tanh field; its solver and trace).
template <typename S>
AnyBijector<S> build_continuous(const Value& node, BuildContext& ctx, const std::string& where);
/// Permutation, reverse, act_norm, lu_linear, elementwise_affine.
template <typename S>
AnyBijector<S> build_simple(const Value& node, BuildContext& ctx, const std::string& where);
/// A "repeat" or "sequence" node.
template <typename S>
DynamicFlow<S> build_composite(const Value& node, BuildContext& ctx, const std::string& where,
                               int depth);
/// The model from its description (`file` null: fresh, seeded by `seed`).
template <typename S>
RuntimeModel<S> build_model(const Value& root, const TensorFile* file, std::uint64_t seed);

template <typename S>
AnyBijector<S> build_step(const Value& node, BuildContext& ctx, const std::string& where,
                          int depth) {
  const std::string type = text(ctx, node, "type", where);
  if (type == "repeat" || type == "sequence") {
    return AnyBijector<S>(build_composite<S>(node, ctx, where, depth), type);
  }
  if (type == "coupling") return build_coupling<S>(node, ctx, where);
  if (type == "continuous") return build_continuous<S>(node, ctx, where);
  if (type == "autoregressive" || type == "inverse") {
    return build_autoregressive<S>(node, ctx, where);
  }
  return build_simple<S>(node, ctx, where);
}

template <typename S>
DynamicFlow<S> build_composite(const Value& node, BuildContext& ctx, const std::string& where,
                               int depth) {
  const std::string type = text(ctx, node, "type", where);
  DynamicFlow<S> flow;
  const std::string prefix = ctx.prefix;
  const auto add = [&](const Value& step, Index i) {
    const std::string w =
        where + ", step " + std::to_string(i) + " (" +
        (step.find("type") && step.find("type")->is_string() ? step.find("type")->text
                                                             : std::string("?")) +
        ")";
    ctx.prefix = prefix + std::to_string(i) + ".";
    if (depth == 0 && type == "repeat") ctx.block = i;
    AnyBijector<S> s = build_step<S>(step, ctx, w, depth + 1);
    guarded(ctx, w, [&] {
      flow.push_back(std::move(s));
      return 0;
    });
  };
  if (type == "repeat") {
    const Index count = size(ctx, node, "count", where, 1, max_layers);
    if (depth == 0) ctx.blocks = count;
    const Value& step = member(ctx, node, "step", where);
    for (Index i = 0; i < count; ++i) add(step, i);
  } else if (type == "sequence") {
    const Value& steps = member(ctx, node, "steps", where);
    if (!steps.is_array() || steps.items.empty()) {
      bad(ctx, where, "'steps' must be a non-empty array");
    }
    for (std::size_t i = 0; i < steps.items.size(); ++i) add(steps.items[i], Index(i));
  } else {
    bad(ctx, where,
        "the transform must be a 'repeat' or a 'sequence' (a Stack, Flow or DynamicFlow), got '" +
            type + "'");
  }
  ctx.prefix = prefix;
  return flow;
}

template <typename S>
AnyBijector<S> build_coupling(const Value& node, BuildContext& ctx, const std::string& where) {
  check_dim(ctx, node, where);
  const Index dim = ctx.dim;
  const Value& tr = member(ctx, node, "transformer", where);
  const Value& net = member(ctx, node, "conditioner", where);
  const std::string tr_type = text(ctx, tr, "type", where + ", transformer");
  const std::string net_type = text(ctx, net, "type", where + ", conditioner");
  const std::string wn = where + ", conditioner";
  const Index in = size(ctx, net, "in", wn, 0, dim - 1);
  std::vector<bool> transformed(std::size_t(dim), true);
  for (Index i = 0; i < in; ++i) transformed[std::size_t(i)] = false;
  const auto mask = [&] { return guarded(ctx, where, [&] { return CouplingMask(transformed); }); };
  using R = nn::ReLU;
  constexpr int Dy = Dynamic;
  const std::string wt = where + ", transformer";
  if (net_type == "mlp") {
    check_activation(ctx, net, wn);
    check_context(ctx, net, wn);
    const Index out = size(ctx, net, "out", wn, 1);
    const Index h = size(ctx, net, "hidden_width", wn, 1);
    const Index layers = size(ctx, net, "hidden_layers", wn, 1, max_layers);
    claim(ctx,
          double(h) * double(in + ctx.context + 1) + double(layers - 1) * double(h) * double(h) +
              double(out) * double(h + 1) + double(dim),
          where);
    const CouplingOptions options{
        .hidden_width = h,
        .hidden_layers = layers,
        .context_dim = ctx.context,
        .seed = ctx.file ? 0 : flows::detail::layer_seed(ctx.seed, std::uint64_t(ctx.block))};
    const auto finish = [&](auto layer) {
      if (layer.conditioner().out_dim() != out) {
        bad(ctx, wn,
            "out " + std::to_string(out) + " does not match the transformer (" +
                std::to_string(layer.conditioner().out_dim()) + ")");
      }
      return AnyBijector<S>(std::move(layer), "coupling");
    };
    if (tr_type == "affine") {
      const S bound = S(number(ctx, tr, "log_scale_bound", wt));
      return finish(guarded(ctx, where, [&] {
        return AffineCoupling<S>(mask(), options, AffineTransformer<S>(bound));
      }));
    }
    if (tr_type == "scale_shift") {
      const auto so = scale_shift_options<S>(ctx, tr, wt);
      return finish(guarded(ctx, where, [&] {
        return ScaleShiftCoupling<S>(mask(), options, ScaleShiftTransformer<S>(so));
      }));
    }
    if (tr_type == "additive") {
      return finish(guarded(ctx, where, [&] { return AdditiveCoupling<S>(mask(), options); }));
    }
    if (tr_type == "rational_quadratic_spline") {
      return with_spline<S>(ctx, tr, wt, true, [&](int k, auto d, const SplineOptions<S>& o) {
        using T = RationalQuadraticSpline<S, Dy, decltype(d)::value>;
        return finish(
            guarded(ctx, where, [&] { return Coupling<T, Dy, Dy, R>(mask(), options, T(k, o)); }));
      });
    }
  } else if (net_type == "block_network") {
    const nn::BlockNetworkOptions o = block_options(ctx, net, wn);
    const auto finish = [&](auto make) {
      auto cond = block_network<S>(ctx, o, wn);
      return AnyBijector<S>(guarded(ctx, where, [&] { return make(std::move(cond)); }), "coupling");
    };
    using Net = nn::BlockNetwork<S, R>;
    if (tr_type == "scale_shift") {
      const auto so = scale_shift_options<S>(ctx, tr, wt);
      return finish([&](Net c) {
        return interop::ImportedAffineCoupling<S>(mask(), std::move(c),
                                                  ScaleShiftTransformer<S>(so));
      });
    }
    if (tr_type == "additive") {
      return finish(
          [&](Net c) { return interop::ImportedAdditiveCoupling<S>(mask(), std::move(c)); });
    }
    if (tr_type == "rational_quadratic_spline") {
      return with_spline<S>(ctx, tr, wt, false, [&](int k, auto, const SplineOptions<S>& so) {
        return finish([&](Net c) {
          return interop::ImportedSplineCoupling<S>(mask(), std::move(c),
                                                    RationalQuadraticSpline<S, Dy>(k, so));
        });
      });
    }
  } else {
    bad(ctx, wn, "unknown conditioner '" + net_type + "' (mlp, block_network)");
  }
  bad(ctx, wt,
      "transformer '" + tr_type + "' is not supported with a " + net_type +
          " conditioner by the run-time model");
}

template <typename S>
AnyBijector<S> build_autoregressive(const Value& outer, BuildContext& ctx,
                                    const std::string& outer_where) {
  const bool inverted = text(ctx, outer, "type", outer_where) == "inverse";
  const Value& node = inverted ? member(ctx, outer, "step", outer_where) : outer;
  const std::string where = inverted ? outer_where + ", step" : outer_where;
  if (inverted && text(ctx, node, "type", where) != "autoregressive") {
    bad(ctx, where, "the run-time model inverts autoregressive layers only");
  }
  check_dim(ctx, node, where);
  const Index dim = ctx.dim;
  const Value& tr = member(ctx, node, "transformer", where);
  const Value& net = member(ctx, node, "conditioner", where);
  const std::string wt = where + ", transformer";
  const std::string wn = where + ", conditioner";
  const std::string tr_type = text(ctx, tr, "type", wt);
  const std::string net_type = text(ctx, net, "type", wn);
  using R = nn::ReLU;
  constexpr int Dy = Dynamic;
  if (inverted && !(net_type == "made" && tr_type == "affine")) {
    bad(ctx, where, "the run-time model inverts affine MADE layers (IAF) only");
  }
  if (net_type == "made") {
    check_activation(ctx, net, wn);
    check_context(ctx, net, wn);
    const Index p = size(ctx, net, "params_per_dim", wn, 1, 1024);
    if (size(ctx, net, "dim", wn, 1) != dim) bad(ctx, wn, "dim differs from the layer's");
    const Index h = size(ctx, net, "hidden_width", wn, 1);
    const Index layers = size(ctx, net, "hidden_layers", wn, 0, max_layers);
    const double out = double(p) * double(dim);
    claim(ctx,
          layers == 0 ? out * double(dim + ctx.context + 1)
                      : double(h) * double(dim + ctx.context + 1) +
                            double(layers - 1) * double(h) * double(h) + out * double(h + 1) +
                            double(dim) + double(layers) * double(h),
          where);
    const AutoregressiveOptions options{
        .hidden_width = h,
        .hidden_layers = layers,
        .context_dim = ctx.context,
        .seed = ctx.file ? 0 : flows::detail::layer_seed(ctx.seed, std::uint64_t(ctx.block))};
    const auto check_p = [&](int want) {
      if (p != want) {
        bad(ctx, wn,
            "params_per_dim " + std::to_string(p) + " does not match the transformer (" +
                std::to_string(want) + ")");
      }
    };
    if (tr_type == "affine") {
      check_p(2);
      const S bound = S(number(ctx, tr, "log_scale_bound", wt));
      auto layer = guarded(ctx, where, [&] {
        return MAF<S, Dy, Dy, R, Dy>(dim, options, AffineTransformer<S>(bound));
      });
      if (inverted) return AnyBijector<S>(Inverted(std::move(layer)), "inverse");
      return AnyBijector<S>(std::move(layer), "autoregressive");
    }
    if (tr_type == "rational_quadratic_spline") {
      return with_spline<S>(ctx, tr, wt, true, [&](int k, auto d, const SplineOptions<S>& o) {
        using T = RationalQuadraticSpline<S, Dy, decltype(d)::value>;
        check_p(T::params_for(k));
        return AnyBijector<S>(
            guarded(ctx, where,
                    [&] { return MaskedAutoregressive<T, Dy, Dy, R, Dy>(dim, options, T(k, o)); }),
            "autoregressive");
      });
    }
  } else if (net_type == "block_network") {
    if (ctx.file == nullptr) bad(ctx, wn, "a block_network needs its masks from a file");
    const nn::BlockNetworkOptions o = block_options(ctx, net, wn);
    using Net = nn::BlockNetwork<S, R>;
    const auto finish = [&](auto make) {
      Net cond = block_network<S>(ctx, o, wn);
      return AnyBijector<S>(guarded(ctx, where, [&] { return make(std::move(cond)); }),
                            "autoregressive");
    };
    if (tr_type == "scale_shift") {
      const auto so = scale_shift_options<S>(ctx, tr, wt);
      return finish([&](Net c) {
        return interop::ImportedAffineAutoregressive<S>(std::move(c), ScaleShiftTransformer<S>(so));
      });
    }
    if (tr_type == "rational_quadratic_spline") {
      return with_spline<S>(ctx, tr, wt, false, [&](int k, auto, const SplineOptions<S>& so) {
        return finish([&](Net c) {
          return interop::ImportedSplineAutoregressive<S>(std::move(c),
                                                          RationalQuadraticSpline<S, Dy>(k, so));
        });
      });
    }
  } else {
    bad(ctx, wn, "unknown conditioner '" + net_type + "' (made, block_network)");
  }
  bad(ctx, wt,
      "transformer '" + tr_type + "' is not supported with a " + net_type +
          " conditioner by the run-time model");
}

/// A continuous flow: ContinuousFlow<S, Dynamic, Dynamic, nn::Tanh, Dynamic> (the cnf preset's
/// layer at run-time sizes), its solver and trace as the description says.
template <typename S>
AnyBijector<S> build_continuous(const Value& node, BuildContext& ctx, const std::string& where) {
  check_dim(ctx, node, where);
  const Index dim = ctx.dim;
  const Value& field = member(ctx, node, "field", where);
  const std::string wf = where + ", field";
  if (const std::string t = text(ctx, field, "type", wf); t != "mlp_field") {
    bad(ctx, wf, "unknown vector field '" + t + "' (mlp_field)");
  }
  if (const std::string a = text(ctx, field, "activation", wf); a != "tanh") {
    bad(ctx, wf,
        "activation '" + a +
            "' is not supported by the run-time model (continuous flows: tanh fields only)");
  }
  check_context(ctx, field, wf);
  const Index h = size(ctx, field, "hidden_width", wf, 1);
  const Index layers = size(ctx, field, "hidden_layers", wf, 1, max_layers);
  // The field's MLP: dim inputs, the time and the context as its context, dim outputs.
  claim(ctx,
        double(h) * double(dim + ctx.context + 1) + double(layers - 1) * double(h) * double(h) +
            double(dim) * double(h + 1),
        where);
  ContinuousFlowOptions o{
      .hidden_width = h,
      .hidden_layers = layers,
      .context_dim = ctx.context,
      .seed = ctx.file ? 0 : flows::detail::layer_seed(ctx.seed, std::uint64_t(ctx.block))};
  const Value& solver = member(ctx, node, "solver", where);
  const std::string ws = where + ", solver";
  const std::string st = text(ctx, solver, "type", ws);
  if (st == "rk4" || st == "euler") {
    o.solver = st == "rk4" ? OdeSolver::RK4 : OdeSolver::Euler;
    o.rk4_steps = size(ctx, solver, "steps", ws, 1, Index(1) << 20);
  } else if (st == "dopri5") {
    o.solver = OdeSolver::Dopri5;
    ode::Dopri5Options& d = o.dopri5;
    d.rtol = number(ctx, solver, "rtol", ws);
    d.atol = number(ctx, solver, "atol", ws);
    d.max_steps = size(ctx, solver, "max_steps", ws, 1);
    d.safety = number(ctx, solver, "safety", ws);
    d.min_factor = number(ctx, solver, "min_factor", ws);
    d.max_factor = number(ctx, solver, "max_factor", ws);
    d.initial_step = number(ctx, solver, "initial_step", ws);
    if (!(d.rtol >= 0 && d.atol >= 0 && d.rtol + d.atol > 0 && d.safety > 0 && d.safety <= 1 &&
          d.min_factor > 0 && d.min_factor <= 1 && d.max_factor >= 1 && d.initial_step >= 0 &&
          std::isfinite(d.rtol + d.atol + d.max_factor + d.initial_step))) {
      bad(ctx, ws,
          "the dopri5 options must be finite with rtol, atol >= 0 (not both 0), safety in (0, "
          "1], min_factor in (0, 1], max_factor >= 1 and initial_step >= 0");
    }
  } else {
    bad(ctx, ws, "unknown solver '" + st + "' (rk4, euler, dopri5)");
  }
  const std::string tr = text(ctx, node, "trace", where);
  bool known_trace = false;
  for (ode::TraceEstimator t :
       {ode::TraceEstimator::Exact, ode::TraceEstimator::HutchinsonRademacher,
        ode::TraceEstimator::HutchinsonGaussian}) {
    if (tr == describe_detail::trace_name(t)) {
      o.trace = t;
      known_trace = true;
    }
  }
  if (!known_trace) {
    bad(ctx, where,
        "unknown trace '" + tr + "' (exact, hutchinson_rademacher, hutchinson_gaussian)");
  }
  const std::string seed = text(ctx, node, "probe_seed", where);
  std::uint64_t probe_seed = 0;
  const auto [end, ec] = std::from_chars(seed.data(), seed.data() + seed.size(), probe_seed);
  if (ec != std::errc() || end != seed.data() + seed.size() || seed.empty()) {
    bad(ctx, where, "'probe_seed' must be a decimal unsigned 64-bit integer, got '" + seed + "'");
  }
  o.probe_seed = probe_seed;
  return AnyBijector<S>(
      guarded(ctx, where,
              [&] { return ContinuousFlow<S, Dynamic, Dynamic, nn::Tanh, Dynamic>(dim, o); }),
      "continuous");
}

template <typename S>
AnyBijector<S> build_simple(const Value& node, BuildContext& ctx, const std::string& where) {
  const std::string type = text(ctx, node, "type", where);
  static constexpr const char* known[] = {"permutation", "reverse", "act_norm", "lu_linear",
                                          "elementwise_affine"};
  bool ok = false;
  for (const char* k : known) ok = ok || type == k;
  if (!ok) {
    bad(ctx, where,
        "layer type '" + type +
            "' is not supported by the run-time model (see docs/model_files.md)");
  }
  check_dim(ctx, node, where);
  const Index dim = ctx.dim;
  const double d = double(dim);
  if (type == "permutation") {
    claim(ctx, d, where);
    Eigen::VectorXi order(dim);
    const bool reversed = ctx.file == nullptr && ctx.block + 1 < ctx.blocks;
    for (Index k = 0; k < dim; ++k) order(k) = int(reversed ? dim - 1 - k : k);
    return AnyBijector<S>(Permutation<S>(order), type);
  }
  if (type == "reverse") {
    claim(ctx, 0, where);
    return AnyBijector<S>(Reverse<S>(dim), type);
  }
  if (type == "act_norm") {
    claim(ctx, 2 * d, where);
    return AnyBijector<S>(ActNorm<S>(dim), type);
  }
  if (type == "lu_linear") {
    claim(ctx, 2 * d * d, where);
    if (ctx.file == nullptr) {
      return AnyBijector<S>(
          LULinear<S>::random_orthogonal(
              dim, flows::detail::layer_seed(ctx.seed, std::uint64_t(ctx.block)) ^ 2),
          type);
    }
    return AnyBijector<S>(LULinear<S>(dim), type);
  }
  claim(ctx, 2 * d, where);
  return AnyBijector<S>(ElementwiseAffine<S>(dim), type);
}

template <typename S>
RuntimeModel<S> build_model(const Value& root, const TensorFile* file, std::uint64_t seed) {
  BuildContext ctx;
  ctx.file = file;
  ctx.seed = seed;
  if (file != nullptr) {
    for (const auto& t : file->tensors) ctx.budget += double(t.second.element_count());
  }
  const std::string where = "the model";
  if (text(ctx, root, "type", where) != "density") {
    bad(ctx, where, "the description's root must be a 'density'");
  }
  ctx.dim = size(ctx, root, "dim", where, 1, Index(1) << 31);
  ctx.context = size(ctx, root, "context", where, 0, Index(1) << 31);
  const Value& base = member(ctx, root, "base", where);
  const std::string wb = where + ", base";
  const std::string base_type = text(ctx, base, "type", wb);
  std::optional<RuntimeBase<S>> b;
  if (base_type == "standard_normal") {
    b = RuntimeBase<S>::standard_normal(ctx.dim);
  } else if (base_type == "diagonal_normal") {
    ctx.layers -= 1;  // not a layer
    claim(ctx, 2 * double(ctx.dim), wb);
    b = RuntimeBase<S>::diagonal_normal(ctx.dim);
  } else if (base_type == "uniform_box") {
    Vector<S> bounds[2];
    const char* keys[2] = {"lower", "upper"};
    for (int k = 0; k < 2; ++k) {
      const Value& a = member(ctx, base, keys[k], wb);
      if (!a.is_array() || Index(a.items.size()) != ctx.dim) {
        bad(ctx, wb, std::string("'") + keys[k] + "' must be an array of dim numbers");
      }
      bounds[k].resize(ctx.dim);
      for (Index i = 0; i < ctx.dim; ++i) {
        const auto v = json::as_double(a.items[std::size_t(i)]);
        if (!v) bad(ctx, wb, std::string("'") + keys[k] + "' must hold numbers");
        bounds[k](i) = S(*v);
      }
    }
    b = guarded(ctx, wb, [&] { return RuntimeBase<S>::uniform_box(bounds[0], bounds[1]); });
  } else {
    bad(ctx, wb,
        "unknown base '" + base_type + "' (standard_normal, diagonal_normal, uniform_box)");
  }
  ctx.prefix = "transform.";
  DynamicFlow<S> transform =
      build_composite<S>(member(ctx, root, "transform", where), ctx, where + ", transform", 0);
  return guarded(ctx, where, [&] { return RuntimeModel<S>(std::move(*b), std::move(transform)); });
}

template <typename S>
RuntimeModel<S> load_from(const TensorFile& file) {
  check_schema(file.metadata);
  const auto it = file.metadata.find(architecture_key);
  if (it == file.metadata.end()) {
    throw FormatError(
        "nflow::io::load_model: the file has no model description (metadata "
        "\"nflow.architecture\"): it was written before nflow's model-file schema, or by another "
        "program; load it into its C++ type with nflow::io::load");
  }
  Value root;
  try {
    root = json::parse(it->second);
  } catch (const FormatError& e) {
    throw FormatError(std::string("nflow::io::load_model: the file's description is not valid "
                                  "JSON: ") +
                      e.what());
  }
  RuntimeModel<S> model = build_model<S>(root, &file, 0);
  load(model, file);  // the strict tensor load; checks the description round trip too
  return model;
}

}  // namespace model_detail

/// @brief The model in a self-describing file, built without naming its type.
/// @throws IoError (unreadable), FormatError (not a model file, no description — a file from
///   before the schema —, a corrupt or hostile description, an unsupported layer, tensors that do
///   not match), VersionError (a newer schema), ParameterError (invalid values).
template <typename Scalar>
RuntimeModel<Scalar> load_model(const std::filesystem::path& file) {
  return model_detail::load_from<Scalar>(read_safetensors(file));
}
/// @brief load_model() of a whole file held in memory.
template <typename Scalar>
RuntimeModel<Scalar> load_model(std::span<const std::byte> bytes) {
  return model_detail::load_from<Scalar>(parse_safetensors(std::span<const unsigned char>(
      reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size())));
}

// GCC 12 at -O2/-O3 warns "may be used uninitialized" on the std::string temporaries of the
// JSON initializer lists below (a false positive); clang does not.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
/// @brief A fresh (untrained) run-time model of a preset family: "real_nvp", "nice", "glow",
/// "maf", "iaf", "coupling_nsf", "autoregressive_nsf" or "cnf" (conditional when options.context
/// > 0; cnf: one block by default, RK4 with 20 steps and the exact trace, as flows::cnf),
/// with the architecture, parameter names and — for the same seed — the same parameters as
/// flows::<family><Scalar>(dim, options) (spline flows: on R^dim, 1 to 64 bins, 8 by default;
/// bound options.bound or 5).
/// @throws nflow::ParameterError naming the family or option.
template <typename Scalar>
RuntimeModel<Scalar> make_preset(std::string_view family, Index dim,
                                 const RuntimePresetOptions& options) {
  using namespace describe_detail;
  const std::string who = "nflow::io::make_preset('" + std::string(family) + "'): ";
  const auto fail = [&](const std::string& what) { throw ParameterError(who + what); };
  const bool coupling =
      family == "real_nvp" || family == "nice" || family == "glow" || family == "coupling_nsf";
  const bool autoregressive = family == "maf" || family == "iaf" || family == "autoregressive_nsf";
  const bool continuous = family == "cnf";
  if (!coupling && !autoregressive && !continuous) {
    fail("unknown family (real_nvp, nice, glow, maf, iaf, coupling_nsf, autoregressive_nsf, cnf)");
  }
  if (dim < (coupling ? 2 : 1)) {
    fail("dim must be >= " + std::to_string(coupling ? 2 : 1) + ", got " + std::to_string(dim));
  }
  if (options.transforms < 0 || options.hidden_features < 0 || options.hidden_layers < 0 ||
      options.context < 0 || options.bins < 0 || !(options.bound >= 0)) {
    fail("options must not be negative (0 means the default)");
  }
  const Index transforms = options.transforms ? options.transforms : continuous ? 1 : 3;
  const Index width = options.hidden_features ? options.hidden_features : 64;
  const Index layers = options.hidden_layers ? options.hidden_layers : 2;
  const Index context = options.context;
  const Index bins = options.bins ? options.bins : 8;
  constexpr int max_bins = RationalQuadraticSpline<Scalar, Dynamic>::MaxDynamicBins;
  if (bins < 1 || bins > max_bins) {
    fail("options.bins = " + std::to_string(bins) +
         " is not supported by the run-time model (1 to " + std::to_string(max_bins) + ")");
  }
  SplineOptions<Scalar> so;
  if (options.bound > 0) {
    so.lower = Scalar(-options.bound);
    so.upper = Scalar(options.bound);
  }
  const Index a = dim / 2;  // the coupling's conditioning features
  Value transformer;
  Index p = 2;
  try {
    if (family == "nice") {
      transformer = node(AdditiveTransformer<Scalar>(), Rank<1>{});
      p = 1;
    } else if (family == "coupling_nsf" || family == "autoregressive_nsf") {
      const RationalQuadraticSpline<Scalar, Dynamic> spline(int(bins), so);
      transformer = node(spline, Rank<1>{});
      p = spline.params_per_dim();
    } else if (family == "real_nvp") {
      transformer = node(ScaleShiftTransformer<Scalar>(), Rank<1>{});
    } else {
      transformer = node(AffineTransformer<Scalar>(), Rank<1>{});
    }
  } catch (const ParameterError& e) {
    fail(e.what());
  }
  Value layer;
  if (continuous) {
    // flows::cnf's layer: a tanh field, RK4 with 20 steps, the exact trace.
    const ContinuousFlowOptions o{.hidden_width = width, .hidden_layers = layers};
    layer = continuous_node(dim, o, context, nn::Tanh::name);
  } else if (coupling) {
    layer = structure_node("coupling", dim, transformer,
                           mlp_node(a, p * (dim - a), width, layers, context, nn::ReLU::name));
  } else {
    layer = structure_node("autoregressive", dim, transformer,
                           made_node(dim, p, width, layers, context, nn::ReLU::name));
    if (family == "iaf") layer = typed("inverse", {{"step", layer}});
  }
  const Value permutation = typed("permutation", {{"dim", integer(dim)}});
  const Value block = continuous ? layer
                      : family == "glow"
                          ? steps_node({typed("act_norm", {{"dim", integer(dim)}}),
                                        typed("lu_linear", {{"dim", integer(dim)}}), layer})
                          : steps_node({layer, permutation});
  Value base = typed(family == "nice" ? "diagonal_normal" : "standard_normal");
  const Value root =
      typed("density",
            {{"dim", integer(dim)},
             {"context", integer(context)},
             {"base", std::move(base)},
             {"transform", typed("repeat", {{"count", integer(transforms)}, {"step", block}})}});
  return model_detail::build_model<Scalar>(root, nullptr, options.seed);
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

/// @brief The run-time model of an imported nflows or zuko model (interop::ImportedFlow): the
/// same transform, and the base as a RuntimeBase (the standard normal when loc = 0 and
/// scale = 1, else a diagonal normal with log_scale = log(scale)), so that io::save writes it
/// with its description and load_model reads it back.
template <typename Scalar>
RuntimeModel<Scalar> to_runtime_model(interop::ImportedFlow<Scalar> imported) {
  const auto& b = imported.base();
  const bool standard =
      (b.loc().array() == Scalar(0)).all() && (b.scale().array() == Scalar(1)).all();
  RuntimeBase<Scalar> base = standard ? RuntimeBase<Scalar>::standard_normal(b.dim())
                                      : RuntimeBase<Scalar>::diagonal_normal(b.dim());
  if (!standard) {
    base.visit_parameters([&](const std::string& name, auto t) {
      if (name == "loc") t = b.loc();
      if (name == "log_scale") t = b.scale().array().log().matrix();
    });
  }
  return RuntimeModel<Scalar>(std::move(base), std::move(imported.transform()));
}

#ifdef NFLOW_RUNTIME_PRECOMPILED
#define NFLOW_RUNTIME_EXTERN(S)                                                                   \
  extern template AnyBijector<S> model_detail::build_coupling<S>(                                 \
      const json::Value&, model_detail::BuildContext&, const std::string&);                       \
  extern template AnyBijector<S> model_detail::build_autoregressive<S>(                           \
      const json::Value&, model_detail::BuildContext&, const std::string&);                       \
  extern template AnyBijector<S> model_detail::build_continuous<S>(                               \
      const json::Value&, model_detail::BuildContext&, const std::string&);                       \
  extern template AnyBijector<S> model_detail::build_simple<S>(                                   \
      const json::Value&, model_detail::BuildContext&, const std::string&);                       \
  extern template DynamicFlow<S> model_detail::build_composite<S>(                                \
      const json::Value&, model_detail::BuildContext&, const std::string&, int);                  \
  extern template RuntimeModel<S> model_detail::build_model<S>(const json::Value&,                \
                                                               const TensorFile*, std::uint64_t); \
  extern template RuntimeModel<S> load_model<S>(const std::filesystem::path&);                    \
  extern template RuntimeModel<S> load_model<S>(std::span<const std::byte>);                      \
  extern template RuntimeModel<S> make_preset<S>(std::string_view, Index,                         \
                                                 const RuntimePresetOptions&);
NFLOW_RUNTIME_EXTERN(float)
NFLOW_RUNTIME_EXTERN(double)
#undef NFLOW_RUNTIME_EXTERN
// The library and the program must agree on Eigen's alignment (the vector instruction set) and
// on NFLOW_USE_BLAS, as for nflow::instances (nflow/core/instances.hpp): src/runtime/model.cpp
// defines this symbol for its own settings, so a program built with others fails to link, naming
// nflow::io::runtime_detail::abi_align<N>_blas<B>, instead of corrupting the heap at run time.
namespace runtime_detail {
NFLOW_DETAIL_SETTINGS_CHECK()
}  // namespace runtime_detail
#endif

}  // namespace nflow::io
