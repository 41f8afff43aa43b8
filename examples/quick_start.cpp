#include <iostream>
#include <nflow/nflow.hpp>
#include <random>

int main() {
  using namespace nflow;
  const auto data = datasets::toy(datasets::Toy::TwoMoons, 10000, /*seed=*/1);  // 2 x 10000

  // An 8-layer Real NVP on R^2 (conditioners MLP 2 x 64), fitted by maximum likelihood.
  auto flow = flows::real_nvp<double, 2>({.transforms = 8, .hidden_features = 64});
  train::fit(flow, {.samples = data}, {.epochs = 5});

  std::mt19937_64 rng(42);
  const auto x = flow.sample(1000, rng);  // 2 x 1000, one sample per column
  const auto log_p = flow.log_prob(x);    // 1 x 1000
  std::cout << "mean log p(x) = " << log_p.mean() << '\n';
  std::cout << "log p(0, 0)  = " << flow.log_prob(Eigen::Vector2d(0, 0)) << '\n';
}
