#pragma once
/// @file
/// @brief Importers for models built with zuko 1.6 (probabilists/zuko) from their `state_dict()`
/// saved as safetensors: load_zuko_maf (zuko.flows.MAF) and load_zuko_realnvp
/// (zuko.flows.RealNVP), with or without context, with fixed or random orders and masks.
/// See docs/interop.md.
///
/// Read from the file: the number of transforms (key prefixes "transform.transforms.<i>."), D
/// (the 'order' or 'mask' buffer), the context size and hidden widths (weight shapes), the
/// orders, the MaskedMLP masks and the coupling masks (buffers), the base's loc and scale.
/// Options mirror the constructors' arguments; set fields are checked against the file.

#include <Eigen/Core>
#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "nflow/core/errors.hpp"
#include "nflow/interop/imported_flow.hpp"
#include "nflow/interop/masks.hpp"
#include "nflow/interop/native.hpp"
#include "nflow/interop/state_dict.hpp"

namespace nflow::interop {

/// @brief `zuko.flows.MAF(features, context=0, transforms=3, randperm=False,
/// hidden_features=(64, 64))` with the default univariate MonotonicAffineTransform and ReLU.
/// Unset fields are inferred from the file; set fields are checked. `slope` is
/// MonotonicAffineTransform's slope (1e-3 in zuko; it cannot be read from a state dict).
struct ZukoMafOptions {
  std::optional<Index> features = std::nullopt;
  std::optional<Index> context = std::nullopt;
  std::optional<Index> transforms = std::nullopt;
  std::optional<bool> randperm =
      std::nullopt;                         ///< False: orders must be arange(D) / flip (checked)
  std::vector<Index> hidden_features = {};  ///< empty: inferred
  double slope = 1e-3;
};

/// @brief `zuko.flows.RealNVP(features, context=0, transforms=3, randmask=False,
/// hidden_features=(64, 64))` (= zuko.flows.NICE with MonotonicAffineTransform).
struct ZukoRealNvpOptions {
  std::optional<Index> features = std::nullopt;
  std::optional<Index> context = std::nullopt;
  std::optional<Index> transforms = std::nullopt;
  std::optional<bool> randmask =
      std::nullopt;  ///< False: masks must be arange(D) % 2 == i % 2 (checked)
  std::vector<Index> hidden_features = {};  ///< empty: inferred
  double slope = 1e-3;
};

/// @brief `zuko.flows.NSF(features, context=0, bins=8, transforms=3, randperm=False,
/// passes=None, hidden_features=(64, 64))`: MAF with MonotonicRQSTransform(bound, slope)
/// splines. `bound` and `slope` cannot be read from a state dict (zuko's NSF always uses
/// MonotonicRQSTransform's defaults 5 and 1e-3).
struct ZukoNsfOptions {
  std::optional<Index> features = std::nullopt;
  std::optional<Index> context = std::nullopt;
  std::optional<Index> transforms = std::nullopt;
  std::optional<Index> bins = std::nullopt;     ///< K (read from the file; set: checked)
  std::optional<bool> randperm = std::nullopt;  ///< False: orders must be arange(D) / flip
  std::optional<Index> passes = std::nullopt;   ///< 2: coupling; unset: not checked
  std::vector<Index> hidden_features = {};      ///< empty: inferred
  double bound = 5.0;
  double slope = 1e-3;
};

namespace detail {

/// Transform indices 0 … n−1 under "transform.transforms.".
inline std::vector<std::string> zuko_prefixes(StateDict& sd, const char* what) {
  const std::string root = "transform.transforms.";
  const std::vector<Index> idx = sd.child_indices(root);
  if (idx.empty())
    sd.fail(std::string(what) +
            ": no 'transform.transforms.<i>.' keys: not the state dict of a zuko flow");
  std::vector<std::string> out;
  for (std::size_t i = 0; i < idx.size(); ++i) {
    if (idx[i] != Index(i))
      sd.fail(std::string(what) + ": transform " + std::to_string(i) + " has no tensors");
    out.push_back(root + std::to_string(i));
  }
  return out;
}

/// The hyper-network "<p>.hyper.{0,2,4,…}" (linear layers at even indices, ReLU between) on
/// concat(x, c) with `in` = |x| inputs and `context` = |c|, as the tensors of a feed-forward
/// nn::BlockNetwork (`masked`: zuko's MaskedMLP, each layer's '.mask' buffer loaded too).
/// `widths` receives the hidden widths; `conn` (when masked) the composed 0/1 dependency of the
/// outputs on x.
template <typename Scalar>
NetworkTensors<Scalar> take_zuko_mlp(StateDict& sd, const std::string& p, Index in, Index context,
                                     bool masked, std::vector<Index>& widths,
                                     Eigen::MatrixXd* conn = nullptr) {
  const std::string root = p + ".hyper.";
  const std::vector<Index> idx = sd.child_indices(root);
  if (idx.empty()) sd.fail("no '" + root + "<j>.weight' layers");
  for (std::size_t l = 0; l < idx.size(); ++l) {
    if (idx[l] != Index(2 * l)) {
      sd.fail("'" + root + "' holds layer index " + std::to_string(idx[l]) + " where " +
              std::to_string(2 * l) +
              " was expected (linear layers at even indices with ReLU between; normalize=True and "
              "other activations with parameters are not supported)");
    }
  }
  if (idx.size() < 2) {
    sd.fail("'" + root +
            "' has a single linear layer (hidden_features = []); nflow's conditioner "
            "needs at least one hidden layer");
  }
  NetworkTensors<Scalar> t;
  auto& o = t.options;
  widths.clear();
  Index cols = in + context;
  for (std::size_t l = 0; l < idx.size(); ++l) {
    const std::string lp = root + std::to_string(idx[l]);
    const Index out = sd.rows_of(lp + ".weight");
    const ParameterMatrix<Scalar> w = sd.matrix<Scalar>(lp + ".weight", out, cols);
    Eigen::MatrixXd m;
    if (masked) m = sd.mask(lp + ".mask", out, cols);
    const bool first = l == 0, last = l + 1 == idx.size();
    const std::string to = first  ? std::string("initial")
                           : last ? std::string("final")
                                  : "blocks." + std::to_string(l - 1) + ".linear";
    if (first) {
      t.parameters["initial.weight"] = w.leftCols(in);
      if (masked) t.masks["initial.weight"] = m.leftCols(in);
      if (context > 0) {
        t.parameters["initial.context_weight"] = w.rightCols(context);
        if (masked) t.masks["initial.context_weight"] = m.rightCols(context);
      }
      if (conn != nullptr) *conn = m.leftCols(in);
    } else {
      t.parameters[to + ".weight"] = w;
      if (masked) t.masks[to + ".weight"] = m;
      if (conn != nullptr) *conn = bool_product(m, *conn);
    }
    t.parameters[to + ".bias"] = sd.vector<Scalar>(lp + ".bias", out);
    if (!last) widths.push_back(out);
    cols = out;
  }
  o.in_dim = in;
  o.out_dim = cols;
  o.hidden_width = widths.front();
  o.hidden_widths = widths;
  o.blocks = Index(idx.size()) - 2;
  o.context_dim = context;
  o.residual = false;
  o.masked = masked;
  if (context > 0) o.context = nn::BlockContext::InitialLayer;
  return t;
}

template <typename Scalar>
ImportedBase<Scalar> load_zuko_base(StateDict& sd, Index dim) {
  Vector<Scalar> loc = sd.vector<Scalar>("base.loc", dim);
  Vector<Scalar> scale = sd.vector<Scalar>("base.scale", dim);
  if (!(scale.array() > Scalar(0)).all()) {
    throw ParameterError("nflow::interop: tensor 'base.scale' in " + sd.source() +
                         " must be positive");
  }
  return ImportedBase<Scalar>(std::move(loc), std::move(scale));
}

/// The transforms' prefixes and the dimension D (the length of the first transform's `key`, a
/// 1-D tensor of D entries), checked against the options `features` and `transforms`.
struct ZukoLayout {
  std::vector<std::string> prefixes;
  Index dim = 0;
};
inline ZukoLayout zuko_layout(StateDict& sd, const char* who, const char* key,
                              const std::optional<Index>& features,
                              const std::optional<Index>& transforms) {
  ZukoLayout layout{zuko_prefixes(sd, who), 0};
  layout.dim = sd.length_of(layout.prefixes.front() + key);
  if (layout.dim <= 0) sd.fail(std::string(who) + ": the model has dimension 0");
  sd.check_option("features", features, layout.dim);
  sd.check_option("transforms", transforms, Index(layout.prefixes.size()));
  return layout;
}

/// '<p>.hyper' must output `expected` values (`expectation` says how that count arises).
template <typename Scalar>
void check_outputs(StateDict& sd, const NetworkTensors<Scalar>& t, const std::string& p,
                   Index expected, const std::string& expectation) {
  if (t.options.out_dim != expected) {
    sd.fail("'" + p + ".hyper' outputs " + std::to_string(t.options.out_dim) +
            " values, expected " + expectation);
  }
}

/// Reads the DiagNormal base, checks that every key was used, and assembles the flow.
template <typename Scalar>
ImportedFlow<Scalar> finish_zuko(StateDict& sd, const char* who, Index dim,
                                 std::vector<AnyBijector<Scalar>> steps) {
  ImportedBase<Scalar> base = load_zuko_base<Scalar>(sd, dim);
  sd.finish(who);
  return ImportedFlow<Scalar>(std::move(base), DynamicFlow<Scalar>(std::move(steps)));
}

inline void check_hidden(StateDict& sd, const std::vector<Index>& given,
                         const std::vector<Index>& found, const std::string& where) {
  if (!given.empty() && given != found) {
    std::string g, f;
    for (Index v : given) g += (g.empty() ? "" : ", ") + std::to_string(v);
    for (Index v : found) f += (f.empty() ? "" : ", ") + std::to_string(v);
    sd.fail("hidden_features = [" + g + "] was given, but '" + where + "' has hidden widths [" + f +
            "]");
  }
}

/// The transforms of zuko.flows.MAF or NSF: MaskedAutoregressiveTransform layers with a
/// MaskedMLP on concat(x, c) whose output holds P parameters per feature (feature-major);
/// `make(prefix, tensors)` builds the layer once the output rows are in nflow's order.
template <typename Scalar, typename Make>
std::vector<AnyBijector<Scalar>> load_zuko_autoregressive(
    StateDict& sd, const ZukoLayout& layout, Index context_dim, const std::optional<bool>& randperm,
    const std::vector<Index>& hidden, const std::optional<Index>& passes, Index P,
    const std::vector<Index>& order_of_params, const std::string& expectation, Make&& make) {
  const Index dim = layout.dim;
  std::vector<AnyBijector<Scalar>> steps;
  for (std::size_t t = 0; t < layout.prefixes.size(); ++t) {
    const std::string& p = layout.prefixes[t];
    const Eigen::VectorXi order = sd.integers(p + ".order", dim, 0, dim - 1);
    if (randperm && !*randperm) {
      // zuko stores order // ceil(D / passes): with g = ceil(D / groups), arange(D) // g.
      const Index groups = Index(order.maxCoeff()) + 1;
      const Index g = (dim + groups - 1) / groups;
      for (Index i = 0; i < dim; ++i) {
        if (order(i) != int((t % 2 == 0 ? i : dim - 1 - i) / g)) {
          sd.fail("randperm = False was given, but '" + p + ".order' is not " +
                  (t % 2 == 0 ? "arange(D)" : "flip(arange(D))") +
                  (g > 1 ? " // " + std::to_string(g) : std::string()));
        }
      }
    }
    if (passes) {  // zuko stores order // ceil(D / passes): that many distinct values
      const Index group = (dim + *passes - 1) / *passes;
      const Index groups = (dim + group - 1) / group;
      if (Index(order.maxCoeff()) + 1 != groups) {
        sd.fail("passes = " + std::to_string(*passes) + " was given, but '" + p + ".order' has " +
                std::to_string(order.maxCoeff() + 1) + " groups, not " + std::to_string(groups));
      }
    }
    std::vector<Index> widths;
    Eigen::MatrixXd conn;
    NetworkTensors<Scalar> net =
        take_zuko_mlp<Scalar>(sd, p, dim, context_dim, true, widths, &conn);
    check_hidden(sd, hidden, widths, p + ".hyper");
    check_outputs(sd, net, p, P * dim, expectation);
    // Dependencies only from lower to higher 'order' (zuko's passes = 2 coupling has equal
    // orders within a group).
    check_autoregressive(feature_dependency(conn, dim, P), order, "'" + p + ".hyper'",
                         "the order of '" + p + ".order'");
    permute_outputs(net, output_rows(dim, order_of_params, OutputLayout::FeatureMajor));
    steps.push_back(in_layer(sd, p + ".hyper", [&] { return make(p, net); }));
  }
  return steps;
}

}  // namespace detail

/// @brief Loads `zuko.flows.MAF(...)`: `transforms` MaskedAutoregressiveTransform layers
/// (MonotonicAffineTransform, MaskedMLP hyper-network on concat(x, c)), DiagNormal base, as
/// native MaskedAutoregressive layers (ImportedAffineAutoregressive).
/// @throws io::IoError / io::FormatError (missing, unexpected or misshapen tensors, an option that
/// contradicts the file), ParameterError (non-finite values, masks not autoregressive in the
/// layer's 'order', invalid orders). Each message names the tensor.
template <typename Scalar = double>
ImportedFlow<Scalar> load_zuko_maf(StateDict sd, const ZukoMafOptions& o = {}) {
  const detail::ZukoLayout layout =
      detail::zuko_layout(sd, "load_zuko_maf", ".order", o.features, o.transforms);
  const Index dim = layout.dim;
  const Index context_dim = sd.cols_of(layout.prefixes.front() + ".hyper.0.weight") - dim;
  if (context_dim < 0)
    sd.fail("load_zuko_maf: '" + layout.prefixes.front() +
            ".hyper.0.weight' has fewer inputs than D");
  sd.check_option("context", o.context, context_dim);
  const ScaleShiftTransformer<Scalar> affine(ScaleShiftOptions<Scalar>::zuko(Scalar(o.slope)));
  auto steps = detail::load_zuko_autoregressive<Scalar>(
      sd, layout, context_dim, o.randperm, o.hidden_features, std::nullopt, 2, {0, 1},
      "2·D = " + std::to_string(2 * dim) +
          " (only the affine MonotonicAffineTransform here; "
          "load splines with load_zuko_nsf)",
      [&](const std::string& p, const detail::NetworkTensors<Scalar>& t) {
        return AnyBijector<Scalar>(
            ImportedAffineAutoregressive<Scalar>(detail::build_network(t, p), affine),
            "zuko MaskedAutoregressiveTransform '" + p + "'");
      });
  return detail::finish_zuko(sd, "load_zuko_maf", dim, std::move(steps));
}

/// @brief Loads `zuko.flows.NSF(...)` (fully autoregressive, or passes = 2: coupling):
/// `transforms` MaskedAutoregressiveTransform layers with MonotonicRQSTransform(bound, slope)
/// splines, as native MaskedAutoregressive layers (ImportedSplineAutoregressive) with
/// SplineOptions::zuko. The number of bins is read from the file.
template <typename Scalar = double>
ImportedFlow<Scalar> load_zuko_nsf(StateDict sd, const ZukoNsfOptions& o = {}) {
  const detail::ZukoLayout layout =
      detail::zuko_layout(sd, "load_zuko_nsf", ".order", o.features, o.transforms);
  const Index dim = layout.dim;
  const std::string& first = layout.prefixes.front();
  const Index context_dim = sd.cols_of(first + ".hyper.0.weight") - dim;
  if (context_dim < 0)
    sd.fail("load_zuko_nsf: '" + first + ".hyper.0.weight' has fewer inputs than D");
  sd.check_option("context", o.context, context_dim);
  const std::vector<Index> last = sd.child_indices(first + ".hyper.");
  const Index out =
      last.empty() ? 0 : sd.rows_of(first + ".hyper." + std::to_string(last.back()) + ".weight");
  const int K = out % dim == 0 ? detail::spline_bins_of(out / dim) : 0;
  if (K == 0) {
    sd.fail("load_zuko_nsf: '" + first + ".hyper' outputs " + std::to_string(out) +
            " values, not D·(3K − 1) for a spline of K >= 2 bins");
  }
  sd.check_option("bins", o.bins, Index(K));
  const SplineOptions<Scalar> so = SplineOptions<Scalar>::zuko(Scalar(o.bound), Scalar(o.slope));
  const Index P = 3 * Index(K) - 1;
  const std::vector<Index> order = detail::identity_order(P);
  const RationalQuadraticSpline<Scalar, Dynamic> spline = detail::imported_spline(sd, first, K, so);
  std::vector<AnyBijector<Scalar>> steps = detail::load_zuko_autoregressive<Scalar>(
      sd, layout, context_dim, o.randperm, o.hidden_features, o.passes, P, order,
      "D·(3K − 1) = " + std::to_string(P * dim),
      [&](const std::string& p, const detail::NetworkTensors<Scalar>& t) {
        return AnyBijector<Scalar>(
            ImportedSplineAutoregressive<Scalar>(detail::build_network(t, p), spline),
            "zuko MaskedAutoregressiveTransform (MonotonicRQSTransform) '" + p + "'");
      });
  return detail::finish_zuko(sd, "load_zuko_nsf", dim, std::move(steps));
}

/// @brief Loads `zuko.flows.RealNVP(...)`: `transforms` GeneralCouplingTransform layers
/// (MonotonicAffineTransform, MLP hyper-network on concat(x_a, c)), DiagNormal base, as native
/// Coupling layers (ImportedAffineCoupling).
/// @throws as load_zuko_maf; a mask that is not 0/1 or that leaves no feature to transform is
/// rejected naming the key.
template <typename Scalar = double>
ImportedFlow<Scalar> load_zuko_realnvp(StateDict sd, const ZukoRealNvpOptions& o = {}) {
  const detail::ZukoLayout layout =
      detail::zuko_layout(sd, "load_zuko_realnvp", ".mask", o.features, o.transforms);
  const Index dim = layout.dim;
  const ScaleShiftTransformer<Scalar> affine(ScaleShiftOptions<Scalar>::zuko(Scalar(o.slope)));
  std::vector<AnyBijector<Scalar>> steps;
  Index context_dim = -1;
  for (std::size_t t = 0; t < layout.prefixes.size(); ++t) {
    const std::string& p = layout.prefixes[t];
    const Eigen::VectorXd mask = sd.mask_vector(p + ".mask", dim);
    std::vector<bool> transformed(static_cast<std::size_t>(dim));
    Index constant = 0;
    for (Index i = 0; i < dim; ++i) {
      transformed[std::size_t(i)] = mask(i) == 0.0;
      constant += mask(i) != 0.0 ? 1 : 0;
    }
    if (constant == dim) {
      throw ParameterError("nflow::interop: mask '" + p + ".mask' in " + sd.source() +
                           " transforms no feature");
    }
    if (o.randmask && !*o.randmask) {
      for (Index i = 0; i < dim; ++i) {
        if ((mask(i) != 0.0) != (i % 2 == Index(t % 2))) {
          sd.fail("randmask = False was given, but '" + p +
                  ".mask' is not arange(D) % 2 == " + std::to_string(t % 2));
        }
      }
    }
    const Index c = sd.cols_of(p + ".hyper.0.weight") - constant;
    if (c < 0 || (context_dim >= 0 && c != context_dim)) {
      sd.fail("load_zuko_realnvp: '" + p + ".hyper.0.weight' has " +
              std::to_string(sd.cols_of(p + ".hyper.0.weight")) +
              " inputs, which does not match the mask's " + std::to_string(constant) +
              " constant features plus the context size of the other transforms");
    }
    context_dim = c;
    std::vector<Index> widths;
    detail::NetworkTensors<Scalar> net =
        detail::take_zuko_mlp<Scalar>(sd, p, constant, c, false, widths);
    detail::check_hidden(sd, o.hidden_features, widths, p + ".hyper");
    const Index nb = dim - constant;
    detail::check_outputs(
        sd, net, p, 2 * nb,
        "2 × " + std::to_string(nb) + " (only the affine MonotonicAffineTransform is supported)");
    detail::permute_outputs(net,
                            detail::output_rows(nb, {0, 1}, detail::OutputLayout::FeatureMajor));
    if (constant == 0 && c == 0) {
      throw ParameterError("nflow::interop: mask '" + p + ".mask' in " + sd.source() +
                           " leaves no feature to condition on and there is no context");
    }
    steps.emplace_back(ImportedAffineCoupling<Scalar>(CouplingMask(std::move(transformed)),
                                                      detail::build_network(net, p), affine),
                       "zuko GeneralCouplingTransform '" + p + "'");
  }
  sd.check_option("context", o.context, context_dim);
  return detail::finish_zuko(sd, "load_zuko_realnvp", dim, std::move(steps));
}

}  // namespace nflow::interop
