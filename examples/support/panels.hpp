#pragma once
// Drawing helpers for the 2-D examples: a density heat map, scatter panels and polylines, side by
// side.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <functional>
#include <nflow/nflow.hpp>

#include "support/png.hpp"

namespace nflow_examples {

struct Panels {
  int size = 320;  // pixels per panel
  double lo = -4, hi = 4;
  Image image;
  explicit Panels(int count, int panel_size = 320, double lo_ = -4, double hi_ = 4)
      : size(panel_size),
        lo(lo_),
        hi(hi_),
        image(count * panel_size + (count - 1) * 4, panel_size) {}

  /// Panel `k` shows exp(log_density) on the grid, scaled to its maximum. With `stride` > 1 the
  /// log-density is evaluated at every `stride`-th pixel in each direction (and the last one) and
  /// interpolated bilinearly in between: for densities that are expensive to evaluate and smooth
  /// on the scale of a few pixels.
  void density(
      int k,
      const std::function<Eigen::RowVectorXd(const Eigen::Matrix<double, 2, Eigen::Dynamic>&)>&
          log_density,
      int stride = 1) {
    stride = std::clamp(stride, 1, size - 1);
    const int m = (size - 1 + stride - 1) / stride + 1;  // evaluated pixels per side
    auto node = [&](int i) { return std::min(i * stride, size - 1); };
    Eigen::Matrix<double, 2, Eigen::Dynamic> grid(2, m * m);
    for (int iy = 0; iy < m; ++iy)
      for (int ix = 0; ix < m; ++ix)
        grid.col(iy * m + ix) << lo + (node(ix) + 0.5) * (hi - lo) / size,
            hi - (node(iy) + 0.5) * (hi - lo) / size;
    const Eigen::RowVectorXd lp = log_density(grid);
    // Bilinear weights; a zero weight skips its node (so a −∞ there does not make NaN).
    Eigen::MatrixXd p(size, size);
    for (int py = 0; py < size; ++py) {
      const int iy = std::min(py / stride, m - 2);
      const double fy = double(py - node(iy)) / double(node(iy + 1) - node(iy));
      for (int px = 0; px < size; ++px) {
        const int ix = std::min(px / stride, m - 2);
        const double fx = double(px - node(ix)) / double(node(ix + 1) - node(ix));
        double v = 0;
        for (int c = 0; c < 4; ++c) {
          const double w = (c / 2 == 0 ? 1 - fy : fy) * (c % 2 == 0 ? 1 - fx : fx);
          if (w > 0) v += w * lp((iy + c / 2) * m + ix + c % 2);
        }
        p(py, px) = std::exp(v);
      }
    }
    const double top = p.maxCoeff() > 0 ? p.maxCoeff() : 1.0;
    for (int py = 0; py < size; ++py)
      for (int px = 0; px < size; ++px)
        image.set(k * (size + 4) + px, py, colormap(p(py, px) / top));
  }

  /// Panel `k` shows a 2-D histogram of the columns of `x` (log-scaled counts).
  void scatter(int k, const Eigen::Matrix<double, 2, Eigen::Dynamic>& x) {
    Eigen::MatrixXd counts = Eigen::MatrixXd::Zero(size, size);
    for (Eigen::Index j = 0; j < x.cols(); ++j) {
      const int px = int(std::floor((x(0, j) - lo) / (hi - lo) * size));
      const int py = int(std::floor((hi - x(1, j)) / (hi - lo) * size));
      if (px >= 0 && py >= 0 && px < size && py < size) counts(py, px) += 1;
    }
    const double top = std::log1p(counts.maxCoeff());
    for (int py = 0; py < size; ++py)
      for (int px = 0; px < size; ++px)
        image.set(k * (size + 4) + px, py,
                  colormap(top > 0 ? std::log1p(counts(py, px)) / top : 0.0));
  }

  /// Fills panel `k` with one colour.
  void fill(int k, std::array<std::uint8_t, 3> colour) {
    for (int py = 0; py < size; ++py)
      for (int px = 0; px < size; ++px) image.set(k * (size + 4) + px, py, colour);
  }

  /// Draws in panel `k` the polyline through the columns of `path` (2 × m, data coordinates),
  /// segment i in colour(i / (m − 1)); what falls outside the panel is clipped.
  void polyline(int k, const Eigen::Matrix<double, 2, Eigen::Dynamic>& path,
                const std::function<std::array<std::uint8_t, 3>(double)>& colour) {
    const double scale = size / (hi - lo);
    for (Eigen::Index i = 0; i + 1 < path.cols(); ++i) {
      const double x0 = (path(0, i) - lo) * scale, y0 = (hi - path(1, i)) * scale;
      const double x1 = (path(0, i + 1) - lo) * scale, y1 = (hi - path(1, i + 1)) * scale;
      if (!std::isfinite(x0 + y0 + x1 + y1)) continue;
      const auto c = colour(double(i) / double(path.cols() - 1));
      // One pixel per unit of the longer side (a DDA line), at most 4 × size points.
      const int n =
          int(std::min(std::ceil(std::max(std::abs(x1 - x0), std::abs(y1 - y0))), 4.0 * size)) + 1;
      for (int s = 0; s <= n; ++s) {
        const double f = double(s) / double(n);
        const int px = int(std::floor(x0 + f * (x1 - x0)));
        const int py = int(std::floor(y0 + f * (y1 - y0)));
        if (px >= 0 && py >= 0 && px < size && py < size) image.set(k * (size + 4) + px, py, c);
      }
    }
  }
};

}  // namespace nflow_examples
