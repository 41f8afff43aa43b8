#pragma once
// Random parameters and inputs shared by tests: so that no law or formula is checked at an identity.
#include <cstdint>
#include <nflow/core/parameters.hpp>
#include <nflow/core/random.hpp>
#include <nflow/core/types.hpp>
#include <random>

namespace nflow::test {

/// `b` with every parameter drawn from N(0, scale²).
template <typename B>
B randomized(B b, std::uint64_t seed, double scale = 0.5) {
  using S = typename B::Scalar;
  std::mt19937_64 gen(seed);
  const Vector<S> theta = standard_normal_matrix<S>(b.parameter_count(), 1, gen);
  set_parameters(b, theta * S(scale));
  return b;
}

/// A d × n batch with feature i ~ N(i − 1, (0.5 + i)²): different means and scales per feature.
template <typename S>
Batch<S, Dynamic, Dynamic> shifted_batch(Index d, Index n, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  Batch<S, Dynamic, Dynamic> x = standard_normal_matrix<S>(d, n, gen);
  for (Index i = 0; i < d; ++i)
    x.row(i) = (x.row(i).array() * S(0.5 + double(i)) + S(double(i) - 1.0)).matrix();
  return x;
}

}  // namespace nflow::test
