#pragma once
/// @file
/// @brief LUBijectorBase: what nflow::LULinear and nflow::Conv1x1 share, written once: the
/// LUParameterization they hold, its accessors and checked setters, its buffers, and the
/// reverse-mode gradient of the LU map in either direction.

#include <type_traits>
#include <utility>

#include "nflow/bijectors/lu_parameterization.hpp"
#include "nflow/core/bijector_base.hpp"
#include "nflow/core/errors.hpp"
#include "nflow/core/parameters.hpp"
#include "nflow/core/types.hpp"

namespace nflow {

/// @brief The base of a bijector whose map is an LU-parameterised matrix W = P·L·(U + diag(sign ⊙
/// exp(log_s))) applied to columns (see nflow::LUParameterization for the maths and invariant).
///
/// Parameters (the first three a derived layer visits, in this order): "lower" (n × n, strictly
/// lower entries used), "upper" (n × n, strictly upper entries used), "log_s" (n × 1). Buffers:
/// "permutation" (P: row i of W is row permutation(i) of L·U') and "sign" (the fixed ±1 signs of
/// U's diagonal); see nflow/core/buffers.hpp.
///
/// Every write (the setters here, the buffer visit, the parameter visit) goes through `mutate(write)`,
/// which runs `write`, checks the derived layer's own parameters (`check_own_parameters()`, a hook
/// declared here that does nothing; LULinear hides it to check its bias), re-validates and
/// refreshes the LU caches (O(n³), once per call, not per sample) and restores the previous state
/// if anything throws: a rejected value throws ParameterError naming the parameter and leaves the
/// layer unchanged.
///
/// The derived class provides `static constexpr const char* kName` (for messages) and
/// `vjp<Inverse>(in, gv, gl, gp)` (the vjp hooks of BijectorBase forward to it), and befriends
/// this base. A layer with parameters beyond the LU factors hides `parameters_impl`, visiting
/// the factors first with `Base::parameters_impl(self, f)`.
/// @tparam Derived the layer (CRTP). @tparam Scalar_ float or double.
template <typename Derived, typename Scalar_>
class LUBijectorBase : public BijectorBase<Derived> {
 public:
  using LU = LUParameterization<Scalar_>;
  using Weight = typename LU::Square;
  using WeightColumn = typename LU::Column;

  /// The assembled n × n weight W = P·L·(U + diag(sign ⊙ exp(log_s))).
  const Weight& weight() const { return lu_.weight(); }
  const Weight& lower() const { return lu_.lower(); }
  const Weight& upper() const { return lu_.upper(); }
  const WeightColumn& log_s() const { return lu_.log_s(); }
  /// The fixed ±1 signs of U's diagonal (a buffer).
  const WeightColumn& sign() const { return lu_.sign(); }
  /// The fixed permutation: row i of W is row permutation()(i) of L·U'.
  const typename LU::Indices& permutation() const { return lu_.permutation(); }

  template <typename D>
  void set_lower(const Eigen::MatrixBase<D>& v) {
    check_shape("lower", v, lu_.size());
    mutate([&] { lu_.lower_storage() = v; });
  }
  template <typename D>
  void set_upper(const Eigen::MatrixBase<D>& v) {
    check_shape("upper", v, lu_.size());
    mutate([&] { lu_.upper_storage() = v; });
  }
  template <typename D>
  void set_log_s(const Eigen::MatrixBase<D>& v) {
    check_shape("log_s", v, 1);
    mutate([&] { lu_.log_s_storage() = v; });
  }

  /// @brief The buffers "permutation" and "sign". New values must be a permutation of 0 … n−1 and
  /// entries ±1; otherwise ParameterError, and the layer is unchanged.
  template <typename F>
  void visit_buffers(F&& f) const {
    lu_.visit_buffers(f);
  }
  template <typename F>
  void visit_buffers(F&& f) {
    mutate([&] { lu_.visit_buffers(f, Derived::kName); });
  }

  // ---- the parameter hooks of BijectorBase ----------------------------------------------------
  /// The LU factors "lower", "upper", "log_s", in this order (stored values; a non-const visit
  /// writes the storage, then update_parameters_impl re-validates).
  template <typename Self, typename F>
  static void parameters_impl(Self& self, F&& f) {
    if constexpr (std::is_const_v<Self>) {
      f("lower", self.lu_.lower());
      f("upper", self.lu_.upper());
      f("log_s", self.lu_.log_s());
    } else {
      f("lower", self.lu_.lower_storage());
      f("upper", self.lu_.upper_storage());
      f("log_s", self.lu_.log_s_storage());
    }
  }
  template <typename Write>
  void update_parameters_impl(Write&& write) {
    mutate(std::forward<Write>(write));
  }

  // ---- hooks for BijectorBase: both directions' vjps are Derived::vjp<Inverse> ----------------
  template <typename X, typename GV, typename GL, typename C>
  detail::BatchFor<Scalar_, detail::delay_t<Derived, X>::Dim, X> forward_vjp_impl(
      const X& x, const GV& gv, const GL& gl, Eigen::Ref<Vector<Scalar_>> gp, const C&) const {
    return derived().template vjp<false>(x, gv, gl, gp);
  }
  template <typename Z, typename GV, typename GL, typename C>
  detail::BatchFor<Scalar_, detail::delay_t<Derived, Z>::Dim, Z> inverse_vjp_impl(
      const Z& z, const GV& gv, const GL& gl, Eigen::Ref<Vector<Scalar_>> gp, const C&) const {
    return derived().template vjp<true>(z, gv, gl, gp);
  }

 protected:
  /// The derived layer's own parameters are valid (hide to check them; throw ParameterError).
  void check_own_parameters() const {}

  /// Runs `write`, then checks and refreshes; restores the old state if anything throws.
  template <typename Write>
  void mutate(Write&& write) {
    Derived backup = derived();
    try {
      write();
      derived().check_own_parameters();
      lu_.refresh(Derived::kName);
    } catch (...) {
      derived() = std::move(backup);
      throw;
    }
  }

  explicit LUBijectorBase(LU lu) : lu_(std::move(lu)) {}

  /// Reverse mode of out = W · in (Inverse = false) or out = W⁻¹ · in (Inverse = true) on n × M
  /// column matrices: writes ∂L/∂in into `g_in`, adds ∂L/∂lower and ∂L/∂upper to the next two
  /// tensors of `slicer`, and returns the next one, ∂L/∂log_s (with the part through W added), for
  /// the caller to add its log-det's part.
  template <bool Inverse>
  auto lu_vjp(typename LU::ConstMatrixRef in, typename LU::ConstMatrixRef g,
              typename LU::MatrixRef g_in, detail::GradientSlicer<Scalar_>& slicer) const {
    const Index n = lu_.size();
    auto g_lower = slicer.next(n, n);
    auto g_upper = slicer.next(n, n);
    auto g_log_s = slicer.next(n);
    if constexpr (Inverse) {
      lu_.solve_vjp(in, g, g_in, g_lower, g_upper, g_log_s);
    } else {
      lu_.apply_vjp(in, g, g_in, g_lower, g_upper, g_log_s);
    }
    return g_log_s;
  }

  LU lu_;

 private:
  Derived& derived() { return static_cast<Derived&>(*this); }
  const Derived& derived() const { return static_cast<const Derived&>(*this); }

  template <typename D>
  void check_shape(const char* name, const Eigen::MatrixBase<D>& v, Index cols) const {
    detail::check_rows(Derived::kName, name, lu_.size(), v.rows(), v.cols());
    detail::check_cols(Derived::kName, name, cols, v.rows(), v.cols());
  }
};

}  // namespace nflow
