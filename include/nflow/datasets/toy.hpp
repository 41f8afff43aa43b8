#pragma once
/// @file
/// @brief The eight standard 2-D toy densities of the flow literature, generated reproducibly
/// from a seed, and a Standardizer (fit mean and scale, apply, invert).
///
/// Definitions follow the toy sets of the FFJORD experiments (Grathwohl et al. 2019,
/// arXiv:1810.01367), written out below; draws use nflow's own random numbers, so a seed gives
/// the same data with every compiler.

#include <array>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <string_view>

#include "nflow/core/errors.hpp"
#include "nflow/core/random.hpp"
#include "nflow/core/types.hpp"
#include "nflow/math/constants.hpp"

namespace nflow::datasets {

enum class Toy {
  TwoMoons,        ///< two interleaved half circles (radius 2), noise σ = 0.2
  EightGaussians,  ///< 8 Gaussians, σ = 0.5/1.414, centres on a circle of radius 4/1.414 (FFJORD's
                   ///< literal 1.414, not √2)
  Checkerboard,    ///< uniform on 8 squares of side 2 in [−4, 4]²; entropy log 32
  Pinwheel,        ///< 5 curved arms, FFJORD's orientation (each arm's point rotated by −angle)
  Rings,           ///< 4 concentric rings, radii 0.75, 1.5, 2.25, 3 (FFJORD's), noise σ = 0.08
  TwoSpirals,      ///< two interleaved spirals
  Circles,         ///< two concentric circles, radii 3 and 1.5, noise σ = 0.24
  SwissRoll,       ///< the swiss roll's (x, z) projection, scaled by 1/5
};

inline constexpr std::array<Toy, 8> all_toys{Toy::TwoMoons, Toy::EightGaussians, Toy::Checkerboard,
                                             Toy::Pinwheel, Toy::Rings,          Toy::TwoSpirals,
                                             Toy::Circles,  Toy::SwissRoll};

inline std::string_view name(Toy toy) {
  switch (toy) {
    case Toy::TwoMoons:
      return "two_moons";
    case Toy::EightGaussians:
      return "8gaussians";
    case Toy::Checkerboard:
      return "checkerboard";
    case Toy::Pinwheel:
      return "pinwheel";
    case Toy::Rings:
      return "rings";
    case Toy::TwoSpirals:
      return "2spirals";
    case Toy::Circles:
      return "circles";
    case Toy::SwissRoll:
      return "swissroll";
  }
  return "unknown";
}

/// The toy named `s` (as name() spells it); throws ParameterError for an unknown name.
inline Toy toy_from_name(std::string_view s) {
  for (Toy t : all_toys)
    if (name(t) == s) return t;
  throw ParameterError("nflow::datasets: unknown toy data set '" + std::string(s) + "'");
}

/// @brief `n` samples (2 × n, one per column) of a toy density, from `seed`.
template <typename Scalar = double>
Batch<Scalar, 2, Dynamic> toy(Toy which, Index n, std::uint64_t seed) {
  if (n < 0) throw ShapeError("nflow::datasets::toy: n must be non-negative");
  std::mt19937_64 gen(seed);
  constexpr double pi = Constants<double>::pi;
  Eigen::Matrix<double, 2, Dynamic> x(2, n);
  auto u = [&] { return uniform_open01(gen); };
  auto normal2 = [&](double& a, double& b) { standard_normal_pair(gen, a, b); };
  for (Index j = 0; j < n; ++j) {
    double a = 0, b = 0;
    normal2(a, b);
    switch (which) {
      case Toy::TwoMoons: {
        const double t = pi * u();
        const bool upper = u() < 0.5;
        const double px = upper ? std::cos(t) : 1.0 - std::cos(t);
        const double py = upper ? std::sin(t) : 0.5 - std::sin(t);
        x.col(j) << 2.0 * (px + 0.1 * a) - 1.0, 2.0 * (py + 0.1 * b) - 0.2;
        break;
      }
      case Toy::EightGaussians: {
        const int k = int(u() * 8.0);
        const double angle = 2.0 * pi * k / 8.0;
        // FFJORD divides by the literal 1.414, not √2 (0.015 % apart): kept, so that the data
        // (and every score on it) are the standard's.
        x.col(j) << (4.0 * std::cos(angle) + 0.5 * a) / 1.414,
            (4.0 * std::sin(angle) + 0.5 * b) / 1.414;
        break;
      }
      case Toy::Checkerboard: {
        const double x1 = 4.0 * u() - 2.0;
        const double x2 = u() - 2.0 * double(int(u() * 2.0));
        const double shift = std::fmod(std::floor(x1) + 4.0, 2.0);  // floor(x1) mod 2, non-negative
        x.col(j) << 2.0 * x1, 2.0 * (x2 + shift);
        break;
      }
      case Toy::Pinwheel: {
        const int arm = int(u() * 5.0);
        const double radial = 0.3 * a + 1.0;
        const double tangential = 0.1 * b;
        const double angle = 2.0 * pi * arm / 5.0 + 0.25 * std::exp(radial);
        // FFJORD's einsum("ti,tij->tj", features, [[cos, −sin], [sin, cos]]): the point
        // (radial, tangential) rotated by −angle.
        x.col(j) << 2.0 * (radial * std::cos(angle) + tangential * std::sin(angle)),
            2.0 * (tangential * std::cos(angle) - radial * std::sin(angle));
        break;
      }
      case Toy::Rings: {
        const double radius = 0.75 * double(1 + int(u() * 4.0));
        const double t = 2.0 * pi * u();
        x.col(j) << radius * std::cos(t) + 0.08 * a, radius * std::sin(t) + 0.08 * b;
        break;
      }
      case Toy::TwoSpirals: {
        const double t = std::sqrt(u()) * 540.0 * 2.0 * pi / 360.0;
        const double sx = -std::cos(t) * t + 0.5 * u();
        const double sy = std::sin(t) * t + 0.5 * u();
        const double sign = u() < 0.5 ? 1.0 : -1.0;
        x.col(j) << sign * sx / 3.0 + 0.1 * a, sign * sy / 3.0 + 0.1 * b;
        break;
      }
      case Toy::Circles: {
        const double radius = u() < 0.5 ? 1.0 : 0.5;
        const double t = 2.0 * pi * u();
        x.col(j) << 3.0 * (radius * std::cos(t) + 0.08 * a),
            3.0 * (radius * std::sin(t) + 0.08 * b);
        break;
      }
      case Toy::SwissRoll: {
        const double t = 1.5 * pi * (1.0 + 2.0 * u());
        x.col(j) << (t * std::cos(t) + a) / 5.0, (t * std::sin(t) + b) / 5.0;
        break;
      }
    }
  }
  return x.template cast<Scalar>();
}

/// @brief Per-feature standardisation: fit on training data, then y = (x − mean)/scale and back.
///
/// scale is the standard deviation, floored at `min_scale` so that a constant feature does not
/// divide by zero. `log_abs_det()` is the log-det of the map x → y (−Σ log scale), for
/// reporting densities in the original units.
template <typename Scalar>
class Standardizer {
 public:
  Standardizer() = default;
  template <typename X>
  explicit Standardizer(const Eigen::MatrixBase<X>& data, Scalar min_scale = Scalar(1e-6)) {
    if (data.cols() < 2)
      throw ShapeError("nflow::datasets::Standardizer: needs at least two samples to fit");
    mean_ = data.rowwise().mean();
    scale_ = ((data.colwise() - mean_).array().square().rowwise().sum() / Scalar(data.cols() - 1))
                 .sqrt()
                 .max(min_scale);
  }
  template <typename X>
  Batch<Scalar, Dynamic, Dynamic> apply(const Eigen::MatrixBase<X>& x) const {
    detail::check_rows("Standardizer::apply", "x", mean_.size(), x.rows(), x.cols());
    return (x.colwise() - mean_).array().colwise() / scale_.array();
  }
  template <typename X>
  Batch<Scalar, Dynamic, Dynamic> invert(const Eigen::MatrixBase<X>& y) const {
    detail::check_rows("Standardizer::invert", "y", mean_.size(), y.rows(), y.cols());
    return ((y.array().colwise() * scale_.array()).matrix()).colwise() + mean_;
  }
  Scalar log_abs_det() const { return -scale_.array().log().sum(); }
  const Vector<Scalar>& mean() const { return mean_; }
  const Vector<Scalar>& scale() const { return scale_; }

 private:
  Vector<Scalar> mean_;
  Vector<Scalar> scale_;
};

}  // namespace nflow::datasets
