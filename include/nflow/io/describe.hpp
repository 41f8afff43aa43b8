#pragma once
/// @file
/// @brief The architecture descriptions of nflow's layers, flows and densities (schema 1, see
/// docs/model_files.md): `describe_architecture(object)` (found by argument-dependent lookup in
/// namespace nflow) returns a json::Value, or Null when the object holds something schema 1
/// cannot describe (a user's bijector, a conditioner other than nflow's, image layers).
/// io::save writes it into a file's metadata and a typed io::load compares it with the file's,
/// in every translation unit that includes this header (nflow/io/model.hpp includes it).
///
/// The description records what is needed to build the object again before its tensors are
/// loaded: kinds, dimensions, widths, activations, transformer parameterisations, base
/// distribution bounds. Buffers (masks, orders, permutations) and parameters are in the
/// tensors, not here. Composites of identical steps are written compactly as
/// {"type": "repeat", "count": n, "step": …}; others as {"type": "sequence", "steps": […]}.

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "nflow/bijectors/act_norm.hpp"
#include "nflow/bijectors/continuous.hpp"
#include "nflow/bijectors/coupling.hpp"
#include "nflow/bijectors/elementwise_affine.hpp"
#include "nflow/bijectors/lu_linear.hpp"
#include "nflow/bijectors/masked_autoregressive.hpp"
#include "nflow/bijectors/permutation.hpp"
#include "nflow/bijectors/reverse.hpp"
#include "nflow/bijectors/transformers/additive.hpp"
#include "nflow/bijectors/transformers/affine.hpp"
#include "nflow/bijectors/transformers/rational_quadratic.hpp"
#include "nflow/bijectors/transformers/scale_shift.hpp"
#include "nflow/core/any_bijector.hpp"
#include "nflow/core/dynamic_flow.hpp"
#include "nflow/core/flow.hpp"
#include "nflow/core/inverted.hpp"
#include "nflow/core/stack.hpp"
#include "nflow/distributions/density.hpp"
#include "nflow/distributions/diagonal_normal.hpp"
#include "nflow/distributions/standard_normal.hpp"
#include "nflow/distributions/uniform_box.hpp"
#include "nflow/interop/native.hpp"
#include "nflow/io/architecture.hpp"
#include "nflow/nn/block_network.hpp"
#include "nflow/nn/made.hpp"
#include "nflow/nn/mlp.hpp"

namespace nflow::io {

template <typename Scalar>
class RuntimeBase;

namespace describe_detail {

using json::Value;

/// A tag that every node() overload takes, so that argument-dependent lookup finds them all
/// wherever a node() call is instantiated.
template <int N>
struct Rank {};

/// Converts from anything: the catch-all overload's parameter. A user-defined conversion is worse
/// than the exact match or derived-to-base conversion of every specific overload, so the
/// catch-all is chosen only for types that have none (and never ambiguously for a class derived
/// from a known one).
struct AnyObject {
  template <typename T>
  AnyObject(const T&) {}  // NOLINT(google-explicit-constructor): implicit by design
};

inline bool is_null(const Value& v) { return v.kind == Value::Kind::Null; }
inline Value typed(const char* type, std::vector<json::Member> rest = {}) {
  std::vector<json::Member> m;
  m.push_back({"type", json::string(type)});
  for (auto& r : rest) m.push_back(std::move(r));
  return json::object(std::move(m));
}
inline Value integer(Index v) { return json::integer(std::int64_t(v)); }

/// Anything not listed below: not describable.
inline Value node(AnyObject, Rank<1>) { return Value{}; }

/// A composite of steps: "repeat" when every step's description is the same, else "sequence";
/// Null when a step is.
inline Value steps_node(std::vector<Value> steps) {
  if (steps.empty()) return Value{};
  for (const Value& s : steps)
    if (is_null(s)) return Value{};
  const std::string first = json::write(steps.front());
  bool same = true;
  for (const Value& s : steps) same = same && json::write(s) == first;
  if (same) {
    return typed("repeat", {{"count", integer(Index(steps.size()))}, {"step", steps.front()}});
  }
  return typed("sequence", {{"steps", json::array(std::move(steps))}});
}

// ---- base distributions ----------------------------------------------------------------------
template <typename S, int D>
Value node(const StandardNormal<S, D>&, Rank<1>) {
  return typed("standard_normal");
}
template <typename S, int D>
Value node(const DiagonalNormal<S, D>&, Rank<1>) {
  return typed("diagonal_normal");
}
template <typename V>
Value numbers(const V& v) {
  std::vector<Value> items;
  items.reserve(std::size_t(v.size()));
  for (Index i = 0; i < v.size(); ++i) items.push_back(json::number(v(i)));
  return json::array(std::move(items));
}
template <typename S, int D>
Value node(const UniformBox<S, D>& b, Rank<1>) {
  return typed("uniform_box", {{"lower", numbers(b.lower())}, {"upper", numbers(b.upper())}});
}
template <typename S>
Value node(const RuntimeBase<S>& b, Rank<1>);  // nflow/io/model.hpp

// ---- transformers -----------------------------------------------------------------------------
template <typename S>
Value node(const AffineTransformer<S>& t, Rank<1>) {
  return typed("affine", {{"log_scale_bound", json::number(t.log_scale_bound())}});
}
template <typename S>
Value node(const AdditiveTransformer<S>&, Rank<1>) {
  return typed("additive");
}
inline const char* scale_function_name(ScaleFunction k) {
  switch (k) {
    case ScaleFunction::Softplus:
      return "softplus";
    case ScaleFunction::Sigmoid:
      return "sigmoid";
    case ScaleFunction::SoftClippedExp:
      return "soft_clipped_exp";
    case ScaleFunction::TanhExp:
      return "tanh_exp";
  }
  return "?";
}
template <typename S>
Value node(const ScaleShiftTransformer<S>& t, Rank<1>) {
  const auto& o = t.options();
  return typed("scale_shift", {{"scale_function", json::string(scale_function_name(o.kind))},
                               {"offset", json::number(o.offset)},
                               {"min_scale", json::number(o.min_scale)},
                               {"bound", json::number(o.bound)}});
}
inline const char* domain_name(SplineDomain d) {
  switch (d) {
    case SplineDomain::Unbounded:
      return "unbounded";
    case SplineDomain::Bounded:
      return "bounded";
    case SplineDomain::Circular:
      return "circular";
  }
  return "?";
}
inline const char* derivative_name(SplineDerivative d) {
  switch (d) {
    case SplineDerivative::Shifted:
      return "shifted";
    case SplineDerivative::Softplus:
      return "softplus";
    case SplineDerivative::Exp:
      return "exp";
  }
  return "?";
}
template <typename S, int K, SplineDomain Dom>
Value node(const RationalQuadraticSpline<S, K, Dom>& t, Rank<1>) {
  const SplineOptions<S>& o = t.options();
  return typed("rational_quadratic_spline",
               {{"bins", integer(t.bins())},
                {"domain", json::string(domain_name(Dom))},
                {"lower", json::number(o.lower)},
                {"upper", json::number(o.upper)},
                {"min_bin_width", json::number(o.min_bin_width)},
                {"min_bin_height", json::number(o.min_bin_height)},
                {"min_derivative", json::number(o.min_derivative)},
                {"derivative", json::string(derivative_name(o.derivative))},
                {"raw_scale", json::number(o.raw_scale)},
                {"soft_clip_slope", json::number(o.soft_clip_slope)}});
}

// ---- conditioners -----------------------------------------------------------------------------
/// The description of an nn::MLP (shared with make_preset).
inline Value mlp_node(Index in, Index out, Index width, Index layers, Index context,
                      const char* activation) {
  return typed("mlp", {{"in", integer(in)},
                       {"out", integer(out)},
                       {"hidden_width", integer(width)},
                       {"hidden_layers", integer(layers)},
                       {"context", integer(context)},
                       {"activation", json::string(activation)}});
}
/// The description of an nn::MADE (shared with make_preset).
inline Value made_node(Index dim, Index params_per_dim, Index width, Index layers, Index context,
                       const char* activation) {
  return typed("made", {{"dim", integer(dim)},
                        {"params_per_dim", integer(params_per_dim)},
                        {"hidden_width", integer(width)},
                        {"hidden_layers", integer(layers)},
                        {"context", integer(context)},
                        {"activation", json::string(activation)}});
}
template <typename S, int I, int O, int H, typename A>
Value node(const nn::DenseNetwork<S, I, O, H, A, nn::Unmasked>& n, Rank<1>) {
  return mlp_node(n.in_dim(), n.out_dim(), n.hidden_width(), n.hidden_layers(), n.context_dim(),
                  A::name);
}
template <typename S, int D, int H, typename A, int P>
Value node(const nn::MADE<S, D, H, A, P>& n, Rank<1>) {
  return made_node(n.dim(), n.params_per_dim(), n.hidden_width(), n.hidden_layers(),
                   n.context_dim(), A::name);
}
inline const char* block_context_name(nn::BlockContext c) {
  switch (c) {
    case nn::BlockContext::None:
      return "none";
    case nn::BlockContext::InitialLayer:
      return "initial_layer";
    case nn::BlockContext::MadeInput:
      return "made_input";
  }
  return "?";
}
inline const char* block_context_mode_name(nn::BlockContextMode c) {
  switch (c) {
    case nn::BlockContextMode::None:
      return "none";
    case nn::BlockContextMode::Additive:
      return "additive";
    case nn::BlockContextMode::Gated:
      return "gated";
  }
  return "?";
}
template <typename S, typename A>
Value node(const nn::BlockNetwork<S, A>& n, Rank<1>) {
  const nn::BlockNetworkOptions& o = n.options();
  std::vector<Value> widths;
  for (Index w : n.hidden_widths()) widths.push_back(integer(w));
  return typed("block_network",
               {{"in", integer(o.in_dim)},
                {"out", integer(o.out_dim)},
                {"hidden_widths", json::array(std::move(widths))},
                {"blocks", integer(o.blocks)},
                {"context", integer(o.context_dim)},
                {"residual", json::boolean(o.residual)},
                {"batch_norm", json::boolean(o.batch_norm)},
                {"batch_norm_eps", json::number(o.batch_norm_eps)},
                {"masked", json::boolean(o.masked)},
                {"context_input", json::string(block_context_name(o.context))},
                {"block_context", json::string(block_context_mode_name(o.block_context))},
                {"activation", json::string(A::name)}});
}

// ---- layers -----------------------------------------------------------------------------------
/// {"type": kind, "dim": d, "transformer": …, "conditioner": …}, Null if a part is.
inline Value structure_node(const char* kind, Index dim, Value transformer, Value conditioner) {
  if (is_null(transformer) || is_null(conditioner)) return Value{};
  return typed(kind, {{"dim", integer(dim)},
                      {"transformer", std::move(transformer)},
                      {"conditioner", std::move(conditioner)}});
}
template <typename T, int D, int H, typename A, int C, typename Net>
Value node(const Coupling<T, D, H, A, C, Net>& c, Rank<1>) {
  return structure_node("coupling", c.dim(), node(c.transformer(), Rank<1>{}),
                        node(c.conditioner(), Rank<1>{}));
}
template <typename T, int D, int H, typename A, int C, typename Net>
Value node(const MaskedAutoregressive<T, D, H, A, C, Net>& m, Rank<1>) {
  return structure_node("autoregressive", m.dim(), node(m.transformer(), Rank<1>{}),
                        node(m.conditioner(), Rank<1>{}));
}
template <typename B>
Value node(const Inverted<B>& b, Rank<1>) {
  Value inner = node(b.inner(), Rank<1>{});
  if (is_null(inner)) return inner;
  return typed("inverse", {{"step", std::move(inner)}});
}
template <typename S, int D>
Value node(const Permutation<S, D>& p, Rank<1>) {
  return typed("permutation", {{"dim", integer(p.dim())}});
}
template <typename S, int D>
Value node(const Reverse<S, D>& p, Rank<1>) {
  return typed("reverse", {{"dim", integer(p.dim())}});
}
template <typename S, int D>
Value node(const ActNorm<S, D>& p, Rank<1>) {
  return typed("act_norm", {{"dim", integer(p.dim())}});
}
template <typename S, int D>
Value node(const LULinear<S, D>& p, Rank<1>) {
  return typed("lu_linear", {{"dim", integer(p.dim())}});
}
template <typename S, int D>
Value node(const ElementwiseAffine<S, D>& p, Rank<1>) {
  return typed("elementwise_affine", {{"dim", integer(p.dim())}});
}

inline const char* trace_name(ode::TraceEstimator t) {
  switch (t) {
    case ode::TraceEstimator::Exact:
      return "exact";
    case ode::TraceEstimator::HutchinsonRademacher:
      return "hutchinson_rademacher";
    case ode::TraceEstimator::HutchinsonGaussian:
      return "hutchinson_gaussian";
  }
  return "?";
}
/// The ODE solver of a continuous flow: {"type": "rk4" | "euler", "steps": n} or
/// {"type": "dopri5", "rtol", "atol", "max_steps", "safety", "min_factor", "max_factor",
/// "initial_step"}.
inline Value solver_node(const ContinuousFlowOptions& o) {
  if (o.solver == OdeSolver::Dopri5) {
    const ode::Dopri5Options& d = o.dopri5;
    return typed("dopri5", {{"rtol", json::number(d.rtol)},
                            {"atol", json::number(d.atol)},
                            {"max_steps", integer(d.max_steps)},
                            {"safety", json::number(d.safety)},
                            {"min_factor", json::number(d.min_factor)},
                            {"max_factor", json::number(d.max_factor)},
                            {"initial_step", json::number(d.initial_step)}});
  }
  return typed(o.solver == OdeSolver::Euler ? "euler" : "rk4", {{"steps", integer(o.rk4_steps)}});
}
/// A continuous flow: {"type": "continuous", "dim", "field": {"type": "mlp_field",
/// "hidden_width", "hidden_layers", "context", "activation"}, "solver": …, "trace": name,
/// "probe_seed": decimal string}, from its options (sizes resolved) and context rows. (How
/// gradients are computed, back-propagation or the adjoint, does not change what the flow
/// computes and is not recorded.)
inline Value continuous_node(Index dim, const ContinuousFlowOptions& o, Index context,
                             const char* activation) {
  return typed("continuous",
               {{"dim", integer(dim)},
                {"field", typed("mlp_field", {{"hidden_width", integer(o.hidden_width)},
                                              {"hidden_layers", integer(o.hidden_layers)},
                                              {"context", integer(context)},
                                              {"activation", json::string(activation)}})},
                {"solver", solver_node(o)},
                {"trace", json::string(trace_name(o.trace))},
                {"probe_seed", json::string(std::to_string(o.probe_seed))}});
}
template <typename S, int D, int H, typename A, int C>
Value node(const ContinuousFlow<S, D, H, A, C>& f, Rank<1>) {
  return continuous_node(f.dim(), f.options(), f.context_dim(), A::name);
}

// ---- composites -------------------------------------------------------------------------------
template <typename... Bs>
Value node(const Flow<Bs...>& f, Rank<1>) {
  return [&]<std::size_t... I>(std::index_sequence<I...>) {
    return steps_node({node(f.template step<I>(), Rank<1>{})...});
  }
  (std::index_sequence_for<Bs...>{});
}
template <typename B>
Value node(const Stack<B>& s, Rank<1>) {
  std::vector<Value> steps;
  steps.reserve(std::size_t(s.size()));
  for (Index i = 0; i < s.size(); ++i) steps.push_back(node(s.step(i), Rank<1>{}));
  return steps_node(std::move(steps));
}

/// The types a type-erased step may hold and still be described: the layers of the run-time
/// model (nflow/io/model.hpp) and of the importers (nflow/interop/native.hpp).
template <typename S, typename F>
bool with_known_step(const AnyBijector<S>& step, F&& f) {
  bool found = false;
  const auto try_one = [&]<typename B>(std::type_identity<B>) {
    if (found) return;
    if (const B* p = step.template get_if<B>()) {
      found = true;
      f(*p);
    }
  };
  using R = nn::ReLU;
  constexpr int Dy = Dynamic;
  using U = std::integral_constant<SplineDomain, SplineDomain::Unbounded>;
  using Bd = std::integral_constant<SplineDomain, SplineDomain::Bounded>;
  const auto splines = [&]<typename Dom>(Dom) {
    using T = RationalQuadraticSpline<S, Dy, Dom::value>;
    try_one(std::type_identity<Coupling<T, Dy, Dy, R>>{});
    try_one(std::type_identity<MaskedAutoregressive<T, Dy, Dy, R, Dy>>{});
  };
  try_one(std::type_identity<DynamicFlow<S>>{});
  try_one(std::type_identity<AffineCoupling<S>>{});
  try_one(std::type_identity<ScaleShiftCoupling<S>>{});
  try_one(std::type_identity<AdditiveCoupling<S>>{});
  try_one(std::type_identity<MAF<S, Dy, Dy, R, Dy>>{});
  try_one(std::type_identity<IAF<S, Dy, Dy, R, Dy>>{});
  try_one(std::type_identity<Permutation<S>>{});
  try_one(std::type_identity<Reverse<S>>{});
  try_one(std::type_identity<ActNorm<S>>{});
  try_one(std::type_identity<LULinear<S>>{});
  try_one(std::type_identity<ElementwiseAffine<S>>{});
  try_one(std::type_identity<ContinuousFlow<S, Dy, Dy, nn::Tanh, Dy>>{});
  splines(U{});
  splines(Bd{});
  try_one(std::type_identity<interop::ImportedAffineCoupling<S>>{});
  try_one(std::type_identity<interop::ImportedAdditiveCoupling<S>>{});
  try_one(std::type_identity<interop::ImportedAffineAutoregressive<S>>{});
  try_one(std::type_identity<interop::ImportedSplineCoupling<S>>{});
  try_one(std::type_identity<interop::ImportedSplineAutoregressive<S>>{});
  return found;
}

template <typename S>
Value node(const AnyBijector<S>& step, Rank<1>) {
  Value out;
  with_known_step(step, [&](const auto& b) { out = node(b, Rank<1>{}); });
  return out;
}

template <typename Base, typename T>
Value node(const Density<Base, T>& d, Rank<1>) {
  Value base = node(d.base(), Rank<1>{});
  Value transform = node(d.transform(), Rank<1>{});
  if (is_null(base) || is_null(transform)) return Value{};
  return typed("density", {{"dim", integer(d.dim())},
                           {"context", integer(d.context_dim())},
                           {"base", std::move(base)},
                           {"transform", std::move(transform)}});
}

}  // namespace describe_detail
}  // namespace nflow::io

namespace nflow {

/// @brief The architecture description of `object` (schema 1, docs/model_files.md), or a Null
/// json::Value when schema 1 cannot describe it. The ADL hook behind io::SelfDescribing.
template <typename T>
io::json::Value describe_architecture(const T& object) {
  return io::describe_detail::node(object, io::describe_detail::Rank<1>{});
}

}  // namespace nflow
