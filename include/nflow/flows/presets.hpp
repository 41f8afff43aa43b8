#pragma once
/// @file
/// @brief Ready-made flows, one call each: Real NVP, NICE, Glow (vector), MAF, IAF, coupling and
/// autoregressive neural spline flows, and a continuous flow. A preset is a function of options,
/// not a new type: it returns an ordinary Density whose transform is a Stack of `transforms`
/// blocks of one type (a run-time depth), each block an ordinary layer or Flow of the family
/// (its layer and the permutation after it). Names, parameters, buffers, gradients, save/load
/// and the laws are those of Density, Stack and the layers.
///
///     auto flow = nflow::flows::real_nvp<double, 2>({.transforms = 8, .hidden_features = 64});
///     auto post = nflow::flows::maf<double>(5, {.transforms = 4, .context = 3, .seed = 1});
///     auto box = nflow::flows::coupling_nsf<double, 4, Dynamic, 8, SplineDomain::Bounded>();
///     flow.log_prob(x);  post.sample(1000, gen, context);
///
/// Options are aggregates written with designated initialisers. The fields every family shares
/// (zuko's names): `transforms` (blocks, ≥ 1), `hidden_features` (width of each conditioner's
/// hidden layers; 0 means the compile-time Hidden, or 64 when Hidden is Dynamic),
/// `hidden_layers` (≥ 0 for MADEs, ≥ 1 for MLPs), `context` (rows of the context, 0:
/// unconditional) and `seed`. Block i is seeded with detail::layer_seed(seed, i), so no two
/// blocks start alike and the same seed gives the same flow on every compiler. A bad option
/// throws nflow::ParameterError naming the preset and the option; a context of the wrong size at
/// evaluation throws nflow::ShapeError (as every conditional layer does).
///
/// The types are nameable (RealNVP<double, 2>, …) so that a flow can be held as a member. See
/// docs/presets.md for each preset's defaults and the zuko call that builds the same model.

#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>

#include "nflow/bijectors/act_norm.hpp"
#include "nflow/bijectors/continuous.hpp"
#include "nflow/bijectors/coupling.hpp"
#include "nflow/bijectors/lu_linear.hpp"
#include "nflow/bijectors/masked_autoregressive.hpp"
#include "nflow/bijectors/permutation.hpp"
#include "nflow/bijectors/transformers/rational_quadratic.hpp"
#include "nflow/core/errors.hpp"
#include "nflow/core/flow.hpp"
#include "nflow/core/inverted.hpp"
#include "nflow/core/stack.hpp"
#include "nflow/distributions/density.hpp"
#include "nflow/distributions/diagonal_normal.hpp"
#include "nflow/distributions/standard_normal.hpp"
#include "nflow/distributions/uniform_box.hpp"
#include "nflow/nn/conditioner.hpp"

namespace nflow::flows {

/// @brief The form of Real NVP's affine couplings (docs/training.md, "The two affine forms"):
/// the same family of maps, parameterised differently.
enum class AffineForm {
  /// z = (x − μ)·e^{−α}, the shift in data units: AffineCoupling (AffineTransformer).
  ShiftScale,
  /// z = x·e^{s} + t, the shift in latent units, Real NVP's paper: ScaleShiftCoupling
  /// (ScaleShiftTransformer, ScaleShiftOptions::real_nvp()).
  ScaleShift,
};

/// What a preset puts between two blocks (the last block ends with the identity, so a flow
/// ends with its last layer).
enum class Permutations {
  Reverse,  ///< reverse the features (every feature is transformed by every second coupling)
  Random,   ///< a random permutation per gap, drawn from the block's seed
};

/// @brief Options of real_nvp() and nice(). Aggregate: designated initialisers.
struct CouplingFlowOptions {
  /// Not a field: makes positional initialisation a compile error (nn/conditioner.hpp).
  [[no_unique_address]] ::nflow::detail::UseDesignatedInitializers designated_initializers_only{};
  Index transforms = 3;       ///< coupling layers (blocks), ≥ 1
  Index hidden_features = 0;  ///< hidden width; 0: the compile-time Hidden, or 64
  Index hidden_layers = 2;    ///< hidden layers of each conditioner MLP, ≥ 1
  Index context = 0;          ///< rows of the context (0: unconditional)
  Permutations permutation = Permutations::Reverse;  ///< between layers
  std::uint64_t seed = 0;                            ///< seeds every block (see the file comment)
};

/// @brief Options of glow(). Aggregate: designated initialisers.
struct GlowOptions {
  /// Not a field: makes positional initialisation a compile error (nn/conditioner.hpp).
  [[no_unique_address]] ::nflow::detail::UseDesignatedInitializers designated_initializers_only{};
  Index transforms = 3;       ///< steps (ActNorm, LU linear, affine coupling), ≥ 1
  Index hidden_features = 0;  ///< hidden width; 0: the compile-time Hidden, or 64
  Index hidden_layers = 2;    ///< hidden layers of each coupling's MLP, ≥ 1
  Index context = 0;          ///< rows of the context (0: unconditional)
  std::uint64_t seed = 0;     ///< seeds the couplings and the LU layers' random rotations
};

/// @brief Options of maf() and iaf(). Aggregate: designated initialisers.
struct AutoregressiveFlowOptions {
  /// Not a field: makes positional initialisation a compile error (nn/conditioner.hpp).
  [[no_unique_address]] ::nflow::detail::UseDesignatedInitializers designated_initializers_only{};
  Index transforms = 3;       ///< autoregressive layers (blocks), ≥ 1
  Index hidden_features = 0;  ///< hidden width of each MADE; 0: the compile-time Hidden, or 64
  Index hidden_layers = 2;    ///< hidden layers of each MADE, ≥ 0
  Index context = 0;          ///< rows of the context (0: unconditional)
  Permutations permutation = Permutations::Reverse;  ///< between layers
  std::uint64_t seed = 0;                            ///< seeds every block (see the file comment)
};

/// @brief Options of coupling_nsf() and autoregressive_nsf(). Aggregate: designated
/// initialisers.
template <typename Scalar>
struct SplineFlowOptions {
  /// Not a field: makes positional initialisation a compile error (nn/conditioner.hpp).
  [[no_unique_address]] ::nflow::detail::UseDesignatedInitializers designated_initializers_only{};
  Index transforms = 3;       ///< spline layers (blocks), ≥ 1
  Index hidden_features = 0;  ///< hidden width; 0: the compile-time Hidden, or 64
  Index hidden_layers = 2;    ///< hidden layers of each conditioner, ≥ 1 (coupling), ≥ 0 (MADE)
  Index context = 0;          ///< rows of the context (0: unconditional)
  /// Bins of each spline: 0 means the compile-time Bins; any other value must equal it (the
  /// number of bins is a compile-time size: write coupling_nsf<Scalar, Dim, Hidden, 16>(…)).
  Index bins = 0;
  /// The spline's interval [lower, upper] (its bound) and minimum sizes (default: the domain's,
  /// see SplineOptions).
  SplineOptions<Scalar> spline = {};
  Permutations permutation = Permutations::Reverse;  ///< between layers
  std::uint64_t seed = 0;                            ///< seeds every block (see the file comment)
};

/// @brief Options of cnf(). Aggregate: designated initialisers.
struct ContinuousPresetOptions {
  /// Not a field: makes positional initialisation a compile error (nn/conditioner.hpp).
  [[no_unique_address]] ::nflow::detail::UseDesignatedInitializers designated_initializers_only{};
  Index transforms = 1;       ///< continuous flows in sequence (blocks), ≥ 1
  Index hidden_features = 0;  ///< hidden width of each field's MLP; 0: Hidden, or 64
  Index hidden_layers = 2;    ///< hidden layers of each field's MLP, ≥ 1
  Index context = 0;          ///< rows of the context (0: unconditional)
  std::uint64_t seed = 0;     ///< seeds every block's field (see the file comment)
  OdeSolver solver = OdeSolver::RK4;
  Index rk4_steps = 20;  ///< steps over [0, 1] with OdeSolver::RK4, ≥ 1
  ode::Dopri5Options dopri5 = {};
  ode::TraceEstimator trace = ode::TraceEstimator::Exact;
};

namespace detail {

/// The seed of block i: distinct per block and per user seed (splitmix64 of both). A block that
/// needs more than one seed takes layer_seed(seed, i) ^ k for its k-th (k = 1: the permutation
/// after it, k = 2: Glow's LU rotation).
inline std::uint64_t layer_seed(std::uint64_t seed, std::uint64_t i) {
  std::uint64_t z = seed * 0x9E3779B97F4A7C15ULL + (i + 1) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

[[noreturn]] inline void bad_option(const char* who, const std::string& what) {
  throw ParameterError(std::string("nflow::flows::") + who + ": " + what);
}

/// Checks the options every preset shares and returns the hidden width to build with.
template <int Dim, int Hidden, typename Options>
Index checked_width(const char* who, Index dim, const Options& o, Index min_dim,
                    Index min_hidden_layers) {
  if (dim < min_dim || (Dim != Dynamic && dim != Dim)) {
    bad_option(who, "dim must be >= " + std::to_string(min_dim) +
                        (Dim != Dynamic ? " and equal Dim = " + std::to_string(Dim) : "") +
                        ", got " + std::to_string(dim));
  }
  if (o.transforms < 1)
    bad_option(who, "options.transforms must be >= 1, got " + std::to_string(o.transforms));
  if (o.hidden_features < 0 ||
      (Hidden != Dynamic && o.hidden_features != 0 && o.hidden_features != Hidden)) {
    bad_option(who, "options.hidden_features must be >= 1 (0: the default" +
                        std::string(Hidden != Dynamic
                                        ? ", the compile-time Hidden = " + std::to_string(Hidden)
                                        : ", 64") +
                        "), got " + std::to_string(o.hidden_features));
  }
  if (o.hidden_layers < min_hidden_layers) {
    bad_option(who, "options.hidden_layers must be >= " + std::to_string(min_hidden_layers) +
                        ", got " + std::to_string(o.hidden_layers));
  }
  if (o.context < 0)
    bad_option(who, "options.context must be >= 0, got " + std::to_string(o.context));
  return o.hidden_features != 0 ? o.hidden_features : Hidden != Dynamic ? Index(Hidden) : 64;
}

/// The permutation after block i of n: the identity after the last, else reversed or random.
template <typename Scalar, int Dim>
Permutation<Scalar, Dim> gap(Index dim, Permutations kind, std::uint64_t seed, Index i, Index n) {
  if (i + 1 < n && kind == Permutations::Random)
    return Permutation<Scalar, Dim>::random(dim, layer_seed(seed, std::uint64_t(i)) ^ 1);
  Eigen::VectorXi order(dim);
  for (Index k = 0; k < dim; ++k) order(k) = int(i + 1 < n ? dim - 1 - k : k);
  return Permutation<Scalar, Dim>(order);
}

// The layers of the presets (one place to name them).
template <typename Scalar, int Dim, int Hidden>
using AffineLayer = AffineCoupling<Scalar, Dim, Hidden>;
template <typename Scalar, int Dim, int Hidden, AffineForm Form>
using RealNvpLayer =
    std::conditional_t<Form == AffineForm::ShiftScale, AffineLayer<Scalar, Dim, Hidden>,
                       ScaleShiftCoupling<Scalar, Dim, Hidden>>;
template <typename Scalar, int Dim, int Hidden>
using AdditiveLayer = AdditiveCoupling<Scalar, Dim, Hidden>;
template <typename Scalar, int Dim, int Hidden>
using MafLayer = nflow::MAF<Scalar, Dim, Hidden, nn::ReLU, Dynamic>;
template <typename Scalar, int Dim, int Hidden, int Bins, SplineDomain Domain>
using SplineCouplingLayer =
    Coupling<RationalQuadraticSpline<Scalar, Bins, Domain>, Dim, Hidden, nn::ReLU>;
template <typename Scalar, int Dim, int Hidden, int Bins, SplineDomain Domain>
using SplineAutoregressiveLayer =
    MaskedAutoregressive<RationalQuadraticSpline<Scalar, Bins, Domain>, Dim, Hidden, nn::ReLU,
                         Dynamic>;

/// A block: a layer, then the permutation to the next block.
template <typename Layer>
using Permuted = Flow<Layer, Permutation<typename Layer::Scalar, Layer::Dim>>;

/// The CouplingOptions of block i.
template <typename Options>
CouplingOptions coupling_options(const Options& o, Index width, Index i) {
  return CouplingOptions{.hidden_width = width,
                         .hidden_layers = o.hidden_layers,
                         .context_dim = o.context,
                         .seed = layer_seed(o.seed, std::uint64_t(i))};
}
/// The AutoregressiveOptions of block i.
template <typename Options>
AutoregressiveOptions autoregressive_options(const Options& o, Index width, Index i) {
  return AutoregressiveOptions{.hidden_width = width,
                               .hidden_layers = o.hidden_layers,
                               .context_dim = o.context,
                               .seed = layer_seed(o.seed, std::uint64_t(i))};
}

/// `o.transforms` blocks, block i being Permuted{layer(i), gap(i)}.
template <typename Layer, typename Options, typename MakeLayer>
Stack<Permuted<Layer>> permuted_stack(Index dim, const Options& o, MakeLayer&& layer) {
  return Stack<Permuted<Layer>>(o.transforms, [&](Index i) {
    return Permuted<Layer>(layer(i), gap<typename Layer::Scalar, Layer::Dim>(
                                         dim, o.permutation, o.seed, i, o.transforms));
  });
}

/// A coupling preset: `o.transforms` blocks of a coupling Layer (half mask; the transformer `t`,
/// if given) and the permutation after it, on `base`.
template <typename Layer, typename Base, typename Options, typename... Transformer>
auto coupling_density(Index dim, Index width, const Options& o, Base base,
                      const Transformer&... t) {
  return Density(std::move(base), permuted_stack<Layer>(dim, o, [&](Index i) {
                   return Layer(CouplingMask::half(dim), coupling_options(o, width, i), t...);
                 }));
}
/// An autoregressive preset: `o.transforms` blocks of Wrap(Layer) (Layer a MADE layer with the
/// transformer `t`, if given) and the permutation after it, on `base`.
template <typename Layer, typename Wrap = Layer, typename Base, typename Options,
          typename... Transformer>
auto autoregressive_density(Index dim, Index width, const Options& o, Base base,
                            const Transformer&... t) {
  return Density(std::move(base), permuted_stack<Wrap>(dim, o, [&](Index i) {
                   return Wrap(Layer(dim, autoregressive_options(o, width, i), t...));
                 }));
}

template <typename Scalar, int Dim, int Bins, SplineDomain Domain>
RationalQuadraticSpline<Scalar, Bins, Domain> checked_spline(const char* who,
                                                             const SplineFlowOptions<Scalar>& o) {
  if (o.bins != 0 && o.bins != Bins) {
    bad_option(who,
               "options.bins = " + std::to_string(o.bins) +
                   (o.bins < 1 ? std::string(" must be >= 1")
                               : " but the flow's compile-time Bins is " + std::to_string(Bins) +
                                     " (write " + who + "<Scalar, Dim, Hidden, " +
                                     std::to_string(o.bins) + ">(…) for another number of bins)"));
  }
  return RationalQuadraticSpline<Scalar, Bins, Domain>(o.spline);
}

/// The base of a spline flow: N(0, I) on R^dim, uniform on the spline's box otherwise.
template <typename Scalar, int Dim, int Bins, SplineDomain Domain>
auto spline_base(Index dim, const RationalQuadraticSpline<Scalar, Bins, Domain>& spline) {
  if constexpr (Domain == SplineDomain::Unbounded) {
    return StandardNormal<Scalar, Dim>(dim);
  } else {
    using V = Eigen::Matrix<Scalar, Dynamic, 1>;
    return UniformBox<Scalar, Dim>(V::Constant(dim, spline.lower()),
                                   V::Constant(dim, spline.upper()));
  }
}

}  // namespace detail

/// The base of a spline flow on `Domain`: StandardNormal on R^d, UniformBox on a box.
template <typename Scalar, int Dim, SplineDomain Domain>
using SplineFlowBase = std::conditional_t<Domain == SplineDomain::Unbounded,
                                          StandardNormal<Scalar, Dim>, UniformBox<Scalar, Dim>>;

// ---- the types ---------------------------------------------------------------------------

/// The type of real_nvp(): a StandardNormal base and a Stack of (affine coupling of the Form,
/// permutation).
template <typename Scalar, int Dim = Dynamic, int Hidden = Dynamic,
          AffineForm Form = AffineForm::ScaleShift>
using RealNVP = Density<StandardNormal<Scalar, Dim>,
                        Stack<detail::Permuted<detail::RealNvpLayer<Scalar, Dim, Hidden, Form>>>>;
/// The type of nice(): a DiagonalNormal base (NICE's diagonal scaling) and a Stack of
/// (additive coupling, permutation).
template <typename Scalar, int Dim = Dynamic, int Hidden = Dynamic>
using NICE = Density<DiagonalNormal<Scalar, Dim>,
                     Stack<detail::Permuted<detail::AdditiveLayer<Scalar, Dim, Hidden>>>>;
/// The type of glow(): a StandardNormal base and a Stack of Flow<ActNorm, LULinear, affine
/// coupling>.
template <typename Scalar, int Dim = Dynamic, int Hidden = Dynamic>
using Glow =
    Density<StandardNormal<Scalar, Dim>, Stack<Flow<ActNorm<Scalar, Dim>, LULinear<Scalar, Dim>,
                                                    detail::AffineLayer<Scalar, Dim, Hidden>>>>;
/// The type of maf(): a StandardNormal base and a Stack of (MAF layer, permutation).
template <typename Scalar, int Dim = Dynamic, int Hidden = Dynamic>
using MaskedAutoregressiveFlow =
    Density<StandardNormal<Scalar, Dim>,
            Stack<detail::Permuted<detail::MafLayer<Scalar, Dim, Hidden>>>>;
/// The type of iaf(): a StandardNormal base and a Stack of (IAF layer, permutation).
template <typename Scalar, int Dim = Dynamic, int Hidden = Dynamic>
using InverseAutoregressiveFlow =
    Density<StandardNormal<Scalar, Dim>,
            Stack<detail::Permuted<Inverted<detail::MafLayer<Scalar, Dim, Hidden>>>>>;
/// The type of coupling_nsf(): SplineFlowBase and a Stack of (spline coupling, permutation).
template <typename Scalar, int Dim = Dynamic, int Hidden = Dynamic, int Bins = 8,
          SplineDomain Domain = SplineDomain::Unbounded>
using CouplingNSF = Density<
    SplineFlowBase<Scalar, Dim, Domain>,
    Stack<detail::Permuted<detail::SplineCouplingLayer<Scalar, Dim, Hidden, Bins, Domain>>>>;
/// The type of autoregressive_nsf(): SplineFlowBase and a Stack of (autoregressive spline layer,
/// permutation).
template <typename Scalar, int Dim = Dynamic, int Hidden = Dynamic, int Bins = 8,
          SplineDomain Domain = SplineDomain::Unbounded>
using AutoregressiveNSF = Density<
    SplineFlowBase<Scalar, Dim, Domain>,
    Stack<detail::Permuted<detail::SplineAutoregressiveLayer<Scalar, Dim, Hidden, Bins, Domain>>>>;
/// The type of cnf(): a StandardNormal base and a Stack of ContinuousFlow (tanh fields).
template <typename Scalar, int Dim = Dynamic, int Hidden = Dynamic>
using CNF = Density<StandardNormal<Scalar, Dim>,
                    Stack<ContinuousFlow<Scalar, Dim, Hidden, nn::Tanh, Dynamic>>>;

// ---- the presets -------------------------------------------------------------------------

/// @brief Real NVP (Dinh et al. 2017) on R^dim: `transforms` affine couplings, each transforming
/// the features after ⌊dim/2⌋ by z = x·e^{s} + t (Form = AffineForm::ScaleShift, the default:
/// ScaleShiftCoupling) or z = (x − μ)·e^{−α} (AffineForm::ShiftScale: AffineCoupling), the shift
/// and log-scale an MLP of the first half (and the context), the log-scale bounded by 3·tanh(·/3);
/// a permutation between two couplings. docs/training.md ("The two affine forms") has the
/// measurement that chose the default. A fresh flow only
/// permutes (every coupling starts as the identity). dim ≥ 2. Both directions one pass, with
/// gradients. References: arXiv:1605.08803.
/// @tparam Hidden the conditioners' hidden width, fixed or Dynamic (options.hidden_features).
/// @throws nflow::ParameterError on a bad dim or option.
template <typename Scalar, int Dim = Dynamic, int Hidden = Dynamic,
          AffineForm Form = AffineForm::ScaleShift>
RealNVP<Scalar, Dim, Hidden, Form> real_nvp(Index dim, const CouplingFlowOptions& options = {}) {
  const Index w = detail::checked_width<Dim, Hidden>("real_nvp", dim, options, 2, 1);
  return detail::coupling_density<detail::RealNvpLayer<Scalar, Dim, Hidden, Form>>(
      dim, w, options, StandardNormal<Scalar, Dim>(dim));
}
/// real_nvp() of the compile-time dimension Dim.
template <typename Scalar, int Dim, int Hidden = Dynamic, AffineForm Form = AffineForm::ScaleShift>
requires(Dim != Dynamic) RealNVP<Scalar, Dim, Hidden, Form> real_nvp(
    const CouplingFlowOptions& options = {}) {
  return real_nvp<Scalar, Dim, Hidden, Form>(Index(Dim), options);
}

/// @brief NICE (Dinh et al. 2015) on R^dim: `transforms` additive couplings z_B = x_B − μ(x_A, c)
/// (log-det exactly 0) with a permutation between two, and a DiagonalNormal base whose trainable
/// log-scale is NICE's final diagonal scaling layer (without it the flow could not change
/// volume). dim ≥ 2. References: arXiv:1410.8516.
/// @throws nflow::ParameterError on a bad dim or option.
template <typename Scalar, int Dim = Dynamic, int Hidden = Dynamic>
NICE<Scalar, Dim, Hidden> nice(Index dim, const CouplingFlowOptions& options = {}) {
  const Index w = detail::checked_width<Dim, Hidden>("nice", dim, options, 2, 1);
  return detail::coupling_density<detail::AdditiveLayer<Scalar, Dim, Hidden>>(
      dim, w, options, DiagonalNormal<Scalar, Dim>(dim));
}
/// nice() of the compile-time dimension Dim.
template <typename Scalar, int Dim, int Hidden = Dynamic>
requires(Dim != Dynamic) NICE<Scalar, Dim, Hidden> nice(const CouplingFlowOptions& options = {}) {
  return nice<Scalar, Dim, Hidden>(Index(Dim), options);
}

/// @brief Glow's step of flow (Kingma & Dhariwal 2018) on vectors, `transforms` times: ActNorm,
/// an LU-parameterised linear map (the 1×1 convolution of a vector; it starts as a seeded random
/// rotation, so it mixes the features where the other presets permute them), then an affine
/// coupling. The ActNorms are the identity until initialised: call
/// `nflow::initialize_act_norms(flow.transform(), batch)` on a first batch of data before
/// training. dim ≥ 2. References: arXiv:1807.03039.
/// @throws nflow::ParameterError on a bad dim or option.
template <typename Scalar, int Dim = Dynamic, int Hidden = Dynamic>
Glow<Scalar, Dim, Hidden> glow(Index dim, const GlowOptions& options = {}) {
  using Layer = detail::AffineLayer<Scalar, Dim, Hidden>;
  using Block = Flow<ActNorm<Scalar, Dim>, LULinear<Scalar, Dim>, Layer>;
  const Index w = detail::checked_width<Dim, Hidden>("glow", dim, options, 2, 1);
  return Glow<Scalar, Dim, Hidden>(
      StandardNormal<Scalar, Dim>(dim), Stack<Block>(options.transforms, [&](Index i) {
        return Block(ActNorm<Scalar, Dim>(dim),
                     LULinear<Scalar, Dim>::random_orthogonal(
                         dim, detail::layer_seed(options.seed, std::uint64_t(i)) ^ 2),
                     Layer(CouplingMask::half(dim), detail::coupling_options(options, w, i)));
      }));
}
/// glow() of the compile-time dimension Dim.
template <typename Scalar, int Dim, int Hidden = Dynamic>
requires(Dim != Dynamic) Glow<Scalar, Dim, Hidden> glow(const GlowOptions& options = {}) {
  return glow<Scalar, Dim, Hidden>(Index(Dim), options);
}

/// @brief A masked autoregressive flow (Papamakarios et al. 2017) on R^dim: `transforms` MAF
/// layers (a MADE gives μᵢ, αᵢ from x_{<i} and the context; zᵢ = (xᵢ − μᵢ)·e^{−αᵢ}) with a
/// permutation between two. Density in one pass (with gradients), sampling in dim passes per
/// layer. A fresh flow only permutes. dim ≥ 1. References: arXiv:1705.07057.
/// @throws nflow::ParameterError on a bad dim or option.
template <typename Scalar, int Dim = Dynamic, int Hidden = Dynamic>
MaskedAutoregressiveFlow<Scalar, Dim, Hidden> maf(Index dim,
                                                  const AutoregressiveFlowOptions& options = {}) {
  const Index w = detail::checked_width<Dim, Hidden>("maf", dim, options, 1, 0);
  return detail::autoregressive_density<detail::MafLayer<Scalar, Dim, Hidden>>(
      dim, w, options, StandardNormal<Scalar, Dim>(dim));
}
/// maf() of the compile-time dimension Dim.
template <typename Scalar, int Dim, int Hidden = Dynamic>
requires(Dim != Dynamic) MaskedAutoregressiveFlow<Scalar, Dim, Hidden> maf(
    const AutoregressiveFlowOptions& options = {}) {
  return maf<Scalar, Dim, Hidden>(Index(Dim), options);
}

/// @brief An inverse autoregressive flow (Kingma et al. 2016) on R^dim: maf() with every layer
/// inverted, so sampling (and sample_and_log_prob) is one pass per layer with gradients, for
/// variational inference by reverse KL, and log_prob of given data takes dim passes per layer
/// (no gradient: it cannot be fitted by maximum likelihood). References: arXiv:1606.04934.
/// @throws nflow::ParameterError on a bad dim or option.
template <typename Scalar, int Dim = Dynamic, int Hidden = Dynamic>
InverseAutoregressiveFlow<Scalar, Dim, Hidden> iaf(Index dim,
                                                   const AutoregressiveFlowOptions& options = {}) {
  using Layer = detail::MafLayer<Scalar, Dim, Hidden>;
  const Index w = detail::checked_width<Dim, Hidden>("iaf", dim, options, 1, 0);
  return detail::autoregressive_density<Layer, Inverted<Layer>>(dim, w, options,
                                                                StandardNormal<Scalar, Dim>(dim));
}
/// iaf() of the compile-time dimension Dim.
template <typename Scalar, int Dim, int Hidden = Dynamic>
requires(Dim != Dynamic) InverseAutoregressiveFlow<Scalar, Dim, Hidden> iaf(
    const AutoregressiveFlowOptions& options = {}) {
  return iaf<Scalar, Dim, Hidden>(Index(Dim), options);
}

/// @brief A coupling neural spline flow (Durkan et al. 2019) on R^dim (or a box, by Domain):
/// every layer transforms the features after ⌊dim/2⌋ by a rational-quadratic spline of `Bins`
/// bins whose parameters an MLP computes from the first half (and the context); a permutation
/// between two layers. On R^d (SplineDomain::Unbounded) the base is a standard normal and the
/// spline is the identity outside [lower, upper]; with SplineDomain::Bounded (or Circular) every
/// layer maps the box [lower, upper]^d onto itself and the base is uniform on it. A fresh flow
/// only permutes. dim ≥ 2. References: arXiv:1906.04032.
/// @throws nflow::ParameterError on a bad dim, option or spline interval.
template <typename Scalar, int Dim = Dynamic, int Hidden = Dynamic, int Bins = 8,
          SplineDomain Domain = SplineDomain::Unbounded>
CouplingNSF<Scalar, Dim, Hidden, Bins, Domain> coupling_nsf(
    Index dim, const SplineFlowOptions<Scalar>& options = {}) {
  const Index w = detail::checked_width<Dim, Hidden>("coupling_nsf", dim, options, 2, 1);
  const auto spline = detail::checked_spline<Scalar, Dim, Bins, Domain>("coupling_nsf", options);
  return detail::coupling_density<detail::SplineCouplingLayer<Scalar, Dim, Hidden, Bins, Domain>>(
      dim, w, options, detail::spline_base<Scalar, Dim>(dim, spline), spline);
}
/// coupling_nsf() of the compile-time dimension Dim.
template <typename Scalar, int Dim, int Hidden = Dynamic, int Bins = 8,
          SplineDomain Domain = SplineDomain::Unbounded>
requires(Dim != Dynamic) CouplingNSF<Scalar, Dim, Hidden, Bins, Domain> coupling_nsf(
    const SplineFlowOptions<Scalar>& options = {}) {
  return coupling_nsf<Scalar, Dim, Hidden, Bins, Domain>(Index(Dim), options);
}

/// @brief An autoregressive neural spline flow (Durkan et al. 2019) on R^dim (or a box, by
/// Domain): every layer is a MADE conditioner and a rational-quadratic spline per feature
/// (density in one pass with gradients, sampling in dim passes per layer), with a permutation
/// between layers. zuko.flows.NSF is this flow. A fresh flow only permutes. dim ≥ 1.
/// @throws nflow::ParameterError on a bad dim, option or spline interval.
template <typename Scalar, int Dim = Dynamic, int Hidden = Dynamic, int Bins = 8,
          SplineDomain Domain = SplineDomain::Unbounded>
AutoregressiveNSF<Scalar, Dim, Hidden, Bins, Domain> autoregressive_nsf(
    Index dim, const SplineFlowOptions<Scalar>& options = {}) {
  const Index w = detail::checked_width<Dim, Hidden>("autoregressive_nsf", dim, options, 1, 0);
  const auto spline =
      detail::checked_spline<Scalar, Dim, Bins, Domain>("autoregressive_nsf", options);
  return detail::autoregressive_density<
      detail::SplineAutoregressiveLayer<Scalar, Dim, Hidden, Bins, Domain>>(
      dim, w, options, detail::spline_base<Scalar, Dim>(dim, spline), spline);
}
/// autoregressive_nsf() of the compile-time dimension Dim.
template <typename Scalar, int Dim, int Hidden = Dynamic, int Bins = 8,
          SplineDomain Domain = SplineDomain::Unbounded>
requires(Dim != Dynamic) AutoregressiveNSF<Scalar, Dim, Hidden, Bins, Domain> autoregressive_nsf(
    const SplineFlowOptions<Scalar>& options = {}) {
  return autoregressive_nsf<Scalar, Dim, Hidden, Bins, Domain>(Index(Dim), options);
}

/// @brief A continuous normalizing flow (Chen et al. 2018; Grathwohl et al. 2019) on R^dim:
/// `transforms` ContinuousFlow blocks (usually one), each the time-1 map of dz/dt = f(z, t, c)
/// with f a tanh MLP, solved by RK4 (`rk4_steps`) or Dormand–Prince, with the exact or the
/// Hutchinson divergence. Gradients in both directions; train by maximum likelihood or by flow
/// matching. dim ≥ 1. References: arXiv:1806.07366, arXiv:1810.01367.
/// @throws nflow::ParameterError on a bad dim or option.
template <typename Scalar, int Dim = Dynamic, int Hidden = Dynamic>
CNF<Scalar, Dim, Hidden> cnf(Index dim, const ContinuousPresetOptions& options = {}) {
  using Layer = ContinuousFlow<Scalar, Dim, Hidden, nn::Tanh, Dynamic>;
  const Index w = detail::checked_width<Dim, Hidden>("cnf", dim, options, 1, 1);
  return CNF<Scalar, Dim, Hidden>(
      StandardNormal<Scalar, Dim>(dim), Stack<Layer>(options.transforms, [&](Index i) {
        return Layer(
            dim, ContinuousFlowOptions{.hidden_width = w,
                                       .hidden_layers = options.hidden_layers,
                                       .context_dim = options.context,
                                       .seed = detail::layer_seed(options.seed, std::uint64_t(i)),
                                       .solver = options.solver,
                                       .rk4_steps = options.rk4_steps,
                                       .dopri5 = options.dopri5,
                                       .trace = options.trace});
      }));
}
/// cnf() of the compile-time dimension Dim.
template <typename Scalar, int Dim, int Hidden = Dynamic>
requires(Dim != Dynamic) CNF<Scalar, Dim, Hidden> cnf(const ContinuousPresetOptions& options = {}) {
  return cnf<Scalar, Dim, Hidden>(Index(Dim), options);
}

}  // namespace nflow::flows
