#pragma once
/// @file
/// @brief nflow::nn::Conditioner, the contract of the network inside a coupling or autoregressive
/// structure (the map from features and context to the transformer's parameters), and the
/// optional members a structure uses when a conditioner has them.
///
/// nn::MLP and nn::MADE (nn::DenseNetwork) model it; so can any network a user or an importer
/// writes (nflows' residual blocks, zuko's masked networks): Coupling and MaskedAutoregressive
/// take the conditioner as a template parameter, so one structure serves them all.
///
/// It also holds nflow::ConditionerOptions, the one options shape from which every structure
/// builds its default conditioner (CouplingOptions is it; AutoregressiveOptions and
/// ContinuousFlowOptions start with the same fields), and the rules that resolve its zeros.

#include <Eigen/Core>
#include <concepts>
#include <cstdint>
#include <string>
#include <type_traits>

#include "nflow/core/errors.hpp"
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

/// @brief A Conditioner that also differentiates its context: `backward_recorded(tape, grad_out,
/// gp, ctx, grad_context)` with a trailing `ContextGradient<Scalar>*` (nullptr: not wanted)
/// ADDS ∂L/∂c (context_dim × N) into it. nn::MLP, nn::MADE and nn::BlockNetwork have it; a
/// structure whose conditioner lacks it throws UnsupportedError when asked for ∂L/∂c.
template <typename N>
concept ContextDifferentiableConditioner = Conditioner<N> &&
    requires(const N& cn, const ParameterMatrix<typename N::Scalar>& x,
             const typename N::Tape& ctape, Eigen::Ref<Vector<typename N::Scalar>> gp,
             ContextGradient<typename N::Scalar>* gc) {
  cn.backward_recorded(ctape, x, gp, x, gc);
};

/// @brief net.backward_recorded(tape, grad_out, gp, ctx), also adding ∂L/∂c into `gc` when it is
/// not null (a structure's one call of its conditioner's backward pass). A conditioner that is
/// not a ContextDifferentiableConditioner throws nflow::UnsupportedError when gc is not null.
template <typename N, typename G, typename C>
auto backward_recorded_into(const N& net, const typename N::Tape& tape, const G& grad_out,
                            Eigen::Ref<Vector<typename N::Scalar>> gp, const C& ctx,
                            ContextGradient<typename N::Scalar>* gc) {
  if constexpr (ContextDifferentiableConditioner<N> && !is_no_context_v<C>) {
    return net.backward_recorded(tape, grad_out, gp, ctx, gc);
  } else {
    if (gc != nullptr) {
      throw UnsupportedError(
          "nflow: this structure's conditioner does not compute the gradient with respect to the "
          "context (its backward_recorded takes no grad_context; see "
          "nflow::nn::ContextDifferentiableConditioner)");
    }
    return net.backward_recorded(tape, grad_out, gp, ctx);
  }
}

/// @brief A Conditioner that draws its own parameters, `initialize(seed, zero_last_layer)` (with
/// zero_last_layer its outputs are exactly 0: a fresh structure is the identity).
template <typename N>
concept InitializableConditioner = Conditioner<N> && requires(N& n, std::uint64_t seed) {
  n.initialize(seed, true);
};

}  // namespace nflow::nn

namespace nflow {

namespace detail {
/// @brief The first member of every conditioner options struct: it takes no value, so that
/// positional initialisation (`CouplingOptions{64, 2, 7}`, whose third number would silently be
/// the context, not the seed) fails with a sentence, while designated initialisers skip it.
/// Empty and [[no_unique_address]]: it costs nothing. (Its default constructor is explicit so
/// that `{{}, 64, 2, 7}` fails too.)
struct UseDesignatedInitializers {
  template <typename T>
  static constexpr bool PositionalInitializer = false;

  explicit UseDesignatedInitializers() = default;
  template <typename T>
  requires(!std::is_same_v<std::remove_cvref_t<T>, UseDesignatedInitializers>)
      UseDesignatedInitializers(T&&) {  // NOLINT(google-explicit-constructor): it must be reached
    static_assert(PositionalInitializer<T>,
                  "nflow: options structs take designated initializers only, e.g. "
                  "{.hidden_width = 64, .hidden_layers = 2, .context_dim = 0, .seed = 7}");
  }
};
}  // namespace detail

/// @brief The first members of every conditioner options struct (ConditionerOptions documents
/// them): written once here, so that CouplingOptions, AutoregressiveOptions and
/// ContinuousFlowOptions cannot drift apart. (A macro because designated initialisers name only
/// direct members, never a base class's.)
#define NFLOW_CONDITIONER_OPTIONS_FIELDS                                                           \
  [[no_unique_address]] ::nflow::detail::UseDesignatedInitializers designated_initializers_only{}; \
  ::nflow::Index hidden_width = 0;                                                                 \
  ::nflow::Index hidden_layers = 2;                                                                \
  ::nflow::Index context_dim = 0;                                                                  \
  std::uint64_t seed = 0

/// @brief How a structure builds its conditioner network: Coupling's options (CouplingOptions),
/// and the first four fields of AutoregressiveOptions and ContinuousFlowOptions, which follow them
/// with their own. Aggregate; designated initialisers only (a positional `{64, 2, 7}` is a compile
/// error): `{.hidden_width = 128, .seed = 3}`.
///
/// - `hidden_width`: units per hidden layer; 0 (the default) means the compile-time Hidden, or 64
///   when Hidden is Dynamic. A non-zero width that differs from a fixed Hidden is a
///   ParameterError naming 'hidden_width' and both numbers.
/// - `hidden_layers`: hidden layers of the conditioner (default 2).
/// - `context_dim`: rows of the context; 0 (the default) means the compile-time ContextDim (0,
///   unconditional, when it is Dynamic). A non-zero value that differs from a fixed ContextDim,
///   or any non-zero value when ContextDim is 0, is a ParameterError naming 'context_dim'.
/// - `seed`: initialisation of the conditioner. The default is 0 for every layer, so layers built
///   without a seed start alike: give each layer of a flow its own seed (the presets of
///   nflow/flows.hpp derive one per layer from a single seed).
///
/// (`designated_initializers_only` is not a field: an empty member that makes positional
/// initialisation fail with a sentence; see detail::UseDesignatedInitializers.)
struct ConditionerOptions {
  NFLOW_CONDITIONER_OPTIONS_FIELDS;
};

namespace detail {
/// The width `options.hidden_width` asks for (see ConditionerOptions): `width`, or when it is 0
/// the compile-time Hidden (64 when Hidden is Dynamic). @throws ParameterError naming
/// 'hidden_width' and both numbers when a non-zero width contradicts a fixed Hidden.
template <int Hidden>
Index resolve_hidden_width(const char* who, Index width) {
  if (width == 0) return Hidden != Dynamic ? Index(Hidden) : Index(64);
  if (Hidden != Dynamic && width != Hidden) {
    throw ParameterError(std::string(who) +
                         ": parameter 'hidden_width' = " + std::to_string(width) +
                         " contradicts the compile-time Hidden = " + std::to_string(Hidden) +
                         " (leave it at 0 to use Hidden)");
  }
  return width;
}

/// The context rows `options.context_dim` asks for (see ConditionerOptions): `context_dim`, or
/// when it is 0 the compile-time ContextDim (0 when it is Dynamic). @throws ParameterError naming
/// 'context_dim' when it is negative, non-zero while ContextDim is 0, or differs from a fixed
/// ContextDim.
template <int ContextDim>
Index resolve_context_dim(const char* who, Index context_dim) {
  static_assert(ContextDim == Dynamic || ContextDim >= 0,
                "nflow: ContextDim must be >= 0 or Eigen::Dynamic");
  const std::string given =
      std::string(who) + ": parameter 'context_dim' = " + std::to_string(context_dim);
  if constexpr (ContextDim == 0) {
    if (context_dim != 0) {
      throw ParameterError(given +
                           " given to a layer whose ContextDim is 0 (use ContextDim = "
                           "Eigen::Dynamic or a fixed size for a conditional layer)");
    }
  } else if constexpr (ContextDim != Dynamic) {
    if (context_dim == 0) return ContextDim;
    if (context_dim != ContextDim) {
      throw ParameterError(given + " differs from the compile-time ContextDim " +
                           std::to_string(ContextDim));
    }
  } else if (context_dim < 0) {
    throw ParameterError(given + " must be >= 0");
  }
  return context_dim;
}
}  // namespace detail

}  // namespace nflow
