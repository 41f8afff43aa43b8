#pragma once
// Drawing helpers for the 2-D examples: a density heat map and scatter panels side by side.
#include <nflow/nflow.hpp>

#include <cmath>
#include <functional>

#include "support/png.hpp"

namespace nflow_examples {

struct Panels {
  int size = 320;      // pixels per panel
  double lo = -4, hi = 4;
  Image image;
  explicit Panels(int count, int panel_size = 320, double lo_ = -4, double hi_ = 4)
      : size(panel_size), lo(lo_), hi(hi_), image(count * panel_size + (count - 1) * 4, panel_size) {}

  /// Panel `k` shows exp(log_density) on the grid, scaled to its maximum.
  void density(int k, const std::function<Eigen::RowVectorXd(const Eigen::Matrix<double, 2, Eigen::Dynamic>&)>& log_density) {
    Eigen::Matrix<double, 2, Eigen::Dynamic> grid(2, size * size);
    for (int py = 0; py < size; ++py)
      for (int px = 0; px < size; ++px)
        grid.col(py * size + px) << lo + (px + 0.5) * (hi - lo) / size, hi - (py + 0.5) * (hi - lo) / size;
    const Eigen::RowVectorXd p = log_density(grid).array().exp();
    const double top = p.maxCoeff() > 0 ? p.maxCoeff() : 1.0;
    for (int py = 0; py < size; ++py)
      for (int px = 0; px < size; ++px) image.set(k * (size + 4) + px, py, colormap(p(py * size + px) / top));
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
        image.set(k * (size + 4) + px, py, colormap(top > 0 ? std::log1p(counts(py, px)) / top : 0.0));
  }
};

}  // namespace nflow_examples
