#pragma once
/// @file
/// @brief What an imported nflows or zuko layer becomes: nflow's own structures (Coupling,
/// MaskedAutoregressive, Permutation, ElementwiseAffine) with per-library transformers
/// (ScaleShiftTransformer, RationalQuadraticSpline with the library's SplineOptions) and an
/// nn::BlockNetwork conditioner, and the helpers that fill them from a state dict.
///
/// The libraries' conditioners write each feature's parameters in their own order (nflows' MADE:
/// feature-major [D, P]; nflows' couplings: [shift block | scale block] or feature-major for
/// splines; zuko: feature-major). nflow's transformers read them blocked (row p·n + i is
/// parameter p of feature i), so the importer permutes the rows of the conditioner's last layer
/// (weight, bias and mask) once at load time: an exact reordering, no arithmetic. A saved
/// imported model is therefore an ordinary nflow model whose file records nflow's layout.

#include <Eigen/Core>
#include <cmath>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "nflow/bijectors/coupling.hpp"
#include "nflow/bijectors/elementwise_affine.hpp"
#include "nflow/bijectors/masked_autoregressive.hpp"
#include "nflow/bijectors/permutation.hpp"
#include "nflow/bijectors/transformers/additive.hpp"
#include "nflow/bijectors/transformers/rational_quadratic.hpp"
#include "nflow/bijectors/transformers/scale_shift.hpp"
#include "nflow/core/buffers.hpp"
#include "nflow/core/errors.hpp"
#include "nflow/core/types.hpp"
#include "nflow/interop/state_dict.hpp"
#include "nflow/nn/block_network.hpp"

namespace nflow::interop {

/// The conditioner of every imported layer (nflows' ResidualNet and MADE, zuko's MLP and
/// MaskedMLP).
template <typename Scalar>
using ImportedNetwork = nn::BlockNetwork<Scalar, nn::ReLU>;

// The layers the importers build. They build every size at run time (Dim, ContextDim and Bins
// Dynamic); the same templates with compile-time sizes are what a caller names to convert an
// imported model into a compile-time Flow (nflow/interop/typed.hpp).

/// nflows MaskedAffineAutoregressiveTransform and zuko's affine MaskedAutoregressiveTransform.
template <typename Scalar, int Dim = Dynamic, int ContextDim = Dynamic>
using ImportedAffineAutoregressive =
    MaskedAutoregressive<ScaleShiftTransformer<Scalar>, Dim, Dynamic, nn::ReLU, ContextDim,
                         ImportedNetwork<Scalar>>;
/// nflows AffineCouplingTransform and zuko's GeneralCouplingTransform (RealNVP).
template <typename Scalar, int Dim = Dynamic, int ContextDim = Dynamic>
using ImportedAffineCoupling = Coupling<ScaleShiftTransformer<Scalar>, Dim, Dynamic, nn::ReLU,
                                        ContextDim, ImportedNetwork<Scalar>>;
/// nflows AdditiveCouplingTransform.
template <typename Scalar, int Dim = Dynamic, int ContextDim = Dynamic>
using ImportedAdditiveCoupling = Coupling<AdditiveTransformer<Scalar>, Dim, Dynamic, nn::ReLU,
                                          ContextDim, ImportedNetwork<Scalar>>;
/// nflows MaskedPiecewiseRationalQuadraticAutoregressiveTransform and zuko's NSF layers (the
/// importers build Bins = Dynamic: any number of bins up to
/// RationalQuadraticSpline::MaxDynamicBins).
template <typename Scalar, int Bins = Dynamic, int Dim = Dynamic, int ContextDim = Dynamic>
using ImportedSplineAutoregressive =
    MaskedAutoregressive<RationalQuadraticSpline<Scalar, Bins>, Dim, Dynamic, nn::ReLU, ContextDim,
                         ImportedNetwork<Scalar>>;
/// nflows PiecewiseRationalQuadraticCouplingTransform (the importers build Bins = Dynamic).
template <typename Scalar, int Bins = Dynamic, int Dim = Dynamic, int ContextDim = Dynamic>
using ImportedSplineCoupling = Coupling<RationalQuadraticSpline<Scalar, Bins>, Dim, Dynamic,
                                        nn::ReLU, ContextDim, ImportedNetwork<Scalar>>;

namespace detail {

/// The spline of an imported layer: K bins (any K up to MaxDynamicBins), options `so`; a file
/// error naming the layer for more bins.
template <typename Scalar>
RationalQuadraticSpline<Scalar, Dynamic> imported_spline(StateDict& sd, const std::string& prefix,
                                                         int bins,
                                                         const SplineOptions<Scalar>& so) {
  constexpr int max = RationalQuadraticSpline<Scalar, Dynamic>::MaxDynamicBins;
  if (bins > max) {
    sd.fail("layer '" + prefix + "' has a spline of " + std::to_string(bins) +
            " bins; nflow imports splines of up to " + std::to_string(max) + " bins");
  }
  return RationalQuadraticSpline<Scalar, Dynamic>(bins, so);
}

/// The number of bins K of a linear-tail spline with P = 3K − 1 parameters per feature (0 if P
/// is not of that form with K ≥ 2).
inline int spline_bins_of(Index params_per_feature) {
  return params_per_feature >= 5 && params_per_feature % 3 == 2 ? int((params_per_feature + 1) / 3)
                                                                : 0;
}

/// Where the library writes parameter p of feature i among a conditioner's outputs.
enum class OutputLayout {
  FeatureMajor,  ///< row i·P + p (nflows' MADE and splines, zuko)
  Blocked,       ///< row p·n + i (nflows' affine couplings: [shifts | scales])
};

/// 0, 1, …, P − 1: the parameters of a feature in the library's order (splines).
inline std::vector<Index> identity_order(Index P) {
  std::vector<Index> order(static_cast<std::size_t>(P));
  for (Index q = 0; q < P; ++q) order[std::size_t(q)] = q;
  return order;
}

/// native_to_library[r] = the library's output row that becomes nflow's row r (= p·n + i),
/// where nflow's parameter p is the library's parameter order[p] of the same feature, and
/// nflow's feature i is the library's feature features[i] (its position in the library's list).
inline std::vector<Index> output_rows(Index n, const std::vector<Index>& order, OutputLayout layout,
                                      const std::vector<Index>& features = {}) {
  const Index P = Index(order.size());
  std::vector<Index> rows(std::size_t(P * n));
  for (Index p = 0; p < P; ++p) {
    for (Index i = 0; i < n; ++i) {
      const Index f = features.empty() ? i : features[std::size_t(i)];
      const Index q = order[std::size_t(p)];
      rows[std::size_t(p * n + i)] = layout == OutputLayout::FeatureMajor ? f * P + q : q * n + f;
    }
  }
  return rows;
}

/// The rows `rows` of m, in that order.
template <typename M>
M take_rows(const M& m, const std::vector<Index>& rows) {
  M out(Index(rows.size()), m.cols());
  for (std::size_t r = 0; r < rows.size(); ++r) out.row(Index(r)) = m.row(rows[r]);
  return out;
}
/// The columns `cols` of m, in that order.
template <typename M>
M take_cols(const M& m, const std::vector<Index>& cols) {
  M out(m.rows(), Index(cols.size()));
  for (std::size_t c = 0; c < cols.size(); ++c) out.col(Index(c)) = m.col(cols[c]);
  return out;
}

/// The tensors of an nn::BlockNetwork under its own names (parameters, masks, batch-norm
/// statistics), collected from a state dict before the network is built.
template <typename Scalar>
struct NetworkTensors {
  nn::BlockNetworkOptions options;
  std::map<std::string, ParameterMatrix<Scalar>> parameters;
  std::map<std::string, Eigen::MatrixXd> masks;  ///< by the weight's parameter name
  std::map<std::string, Vector<Scalar>> running_mean, running_var;  ///< by norm name
};

/// Runs `make()` (which builds a layer from `where`'s tensors) and adds "layer '<where>' in
/// <file>" to a ParameterError it throws (masks that are not autoregressive, invalid options).
template <typename F>
auto in_layer(const StateDict& sd, const std::string& where, F&& make) -> decltype(make()) {
  try {
    return make();
  } catch (const ParameterError& e) {
    throw ParameterError("nflow::interop: '" + where + "' in " + sd.source() + ": " + e.what());
  }
}

/// Reorders the network's outputs: nflow's output r is the library's output rows[r] (the last
/// layer's weight, bias and mask rows move together).
template <typename Scalar>
void permute_outputs(NetworkTensors<Scalar>& t, const std::vector<Index>& rows) {
  t.parameters["final.weight"] = take_rows(t.parameters.at("final.weight"), rows);
  t.parameters["final.bias"] = take_rows(t.parameters.at("final.bias"), rows);
  const auto m = t.masks.find("final.weight");
  if (m != t.masks.end()) m->second = take_rows(m->second, rows);
  t.options.out_dim = Index(rows.size());
}

/// Builds the network and writes every collected tensor into it; throws if a name the network
/// has was not collected (an importer bug) or the network rejects a value.
template <typename Scalar>
ImportedNetwork<Scalar> build_network(const NetworkTensors<Scalar>& t, const std::string& where) {
  ImportedNetwork<Scalar> net(t.options);
  Index written = 0;
  net.visit_parameters([&](const std::string& name, auto tensor) {
    const auto it = t.parameters.find(name);
    if (it == t.parameters.end() || it->second.rows() != tensor.rows() ||
        it->second.cols() != tensor.cols()) {
      throw ParameterError("nflow::interop: " + where + ": no tensor of the right shape for '" +
                           name + "'");
    }
    tensor = it->second;
    ++written;
  });
  if (written != Index(t.parameters.size())) {
    throw ParameterError("nflow::interop: " + where + ": " +
                         std::to_string(Index(t.parameters.size()) - written) +
                         " tensors have no place in the network");
  }
  // Masks ("<layer>.weight" → "<layer>.mask") and running statistics, through the buffers.
  Index set = 0;
  net.visit_buffers([&](const std::string& name, BufferVector& b) {
    const auto ends = [&](const std::string& s) {
      return name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
    };
    if (ends(".running_mean") || ends(".running_var")) {
      const bool mean = ends(".running_mean");
      const std::string norm = name.substr(0, name.rfind('.'));
      const auto& source = mean ? t.running_mean : t.running_var;
      const auto it = source.find(norm);
      if (it == source.end() || it->second.size() != b.size())
        throw ParameterError("nflow::interop: " + where + ": no statistic for '" + name + "'");
      for (Index i = 0; i < b.size(); ++i)
        b(i) = ImportedNetwork<Scalar>::statistic_to_buffer(double(it->second(i)));
    } else {
      const std::string weight = name.substr(0, name.size() - 4) + "weight";  // "….mask"
      const auto it = t.masks.find(weight);
      if (it == t.masks.end() || it->second.size() != b.size())
        throw ParameterError("nflow::interop: " + where + ": no mask for '" + name + "'");
      const Eigen::MatrixXd& m = it->second;  // column-major, as the buffer
      for (Index i = 0; i < b.size(); ++i) b(i) = m.data()[i] != 0.0 ? 1 : 0;
    }
    ++set;
  });
  if (set != Index(t.masks.size() + t.running_mean.size() + t.running_var.size())) {
    throw ParameterError(
        "nflow::interop: " + where + ": the network has " + std::to_string(set) +
        " masks and statistics, the file " +
        std::to_string(t.masks.size() + t.running_mean.size() + t.running_var.size()));
  }
  return net;
}

}  // namespace detail
}  // namespace nflow::interop
