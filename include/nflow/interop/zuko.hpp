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
#include "nflow/interop/layers.hpp"
#include "nflow/interop/masks.hpp"
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

/// The hyper-network "<p>.hyper.{0,2,4,…}" (linear layers at even indices, ReLU between). With
/// `masks`, each layer's '.mask' buffer is loaded, folded in, and appended to `masks`.
template <typename Scalar>
ZukoMlp<Scalar> load_zuko_mlp(StateDict& sd, const std::string& p, Index in,
                              std::vector<Eigen::MatrixXd>* masks, std::vector<Index>& widths) {
  const std::string root = p + ".hyper.";
  const std::vector<Index> idx = sd.child_indices(root);
  if (idx.empty()) sd.fail("no '" + root + "<j>.weight' layers");
  ZukoMlp<Scalar> mlp;
  widths.clear();
  for (std::size_t l = 0; l < idx.size(); ++l) {
    if (idx[l] != Index(2 * l)) {
      sd.fail("'" + root + "' holds layer index " + std::to_string(idx[l]) + " where " +
              std::to_string(2 * l) +
              " was expected (linear layers at even indices with ReLU between; normalize=True and "
              "other "
              "activations with parameters are not supported)");
    }
    const std::string lp = root + std::to_string(idx[l]);
    const Index out = sd.rows_of(lp + ".weight");
    Linear<Scalar> lin;
    lin.weight = sd.matrix<Scalar>(lp + ".weight", out, in);
    lin.bias = sd.vector<Scalar>(lp + ".bias", out);
    if (masks != nullptr) {
      masks->push_back(sd.mask(lp + ".mask", out, in));
      lin.weight = lin.weight.cwiseProduct(masks->back().cast<Scalar>());
    }
    if (l + 1 < idx.size()) widths.push_back(out);
    mlp.layers.push_back(std::move(lin));
    in = out;
  }
  return mlp;
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

/// '<p>.hyper' must output `expected` values: the shift and scale of each transformed feature
/// (`expectation` says how that count arises, for the message).
template <typename Scalar>
void check_affine_outputs(StateDict& sd, const ZukoMlp<Scalar>& mlp, const std::string& p,
                          Index expected, const std::string& expectation) {
  if (mlp.layers.back().out() != expected) {
    sd.fail("'" + p + ".hyper' outputs " + std::to_string(mlp.layers.back().out()) +
            " values, expected " + expectation +
            " (only the affine MonotonicAffineTransform is supported)");
  }
}

/// Reads the DiagNormal base, checks that every key was used, and assembles the flow.
template <typename Scalar>
ImportedFlow<Scalar> finish_zuko(StateDict& sd, const char* who, Index dim, Index context_dim,
                                 std::vector<std::shared_ptr<const Layer<Scalar>>> layers) {
  ImportedBase<Scalar> base = load_zuko_base<Scalar>(sd, dim);
  sd.finish(who);
  return ImportedFlow<Scalar>(std::move(base),
                              ImportedTransform<Scalar>(dim, context_dim, std::move(layers)));
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

}  // namespace detail

/// @brief Loads `zuko.flows.MAF(...)`: `transforms` MaskedAutoregressiveTransform layers
/// (MonotonicAffineTransform, MaskedMLP hyper-network on concat(x, c)), DiagNormal base.
/// @throws io::IoError / io::FormatError (missing, unexpected or misshapen tensors, an option that
/// contradicts the file), ParameterError (non-finite values, masks not autoregressive in the
/// layer's 'order', invalid orders). Each message names the tensor.
template <typename Scalar = double>
ImportedFlow<Scalar> load_zuko_maf(StateDict sd, const ZukoMafOptions& o = {}) {
  const detail::ZukoLayout layout =
      detail::zuko_layout(sd, "load_zuko_maf", ".order", o.features, o.transforms);
  const std::vector<std::string>& prefixes = layout.prefixes;
  const Index dim = layout.dim;
  const Index context_dim = sd.cols_of(prefixes.front() + ".hyper.0.weight") - dim;
  if (context_dim < 0)
    sd.fail("load_zuko_maf: '" + prefixes.front() + ".hyper.0.weight' has fewer inputs than D");
  sd.check_option("context", o.context, context_dim);
  const Scalar log_slope = Scalar(std::log(o.slope));
  std::vector<std::shared_ptr<const Layer<Scalar>>> layers;
  for (std::size_t t = 0; t < prefixes.size(); ++t) {
    const std::string& p = prefixes[t];
    const Eigen::VectorXi order = sd.integers(p + ".order", dim, 0, dim - 1);
    if (o.randperm && !*o.randperm) {
      for (Index i = 0; i < dim; ++i) {
        if (order(i) != int(t % 2 == 0 ? i : dim - 1 - i)) {
          sd.fail("randperm = False was given, but '" + p + ".order' is not " +
                  (t % 2 == 0 ? "arange(D)" : "flip(arange(D))"));
        }
      }
    }
    std::vector<Eigen::MatrixXd> masks;
    std::vector<Index> widths;
    ZukoMlp<Scalar> mlp = detail::load_zuko_mlp<Scalar>(sd, p, dim + context_dim, &masks, widths);
    detail::check_hidden(sd, o.hidden_features, widths, p + ".hyper");
    detail::check_affine_outputs(sd, mlp, p, 2 * dim, "2·D = " + std::to_string(2 * dim));
    Eigen::MatrixXd conn = masks.front().leftCols(dim);
    for (std::size_t l = 1; l < masks.size(); ++l) conn = detail::bool_product(masks[l], conn);
    const Index passes =
        detail::check_autoregressive(detail::feature_dependency(conn, dim, 2), order,
                                     "'" + p + ".hyper'", "the order of '" + p + ".order'");
    layers.push_back(std::make_shared<ZukoAffineAutoregressive<Scalar>>(
        std::move(mlp), dim, context_dim, passes, log_slope, p));
  }
  return detail::finish_zuko(sd, "load_zuko_maf", dim, context_dim, std::move(layers));
}

/// @brief Loads `zuko.flows.RealNVP(...)`: `transforms` GeneralCouplingTransform layers
/// (MonotonicAffineTransform, MLP hyper-network on concat(x_a, c)), DiagNormal base.
/// @throws as load_zuko_maf; a mask that is not 0/1 or that leaves no feature to transform is
/// rejected naming the key.
template <typename Scalar = double>
ImportedFlow<Scalar> load_zuko_realnvp(StateDict sd, const ZukoRealNvpOptions& o = {}) {
  const detail::ZukoLayout layout =
      detail::zuko_layout(sd, "load_zuko_realnvp", ".mask", o.features, o.transforms);
  const std::vector<std::string>& prefixes = layout.prefixes;
  const Index dim = layout.dim;
  const Scalar log_slope = Scalar(std::log(o.slope));
  std::vector<std::shared_ptr<const Layer<Scalar>>> layers;
  Index context_dim = -1;
  for (std::size_t t = 0; t < prefixes.size(); ++t) {
    const std::string& p = prefixes[t];
    const Eigen::VectorXd mask = sd.mask_vector(p + ".mask", dim);
    std::vector<Index> constant, transformed;
    for (Index i = 0; i < dim; ++i) (mask(i) != 0.0 ? constant : transformed).push_back(i);
    if (transformed.empty()) {
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
    const Index c = sd.cols_of(p + ".hyper.0.weight") - Index(constant.size());
    if (c < 0 || (context_dim >= 0 && c != context_dim)) {
      sd.fail("load_zuko_realnvp: '" + p + ".hyper.0.weight' has " +
              std::to_string(sd.cols_of(p + ".hyper.0.weight")) +
              " inputs, which does not match the mask's " + std::to_string(constant.size()) +
              " constant features plus the context size of the other transforms");
    }
    context_dim = c;
    std::vector<Index> widths;
    ZukoMlp<Scalar> mlp =
        detail::load_zuko_mlp<Scalar>(sd, p, Index(constant.size()) + c, nullptr, widths);
    detail::check_hidden(sd, o.hidden_features, widths, p + ".hyper");
    detail::check_affine_outputs(sd, mlp, p, 2 * Index(transformed.size()),
                                 "2 × " + std::to_string(transformed.size()));
    layers.push_back(std::make_shared<ZukoAffineCoupling<Scalar>>(
        std::move(constant), std::move(transformed), std::move(mlp), c, log_slope, p));
  }
  sd.check_option("context", o.context, context_dim);
  return detail::finish_zuko(sd, "load_zuko_realnvp", dim, context_dim, std::move(layers));
}

}  // namespace nflow::interop
