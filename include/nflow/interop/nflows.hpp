#pragma once
/// @file
/// @brief Importers for models built with nflows 0.14 (bayesiains/nflows) from their
/// `state_dict()` saved as safetensors: load_nflows_flow (a Flow over a CompositeTransform of
/// MaskedAffineAutoregressiveTransform, permutations, BatchNorm and affine/additive coupling
/// layers), load_nflows_maf (the MaskedAutoregressiveFlow preset) and load_nflows_simple_realnvp
/// (the SimpleRealNVP preset). See docs/interop.md for the conventions and what is supported.
///
/// Everything the evaluation needs is read from the file: the layer sequence from the key
/// prefixes ("_transform._transforms.<i>."), D, hidden widths and context size from shapes, the
/// number of blocks and residual vs feed-forward MADE blocks from key names, batch norm from its
/// keys, masks, permutations and coupling index sets from their buffers. The options are the
/// constructor's arguments; every field is optional and, when set, is checked against the file
/// (a mismatch throws io::FormatError). The one that can matter for evaluation is
/// `use_residual_blocks` for a MADE with num_blocks = 0, which the keys cannot tell.

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "nflow/core/errors.hpp"
#include "nflow/interop/imported_flow.hpp"
#include "nflow/interop/native.hpp"
#include "nflow/interop/state_dict.hpp"

namespace nflow::interop {

/// @brief `Flow(transform=CompositeTransform([...]), distribution=StandardNormal([features]))`
/// with layers among MaskedAffineAutoregressiveTransform, ReversePermutation / RandomPermutation
/// / Permutation, BatchNorm, AffineCouplingTransform and AdditiveCouplingTransform (with
/// ResidualNet conditioners). A Flow whose transform is a single such layer (not a composite)
/// is accepted too.
struct NflowsFlowOptions {
  std::optional<Index> features = std::nullopt;  ///< D
  std::optional<Index> context_features =
      std::nullopt;  ///< C (unset: read from the file; set, even to 0: checked)
  /// MADE blocks: residual (nflows' default) or feed-forward. Only needed when num_blocks = 0
  /// (the keys then cannot tell); otherwise inferred and checked.
  std::optional<bool> use_residual_blocks = std::nullopt;
  /// Spline layers (PiecewiseRationalQuadraticCouplingTransform,
  /// MaskedPiecewiseRationalQuadraticAutoregressiveTransform, tails='linear'): the interval
  /// [−tail_bound, tail_bound]. Required when the model has spline layers (a state dict does
  /// not record it).
  std::optional<double> tail_bound = std::nullopt;
  std::optional<Index> num_bins = std::nullopt;  ///< K (read from the file; set: checked)
  double min_bin_width = 1e-3;                   ///< nflows' DEFAULT_MIN_BIN_WIDTH
  double min_bin_height = 1e-3;                  ///< nflows' DEFAULT_MIN_BIN_HEIGHT
  double min_derivative = 1e-3;                  ///< nflows' DEFAULT_MIN_DERIVATIVE
};

/// @brief `MaskedAutoregressiveFlow(features, hidden_features, num_layers, num_blocks_per_layer,
/// use_residual_blocks=True, use_random_masks=False, use_random_permutations=False,
/// activation=relu, dropout_probability=0.0, batch_norm_within_layers=False,
/// batch_norm_between_layers=False)`. Unset fields are inferred from the file; set fields are
/// checked. Only relu is supported; dropout is the identity in eval mode.
struct NflowsMafOptions {
  std::optional<Index> features = std::nullopt;
  std::optional<Index> hidden_features = std::nullopt;
  std::optional<Index> num_layers = std::nullopt;
  std::optional<Index> num_blocks_per_layer = std::nullopt;
  std::optional<bool> use_residual_blocks =
      std::nullopt;  ///< needed only when num_blocks_per_layer = 0
  std::optional<bool> use_random_masks = std::nullopt;  ///< masks are read from the file either way
  std::optional<bool> use_random_permutations = std::nullopt;
  std::optional<bool> batch_norm_within_layers = std::nullopt;
  std::optional<bool> batch_norm_between_layers = std::nullopt;
};

/// @brief `SimpleRealNVP(features, hidden_features, num_layers, num_blocks_per_layer,
/// use_volume_preserving=False, activation=relu, dropout_probability=0.0,
/// batch_norm_within_layers=False, batch_norm_between_layers=False)`. Unset fields are inferred;
/// set fields are checked.
struct NflowsSimpleRealNvpOptions {
  std::optional<Index> features = std::nullopt;
  std::optional<Index> hidden_features = std::nullopt;
  std::optional<Index> num_layers = std::nullopt;
  std::optional<Index> num_blocks_per_layer = std::nullopt;
  std::optional<bool> use_volume_preserving = std::nullopt;
  std::optional<bool> batch_norm_within_layers = std::nullopt;
  std::optional<bool> batch_norm_between_layers = std::nullopt;
};

namespace detail {

enum class NflowsKind { Autoregressive, Permutation, BatchNorm, Coupling };

/// What a loaded nflows layer looked like (for the presets' checks).
struct NflowsLayerInfo {
  NflowsKind kind{};
  std::string prefix;
  Index hidden = 0;
  Index blocks = 0;
  bool residual = true;
  bool batch_norm_within = false;
  bool additive = false;
  int spline_bins = 0;  ///< 0: affine or additive
  Eigen::VectorXi permutation;
};

template <typename Scalar>
struct NflowsLoaded {
  std::vector<AnyBijector<Scalar>> steps;
  std::vector<NflowsLayerInfo> info;
  Index dim = 0;
  Index context_dim = 0;
};

/// Block indices under `prefix` ("….blocks."), required to be 0 … B−1.
inline Index count_children(StateDict& sd, const std::string& prefix) {
  const std::vector<Index> idx = sd.child_indices(prefix);
  for (std::size_t i = 0; i < idx.size(); ++i) {
    if (idx[i] != Index(i))
      sd.fail("'" + prefix + std::to_string(i) + ".*' is missing (found index " +
              std::to_string(idx[i]) + ")");
  }
  return Index(idx.size());
}

/// torch.nn.Linear (or nflows' MaskedLinear with its mask and degrees) at `from`, stored as the
/// network's layer `to`.
template <typename Scalar>
void take_linear(StateDict& sd, NetworkTensors<Scalar>& t, const std::string& from,
                 const std::string& to, Index out, Index in, bool masked, Index dim) {
  t.parameters[to + ".weight"] = sd.matrix<Scalar>(from + ".weight", out, in);
  t.parameters[to + ".bias"] = sd.vector<Scalar>(from + ".bias", out);
  if (masked) {
    t.masks[to + ".weight"] = sd.mask(from + ".mask", out, in);
    sd.integers(from + ".degrees", out, 0, dim);  // checked; the mask defines the layer
  }
}

/// torch.nn.BatchNorm1d (eval mode) at `from`, stored as the network's norm `to`.
template <typename Scalar>
void take_norm(StateDict& sd, NetworkTensors<Scalar>& t, const std::string& from,
               const std::string& to, Index n) {
  t.parameters[to + ".weight"] = sd.vector<Scalar>(from + ".weight", n);
  t.parameters[to + ".bias"] = sd.vector<Scalar>(from + ".bias", n);
  t.running_mean[to] = sd.vector<Scalar>(from + ".running_mean", n);
  Vector<Scalar> var = sd.vector<Scalar>(from + ".running_var", n);
  if ((var.array() < Scalar(0)).any()) {
    throw ParameterError("nflow::interop: tensor '" + from + ".running_var' in " + sd.source() +
                         " holds a negative variance");
  }
  t.running_var[to] = std::move(var);
  if (sd.contains(from + ".num_batches_tracked")) sd.skip_counter(from + ".num_batches_tracked");
}

/// nflows' MADE (`made`: masked layers, context through 'context_layer' and the residual blocks'
/// additive context layers) or ResidualNet (context concatenated to the input, gated in the
/// blocks) at `p`, as the tensors of an nn::BlockNetwork.
template <typename Scalar>
NetworkTensors<Scalar> take_nflows_net(StateDict& sd, const std::string& p, Index in, Index dim,
                                       bool made, const std::optional<bool>& residual_option,
                                       NflowsLayerInfo& info) {
  NetworkTensors<Scalar> t;
  auto& o = t.options;
  const Index h = sd.rows_of(p + ".initial_layer.weight");
  const Index cols = sd.cols_of(p + ".initial_layer.weight");
  o.in_dim = in;
  o.hidden_width = h;
  o.masked = made;
  o.batch_norm_eps = 1e-3;
  Index c = 0;
  if (made) {
    if (cols != in)
      sd.fail("'" + p + ".initial_layer.weight' has " + std::to_string(cols) +
              " inputs, expected D = " + std::to_string(in));
    take_linear(sd, t, p + ".initial_layer", "initial", h, in, true, dim);
    if (sd.contains(p + ".context_layer.weight")) {
      c = sd.cols_of(p + ".context_layer.weight");
      o.context = nn::BlockContext::MadeInput;
      take_linear(sd, t, p + ".context_layer", "context", h, c, false, dim);
    }
  } else {
    c = cols - in;
    if (c < 0)
      sd.fail("'" + p + ".initial_layer.weight' has " + std::to_string(cols) +
              " inputs, fewer than the " + std::to_string(in) + " conditioning features");
    const ParameterMatrix<Scalar> w = sd.matrix<Scalar>(p + ".initial_layer.weight", h, cols);
    t.parameters["initial.weight"] = w.leftCols(in);
    if (c > 0) {
      t.parameters["initial.context_weight"] = w.rightCols(c);
      o.context = nn::BlockContext::InitialLayer;
    }
    t.parameters["initial.bias"] = sd.vector<Scalar>(p + ".initial_layer.bias", h);
  }
  o.context_dim = c;
  const Index nb = count_children(sd, p + ".blocks.");
  bool residual = made ? residual_option.value_or(true) : true;
  if (nb > 0) {
    residual = sd.contains(p + ".blocks.0.linear_layers.0.weight");
    if (made) sd.check_option("use_residual_blocks", residual_option, residual);
    if (!made && !residual) sd.fail("'" + p + ".blocks.0' is not a ResidualNet block");
  }
  const bool bn = nb > 0 && (sd.has_prefix(p + ".blocks.0.batch_norm_layers.") ||
                             sd.has_prefix(p + ".blocks.0.batch_norm."));
  o.residual = residual;
  o.blocks = nb;
  o.batch_norm = bn;
  if (c > 0 && residual) {
    o.block_context = made ? nn::BlockContextMode::Additive : nn::BlockContextMode::Gated;
  }
  for (Index b = 0; b < nb; ++b) {
    const std::string bp = p + ".blocks." + std::to_string(b);
    const std::string to = "blocks." + std::to_string(b);
    if (residual) {
      if (bn) {
        take_norm(sd, t, bp + ".batch_norm_layers.0", to + ".norm0", h);
        take_norm(sd, t, bp + ".batch_norm_layers.1", to + ".norm1", h);
      }
      take_linear(sd, t, bp + ".linear_layers.0", to + ".linear0", h, h, made, dim);
      take_linear(sd, t, bp + ".linear_layers.1", to + ".linear1", h, h, made, dim);
      if (c > 0) take_linear(sd, t, bp + ".context_layer", to + ".context", h, c, false, dim);
    } else {
      if (bn) take_norm(sd, t, bp + ".batch_norm", to + ".norm", h);
      take_linear(sd, t, bp + ".linear", to + ".linear", h, h, true, dim);
    }
  }
  o.out_dim = sd.rows_of(p + ".final_layer.weight");
  take_linear(sd, t, p + ".final_layer", "final", o.out_dim, h, made, dim);
  info.hidden = h;
  info.blocks = nb;
  info.residual = residual;
  info.batch_norm_within = bn;
  return t;
}

/// The nflows spline options of a layer with `bins` bins (tail_bound is required: a state dict
/// does not record it).
template <typename Scalar>
SplineOptions<Scalar> nflows_spline_options(StateDict& sd, const NflowsFlowOptions& o,
                                            const std::string& prefix, int bins, Scalar raw_scale) {
  if (!o.tail_bound) {
    sd.fail("layer '" + prefix + "' is a rational-quadratic spline with linear tails; give its " +
            "tail_bound in the options (a state dict does not record it; nflows' default is 1.0)");
  }
  sd.check_option("num_bins", o.num_bins, Index(bins));
  SplineOptions<Scalar> s = SplineOptions<Scalar>::nflows(Scalar(*o.tail_bound), raw_scale);
  s.min_bin_width = Scalar(o.min_bin_width);
  s.min_bin_height = Scalar(o.min_bin_height);
  s.min_derivative = Scalar(o.min_derivative);
  return s;
}

/// MaskedAffineAutoregressiveTransform or MaskedPiecewiseRationalQuadraticAutoregressiveTransform
/// (linear tails) at `prefix`. Sets `context_dim` from the file.
template <typename Scalar>
AnyBijector<Scalar> load_nflows_autoregressive(StateDict& sd, const std::string& prefix, Index dim,
                                               Index& context_dim, const NflowsFlowOptions& o,
                                               NflowsLayerInfo& info) {
  const std::string p = prefix + ".autoregressive_net";
  NetworkTensors<Scalar> t =
      take_nflows_net<Scalar>(sd, p, dim, dim, true, o.use_residual_blocks, info);
  context_dim = t.options.context_dim;
  info.kind = NflowsKind::Autoregressive;
  const Index out = t.options.out_dim;
  const Index P = out % dim == 0 ? out / dim : 0;
  if (P == 2) {  // [unconstrained scale, shift] per feature
    permute_outputs(t, output_rows(dim, {1, 0}, OutputLayout::FeatureMajor));
    return in_layer(sd, p, [&] {
      return AnyBijector<Scalar>(
          ImportedAffineAutoregressive<Scalar>(
              build_network(t, prefix),
              ScaleShiftTransformer<Scalar>(ScaleShiftOptions<Scalar>::nflows_autoregressive())),
          "nflows MaskedAffineAutoregressiveTransform '" + prefix + "'");
    });
  }
  const int K = spline_bins_of(P);
  if (K == 0) {
    sd.fail("'" + p + ".final_layer.weight' has " + std::to_string(out) +
            " outputs: neither 2·D (affine) nor D·(3K − 1) (rational-quadratic spline with linear "
            "tails)");
  }
  info.spline_bins = K;
  const std::vector<Index> order = identity_order(P);
  permute_outputs(t, output_rows(dim, order, OutputLayout::FeatureMajor));
  const SplineOptions<Scalar> so = nflows_spline_options<Scalar>(sd, o, prefix, K, Scalar(1));
  std::optional<AnyBijector<Scalar>> step;
  in_layer(sd, p, [&] {
    step.emplace(ImportedSplineAutoregressive<Scalar>(build_network(t, prefix),
                                                      imported_spline(sd, prefix, K, so)),
                 "nflows MaskedPiecewiseRationalQuadraticAutoregressiveTransform '" + prefix + "'");
  });
  return std::move(*step);
}

/// Affine, additive or rational-quadratic (linear tails) coupling at `prefix`, with a
/// ResidualNet conditioner. Sets `context_dim` from the file.
template <typename Scalar>
AnyBijector<Scalar> load_nflows_coupling(StateDict& sd, const std::string& prefix, Index dim,
                                         Index& context_dim, const NflowsFlowOptions& o,
                                         NflowsLayerInfo& info) {
  const Eigen::VectorXi id = sd.integers(prefix + ".identity_features",
                                         sd.length_of(prefix + ".identity_features"), 0, dim - 1);
  const Eigen::VectorXi tf = sd.integers(prefix + ".transform_features",
                                         sd.length_of(prefix + ".transform_features"), 0, dim - 1);
  std::vector<int> seen(std::size_t(dim), 0);
  for (Index i = 0; i < id.size(); ++i) ++seen[std::size_t(id(i))];
  for (Index i = 0; i < tf.size(); ++i) ++seen[std::size_t(tf(i))];
  for (Index i = 0; i < dim; ++i) {
    if (seen[std::size_t(i)] != 1) {
      throw ParameterError("nflow::interop: '" + prefix + ".identity_features' and '" + prefix +
                           ".transform_features' in " + sd.source() +
                           " must split 0 … D−1 into two disjoint sets; feature " +
                           std::to_string(i) + " appears " + std::to_string(seen[std::size_t(i)]) +
                           " times");
    }
  }
  if (id.size() == 0 || tf.size() == 0)
    sd.fail("'" + prefix + "': a coupling layer needs identity and transformed features");
  info.kind = NflowsKind::Coupling;
  NetworkTensors<Scalar> t =
      take_nflows_net<Scalar>(sd, prefix + ".transform_net", id.size(), dim, false, {}, info);
  context_dim = t.options.context_dim;
  // nflow's coupling feeds the conditioning features and orders the transformed ones by index;
  // nflows in the order of its index buffers.
  auto positions_by_index = [](const Eigen::VectorXi& v) {
    std::vector<Index> pos(std::size_t(v.size()));
    for (Index i = 0; i < v.size(); ++i) pos[std::size_t(i)] = i;
    std::sort(pos.begin(), pos.end(), [&](Index a, Index b) { return v(a) < v(b); });
    return pos;
  };
  t.parameters["initial.weight"] =
      take_cols(t.parameters["initial.weight"], positions_by_index(id));
  const std::vector<Index> tf_pos = positions_by_index(tf);
  std::vector<bool> transformed(std::size_t(dim), false);
  for (Index i = 0; i < tf.size(); ++i) transformed[std::size_t(tf(i))] = true;
  CouplingMask mask(std::move(transformed));
  const Index nt = tf.size();
  const Index out = t.options.out_dim;
  const Index P = out % nt == 0 ? out / nt : 0;
  const std::string name = "nflows " +
                           std::string(P == 1   ? "AdditiveCouplingTransform"
                                       : P == 2 ? "AffineCouplingTransform"
                                                : "PiecewiseRationalQuadraticCouplingTransform") +
                           " '" + prefix + "'";
  if (P == 1) {  // z = x + t: nflow's additive transformer is z = x − μ, so μ = −t
    info.additive = true;
    permute_outputs(t, output_rows(nt, {0}, OutputLayout::Blocked, tf_pos));
    t.parameters["final.weight"] *= Scalar(-1);
    t.parameters["final.bias"] *= Scalar(-1);
    return AnyBijector<Scalar>(
        ImportedAdditiveCoupling<Scalar>(std::move(mask), build_network(t, prefix),
                                         AdditiveTransformer<Scalar>()),
        name);
  }
  if (P == 2) {  // [shifts | unconstrained scales]
    permute_outputs(t, output_rows(nt, {0, 1}, OutputLayout::Blocked, tf_pos));
    return AnyBijector<Scalar>(
        ImportedAffineCoupling<Scalar>(
            std::move(mask), build_network(t, prefix),
            ScaleShiftTransformer<Scalar>(ScaleShiftOptions<Scalar>::nflows_coupling())),
        name);
  }
  const int K = spline_bins_of(P);
  if (K == 0) {
    sd.fail("'" + prefix + ".transform_net.final_layer.weight' has " + std::to_string(out) +
            " outputs: not |T| (additive), 2·|T| (affine) or |T|·(3K − 1) (spline with linear "
            "tails) for |T| = " +
            std::to_string(nt));
  }
  info.spline_bins = K;
  const std::vector<Index> order = identity_order(P);
  permute_outputs(t, output_rows(nt, order, OutputLayout::FeatureMajor, tf_pos));
  // nflows divides the raw widths and heights by sqrt(hidden_features) of a ResidualNet.
  const SplineOptions<Scalar> so = nflows_spline_options<Scalar>(
      sd, o, prefix, K, Scalar(1) / std::sqrt(Scalar(t.options.hidden_width)));
  return AnyBijector<Scalar>(
      ImportedSplineCoupling<Scalar>(std::move(mask), build_network(t, prefix),
                                     imported_spline(sd, prefix, K, so)),
      name);
}

/// nflows' BatchNorm transform in eval mode: z = w (x − m)/σ + b with w = softplus(u) + ε,
/// σ² = running_var + ε (ε = 1e-5), i.e. nflow's ElementwiseAffine with log_scale = log w − ½ log
/// σ² and shift = b − w m/σ.
template <typename Scalar>
AnyBijector<Scalar> load_nflows_batch_norm(StateDict& sd, const std::string& p, Index dim) {
  const Scalar eps = Scalar(1e-5);
  const Vector<Scalar> uw = sd.vector<Scalar>(p + ".unconstrained_weight", dim);
  const Vector<Scalar> bias = sd.vector<Scalar>(p + ".bias", dim);
  const Vector<Scalar> mean = sd.vector<Scalar>(p + ".running_mean", dim);
  const Vector<Scalar> var = sd.vector<Scalar>(p + ".running_var", dim);
  if ((var.array() < Scalar(0)).any()) {
    throw ParameterError("nflow::interop: tensor '" + p + ".running_var' in " + sd.source() +
                         " holds a negative variance");
  }
  Vector<Scalar> w(dim), log_scale(dim), shift(dim);
  for (Index i = 0; i < dim; ++i) {
    const Scalar u = uw(i);
    w(i) = (u > Scalar(20) ? u : std::log1p(std::exp(u))) + eps;  // torch softplus, threshold 20
    const Scalar sd_i = std::sqrt(var(i) + eps);
    log_scale(i) = std::log(w(i)) - std::log(sd_i);
    shift(i) = bias(i) - w(i) * mean(i) / sd_i;
  }
  ElementwiseAffine<Scalar> a(dim);
  a.set_shift(shift);
  a.set_log_scale(log_scale);
  return AnyBijector<Scalar>(std::move(a), "nflows BatchNorm '" + p + "'");
}

/// Loads every layer of an nflows Flow's transform.
template <typename Scalar>
NflowsLoaded<Scalar> load_nflows_layers(StateDict& sd, const NflowsFlowOptions& o,
                                        const char* what) {
  std::vector<std::string> prefixes;
  const std::string composite = "_transform._transforms.";
  if (sd.has_prefix(composite)) {
    const Index n = count_children(sd, composite);
    for (Index i = 0; i < n; ++i) prefixes.push_back(composite + std::to_string(i));
  } else if (sd.has_prefix("_transform.")) {
    prefixes.push_back("_transform");
  } else {
    sd.fail(std::string(what) + ": no '_transform.' keys: not the state dict of an nflows Flow");
  }
  auto kind_of = [&](const std::string& p) {
    if (sd.contains(p + "._permutation")) return NflowsKind::Permutation;
    if (sd.has_prefix(p + ".autoregressive_net.")) return NflowsKind::Autoregressive;
    if (sd.contains(p + ".unconstrained_weight")) return NflowsKind::BatchNorm;
    if (sd.contains(p + ".identity_features")) return NflowsKind::Coupling;
    sd.fail(std::string(what) + ": layer '" + p +
            "' is none of the supported nflows transforms (MaskedAffineAutoregressiveTransform, "
            "MaskedPiecewiseRationalQuadraticAutoregressiveTransform, a permutation, BatchNorm, "
            "Affine/AdditiveCouplingTransform, PiecewiseRationalQuadraticCouplingTransform)");
  };
  NflowsLoaded<Scalar> r;
  {
    const std::string& p = prefixes.front();
    switch (kind_of(p)) {
      case NflowsKind::Permutation:
        r.dim = sd.length_of(p + "._permutation");
        break;
      case NflowsKind::Autoregressive:
        r.dim = sd.cols_of(p + ".autoregressive_net.initial_layer.weight");
        break;
      case NflowsKind::BatchNorm:
        r.dim = sd.length_of(p + ".unconstrained_weight");
        break;
      case NflowsKind::Coupling:
        r.dim = sd.length_of(p + ".identity_features") + sd.length_of(p + ".transform_features");
        break;
    }
  }
  if (r.dim <= 0) sd.fail(std::string(what) + ": the model has dimension 0");
  sd.check_option("features", o.features, r.dim);
  bool context_seen = false;
  auto agree = [&](const std::string& p, Index c) {
    if (context_seen && c != r.context_dim) {
      sd.fail(std::string(what) + ": layer '" + p + "' takes a context of " + std::to_string(c) +
              " features, but an earlier layer takes " + std::to_string(r.context_dim));
    }
    context_seen = true;
    r.context_dim = c;
  };
  for (const std::string& p : prefixes) {
    NflowsLayerInfo info;
    info.prefix = p;
    Index c = 0;
    switch (kind_of(p)) {
      case NflowsKind::Permutation:
        info.kind = NflowsKind::Permutation;
        info.permutation = sd.permutation(p + "._permutation", r.dim);
        r.steps.emplace_back(Permutation<Scalar>(info.permutation),
                             "nflows Permutation '" + p + "'");
        break;
      case NflowsKind::Autoregressive:
        r.steps.push_back(load_nflows_autoregressive<Scalar>(sd, p, r.dim, c, o, info));
        agree(p, c);
        break;
      case NflowsKind::BatchNorm:
        info.kind = NflowsKind::BatchNorm;
        r.steps.push_back(load_nflows_batch_norm<Scalar>(sd, p, r.dim));
        break;
      case NflowsKind::Coupling:
        r.steps.push_back(load_nflows_coupling<Scalar>(sd, p, r.dim, c, o, info));
        agree(p, c);
        break;
    }
    r.info.push_back(std::move(info));
  }
  sd.check_option("context_features", o.context_features, r.context_dim);
  return r;
}

template <typename Scalar>
ImportedFlow<Scalar> make_nflows_flow(NflowsLoaded<Scalar>&& r) {
  return ImportedFlow<Scalar>(ImportedBase<Scalar>::standard(r.dim),
                              DynamicFlow<Scalar>(std::move(r.steps)));
}

}  // namespace detail

/// @brief Loads an nflows `Flow(transform=CompositeTransform([...]), distribution=StandardNormal)`
/// (e.g. MaskedAffineAutoregressiveTransform + ReversePermutation repeated, with or without
/// context, residual or feed-forward MADE, batch norm within and between layers) from its
/// state dict. The layers are read in state-dict index order.
/// @throws io::IoError / io::FormatError (missing, unexpected or misshapen tensors, unsupported
/// layers, an option that contradicts the file), ParameterError (non-finite values, masks that are
/// not autoregressive, an invalid permutation or index set). Each message names the tensor.
template <typename Scalar = double>
ImportedFlow<Scalar> load_nflows_flow(StateDict sd, const NflowsFlowOptions& options = {}) {
  auto r = detail::load_nflows_layers<Scalar>(sd, options, "load_nflows_flow");
  sd.finish("load_nflows_flow");
  return detail::make_nflows_flow(std::move(r));
}

/// @brief Loads nflows' `MaskedAutoregressiveFlow(...)` preset: num_layers × [permutation,
/// MaskedAffineAutoregressiveTransform, BatchNorm if batch_norm_between_layers]. No context.
template <typename Scalar = double>
ImportedFlow<Scalar> load_nflows_maf(StateDict sd, const NflowsMafOptions& o = {}) {
  const NflowsFlowOptions fo{o.features, std::nullopt, o.use_residual_blocks};
  auto r = detail::load_nflows_layers<Scalar>(sd, fo, "load_nflows_maf");
  sd.finish("load_nflows_maf");
  using detail::NflowsKind;
  const auto& info = r.info;
  const bool bn_between = info.size() >= 3 && info[2].kind == NflowsKind::BatchNorm;
  const std::size_t per = bn_between ? 3 : 2;
  if (info.size() % per != 0)
    sd.fail("load_nflows_maf: the layers do not form num_layers × [permutation, MADE" +
            std::string(bn_between ? ", BatchNorm]" : "]"));
  const Index num_layers = Index(info.size() / per);
  for (std::size_t i = 0; i < info.size(); ++i) {
    const NflowsKind want = i % per == 0   ? NflowsKind::Permutation
                            : i % per == 1 ? NflowsKind::Autoregressive
                                           : NflowsKind::BatchNorm;
    if (info[i].kind != want) {
      sd.fail("load_nflows_maf: layer '" + info[i].prefix +
              "' breaks the preset's pattern [permutation, MaskedAffineAutoregressiveTransform" +
              (bn_between ? ", BatchNorm]" : "]") +
              " (use load_nflows_flow for other compositions)");
    }
    if (want == NflowsKind::Autoregressive) {
      const auto& a = info[i];
      const auto& first = info[1];
      if (a.hidden != first.hidden || a.blocks != first.blocks || a.residual != first.residual ||
          a.batch_norm_within != first.batch_norm_within) {
        sd.fail("load_nflows_maf: layer '" + a.prefix +
                "' differs in width, blocks or batch norm from '" + first.prefix + "'");
      }
    }
  }
  const auto& made = info[1];
  sd.check_option("hidden_features", o.hidden_features, made.hidden);
  sd.check_option("num_layers", o.num_layers, num_layers);
  sd.check_option("num_blocks_per_layer", o.num_blocks_per_layer, made.blocks);
  sd.check_option("use_residual_blocks", o.use_residual_blocks, made.residual);
  sd.check_option("batch_norm_within_layers", o.batch_norm_within_layers, made.batch_norm_within);
  sd.check_option("batch_norm_between_layers", o.batch_norm_between_layers, bn_between);
  if (o.use_random_masks && *o.use_random_masks && made.residual) {
    sd.fail(
        "load_nflows_maf: use_random_masks = True requires feed-forward blocks "
        "(use_residual_blocks = False)");
  }
  if (o.use_random_permutations && !*o.use_random_permutations) {
    for (std::size_t i = 0; i < info.size(); i += per) {
      for (Index j = 0; j < r.dim; ++j) {
        if (info[i].permutation(j) != int(r.dim - 1 - j)) {
          sd.fail("load_nflows_maf: use_random_permutations = False, but '" + info[i].prefix +
                  "._permutation' is not the reverse permutation");
        }
      }
    }
  }
  if (r.context_dim != 0)
    sd.fail("load_nflows_maf: the preset has no context, but the file's MADEs take one");
  return detail::make_nflows_flow(std::move(r));
}

/// @brief Loads nflows' `SimpleRealNVP(...)` preset: num_layers × [AffineCouplingTransform (or
/// AdditiveCouplingTransform if use_volume_preserving), BatchNorm if batch_norm_between_layers].
template <typename Scalar = double>
ImportedFlow<Scalar> load_nflows_simple_realnvp(StateDict sd,
                                                const NflowsSimpleRealNvpOptions& o = {}) {
  auto r = detail::load_nflows_layers<Scalar>(sd, NflowsFlowOptions{o.features, Index(0), {}},
                                              "load_nflows_simple_realnvp");
  sd.finish("load_nflows_simple_realnvp");
  using detail::NflowsKind;
  const auto& info = r.info;
  const bool bn_between = info.size() >= 2 && info[1].kind == NflowsKind::BatchNorm;
  const std::size_t per = bn_between ? 2 : 1;
  if (info.size() % per != 0)
    sd.fail(
        "load_nflows_simple_realnvp: the layers do not form num_layers × [coupling, BatchNorm]");
  for (std::size_t i = 0; i < info.size(); ++i) {
    const NflowsKind want = i % per == 0 ? NflowsKind::Coupling : NflowsKind::BatchNorm;
    if (info[i].kind != want) {
      sd.fail("load_nflows_simple_realnvp: layer '" + info[i].prefix +
              "' breaks the preset's pattern [coupling" + (bn_between ? ", BatchNorm]" : "]") +
              " (use load_nflows_flow for other compositions)");
    }
    if (want == NflowsKind::Coupling) {
      const auto& a = info[i];
      if (a.hidden != info[0].hidden || a.blocks != info[0].blocks ||
          a.additive != info[0].additive || a.batch_norm_within != info[0].batch_norm_within) {
        sd.fail("load_nflows_simple_realnvp: layer '" + a.prefix +
                "' differs in width, blocks, batch norm or "
                "coupling type from '" +
                info[0].prefix + "'");
      }
    }
  }
  sd.check_option("hidden_features", o.hidden_features, info[0].hidden);
  sd.check_option("num_layers", o.num_layers, Index(info.size() / per));
  sd.check_option("num_blocks_per_layer", o.num_blocks_per_layer, info[0].blocks);
  sd.check_option("use_volume_preserving", o.use_volume_preserving, info[0].additive);
  sd.check_option("batch_norm_within_layers", o.batch_norm_within_layers,
                  info[0].batch_norm_within);
  sd.check_option("batch_norm_between_layers", o.batch_norm_between_layers, bn_between);
  return detail::make_nflows_flow(std::move(r));
}

}  // namespace nflow::interop
