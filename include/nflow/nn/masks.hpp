#pragma once
/// @file
/// @brief Autoregressive degrees and masks (Germain et al. 2015): input orders, hidden degrees,
/// the 0/1 masks they imply, and nn::Masked, the weight policy of nn::DenseNetwork that holds
/// them and applies them to the weights after every write.

#include <Eigen/Core>
#include <algorithm>
#include <cstddef>
#include <random>
#include <utility>
#include <vector>

#include "nflow/core/random.hpp"
#include "nflow/core/types.hpp"

namespace nflow::nn {

/// @brief The autoregressive order of a MADE's inputs.
enum class InputOrder {
  Natural,   ///< 0, 1, …, D−1
  Reversed,  ///< D−1, …, 1, 0 (alternate it between the layers of a flow)
  Random,    ///< a seeded uniformly random permutation (nflow::random_permutation)
};

/// @brief How hidden units receive their degrees.
enum class HiddenDegrees {
  Sequential,  ///< cycle through the allowed range (deterministic; Germain et al.'s default)
  Random,      ///< seeded uniform draws in the allowed range
};

/// @brief The order 0, 1, …, dim−1.
inline Eigen::VectorXi natural_order(Index dim) {
  Eigen::VectorXi o(dim);
  for (Index i = 0; i < dim; ++i) o(i) = int(i);
  return o;
}

/// @brief The order dim−1, …, 1, 0.
inline Eigen::VectorXi reversed_order(Index dim) {
  Eigen::VectorXi o(dim);
  for (Index i = 0; i < dim; ++i) o(i) = int(dim - 1 - i);
  return o;
}

/// @brief An order of the given kind; Random draws from `gen` (nflow::random_permutation).
template <std::uniform_random_bit_generator G>
Eigen::VectorXi make_order(InputOrder kind, Index dim, G& gen) {
  switch (kind) {
    case InputOrder::Reversed:
      return reversed_order(dim);
    case InputOrder::Random:
      return random_permutation(dim, gen);
    case InputOrder::Natural:
    default:
      return natural_order(dim);
  }
}

/// @brief The smallest degree a unit of the first hidden layer may have: 1 for an unconditional
/// network, 0 for a conditional one (degree-0 units see only the context), at most D − 1.
inline Index lowest_first_degree(Index dim, Index context_dim) {
  return std::min<Index>(context_dim > 0 ? 0 : 1, dim - 1);
}

/// @brief Hidden degrees for `hidden_layers` layers of `hidden_width` units over D = `dim`
/// inputs: layer ℓ's degrees lie in [lo_ℓ, D − 1], lo_0 = lowest_first_degree(), lo_ℓ = the
/// smallest degree of layer ℓ − 1; Sequential ones cycle lo, lo+1, …, D−1, lo, …; Random ones are
/// uniform draws from `gen` (nflow::uniform_below). Each layer is returned in ascending order.
template <std::uniform_random_bit_generator G>
std::vector<Eigen::VectorXi> make_hidden_degrees(HiddenDegrees kind, Index dim, Index hidden_width,
                                                 Index hidden_layers, Index context_dim, G& gen) {
  std::vector<Eigen::VectorXi> degrees(static_cast<std::size_t>(hidden_layers));
  Index lo = lowest_first_degree(dim, context_dim);
  for (Index l = 0; l < hidden_layers; ++l) {
    Eigen::VectorXi deg(hidden_width);
    const Index range = dim - lo;
    for (Index u = 0; u < hidden_width; ++u) {
      deg(u) =
          int(lo + (kind == HiddenDegrees::Sequential ? u % range : uniform_below(gen, range)));
    }
    std::sort(deg.data(), deg.data() + hidden_width);
    lo = deg(0);
    degrees[std::size_t(l)] = std::move(deg);
  }
  return degrees;
}

/// @brief The weight policy of a masked autoencoder (MADE): layer ℓ uses Wℓ ⊙ Mℓ, with the
/// masks built from an input order and hidden degrees, and the network's output is blocked by
/// `ParamsPerDim` (rows [k·D, (k+1)·D) hold parameter k of dimensions 0 … D−1).
///
/// Degrees: dimension order(k) has degree k + 1; hidden degrees as make_hidden_degrees().
/// Masks (1 = connected): hidden ← input m_0(u) ≥ deg(j); hidden ← hidden m_ℓ(u) ≥ m_{ℓ−1}(v);
/// output ← hidden deg(i) > m_{L−1}(v) (strict) for each output row of dimension i; with no
/// hidden layers, output ← input deg(i) > deg(j). The context is not masked. Hence output i
/// depends only on the inputs j with deg(j) < deg(i), exactly (a masked weight is an exact 0).
///
/// The state also keeps, for a Dim-pass solve, the row ranges of each degree in every hidden
/// layer and the output rows regrouped by dimension (row i·P + p = output row p·D + i).
/// See nn::Unmasked for the policy contract.
///
/// @tparam ParamsPerDim_ outputs per input dimension, >= 1, or Dynamic (given to build()).
template <int ParamsPerDim_>
struct Masked {
  static_assert(ParamsPerDim_ >= 1 || ParamsPerDim_ == Dynamic,
                "nflow::nn::Masked<ParamsPerDim>: ParamsPerDim must be >= 1 or Dynamic");
  static constexpr const char* Name = "nn::MADE";
  static constexpr Index MinInDim = 1;
  static constexpr Index MinHiddenLayers = 0;
  static constexpr int ParamsPerDim = ParamsPerDim_;

  template <typename Scalar>
  class State {
   public:
    using Work = ParameterMatrix<Scalar>;
    static constexpr bool MasksGradients = true;

    /// Sets the order and the hidden degrees (already valid) and rebuilds the masks; the caller
    /// then refreshes every layer.
    void build(Index hidden_width, Index context_dim, Eigen::VectorXi order,
               std::vector<Eigen::VectorXi> degrees, Index params_per_dim) {
      params_per_dim_ = params_per_dim;
      order_ = std::move(order);
      hidden_degrees_ = std::move(degrees);
      const Index D = order_.size();
      const Index H = hidden_width;
      const Index L = Index(hidden_degrees_.size());
      context_dim_ = context_dim;
      input_degrees_.resize(D);
      for (Index k = 0; k < D; ++k) input_degrees_(order_(k)) = int(k + 1);
      starts_.assign(std::size_t(L), std::vector<Index>(std::size_t(D + 1), 0));
      for (Index l = 0; l < L; ++l) {
        const Eigen::VectorXi& deg = hidden_degrees_[std::size_t(l)];
        for (Index g = 0; g <= D; ++g) {
          starts_[std::size_t(l)][std::size_t(g)] =
              Index(std::lower_bound(deg.data(), deg.data() + H, int(g)) - deg.data());
        }
      }
      masks_.clear();
      for (Index l = 0; l <= L; ++l) {
        const Index rows = l == L ? D * params_per_dim_ : H;
        const Index cols = l == 0 ? D : H;
        Work mask(rows, cols);
        for (Index c = 0; c < cols; ++c) {
          const int in_deg = l == 0 ? input_degrees_(c) : hidden_degrees_[std::size_t(l - 1)](c);
          for (Index r = 0; r < rows; ++r) {
            const bool connected =
                l == L ? output_degree(r) > in_deg : hidden_degrees_[std::size_t(l)](r) >= in_deg;
            mask(r, c) = connected ? Scalar(1) : Scalar(0);
          }
        }
        masks_.push_back(std::move(mask));
      }
      masked_.resize(std::size_t(L + 1));
    }

    // -- the policy contract --

    const Work& weight(const std::vector<Work>&, Index l) const { return masked_[std::size_t(l)]; }

    /// Re-derives the masked weight of layer l (l = −1: the context weight) and, for the output
    /// layer, its rows regrouped by dimension.
    void refresh(const std::vector<Work>& stored, const Work& context_weight, Index l) {
      const Index L = Index(masked_.size()) - 1;
      const Index D = order_.size();
      if (l >= 0)
        masked_[std::size_t(l)] = stored[std::size_t(l)].cwiseProduct(masks_[std::size_t(l)]);
      if (l == L || (l < 0 && L == 0)) {
        regroup(masked_[std::size_t(L)], grouped_out_, D);
        if (L == 0 && context_dim_ > 0) {
          regroup(context_weight, grouped_context_, D);
        } else {
          grouped_context_.resize(L == 0 ? context_weight.rows() : 0, context_dim_);
        }
      }
    }

    /// Sets the stored entries that the masks hide to 0.
    void clear_unused(std::vector<Work>& stored) const {
      for (std::size_t l = 0; l < stored.size(); ++l) stored[l] = stored[l].cwiseProduct(masks_[l]);
    }

    const Work& mask(Index l) const { return masks_[std::size_t(l)]; }

    // -- degrees --

    const Eigen::VectorXi& order() const { return order_; }
    const Eigen::VectorXi& input_degrees() const { return input_degrees_; }
    const std::vector<Eigen::VectorXi>& hidden_degrees() const { return hidden_degrees_; }
    int output_degree(Index r) const { return input_degrees_(r % order_.size()); }
    const std::vector<Index>& degree_starts(Index l) const { return starts_[std::size_t(l)]; }
    const Work& grouped_output_weight() const { return grouped_out_; }
    const Work& grouped_context_weight() const { return grouped_context_; }

   private:
    /// to = from with row p·D + i moved to row i·P + p, a column at a time (the rows of a
    /// column-major matrix are strided: one column of the output layer is a few KB, in cache).
    void regroup(const Work& from, Work& to, Index D) const {
      to.resize(from.rows(), from.cols());
      const Index P = params_per_dim_;
      for (Index c = 0; c < from.cols(); ++c) {
        const Scalar* src = from.col(c).data();
        Scalar* dst = to.col(c).data();
        for (Index i = 0; i < D; ++i) {
          for (Index p = 0; p < P; ++p) dst[i * P + p] = src[p * D + i];
        }
      }
    }

    Index context_dim_ = 0;
    Index params_per_dim_ = 1;
    Eigen::VectorXi order_;
    Eigen::VectorXi input_degrees_;
    std::vector<Eigen::VectorXi> hidden_degrees_;  ///< L of them, ascending
    std::vector<std::vector<Index>> starts_;  ///< starts_[l][g]: units of layer l with degree < g
    std::vector<Work> masks_;
    std::vector<Work> masked_;  ///< stored weights ⊙ masks_
    Work grouped_out_;          ///< masked_[L] with rows grouped by dimension
    Work grouped_context_;      ///< the same for the context weight when L = 0
  };
};

}  // namespace nflow::nn
