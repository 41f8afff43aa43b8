#pragma once
/// @file
/// @brief Parameters by name: the one mechanism that optimisers, gradients and file I/O share.
///
/// A parameterized object exposes `parameter_count()` and `visit_parameters(f)`, which calls
/// `f(name, tensor)` once per trainable tensor, in a fixed order, with `tensor` an
/// `Eigen::Ref<ParameterMatrix<Scalar>>` (or `Ref<const ...>` on a const object). The flat
/// parameter vector — and the flat gradient that the `*_vjp` calls fill — concatenates the
/// tensors in that order, each column-major. Names compose like PyTorch `state_dict` keys:
/// a Flow prefixes its steps' names with `"<index>."`.

#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "nflow/core/errors.hpp"
#include "nflow/core/types.hpp"

namespace nflow {

/// @brief Names of all tensors of `object`, in visit order.
template <typename T>
std::vector<std::string> parameter_names(const T& object) {
  std::vector<std::string> names;
  object.visit_parameters([&](const std::string& name, const auto&) { names.push_back(name); });
  return names;
}

/// @brief All parameters of `object` as one flat vector (visit order, each tensor column-major).
template <typename T>
Vector<typename T::Scalar> get_parameters(const T& object) {
  Vector<typename T::Scalar> flat(object.parameter_count());
  Index offset = 0;
  object.visit_parameters([&](const std::string&, const auto& tensor) {
    flat.segment(offset, tensor.size()) = tensor.reshaped();
    offset += tensor.size();
  });
  return flat;
}

/// @brief Sets all parameters of `object` from a flat vector laid out as get_parameters() returns.
/// Throws ShapeError if the length differs from `object.parameter_count()`.
template <typename T, typename Derived>
void set_parameters(T& object, const Eigen::MatrixBase<Derived>& flat) {
  detail::check_size("set_parameters", "the flat parameter vector", object.parameter_count(),
                     flat.size());
  Index offset = 0;
  object.visit_parameters([&](const std::string&, auto tensor) {
    tensor.reshaped() = flat.reshaped().segment(offset, tensor.size());
    offset += tensor.size();
  });
}

/// @brief Hands out consecutive slices of a flat gradient vector, one per tensor, in visit order.
/// Bijectors use it in their vjp hooks (laid out as parameters_impl visits): `auto g = slicer.next(rows, cols); g += ...;`.
template <typename Scalar>
class GradientSlicer {
 public:
  explicit GradientSlicer(Eigen::Ref<Vector<Scalar>> flat) : flat_(flat) {}
  /// The next rows × cols tensor of the flat vector, as a column-major map.
  Eigen::Map<ParameterMatrix<Scalar>> next(Index rows, Index cols) {
    Eigen::Map<ParameterMatrix<Scalar>> m(flat_.data() + offset_, rows, cols);
    offset_ += rows * cols;
    return m;
  }
  /// The next `n` entries as a vector.
  Eigen::Map<Vector<Scalar>> next(Index n) {
    Eigen::Map<Vector<Scalar>> v(flat_.data() + offset_, n);
    offset_ += n;
    return v;
  }
  Index offset() const { return offset_; }

 private:
  Eigen::Ref<Vector<Scalar>> flat_;
  Index offset_ = 0;
};

namespace detail {

/// The visitor BijectorBase hands to a parameters_impl hook: forwards each (name, tensor) to `f`
/// with the tensor as an Eigen::Ref<ParameterMatrix> (Ref<const ...> when Const), so that every
/// visit has one tensor type whatever the storage (a fixed column, a matrix, a Ref).
template <typename Scalar, bool Const, typename F>
struct RefVisitor {
  using Ref = std::conditional_t<Const, Eigen::Ref<const ParameterMatrix<Scalar>>,
                                 Eigen::Ref<ParameterMatrix<Scalar>>>;
  F& f;
  template <typename T>
  void operator()(const std::string& name, T&& tensor) const {
    if constexpr (std::is_same_v<std::remove_cvref_t<T>, Ref>) {
      f(name, std::forward<T>(tensor));
    } else {
      f(name, Ref(tensor));
    }
  }
};

/// A non-owning, type-erased reference to a parameter visitor `f(name, Ref)` (Ref as in
/// RefVisitor). BijectorBase::visit_parameters wraps the caller's visitor in one, so that a
/// layer's parameters_impl, and everything it visits, is instantiated once per const-ness instead
/// of once per visitor type (parameter_count, get/set_parameters, Adam, file I/O, ...): compile
/// time. One indirect call per tensor.
template <typename Scalar, bool Const>
class VisitorRef {
 public:
  using Ref = std::conditional_t<Const, Eigen::Ref<const ParameterMatrix<Scalar>>,
                                 Eigen::Ref<ParameterMatrix<Scalar>>>;
  template <typename F>
  explicit VisitorRef(F& f)
      : object_(const_cast<void*>(static_cast<const void*>(std::addressof(f)))),
        call_([](void* object, const std::string& name, Ref tensor) {
          (*static_cast<F*>(object))(name, std::move(tensor));
        }) {}
  void operator()(const std::string& name, Ref tensor) const {
    call_(object_, name, std::move(tensor));
  }

 private:
  void* object_;
  void (*call_)(void*, const std::string&, Ref);
};

/// A visitor that accepts any (name, tensor): probes which visit_parameters overloads exist.
struct ProbeVisitor {
  template <typename T>
  void operator()(const std::string& /*name*/, T&& /*tensor*/) const {}
};

/// True when D (derived from Base) takes visit_parameters and parameter_count from Base instead of
/// redefining them: the member pointers found in D are Base's.
template <typename D, typename Base>
concept InheritsParameterMembers =
    std::is_same_v<decltype(&D::parameter_count), Index (Base::*)() const> && requires {
  static_cast<void (Base::*)(ProbeVisitor &&)>(&D::template visit_parameters<ProbeVisitor>);
  static_cast<void (Base::*)(ProbeVisitor &&) const>(&D::template visit_parameters<ProbeVisitor>);
};

/// Wraps a visitor so that every name it sees is prefixed with `prefix`.
template <typename F>
auto prefixed_visitor(std::string prefix, F& visitor) {
  return [prefix = std::move(prefix), &visitor](const std::string& name, auto&& tensor) {
    visitor(prefix + name, std::forward<decltype(tensor)>(tensor));
  };
}

template <typename Scalar>
using GradientSlicer = nflow::GradientSlicer<Scalar>;  // the name used before it was public
}  // namespace detail
}  // namespace nflow
