#pragma once
// Scalar reference activations for tests: the textbook formulas in double, written independently
// of nflow/nn/activations.hpp.
#include <cmath>
#include <type_traits>

#include "nflow/nn/activations.hpp"

namespace nflow::test_reference {

template <typename Act>
double scalar_activation(double a) {
  if constexpr (std::is_same_v<Act, nn::Identity>) {
    return a;
  } else if constexpr (std::is_same_v<Act, nn::ReLU>) {
    return a > 0 ? a : 0.0;
  } else if constexpr (std::is_same_v<Act, nn::Tanh>) {
    return std::tanh(a);
  } else if constexpr (std::is_same_v<Act, nn::SiLU>) {
    return a / (1.0 + std::exp(-a));
  } else {
    static_assert(std::is_same_v<Act, nn::ELU>);
    return a > 0 ? a : std::exp(a) - 1.0;
  }
}

}  // namespace nflow::test_reference
