#pragma once
/// @file
/// @brief Conv1x1: Glow's invertible 1×1 convolution, the same LU-parameterised C × C matrix at
/// every pixel of a C × H × W image.

#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>

#include "nflow/bijectors/lu_bijector_base.hpp"
#include "nflow/core/errors.hpp"
#include "nflow/core/parameters.hpp"
#include "nflow/core/types.hpp"

namespace nflow {

/// @brief Invertible 1×1 convolution over the channels of an image: z_p = W x_p at every pixel p,
/// W = P·L·(U + diag(sign ⊙ exp(log_s))) (C × C).
///
/// Layout: a sample is a C × (H·W) image flattened column-major into a vector of length D = C·H·W,
/// channel fastest: pixel p (p = h·W + w, or any fixed order) occupies entries [p·C, (p+1)·C).
/// A batch is D × N as usual; internally it is the C × (H·W·N) matrix of all its pixels, so a
/// direction is one matrix product (forward) or two triangular solves (inverse).
///
/// forward:  z_p = W x_p,                          log|det| = H·W·Σᵢ log_sᵢ (constant in x)
/// inverse:  x_p = U'⁻¹ L⁻¹ Pᵀ z_p,                log|det| = −H·W·Σᵢ log_sᵢ
///
/// No bias (Glow puts it in the ActNorm before). P and sign are fixed buffers. Parameters, in
/// visit order: "lower" (C × C), "upper" (C × C), "log_s" (C × 1), the LU factors of
/// nflow::LUParameterization, with the invariant, validation and strong guarantee of
/// nflow::LUBijectorBase, as in nflow::LULinear (which equals Conv1x1 with H = W = 1 and a zero
/// bias). `const` evaluation only reads, so it is thread-safe.
///
/// References: Kingma & Dhariwal 2018, Glow: Generative Flow with Invertible 1×1 Convolutions,
/// §3.2, arXiv:1807.03039.
/// @tparam Scalar_ float or double. @tparam Channels_ C, fixed or Eigen::Dynamic (only checked
/// at construction; the weight is dynamic-size). Dim is always Eigen::Dynamic (C·H·W, from the
/// constructor).
template <typename Scalar_, int Channels_ = Dynamic>
class Conv1x1 : public LUBijectorBase<Conv1x1<Scalar_, Channels_>, Scalar_> {
  using Base = LUBijectorBase<Conv1x1<Scalar_, Channels_>, Scalar_>;
  using Base::lu_;
  using typename Base::LU;
  friend Base;

 public:
  using Scalar = Scalar_;
  static constexpr int Dim = Dynamic;
  static constexpr int Channels = Channels_;
  static constexpr bool IsConstantLogDet = true;
  using typename Base::Weight;
  using typename Base::WeightColumn;

  /// The identity on images of `channels` × `height` × `width`.
  Conv1x1(Index channels, Index height, Index width)
      : Conv1x1(LU::identity(checked(channels, height, width), kName), height, width) {}
  /// The identity on images of Channels × `height` × `width`.
  Conv1x1(Index height, Index width) requires(Channels_ != Dynamic)
      : Conv1x1(Channels_, height, width) {}

  /// A Haar-random orthogonal C × C weight drawn reproducibly from `seed` (log|det| = 0).
  static Conv1x1 random_orthogonal(Index channels, Index height, Index width, std::uint64_t seed) {
    return Conv1x1(LU::random_orthogonal(checked(channels, height, width), seed, kName), height,
                   width);
  }
  /// A given invertible C × C weight, factored exactly by LU with partial pivoting.
  template <typename D>
  static Conv1x1 from_weight(const Eigen::MatrixBase<D>& w, Index height, Index width) {
    checked(w.rows(), height, width);
    return Conv1x1(LU::from_weight(w, kName), height, width);
  }

  Index channels() const { return lu_.size(); }
  Index height() const { return height_; }
  Index width() const { return width_; }
  Index pixels() const { return height_ * width_; }
  Index dim() const { return channels() * pixels(); }
  /// log|det| of the whole map: H·W·Σ log_s.
  Scalar log_abs_det() const { return Scalar(pixels()) * lu_.log_abs_det(); }
  // weight() (C × C), lower(), upper(), log_s(), sign(), permutation() and their setters,
  // visit_buffers ("permutation", "sign"): LUBijectorBase.

  // ---- hooks for BijectorBase ----------------------------------------------------------------
  template <typename X, typename C>
  detail::ResultFor<Scalar, Dim, X> forward_impl(const X& x, const C&) const {
    detail::ResultFor<Scalar, Dim, X> r;
    r.value.resize(x.rows(), x.cols());
    with_pixels(x, [&](const auto& xp) {
      auto zp = pixels_of(r.value);
      lu_.apply(xp, zp);
    });
    r.log_det.setConstant(1, x.cols(), log_abs_det());
    return r;
  }
  template <typename Z, typename C>
  detail::ResultFor<Scalar, Dim, Z> inverse_impl(const Z& z, const C&) const {
    detail::ResultFor<Scalar, Dim, Z> r;
    r.value.resize(z.rows(), z.cols());
    with_pixels(z, [&](const auto& zp) {
      auto xp = pixels_of(r.value);
      lu_.solve(zp, xp);
    });
    r.log_det.setConstant(1, z.cols(), -log_abs_det());
    return r;
  }
  // forward_vjp_impl, inverse_vjp_impl: LUBijectorBase, through vjp<Inverse> below.

  // Parameters "lower", "upper", "log_s" (LUBijectorBase::parameters_impl): after a non-const
  // visit_parameters() the layer re-validates and recomputes the cached weight, restoring the
  // previous state and rethrowing if a written value is invalid.

 private:
  static constexpr const char* kName = "Conv1x1";
  using PixelMatrix = Eigen::Matrix<Scalar, Dynamic, Dynamic>;

  Conv1x1(LU lu, Index height, Index width) : Base(std::move(lu)), height_(height), width_(width) {}

  static Index checked(Index channels, Index height, Index width) {
    if (channels <= 0 || (Channels_ != Dynamic && channels != Channels_) || height <= 0 ||
        width <= 0) {
      throw ParameterError(
          std::string("nflow::") + kName +
          ": channels, height and width must be positive (channels equal to Channels when "
          "fixed), got " +
          std::to_string(channels) + " x " + std::to_string(height) + " x " +
          std::to_string(width));
    }
    return channels;
  }

  /// The C × (H·W·N) matrix of all pixels of a contiguous D × N batch (a view, no copy).
  template <typename M>
  auto pixels_of(M& m) const {
    return Eigen::Map<PixelMatrix>(m.data(), channels(), pixels() * m.cols());
  }

  /// Calls f with the C × (H·W·N) pixel matrix of `m`: a view when `m` is stored contiguously
  /// column by column, otherwise of a contiguous copy.
  template <typename M, typename F>
  void with_pixels(const M& m, F&& f) const {
    const Eigen::Ref<const PixelMatrix> ref(m);  // a view of m if it has direct column-major access
    if (ref.cols() <= 1 || ref.outerStride() == ref.rows()) {
      f(Eigen::Map<const PixelMatrix>(ref.data(), channels(), pixels() * ref.cols()));
    } else {
      const PixelMatrix copy = ref;
      f(Eigen::Map<const PixelMatrix>(copy.data(), channels(), pixels() * copy.cols()));
    }
  }

  /// The vjp of either direction on the pixel matrices: the LU map's (LUBijectorBase::lu_vjp),
  /// then the constant log-det (±H·W·Σ log_s per sample).
  template <bool Inverse, typename In, typename GV, typename GL>
  auto vjp(const In& in, const GV& gv, const GL& gl, Eigen::Ref<Vector<Scalar>> gp) const {
    detail::GradientSlicer<Scalar> slicer(gp);
    detail::BatchFor<Scalar, Dim, In> g_in(in.rows(), in.cols());
    with_pixels(in, [&](const auto& in_pix) {
      with_pixels(gv, [&](const auto& g_pix) {
        auto g_in_pix = pixels_of(g_in);
        auto g_log_s = this->template lu_vjp<Inverse>(in_pix, g_pix, g_in_pix, slicer);
        if constexpr (Inverse) {
          g_log_s.array() -= Scalar(pixels()) * gl.sum();
        } else {
          g_log_s.array() += Scalar(pixels()) * gl.sum();
        }
      });
    });
    return g_in;
  }

  Index height_;
  Index width_;
};

}  // namespace nflow
