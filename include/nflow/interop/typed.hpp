#pragma once
/// @file
/// @brief Imported models with compile-time sizes: `interop::to_typed<F>(imported)` turns a model
/// that an importer built (run-time sizes, one AnyBijector per layer) into the compile-time
/// `Flow` F that the caller names, e.g.
///
///     using Layer = interop::ImportedSplineAutoregressive<double, 8, 4>;  // K = 8, D = 4
///     auto typed = interop::to_typed<Flow<Layer, Layer, Layer>>(interop::load_zuko_nsf(sd));
///     double lp = typed.log_prob(Eigen::Vector4d(0.1, 0.2, 0.3, 0.4));
///
/// The conversion copies each layer's conditioner (parameters, masks, batch-norm statistics),
/// coupling mask or permutation and transformer options into the named layer: the typed model
/// computes what the imported one computes, to rounding (the same operations on fixed-size
/// storage; the tests compare them to 1e-12 in double). Nothing is shared: the two models are
/// independent afterwards.
///
/// What each named layer accepts (S the Scalar; D, C fixed or Dynamic; K fixed or Dynamic):
///   - ImportedAffineAutoregressive<S, D, C>, ImportedSplineAutoregressive<S, K, D, C>,
///     ImportedAffineCoupling<S, D, C>, ImportedAdditiveCoupling<S, D, C>,
///     ImportedSplineCoupling<S, K, D, C> (nflow/interop/native.hpp): the importer's layer of the
///     same kind (any spline domain, as long as the named transformer has the file's);
///   - Permutation<S, D>, ElementwiseAffine<S, D> (nflows' permutations and batch norm between
///     layers);
///   - any other type: only a step that holds exactly that type (AnyBijector::get_if).
/// Hidden widths stay run-time values (the conditioner is nn::BlockNetwork, whose widths are read
/// from the file).
///
/// @throws io::FormatError naming the step and both types when the imported model has another
/// number of layers, a layer of another kind, another D, C or K than the named type (e.g. "step
/// 1 ('zuko MaskedAutoregressiveTransform (MonotonicRQSTransform) 'transform.transforms.1''):
/// the model's spline has 8 bins, the named type's 10").

#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "nflow/bijectors/coupling.hpp"
#include "nflow/bijectors/elementwise_affine.hpp"
#include "nflow/bijectors/masked_autoregressive.hpp"
#include "nflow/bijectors/permutation.hpp"
#include "nflow/bijectors/transformers/rational_quadratic.hpp"
#include "nflow/core/errors.hpp"
#include "nflow/core/flow.hpp"
#include "nflow/distributions/density.hpp"
#include "nflow/interop/imported_flow.hpp"
#include "nflow/interop/native.hpp"
#include "nflow/io/errors.hpp"

namespace nflow::interop {

/// An imported model whose transform is the compile-time flow `Transform` (a Flow<...>): the
/// importer's base (a diagonal normal) and the named layers. A nflow::Density: log_prob, sample,
/// score, gradients, training and saving as for any model.
template <typename Transform>
using TypedImport = Density<ImportedBase<typename Transform::Scalar>, Transform>;

namespace detail {

/// The transformer an importer builds for a named transformer T: a spline's run-time-K form,
/// everything else itself.
template <typename T>
struct RuntimeTransformer {
  using type = T;
};
template <typename S, int K, SplineDomain D>
struct RuntimeTransformer<RationalQuadraticSpline<S, K, D>> {
  using type = RationalQuadraticSpline<S, Dynamic, D>;
};

/// T from the importer's transformer (a spline: the same options, K checked).
template <typename T>
T typed_transformer(const typename RuntimeTransformer<T>::type& t, const std::string& where) {
  if constexpr (std::is_same_v<T, typename RuntimeTransformer<T>::type>) {
    return t;
  } else {
    if (t.bins() != T::Bins) {
      throw io::FormatError(where + ": the model's spline has " + std::to_string(t.bins()) +
                            " bins, the named type's " + std::to_string(T::Bins));
    }
    return T(t.options());
  }
}

/// How a named layer L is made from an imported step: `Source`, the type the step must hold, and
/// `make(source, where)`. The primary template: the step must hold L itself.
template <typename L>
struct TypedLayer {
  using Source = L;
  static L make(const L& s, const std::string&) { return s; }
};

template <typename T, int D, int H, typename A, int C, typename Net>
struct TypedLayer<Coupling<T, D, H, A, C, Net>> {
  using Source =
      Coupling<typename RuntimeTransformer<T>::type, Dynamic, Dynamic, nn::ReLU, Dynamic, Net>;
  static Coupling<T, D, H, A, C, Net> make(const Source& s, const std::string& where) {
    return Coupling<T, D, H, A, C, Net>(s.mask(), s.conditioner(),
                                        typed_transformer<T>(s.transformer(), where));
  }
};

template <typename T, int D, int H, typename A, int C, typename Net>
struct TypedLayer<MaskedAutoregressive<T, D, H, A, C, Net>> {
  using Source = MaskedAutoregressive<typename RuntimeTransformer<T>::type, Dynamic, Dynamic,
                                      nn::ReLU, Dynamic, Net>;
  static MaskedAutoregressive<T, D, H, A, C, Net> make(const Source& s, const std::string& where) {
    return MaskedAutoregressive<T, D, H, A, C, Net>(s.conditioner(),
                                                    typed_transformer<T>(s.transformer(), where));
  }
};

template <typename S, int D>
struct TypedLayer<Permutation<S, D>> {
  using Source = Permutation<S, Dynamic>;
  static Permutation<S, D> make(const Source& s, const std::string& where) {
    if (D != Dynamic && s.indices().size() != D) {
      throw io::FormatError(where + ": the model's permutation has dimension " +
                            std::to_string(s.indices().size()) + ", the named type's " +
                            std::to_string(D));
    }
    return Permutation<S, D>(s.indices());
  }
};

template <typename S, int D>
struct TypedLayer<ElementwiseAffine<S, D>> {
  using Source = ElementwiseAffine<S, Dynamic>;
  static ElementwiseAffine<S, D> make(const Source& s, const std::string&) {
    ElementwiseAffine<S, D> out(s.dim());
    out.set_shift(s.shift());
    out.set_log_scale(s.log_scale());
    return out;
  }
};

/// Step i of `steps` as the named layer L.
template <typename L, typename Scalar>
L typed_step(const DynamicFlow<Scalar>& steps, std::size_t i) {
  const AnyBijector<Scalar>& step = steps.step(Index(i));
  const std::string where =
      "nflow::interop::to_typed: step " + std::to_string(i) + " ('" + step.name() + "')";
  using Source = typename TypedLayer<L>::Source;
  const Source* source = step.template get_if<Source>();
  if (source == nullptr) {
    throw io::FormatError(where +
                          " is not of the kind the named type has there (a different layer, "
                          "conditioner or transformer; see nflow/interop/typed.hpp for what "
                          "each named layer accepts)");
  }
  try {
    return TypedLayer<L>::make(*source, where);
  } catch (const io::FormatError&) {
    throw;
  } catch (const std::exception& e) {
    // The named layer's constructor refused the sizes (its Dim or ContextDim).
    throw io::FormatError(where + " does not fit the named type: " + e.what());
  }
}

template <typename... Layers, typename Scalar, std::size_t... I>
Flow<Layers...> typed_flow(const DynamicFlow<Scalar>& steps, std::index_sequence<I...>) {
  // Braces: the steps convert in order, so an error names the first step that does not fit.
  return Flow<Layers...>{typed_step<Layers>(steps, I)...};
}

template <typename F>
struct TypedFlowOf;
template <typename... Layers>
struct TypedFlowOf<Flow<Layers...>> {
  template <typename Scalar>
  static Flow<Layers...> make(const DynamicFlow<Scalar>& steps) {
    if (steps.size() != Index(sizeof...(Layers))) {
      throw io::FormatError("nflow::interop::to_typed: the model has " +
                            std::to_string(steps.size()) + " layers, the named type " +
                            std::to_string(sizeof...(Layers)));
    }
    return typed_flow<Layers...>(steps, std::index_sequence_for<Layers...>{});
  }
};

}  // namespace detail

/// @brief The imported model `model` as the compile-time flow `Transform` (a Flow<...> of the
/// layers above, in the model's order), with the model's base: see the file comment.
/// @throws io::FormatError naming the step when the model is not of the named type.
template <typename Transform, typename Scalar>
TypedImport<Transform> to_typed(const ImportedFlow<Scalar>& model) {
  static_assert(std::is_same_v<typename Transform::Scalar, Scalar>,
                "nflow::interop::to_typed<Transform>: the Transform's Scalar must be the model's");
  return TypedImport<Transform>(model.base(),
                                detail::TypedFlowOf<Transform>::make(model.transform()));
}

}  // namespace nflow::interop
