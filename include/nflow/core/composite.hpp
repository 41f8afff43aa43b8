#pragma once
/// @file
/// @brief What a composite (Flow, Density, Inverted) needs of its parts, in one place: their
/// parameters, and the one context dispatch (with_context).
///
/// A part derived from nflow::BijectorBase always has the three parameter members (derived from
/// its parameters_impl hook). A part that is not (a duck-typed bijector, a base distribution)
/// writes all three of `parameter_count()`, `visit_parameters(f)` and `visit_parameters(f) const`,
/// or none (it has no parameters). Having only some is a compile-time error naming what is
/// missing: a part with only the non-const visit would otherwise be silently left out of
/// get_parameters, io::save and the const visits, while set_parameters wrote it.

#include <concepts>
#include <string>
#include <type_traits>
#include <utility>

#include "nflow/core/parameters.hpp"
#include "nflow/core/traits.hpp"
#include "nflow/core/types.hpp"

namespace nflow::detail {

/// Which of the three parameter members `P` has.
template <typename P>
struct ParameterMembers {
  static constexpr bool count = requires(const P& p) {
    { p.parameter_count() } -> std::convertible_to<Index>;
  };
  static constexpr bool const_visit = requires(const P& p) { p.visit_parameters(ProbeVisitor{}); };
  static constexpr bool visit = requires(P & p) { p.visit_parameters(ProbeVisitor{}); };
  /// All three: the part has parameters (possibly zero of them).
  static constexpr bool all = count && const_visit && visit;
  /// A non-const visit that a const object cannot call, or a count without a visit, or a visit
  /// without a count.
  static constexpr bool only_mutable_visit = visit && !const_visit;
  static constexpr bool count_without_visit = count && !visit;
  static constexpr bool visit_without_count = visit && !count;
};

/// The parameter members of part `P` of a composite agree. `Part` is the part's index (a Flow's
/// step) or 0; the compiler shows both template arguments next to a failed assertion.
template <std::size_t Part, typename P>
struct CheckParameterMembers {
  using M = ParameterMembers<P>;
  static_assert(
      !M::only_mutable_visit,
      "nflow: a step of this Flow (or the Base or Transform of a Density, or the B of Inverted<B>) "
      "has a non-const visit_parameters(f) but no const visit_parameters(f): "
      "get_parameters, io::save and check_laws would not see its tensors; add the const visit "
      "(or derive from nflow::BijectorBase and write the one hook parameters_impl)");
  static_assert(!M::count_without_visit,
                "nflow: a step of this Flow (or the Base or Transform of a Density, or the B of "
                "Inverted<B>) has parameter_count() but no visit_parameters(f): write both "
                "visit_parameters(f) and visit_parameters(f) const, or none of the three members");
  static_assert(!M::visit_without_count,
                "nflow: a step of this Flow (or the Base or Transform of a Density, or the B of "
                "Inverted<B>) has visit_parameters(f) but no parameter_count(): write "
                "parameter_count() too, or none of the three members");
  static constexpr bool ok =
      !M::only_mutable_visit && !M::count_without_visit && !M::visit_without_count;
};

/// The number of parameters of a part (0 for a part with no parameter members).
template <typename P>
Index part_parameter_count(const P& part) {
  if constexpr (ParameterMembers<P>::all) {
    return part.parameter_count();
  } else {
    return 0;
  }
}

/// Visits the parameters of a part with names prefixed by `prefix` (nothing for a part with no
/// parameter members). `P` may be const.
template <typename P, typename F>
void visit_part_parameters(P& part, std::string prefix, F& f) {
  if constexpr (ParameterMembers<std::remove_const_t<P>>::all) {
    if (prefix.empty()) {
      part.visit_parameters(f);
    } else {
      part.visit_parameters(prefixed_visitor(std::move(prefix), f));
    }
  }
}

}  // namespace nflow::detail

namespace nflow {

/// @brief Calls `f()` or `f(context)`: the context only when bijector type `B` is conditional and
/// a context was given (not nflow::NoContext). The one context dispatch of composites: a Flow
/// hands its context to its conditional steps and never to the others.
/// Example: `with_context<B>(ctx, [&](const auto&... c) { return b.forward_and_log_det(x, c...);
/// })`.
template <typename B, typename C, typename F>
decltype(auto) with_context(const C& context, F&& f) {
  if constexpr (is_no_context_v<C> || !is_conditional_v<std::remove_cvref_t<B>>) {
    return std::forward<F>(f)();
  } else {
    return std::forward<F>(f)(context);
  }
}

}  // namespace nflow
