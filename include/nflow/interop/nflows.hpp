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
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "nflow/core/errors.hpp"
#include "nflow/interop/imported_flow.hpp"
#include "nflow/interop/layers.hpp"
#include "nflow/interop/masks.hpp"
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
  Eigen::VectorXi permutation;
};

template <typename Scalar>
struct NflowsLoaded {
  std::vector<std::shared_ptr<const Layer<Scalar>>> layers;
  std::vector<NflowsLayerInfo> info;
  Index dim = 0;
  Index context_dim = 0;
};

template <typename Scalar>
Linear<Scalar> load_linear(StateDict& sd, const std::string& p, Index out, Index in) {
  Linear<Scalar> l;
  l.weight = sd.matrix<Scalar>(p + ".weight", out, in);
  l.bias = sd.vector<Scalar>(p + ".bias", out);
  return l;
}

/// An nflows MaskedLinear: weight, bias, mask (folded into the weight) and degrees (checked to
/// be integers in [0, dim], otherwise unused: the mask defines the layer).
template <typename Scalar>
Linear<Scalar> load_masked_linear(StateDict& sd, const std::string& p, Index out, Index in,
                                  Index dim, Eigen::MatrixXd& mask) {
  Linear<Scalar> l = load_linear<Scalar>(sd, p, out, in);
  mask = sd.mask(p + ".mask", out, in);
  l.weight = l.weight.cwiseProduct(mask.cast<Scalar>());
  sd.integers(p + ".degrees", out, 0, dim);
  return l;
}

template <typename Scalar>
BatchNorm1dEval<Scalar> load_batch_norm_1d(StateDict& sd, const std::string& p, Index n,
                                           Scalar eps) {
  BatchNorm1dEval<Scalar> bn;
  bn.enabled = true;
  bn.eps = eps;
  bn.weight = sd.vector<Scalar>(p + ".weight", n);
  bn.bias = sd.vector<Scalar>(p + ".bias", n);
  bn.running_mean = sd.vector<Scalar>(p + ".running_mean", n);
  bn.running_var = sd.vector<Scalar>(p + ".running_var", n);
  if ((bn.running_var.array() < Scalar(0)).any()) {
    throw ParameterError("nflow::interop: tensor '" + p + ".running_var' in " + sd.source() +
                         " holds a negative variance");
  }
  if (sd.contains(p + ".num_batches_tracked")) sd.skip_counter(p + ".num_batches_tracked");
  return bn;
}

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

/// Residual blocks "<p>.blocks.b.{batch_norm_layers.k, linear_layers.k, context_layer}".
template <typename Scalar>
NflowsResidualBlock<Scalar> load_residual_block(StateDict& sd, const std::string& p, Index h,
                                                Index c, Index dim, bool masked,
                                                Eigen::MatrixXd* m0, Eigen::MatrixXd* m1) {
  NflowsResidualBlock<Scalar> b;
  if (sd.has_prefix(p + ".batch_norm_layers.")) {
    b.batch_norm0 = load_batch_norm_1d<Scalar>(sd, p + ".batch_norm_layers.0", h, Scalar(1e-3));
    b.batch_norm1 = load_batch_norm_1d<Scalar>(sd, p + ".batch_norm_layers.1", h, Scalar(1e-3));
  }
  if (masked) {
    b.linear0 = load_masked_linear<Scalar>(sd, p + ".linear_layers.0", h, h, dim, *m0);
    b.linear1 = load_masked_linear<Scalar>(sd, p + ".linear_layers.1", h, h, dim, *m1);
  } else {
    b.linear0 = load_linear<Scalar>(sd, p + ".linear_layers.0", h, h);
    b.linear1 = load_linear<Scalar>(sd, p + ".linear_layers.1", h, h);
  }
  if (c > 0) b.context_layer = load_linear<Scalar>(sd, p + ".context_layer", h, c);
  return b;
}

/// MaskedAffineAutoregressiveTransform at `prefix` (D = dim). Sets `context_dim` from the file.
template <typename Scalar>
std::shared_ptr<const Layer<Scalar>> load_nflows_maat(StateDict& sd, const std::string& prefix,
                                                      Index dim, Index& context_dim,
                                                      const NflowsFlowOptions& o,
                                                      NflowsLayerInfo& info) {
  const std::string p = prefix + ".autoregressive_net";
  const Index h = sd.rows_of(p + ".initial_layer.weight");
  NflowsNet<Scalar> net;
  Eigen::MatrixXd mask;
  net.initial = load_masked_linear<Scalar>(sd, p + ".initial_layer", h, dim, dim, mask);
  Eigen::MatrixXd conn = mask;  // hidden unit k depends on input j
  context_dim = 0;
  if (sd.contains(p + ".context_layer.weight")) {
    context_dim = sd.cols_of(p + ".context_layer.weight");
    net.context_layer = load_linear<Scalar>(sd, p + ".context_layer", h, context_dim);
  }
  const Index nb = count_children(sd, p + ".blocks.");
  bool residual = o.use_residual_blocks.value_or(true);
  if (nb > 0) {
    residual = sd.contains(p + ".blocks.0.linear_layers.0.weight");
    sd.check_option("use_residual_blocks", o.use_residual_blocks, residual);
  }
  net.residual = residual;
  bool bn_within = false;
  for (Index b = 0; b < nb; ++b) {
    const std::string bp = p + ".blocks." + std::to_string(b);
    if (residual) {
      if (!sd.contains(bp + ".linear_layers.0.weight"))
        sd.fail("'" + bp + "' is not a residual block like block 0");
      Eigen::MatrixXd m0, m1;
      net.residual_blocks.push_back(
          load_residual_block<Scalar>(sd, bp, h, context_dim, dim, true, &m0, &m1));
      bn_within = net.residual_blocks.back().batch_norm0.enabled;
      conn = bool_or(conn, bool_product(m1, bool_product(m0, conn)));
    } else {
      if (!sd.contains(bp + ".linear.weight"))
        sd.fail("'" + bp + "' is not a feed-forward block like block 0");
      NflowsFeedforwardBlock<Scalar> fb;
      if (sd.has_prefix(bp + ".batch_norm."))
        fb.batch_norm = load_batch_norm_1d<Scalar>(sd, bp + ".batch_norm", h, Scalar(1e-3));
      Eigen::MatrixXd m;
      fb.linear = load_masked_linear<Scalar>(sd, bp + ".linear", h, h, dim, m);
      bn_within = fb.batch_norm.enabled;
      net.feedforward_blocks.push_back(std::move(fb));
      conn = bool_product(m, conn);
    }
  }
  const Index out = sd.rows_of(p + ".final_layer.weight");
  if (out != 2 * dim) {
    sd.fail("'" + p + ".final_layer.weight' has " + std::to_string(out) +
            " outputs, expected 2·D = " + std::to_string(2 * dim) +
            " (only the affine MaskedAffineAutoregressiveTransform is supported)");
  }
  net.final = load_masked_linear<Scalar>(sd, p + ".final_layer", out, h, dim, mask);
  conn = bool_product(mask, conn);
  Eigen::VectorXi natural(dim);
  for (Index i = 0; i < dim; ++i) natural(i) = int(i);
  const Index passes = check_autoregressive(feature_dependency(conn, dim, 2), natural,
                                            "'" + p + "'", "the natural order 0, 1, …, D−1");
  info.kind = NflowsKind::Autoregressive;
  info.hidden = h;
  info.blocks = nb;
  info.residual = residual;
  info.batch_norm_within = bn_within;
  return std::make_shared<NflowsAffineAutoregressive<Scalar>>(std::move(net), dim, passes, prefix);
}

template <typename Scalar>
std::shared_ptr<const Layer<Scalar>> load_nflows_coupling(StateDict& sd, const std::string& prefix,
                                                          Index dim, NflowsLayerInfo& info) {
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
                           " must split 0 … D−1 into two disjoint sets; "
                           "feature " +
                           std::to_string(i) + " appears " + std::to_string(seen[std::size_t(i)]) +
                           " times");
    }
  }
  if (id.size() == 0 || tf.size() == 0)
    sd.fail("'" + prefix + "': a coupling layer needs identity and transformed features");
  const std::string p = prefix + ".transform_net";
  const Index h = sd.rows_of(p + ".initial_layer.weight");
  NflowsNet<Scalar> net;
  net.residual = true;
  net.initial = load_linear<Scalar>(sd, p + ".initial_layer", h, id.size());
  const Index nb = count_children(sd, p + ".blocks.");
  for (Index b = 0; b < nb; ++b) {
    net.residual_blocks.push_back(load_residual_block<Scalar>(
        sd, p + ".blocks." + std::to_string(b), h, 0, dim, false, nullptr, nullptr));
  }
  const Index out = sd.rows_of(p + ".final_layer.weight");
  if (out != tf.size() && out != 2 * tf.size()) {
    sd.fail("'" + p + ".final_layer.weight' has " + std::to_string(out) + " outputs, expected " +
            std::to_string(2 * tf.size()) + " (affine) or " + std::to_string(tf.size()) +
            " (additive coupling)");
  }
  net.final = load_linear<Scalar>(sd, p + ".final_layer", out, h);
  info.kind = NflowsKind::Coupling;
  info.hidden = h;
  info.blocks = nb;
  info.residual = true;
  info.batch_norm_within = nb > 0 && net.residual_blocks.front().batch_norm0.enabled;
  info.additive = out == tf.size();
  std::vector<Index> ids(id.data(), id.data() + id.size()), tfs(tf.data(), tf.data() + tf.size());
  return std::make_shared<NflowsCoupling<Scalar>>(std::move(ids), std::move(tfs), std::move(net),
                                                  info.additive, prefix);
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
            "a permutation, BatchNorm, Affine/AdditiveCouplingTransform)");
  };
  NflowsLoaded<Scalar> r;
  // D from the first layer.
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
  for (const std::string& p : prefixes) {
    NflowsLayerInfo info;
    info.prefix = p;
    switch (kind_of(p)) {
      case NflowsKind::Permutation: {
        info.kind = NflowsKind::Permutation;
        info.permutation = sd.permutation(p + "._permutation", r.dim);
        r.layers.push_back(std::make_shared<PermutationLayer<Scalar>>(
            info.permutation, "nflows Permutation '" + p + "'"));
        break;
      }
      case NflowsKind::Autoregressive: {
        Index c = 0;
        r.layers.push_back(load_nflows_maat<Scalar>(sd, p, r.dim, c, o, info));
        if (context_seen && c != r.context_dim) {
          sd.fail(std::string(what) + ": layer '" + p + "' takes a context of " +
                  std::to_string(c) + " features, but an earlier autoregressive layer takes " +
                  std::to_string(r.context_dim));
        }
        context_seen = true;
        r.context_dim = c;
        break;
      }
      case NflowsKind::BatchNorm: {
        info.kind = NflowsKind::BatchNorm;
        const Scalar eps = Scalar(1e-5);
        const Vector<Scalar> uw = sd.vector<Scalar>(p + ".unconstrained_weight", r.dim);
        Vector<Scalar> bias = sd.vector<Scalar>(p + ".bias", r.dim);
        Vector<Scalar> mean = sd.vector<Scalar>(p + ".running_mean", r.dim);
        Vector<Scalar> var = sd.vector<Scalar>(p + ".running_var", r.dim);
        if ((var.array() < Scalar(0)).any()) {
          throw ParameterError("nflow::interop: tensor '" + p + ".running_var' in " + sd.source() +
                               " holds a negative variance");
        }
        r.layers.push_back(std::make_shared<NflowsBatchNormLayer<Scalar>>(
            uw, std::move(bias), std::move(mean), std::move(var), eps, p));
        break;
      }
      case NflowsKind::Coupling:
        r.layers.push_back(load_nflows_coupling<Scalar>(sd, p, r.dim, info));
        break;
    }
    r.info.push_back(std::move(info));
  }
  if (o.context_features && *o.context_features != r.context_dim) {
    sd.check_option("context_features", o.context_features, r.context_dim);
  }
  return r;
}

template <typename Scalar>
ImportedFlow<Scalar> make_nflows_flow(NflowsLoaded<Scalar>&& r) {
  return ImportedFlow<Scalar>(ImportedBase<Scalar>::standard(r.dim),
                              ImportedTransform<Scalar>(r.dim, r.context_dim, std::move(r.layers)));
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
