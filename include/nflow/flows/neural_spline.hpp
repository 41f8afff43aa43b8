#pragma once
/// @file
/// @brief Ready-made neural spline flows (Durkan et al. 2019) in one line: a coupling NSF and an
/// autoregressive NSF, conditional or not, with a permutation between layers. On R^d (the
/// default, SplineDomain::Unbounded) the base is a standard normal; with SplineDomain::Bounded
/// (or Circular) every layer maps the box [lower, upper]^d onto itself and the base is uniform on
/// that box (neural importance sampling on the unit hypercube, flows on tori).
///
///     auto nsf = nflow::flows::coupling_nsf<double, 2, 8>({.hidden_width = 64});
///     auto cond = nflow::flows::autoregressive_nsf<double, 3, 5>({.context_dim = 2, .seed = 1});
///     auto box = nflow::flows::coupling_nsf<double, 4, 6, Dynamic, 8, SplineDomain::Bounded>();
///     nsf.log_prob(x);  cond.sample(1000, context, rng);

#include <cstdint>
#include <type_traits>
#include <utility>

#include "nflow/bijectors/coupling.hpp"
#include "nflow/bijectors/masked_autoregressive.hpp"
#include "nflow/bijectors/permutation.hpp"
#include "nflow/bijectors/transformers/rational_quadratic.hpp"
#include "nflow/core/errors.hpp"
#include "nflow/core/flow.hpp"
#include "nflow/distributions/density.hpp"
#include "nflow/distributions/standard_normal.hpp"
#include "nflow/distributions/uniform_box.hpp"

namespace nflow::flows {

/// @brief How to build a ready-made spline flow. Aggregate: designated initialisers.
template <typename Scalar>
struct SplineFlowOptions {
  /// Units per hidden layer of each conditioner; 0 means the compile-time Hidden, or 64.
  Index hidden_width = 0;
  /// Hidden layers of each conditioner.
  Index hidden_layers = 2;
  /// Rows of the context (0: unconditional).
  Index context_dim = 0;
  /// The spline's interval and minimum sizes (default: the domain's, see SplineOptions).
  SplineOptions<Scalar> spline = {};
  /// Between layers: false reverses the features (every feature is transformed by every second
  /// coupling); true draws a random permutation per gap from `seed`.
  bool random_permutations = false;
  /// Seeds the layers: layer i (0-based) is seeded with a value derived from (seed, i), so no two
  /// layers start alike and the same seed gives the same flow on every compiler.
  std::uint64_t seed = 0;
};

namespace detail {

template <typename... T>
struct TypeList {};
template <typename List, typename... More>
struct Append;
template <typename... T, typename... More>
struct Append<TypeList<T...>, More...> {
  using type = TypeList<T..., More...>;
};
/// Layer, Gap, Layer, …, Layer (Layers layers).
template <typename Layer, typename Gap, int Layers>
struct Interleave {
  using type = typename Append<typename Interleave<Layer, Gap, Layers - 1>::type, Gap, Layer>::type;
};
template <typename Layer, typename Gap>
struct Interleave<Layer, Gap, 1> {
  using type = TypeList<Layer>;
};
template <typename List>
struct FlowOf;
template <typename... T>
struct FlowOf<TypeList<T...>> {
  using type = Flow<T...>;
};

/// The seed of layer i: distinct per layer and per user seed (splitmix64 of both).
inline std::uint64_t layer_seed(std::uint64_t seed, std::uint64_t i) {
  std::uint64_t z = seed * 0x9E3779B97F4A7C15ULL + (i + 1) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

template <typename Scalar, int Dim>
Permutation<Scalar, Dim> gap(Index dim, const SplineFlowOptions<Scalar>& o, std::uint64_t i) {
  if (o.random_permutations)
    return Permutation<Scalar, Dim>::random(dim, layer_seed(o.seed, i) ^ 1);
  Eigen::VectorXi reversed(dim);
  for (Index k = 0; k < dim; ++k) reversed(k) = int(dim - 1 - k);
  return Permutation<Scalar, Dim>(reversed);
}

template <typename Layer, typename Gap, int Layers, typename MakeLayer, typename MakeGap,
          std::size_t... I>
auto interleaved(MakeLayer&& layer, MakeGap&& gap, std::index_sequence<I...>) {
  using F = typename FlowOf<typename Interleave<Layer, Gap, Layers>::type>::type;
  auto step = [&]<std::size_t S>(std::integral_constant<std::size_t, S>) {
    if constexpr (S % 2 == 0) {
      return layer(std::uint64_t(S / 2));
    } else {
      return gap(std::uint64_t(S / 2));
    }
  };
  return F(step(std::integral_constant<std::size_t, I>{})...);
}

template <typename Scalar, int Dim, SplineDomain Domain>
auto spline_base(Index dim, const RationalQuadraticSpline<Scalar, 2, Domain>& spline) {
  if constexpr (Domain == SplineDomain::Unbounded) {
    return StandardNormal<Scalar, Dim>(dim);
  } else {
    using V = Eigen::Matrix<Scalar, Dynamic, 1>;
    return UniformBox<Scalar, Dim>(V::Constant(dim, spline.lower()),
                                   V::Constant(dim, spline.upper()));
  }
}

/// The Density of `Layers` layers made by `layer(i)`, a permutation between each two, on the
/// domain's base.
template <typename Scalar, int Dim, int Layers, SplineDomain Domain, typename Layer,
          typename MakeLayer>
auto assemble(Index dim, const SplineFlowOptions<Scalar>& options, MakeLayer&& layer) {
  auto between = [&](std::uint64_t i) { return gap<Scalar, Dim>(dim, options, i); };
  return Density(
      spline_base<Scalar, Dim>(dim, RationalQuadraticSpline<Scalar, 2, Domain>(options.spline)),
      interleaved<Layer, Permutation<Scalar, Dim>, Layers>(
          layer, between, std::make_index_sequence<std::size_t(2 * Layers - 1)>{}));
}

template <int Dim>
Index checked_dim(Index dim, const char* who) {
  if (dim < 1 || (Dim != Dynamic && dim != Dim)) {
    throw ParameterError(std::string("nflow::flows::") + who +
                         ": dim must be positive (and equal Dim when fixed), got " +
                         std::to_string(dim));
  }
  return dim;
}

}  // namespace detail

/// The base of a spline flow on `Domain`: StandardNormal on R^d, UniformBox on a box.
template <typename Scalar, int Dim, SplineDomain Domain>
using SplineFlowBase = std::conditional_t<Domain == SplineDomain::Unbounded,
                                          StandardNormal<Scalar, Dim>, UniformBox<Scalar, Dim>>;

/// The type of coupling_nsf(): `Layers` spline couplings (half masks) with a permutation between
/// each two, on SplineFlowBase.
template <typename Scalar, int Dim, int Layers, int Hidden = Dynamic, int Bins = 8,
          SplineDomain Domain = SplineDomain::Unbounded>
using CouplingNSF =
    Density<SplineFlowBase<Scalar, Dim, Domain>,
            typename detail::FlowOf<typename detail::Interleave<
                Coupling<RationalQuadraticSpline<Scalar, Bins, Domain>, Dim, Hidden, nn::ReLU>,
                Permutation<Scalar, Dim>, Layers>::type>::type>;

/// The type of autoregressive_nsf(): `Layers` autoregressive spline layers (run-time context)
/// with a permutation between each two, on SplineFlowBase.
template <typename Scalar, int Dim, int Layers, int Hidden = Dynamic, int Bins = 8,
          SplineDomain Domain = SplineDomain::Unbounded>
using AutoregressiveNSF =
    Density<SplineFlowBase<Scalar, Dim, Domain>,
            typename detail::FlowOf<typename detail::Interleave<
                MaskedAutoregressive<RationalQuadraticSpline<Scalar, Bins, Domain>, Dim, Hidden,
                                     nn::ReLU, Dynamic>,
                Permutation<Scalar, Dim>, Layers>::type>::type>;

/// @brief A coupling neural spline flow on R^dim: every layer transforms the second half of its
/// input (the features after ⌊dim/2⌋) by a rational-quadratic spline whose parameters an MLP
/// computes from the first half (and the context); the permutations between layers make every
/// feature transformed. A fresh flow is the identity map (log p = the base's). dim ≥ 2.
/// @throws nflow::ParameterError on a bad size or option.
template <typename Scalar, int Dim, int Layers, int Hidden = Dynamic, int Bins = 8,
          SplineDomain Domain = SplineDomain::Unbounded>
CouplingNSF<Scalar, Dim, Layers, Hidden, Bins, Domain> coupling_nsf(
    Index dim, const SplineFlowOptions<Scalar>& options = {}) {
  static_assert(Layers >= 1, "nflow::flows::coupling_nsf<..., Layers>: Layers must be >= 1");
  using Layer = Coupling<RationalQuadraticSpline<Scalar, Bins, Domain>, Dim, Hidden, nn::ReLU>;
  detail::checked_dim<Dim>(dim, "coupling_nsf");
  const RationalQuadraticSpline<Scalar, Bins, Domain> spline(options.spline);
  auto layer = [&](std::uint64_t i) {
    return Layer(CouplingMask::half(dim),
                 CouplingOptions{.hidden_width = options.hidden_width,
                                 .hidden_layers = options.hidden_layers,
                                 .context_dim = options.context_dim,
                                 .seed = detail::layer_seed(options.seed, i)},
                 spline);
  };
  return detail::assemble<Scalar, Dim, Layers, Domain, Layer>(dim, options, layer);
}
/// coupling_nsf() of the compile-time dimension Dim.
template <typename Scalar, int Dim, int Layers, int Hidden = Dynamic, int Bins = 8,
          SplineDomain Domain = SplineDomain::Unbounded>
requires(Dim != Dynamic) CouplingNSF<Scalar, Dim, Layers, Hidden, Bins, Domain> coupling_nsf(
    const SplineFlowOptions<Scalar>& options = {}) {
  return coupling_nsf<Scalar, Dim, Layers, Hidden, Bins, Domain>(Index(Dim), options);
}

/// @brief An autoregressive neural spline flow on R^dim: every layer is a MADE conditioner and a
/// rational-quadratic spline per feature (density in one pass, sampling in dim passes per layer),
/// with a permutation between layers. A fresh flow is the identity map. dim ≥ 1.
/// @throws nflow::ParameterError on a bad size or option.
template <typename Scalar, int Dim, int Layers, int Hidden = Dynamic, int Bins = 8,
          SplineDomain Domain = SplineDomain::Unbounded>
AutoregressiveNSF<Scalar, Dim, Layers, Hidden, Bins, Domain> autoregressive_nsf(
    Index dim, const SplineFlowOptions<Scalar>& options = {}) {
  static_assert(Layers >= 1, "nflow::flows::autoregressive_nsf<..., Layers>: Layers must be >= 1");
  using Layer = MaskedAutoregressive<RationalQuadraticSpline<Scalar, Bins, Domain>, Dim, Hidden,
                                     nn::ReLU, Dynamic>;
  detail::checked_dim<Dim>(dim, "autoregressive_nsf");
  const RationalQuadraticSpline<Scalar, Bins, Domain> spline(options.spline);
  auto layer = [&](std::uint64_t i) {
    return Layer(dim,
                 AutoregressiveOptions{.hidden_width = options.hidden_width,
                                       .hidden_layers = options.hidden_layers,
                                       .context_dim = options.context_dim,
                                       .seed = detail::layer_seed(options.seed, i)},
                 spline);
  };
  return detail::assemble<Scalar, Dim, Layers, Domain, Layer>(dim, options, layer);
}
/// autoregressive_nsf() of the compile-time dimension Dim.
template <typename Scalar, int Dim, int Layers, int Hidden = Dynamic, int Bins = 8,
          SplineDomain Domain = SplineDomain::Unbounded>
requires(Dim != Dynamic)
    AutoregressiveNSF<Scalar, Dim, Layers, Hidden, Bins, Domain> autoregressive_nsf(
        const SplineFlowOptions<Scalar>& options = {}) {
  return autoregressive_nsf<Scalar, Dim, Layers, Hidden, Bins, Domain>(Index(Dim), options);
}

}  // namespace nflow::flows
