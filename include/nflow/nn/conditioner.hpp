#pragma once
/// @file
/// @brief nflow::nn::Conditioner, the contract of the network inside a coupling or autoregressive
/// structure (the map from features and context to the transformer's parameters), and the
/// optional members a structure uses when a conditioner has them.
///
/// nn::MLP and nn::MADE (nn::DenseNetwork) model it; so can any network a user or an importer
/// writes (nflows' residual blocks, zuko's masked networks): Coupling and MaskedAutoregressive
/// take the conditioner as a template parameter, so one structure serves them all.

#include <Eigen/Core>
#include <concepts>
#include <cstdint>
#include <string>

#include "nflow/core/parameters.hpp"
#include "nflow/core/types.hpp"

namespace nflow::nn {

/// @brief Which outputs of a conditioner can depend on which inputs: an out × in matrix whose
/// entry (r, j) is false only when output r is a constant function of input j.
using Connectivity = Eigen::Matrix<bool, Eigen::Dynamic, Eigen::Dynamic>;

/// @brief A network y = f(x, c) (in_dim → out_dim, with an optional context of context_dim rows)
/// with a recorded forward pass, its exact reverse-mode backward pass and named parameters.
///
/// Members, with x an in × N batch, ctx nflow::NoContext or a context_dim × N matrix expression:
/// - `typename N::Scalar`; `typename N::Tape`, with `cols()` (the samples it recorded);
/// - `in_dim()`, `out_dim()`, `context_dim()` (0: unconditional);
/// - `forward(x, ctx)` → y (out × N);
/// - `forward_recorded(x, tape, ctx)` → y, keeping in `tape` what the backward pass needs;
/// - `backward_recorded(tape, grad_out, Eigen::Ref<Vector<Scalar>> gp, ctx)` → ∂L/∂x (in × N),
///   ADDING ∂L/∂θ into `gp` (laid out in visit order, each tensor column-major);
/// - `visit_parameters(f)`, const and non-const, calling `f(name, tensor)` per tensor, and
///   `parameter_count()`.
/// Optional members are declared below as their own concepts (PointConditioner,
/// BufferedConditioner, ConnectedConditioner, InitializableConditioner).
template <typename N>
concept Conditioner = requires {
  typename N::Scalar;
  typename N::Tape;
}
&&requires(N& n, const N& cn, const ParameterMatrix<typename N::Scalar>& x, typename N::Tape& tape,
           const typename N::Tape& ctape, Eigen::Ref<Vector<typename N::Scalar>> gp) {
  { ctape.cols() } -> std::convertible_to<Index>;
  { cn.in_dim() } -> std::convertible_to<Index>;
  { cn.out_dim() } -> std::convertible_to<Index>;
  { cn.context_dim() } -> std::convertible_to<Index>;
  { cn.parameter_count() } -> std::convertible_to<Index>;
  cn.forward(x, NoContext{});
  cn.forward(x, x);
  cn.forward_recorded(x, tape, NoContext{});
  cn.forward_recorded(x, tape, x);
  cn.backward_recorded(ctape, x, gp, NoContext{});
  cn.backward_recorded(ctape, x, gp, x);
  n.visit_parameters(nflow::detail::ProbeVisitor{});
  cn.visit_parameters(nflow::detail::ProbeVisitor{});
};

/// @brief A Conditioner that evaluates one point into a caller's vector,
/// `forward_point_into(x, y, ctx)` (y resized to out × 1): with a fixed-capacity `y` a structure's
/// one-point path then allocates nothing (nn::DenseNetwork with a fixed Hidden). Without it a
/// structure calls forward() for one point too.
template <typename N>
concept PointConditioner = Conditioner<N> &&
    requires(const N& n, const Vector<typename N::Scalar>& x, Vector<typename N::Scalar>& y) {
  n.forward_point_into(x, y, NoContext{});
};

/// @brief A Conditioner with buffers (nflow/core/buffers.hpp): `visit_buffers(f)`, const and
/// non-const. A structure visits them under its own prefix; a conditioner without buffers has
/// none to visit.
template <typename N>
concept BufferedConditioner = Conditioner<N> && requires(N& n, const N& cn) {
  n.visit_buffers(nflow::detail::ProbeVisitor{});
  cn.visit_buffers(nflow::detail::ProbeVisitor{});
};

/// @brief A Conditioner that states its dependency structure: `connectivity()` → an out × in
/// nn::Connectivity. An autoregressive structure requires it of any conditioner but its own MADE.
template <typename N>
concept ConnectedConditioner = Conditioner<N> && requires(const N& n) {
  { n.connectivity() } -> std::convertible_to<Connectivity>;
};

/// @brief A Conditioner that draws its own parameters, `initialize(seed, zero_last_layer)` (with
/// zero_last_layer its outputs are exactly 0: a fresh structure is the identity).
template <typename N>
concept InitializableConditioner = Conditioner<N> && requires(N& n, std::uint64_t seed) {
  n.initialize(seed, true);
};

}  // namespace nflow::nn
