#pragma once
/// @file
/// @brief nflow::nn::MLP, the multilayer perceptron used as the conditioner of coupling layers
/// and as the vector field of continuous flows: the dense-network core (nflow/nn/network.hpp)
/// with the Unmasked weight policy.

#include <Eigen/Core>

#include "nflow/nn/activations.hpp"
#include "nflow/nn/network.hpp"

namespace nflow::nn {

/// @brief A multilayer perceptron with `hidden_layers` (>= 1) hidden layers of equal width, an
/// optional context input, exact gradients, tapes and an analytic input Jacobian: an
/// nn::DenseNetwork whose layers use their weights as stored (see there for the maths, the
/// parameter names, the context argument, blocking, allocation and thread safety).
///
/// Construct it as `MLP<Scalar, In, Out, Hidden, Activation>(in_dim, out_dim, hidden_width,
/// hidden_layers, context_dim = 0)`; every parameter starts at 0 until initialize() draws them
/// (PyTorch's nn.Linear default, the same values on every compiler for a seed).
///
/// @tparam Scalar float or double.
/// @tparam In input dimension, or Eigen::Dynamic.
/// @tparam Out output dimension, or Eigen::Dynamic.
/// @tparam Hidden width of every hidden layer, or Eigen::Dynamic.
/// @tparam Activation an nflow::nn::ActivationPolicy (Identity, ReLU, Tanh, SiLU, ELU).
template <typename Scalar, int In, int Out, int Hidden = Eigen::Dynamic, typename Activation = ReLU>
using MLP = DenseNetwork<Scalar, In, Out, Hidden, Activation, Unmasked>;

}  // namespace nflow::nn
