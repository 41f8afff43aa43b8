#pragma once
/// @file
/// @brief Permutation: a fixed permutation of the features, given or drawn from a seed.

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "nflow/core/bijector_base.hpp"
#include "nflow/core/buffers.hpp"
#include "nflow/core/errors.hpp"
#include "nflow/core/random.hpp"

namespace nflow {

/// @brief z_i = x_{p(i)} for a fixed permutation p of {0, …, Dim−1}; log|det| = 0 both ways.
///
/// inverse: x_{p(i)} = z_i. The permutation is a buffer, not a trainable parameter. Invariant:
/// `p` is a permutation (the constructor throws ParameterError naming "permutation" otherwise).
/// @tparam Scalar_ float or double. @tparam Dim_ fixed or Eigen::Dynamic.
template <typename Scalar_, int Dim_ = Dynamic>
class Permutation : public BijectorBase<Permutation<Scalar_, Dim_>> {
 public:
  using Scalar = Scalar_;
  static constexpr int Dim = Dim_;
  static constexpr bool IsConstantLogDet = true;

  /// From explicit indices: output i takes input indices[i].
  explicit Permutation(const Eigen::VectorXi& indices) : perm_(indices), inv_(indices.size()) {
    const Index n = indices.size();
    if (n <= 0 || (Dim_ != Dynamic && n != Dim_)) {
      throw ParameterError("nflow::Permutation: parameter 'permutation' must have " +
                           (Dim_ == Dynamic ? std::string("at least 1") : std::to_string(Dim_)) +
                           " entries, got " + std::to_string(n));
    }
    std::vector<bool> seen(std::size_t(n), false);
    for (Index i = 0; i < n; ++i) {
      const int p = indices(i);
      if (p < 0 || p >= n || seen[std::size_t(p)]) {
        throw ParameterError(
            "nflow::Permutation: parameter 'permutation' is not a permutation of 0.." +
            std::to_string(n - 1) + " (entry " + std::to_string(i) + " is " + std::to_string(p) +
            ")");
      }
      seen[std::size_t(p)] = true;
      inv_(p) = int(i);
    }
  }
  /// A uniformly random permutation of `dim` features drawn from `seed` (same seed, same
  /// permutation, on any compiler).
  static Permutation random(Index dim, std::uint64_t seed) {
    std::mt19937_64 gen(seed);
    return Permutation(random_permutation(dim, gen));
  }

  Index dim() const { return perm_.size(); }
  const Eigen::VectorXi& indices() const { return perm_; }

  /// @brief The buffer "permutation" (see nflow/core/buffers.hpp): the indices. A new value
  /// must be a permutation of the same length (ParameterError otherwise; unchanged then).
  template <typename F>
  void visit_buffers(F&& f) const {
    const BufferVector b = detail::to_buffer(perm_);
    f(std::string("permutation"), b);
  }
  template <typename F>
  void visit_buffers(F&& f) {
    BufferVector b = detail::to_buffer(perm_);
    f(std::string("permutation"), b);
    *this =
        Permutation(detail::buffer_to_permutation("nflow::Permutation", "permutation", b, dim()));
  }

  template <typename X, typename C>
  detail::ResultFor<Scalar, Dim, X> forward_impl(const X& x, const C&) const {
    return detail::ResultFor<Scalar, Dim, X>{gather<X>(x, perm_),
                                             detail::PerSampleFor<Scalar, X>::Zero(1, x.cols())};
  }
  template <typename Z, typename C>
  detail::ResultFor<Scalar, Dim, Z> inverse_impl(const Z& z, const C&) const {
    return detail::ResultFor<Scalar, Dim, Z>{gather<Z>(z, inv_),
                                             detail::PerSampleFor<Scalar, Z>::Zero(1, z.cols())};
  }
  template <typename X, typename GV, typename GL, typename C>
  detail::BatchFor<Scalar, Dim, X> forward_vjp_impl(const X&, const GV& gv, const GL&,
                                                    Eigen::Ref<Vector<Scalar>>, const C&) const {
    return gather<X>(gv, inv_);
  }
  template <typename Z, typename GV, typename GL, typename C>
  detail::BatchFor<Scalar, Dim, Z> inverse_vjp_impl(const Z&, const GV& gv, const GL&,
                                                    Eigen::Ref<Vector<Scalar>>, const C&) const {
    return gather<Z>(gv, perm_);
  }

 private:
  /// out.row(i) = m.row(index(i)); a plain loop, since Eigen's indexed views copy the index array
  /// (a heap allocation per call).
  template <typename Like, typename M>
  static detail::BatchFor<Scalar, Dim, Like> gather(const M& m, const Eigen::VectorXi& index) {
    detail::BatchFor<Scalar, Dim, Like> out(m.rows(), m.cols());
    for (Index i = 0; i < index.size(); ++i) out.row(i) = m.row(index(i));
    return out;
  }

  Eigen::VectorXi perm_;
  Eigen::VectorXi inv_;
};

}  // namespace nflow
