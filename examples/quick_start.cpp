#include <iostream>
#include <nflow/nflow.hpp>
#include <random>

int main() {
  using namespace nflow;
  // A flow on R^2: an elementwise affine map, a feature swap, another affine map.
  using Transform =
      Flow<ElementwiseAffine<double, 2>, Reverse<double, 2>, ElementwiseAffine<double, 2>>;
  Density density(StandardNormal<double, 2>{}, Transform{});
  density.transform().step<0>().set_log_scale(Eigen::Vector2d(0.5, -0.25));

  std::mt19937_64 rng(42);
  const auto x = density.sample(1000, rng);  // 2 x 1000, one sample per column
  const auto log_p = density.log_prob(x);    // 1 x 1000
  std::cout << "mean log p(x) = " << log_p.mean() << '\n';
  std::cout << "log p(0, 0)  = " << density.log_prob(Eigen::Vector2d(0, 0)) << '\n';
}
