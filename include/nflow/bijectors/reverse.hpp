#pragma once
/// @file
/// @brief Reverse: reverses the order of the features.

#include <string>

#include "nflow/core/bijector_base.hpp"
#include "nflow/core/errors.hpp"

namespace nflow {

/// @brief z_i = x_{Dim−1−i}. Its own inverse; log|det| = 0 both ways. No parameters.
///
/// Placed between coupling or autoregressive layers so every feature gets transformed.
/// @tparam Scalar_ float or double. @tparam Dim_ fixed or Eigen::Dynamic.
template <typename Scalar_, int Dim_ = Dynamic>
class Reverse : public BijectorBase<Reverse<Scalar_, Dim_>> {
 public:
  using Scalar = Scalar_;
  static constexpr int Dim = Dim_;
  static constexpr bool IsConstantLogDet = true;

  Reverse() requires(Dim_ != Dynamic) = default;
  explicit Reverse(Index dim) : dim_(dim) {
    if (dim <= 0 || (Dim_ != Dynamic && dim != Dim_)) {
      throw ParameterError("nflow::Reverse: dim must be positive (and equal Dim when fixed), got " +
                           std::to_string(dim));
    }
  }
  Index dim() const { return Dim_ == Dynamic ? dim_ : Index(Dim_); }

  template <typename X, typename C>
  detail::ResultFor<Scalar, Dim, X> forward_impl(const X& x, const C&) const {
    return detail::ResultFor<Scalar, Dim, X>{x.colwise().reverse(),
                                             detail::PerSampleFor<Scalar, X>::Zero(1, x.cols())};
  }
  template <typename Z, typename C>
  detail::ResultFor<Scalar, Dim, Z> inverse_impl(const Z& z, const C& c) const {
    return forward_impl(z, c);
  }
  template <typename X, typename GV, typename GL, typename C>
  detail::BatchFor<Scalar, Dim, X> forward_vjp_impl(const X&, const GV& gv, const GL&,
                                                    Eigen::Ref<Vector<Scalar>>, const C&) const {
    return detail::BatchFor<Scalar, Dim, X>(gv.colwise().reverse());
  }
  template <typename Z, typename GV, typename GL, typename C>
  detail::BatchFor<Scalar, Dim, Z> inverse_vjp_impl(const Z& z, const GV& gv, const GL& gl,
                                                    Eigen::Ref<Vector<Scalar>> gp,
                                                    const C& c) const {
    return forward_vjp_impl(z, gv, gl, gp, c);
  }

 private:
  Index dim_ = Dim_ == Dynamic ? 0 : Dim_;
};

}  // namespace nflow
