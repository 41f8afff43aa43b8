#pragma once
/// @file
/// @brief nflow::nn::MADE, the masked autoencoder for distribution estimation: the dense-network
/// core (nflow/nn/network.hpp) with the Masked weight policy (nflow/nn/masks.hpp), so that output
/// i depends only on the inputs that come before i in a chosen order, plus an unmasked context.

#include <Eigen/Core>
#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "nflow/core/buffers.hpp"
#include "nflow/core/errors.hpp"
#include "nflow/core/types.hpp"
#include "nflow/nn/activations.hpp"
#include "nflow/nn/masks.hpp"
#include "nflow/nn/network.hpp"

namespace nflow::nn {

/// @brief A masked autoencoder for distribution estimation (MADE) with `ParamsPerDim` outputs
/// per input dimension, an optional unmasked context and exact gradients.
///
/// **Order and degrees.** `order` is the sequence in which the D input dimensions are generated:
/// dimension `order(k)` has degree k + 1, so degrees run 1 … D. Hidden unit u of layer ℓ has a
/// degree m_ℓ(u) in [lo_ℓ, D − 1], where lo_0 = 1 for an unconditional network and 0 for a
/// conditional one (degree-0 units see only the context, so that every output — the first in
/// the order included — can depend on the context nonlinearly), and lo_ℓ = min_u m_{ℓ−1}(u)
/// after the first layer (Germain et al.). With D = 1 and no context every hidden degree is 0.
/// `Sequential` degrees cycle lo, lo+1, …, D−1, lo, …; `Random` ones are seeded uniform draws.
/// Within a layer the units are stored in ascending degree (a permutation of units is the same
/// network): each degree is then a contiguous block of rows (degree_starts()), which the
/// Dim-pass solve of MaskedAutoregressive uses to compute every hidden unit exactly once.
///
/// **Masks** (1 = connected): see nn::Masked. Hence **output i depends only on the inputs j
/// with deg(j) < deg(i)** (and on the context) — exactly, since a masked weight enters as an
/// exact 0.
///
/// **Network.** With x (D × N, one sample per column), c (context_dim × N), f the activation,
/// W̃ℓ = Wℓ ⊙ Mℓ and L = hidden_layers (≥ 0):
///
///     h₀ = f(W̃₀·x + C₀·c + b₀),   hₗ = f(W̃ₗ·hₗ₋₁ + bₗ),   y = W̃_L·h_{L−1} + b_L
///
/// (with L = 0: y = W̃₀·x + C₀·c + b₀). The output is blocked: rows [k·D, (k+1)·D) hold
/// parameter k of dimensions 0 … D−1 (for the affine transformer: all shifts, then all raw
/// log-scales). Evaluation, gradients (∂L/∂Wₗ = (δₗ·hₗ₋₁ᵀ) ⊙ Mₗ), tapes, costs and thread
/// safety are those of nn::DenseNetwork.
///
/// **Parameters**, in visit order: "layers.0.weight" (W₀, out × in like PyTorch's nn.Linear),
/// "layers.0.context_weight" (C₀, only when context_dim > 0), "layers.0.bias", "layers.1.weight",
/// "layers.1.bias", …, "layers.L.weight", "layers.L.bias". The mask is applied at use, so stored
/// weights may hold anything at masked entries; their gradient is exactly 0.
/// **Buffers**: "order" and "hidden_degrees.<l>" (see visit_buffers).
///
/// Class invariant: sizes never change after construction; order, degrees and masks change only
/// together, through the writable visit_buffers (which validates them, as a file load does); the
/// masked weights equal weight ⊙ mask, and the grouped output rows equal their rows.
///
/// References: Germain, Gregor, Murray, Larochelle 2015, "MADE: Masked Autoencoder for
/// Distribution Estimation", arXiv:1502.03509.
///
/// @tparam Scalar_ float or double.
/// @tparam Dim_ input dimension D, or Eigen::Dynamic.
/// @tparam Hidden_ width of every hidden layer, or Eigen::Dynamic (weights are always heap-held;
///   a fixed width makes one point's activations fixed-size).
/// @tparam Activation_ an nflow::nn::ActivationPolicy (Identity, ReLU, Tanh, SiLU, ELU).
/// @tparam ParamsPerDim_ outputs per input dimension (2 for an affine transformer), ≥ 1.
template <typename Scalar_, int Dim_ = Eigen::Dynamic, int Hidden_ = Eigen::Dynamic,
          typename Activation_ = ReLU, int ParamsPerDim_ = 2>
class MADE : public DenseNetwork<Scalar_, Dim_,
                                 Dim_ == Eigen::Dynamic || ParamsPerDim_ == Eigen::Dynamic
                                     ? Eigen::Dynamic
                                     : Dim_ * ParamsPerDim_,
                                 Hidden_, Activation_, Masked<ParamsPerDim_>> {
  static_assert(Dim_ == Eigen::Dynamic || Dim_ >= 1,
                "nflow::nn::MADE<Scalar, Dim, ...>: Dim must be >= 1 or Eigen::Dynamic");
  using Base =
      DenseNetwork<Scalar_, Dim_,
                   Dim_ == Eigen::Dynamic || ParamsPerDim_ == Eigen::Dynamic ? Eigen::Dynamic
                                                                             : Dim_ * ParamsPerDim_,
                   Hidden_, Activation_, Masked<ParamsPerDim_>>;

 public:
  using Scalar = Scalar_;
  static constexpr int Dim = Dim_;
  static constexpr int ParamsPerDim = ParamsPerDim_;

  /// @brief Builds the network, its degrees and masks, and draws its weights.
  ///
  /// @param dim D (>= 1; equal to Dim when fixed).
  /// @param hidden_width units per hidden layer (>= 1; equal to Hidden when fixed).
  /// @param hidden_layers number of hidden layers (>= 0).
  /// @param context_dim rows of the context (>= 0; 0 = unconditional).
  /// @param order the generation order, a permutation of 0 … D−1 (empty: natural order).
  /// @param hidden_degrees Sequential or Random.
  /// @param seed seeds std::mt19937_64, which draws the random degrees (if any) and then the
  ///   weights (initialize(gen, true): a fresh network outputs exactly 0).
  /// @param params_per_dim outputs per input dimension: ParamsPerDim when that is fixed (the
  ///   default), required (>= 1) when it is Dynamic.
  /// @throws nflow::ParameterError naming the offending argument.
  MADE(Index dim, Index hidden_width, Index hidden_layers, Index context_dim = 0,
       Eigen::VectorXi order = Eigen::VectorXi(),
       HiddenDegrees hidden_degrees = HiddenDegrees::Sequential, std::uint64_t seed = 0,
       Index params_per_dim = ParamsPerDim_)
      : Base(dim, dim * checked_params_per_dim(params_per_dim), hidden_width, hidden_layers,
             context_dim) {
    if (order.size() == 0) order = natural_order(dim);
    check_order(order, dim);
    std::mt19937_64 gen(seed);
    this->policy_state().build(
        hidden_width, context_dim, std::move(order),
        make_hidden_degrees(hidden_degrees, dim, hidden_width, hidden_layers, context_dim, gen),
        params_per_dim);
    this->initialize(gen, true);
  }

  // ---- buffers ------------------------------------------------------------------------------

  /// @brief The buffers (see nflow/core/buffers.hpp): "order" (D entries, the generation
  /// order) and "hidden_degrees.<l>" for each hidden layer l (H entries, ascending).
  template <typename F>
  void visit_buffers(F&& f) const {
    const BufferVector o = nflow::detail::to_buffer(order());
    f(std::string("order"), o);
    for (Index l = 0; l < this->hidden_layers(); ++l) {
      const BufferVector h = nflow::detail::to_buffer(hidden_degrees(l));
      f("hidden_degrees." + std::to_string(l), h);
    }
  }
  /// @brief Writable visit. New values must be: "order" a permutation of 0 … D−1; each
  /// "hidden_degrees.<l>" H entries in ascending order, within [lo, D − 1], where lo is
  /// min(1, D − 1) for the first layer of an unconditional network, 0 for a conditional one,
  /// and the smallest degree of the layer before for later layers (the degrees this class
  /// assigns satisfy this). Then the masks are rebuilt from them and re-applied to the stored
  /// weights. Otherwise ParameterError naming the buffer, and the network is unchanged.
  template <typename F>
  void visit_buffers(F&& f) {
    const char* owner = "nflow::nn::MADE";
    const Index L = this->hidden_layers();
    BufferVector o = nflow::detail::to_buffer(order());
    f(std::string("order"), o);
    std::vector<BufferVector> h(static_cast<std::size_t>(L));
    for (Index l = 0; l < L; ++l) {
      h[std::size_t(l)] = nflow::detail::to_buffer(hidden_degrees(l));
      f("hidden_degrees." + std::to_string(l), h[std::size_t(l)]);
    }
    Eigen::VectorXi new_order = nflow::detail::buffer_to_permutation(owner, "order", o, dim());
    std::vector<Eigen::VectorXi> degrees(static_cast<std::size_t>(L));
    Index lo = lowest_first_degree(dim(), this->context_dim());
    for (Index l = 0; l < L; ++l) {
      const std::string name = "hidden_degrees." + std::to_string(l);
      Eigen::VectorXi& deg = degrees[std::size_t(l)];
      deg = nflow::detail::buffer_to_indices(owner, name, h[std::size_t(l)], this->hidden_width(),
                                             lo, dim() - 1);
      for (Index u = 1; u < deg.size(); ++u) {
        if (deg(u) < deg(u - 1)) {
          throw ParameterError(std::string(owner) + ": buffer '" + name +
                               "' is not in ascending order (entry " + std::to_string(u) + ")");
        }
      }
      lo = deg(0);
    }
    this->policy_state().build(this->hidden_width(), this->context_dim(), std::move(new_order),
                               std::move(degrees), this->params_per_dim());
    this->refresh_all();
  }

  // ---- accessors ----------------------------------------------------------------------------

  /// Outputs per input dimension (ParamsPerDim when that is fixed).
  Index params_per_dim() const { return this->out_dim() / this->in_dim(); }

  Index dim() const { return this->in_dim(); }
  /// The generation order: dimension order(k) has degree k + 1.
  const Eigen::VectorXi& order() const { return this->policy_state().order(); }
  /// deg(j) ∈ 1 … D of input j.
  const Eigen::VectorXi& input_degrees() const { return this->policy_state().input_degrees(); }
  /// Degrees of hidden layer l (ascending), 0 ≤ l < hidden_layers().
  const Eigen::VectorXi& hidden_degrees(Index l) const {
    return this->policy_state().hidden_degrees().at(std::size_t(l));
  }
  /// Degree of output row r: the degree of dimension r mod D.
  int output_degree(Index r) const { return this->policy_state().output_degree(r); }
  /// Mask of layer l (entries 0 or 1), the shape of weight(l).
  const ParameterMatrix<Scalar>& mask(Index l) const { return this->policy_state().mask(l); }
  /// weight(l) ⊙ mask(l), what the network uses.
  const ParameterMatrix<Scalar>& masked_weight(Index l) const { return this->used_weight(l); }
  /// For hidden layer l, entry g is the number of its units of degree < g (g = 0 … D): the units
  /// of degree g are rows degree_starts(l)[g] … degree_starts(l)[g + 1] − 1.
  const std::vector<Index>& degree_starts(Index l) const {
    return this->policy_state().degree_starts(l);
  }
  /// masked_weight(hidden_layers()) with its rows grouped by dimension: row i·P + p is output
  /// row p·D + i, so the P outputs of dimension i are one block.
  const ParameterMatrix<Scalar>& grouped_output_weight() const {
    return this->policy_state().grouped_output_weight();
  }
  /// The context weight's rows grouped the same way (only without hidden layers; else 0 rows).
  const ParameterMatrix<Scalar>& grouped_context_weight() const {
    return this->policy_state().grouped_context_weight();
  }

 private:
  static Index checked_params_per_dim(Index p) {
    if (ParamsPerDim_ == Eigen::Dynamic ? p < 1 : p != ParamsPerDim_) {
      throw ParameterError("nflow::nn::MADE: params_per_dim must be " +
                           (ParamsPerDim_ == Eigen::Dynamic
                                ? std::string("given (>= 1) when ParamsPerDim is Dynamic")
                                : "ParamsPerDim = " + std::to_string(ParamsPerDim_)) +
                           ", got " + std::to_string(p));
    }
    return p;
  }
  static void check_order(const Eigen::VectorXi& order, Index dim) {
    bool ok = order.size() == dim;
    std::vector<bool> seen(std::size_t(dim), false);
    for (Index k = 0; ok && k < order.size(); ++k) {
      const int v = order(k);
      ok = v >= 0 && v < dim && !seen[std::size_t(v)];
      if (ok) seen[std::size_t(v)] = true;
    }
    if (!ok) {
      throw ParameterError("nflow: nn::MADE: order must be a permutation of 0 ... " +
                           std::to_string(dim - 1) + " (" + std::to_string(dim) +
                           " entries), got " + std::to_string(order.size()) +
                           " entries that are not");
    }
  }
};

}  // namespace nflow::nn
