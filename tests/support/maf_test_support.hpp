#pragma once
// Shared helpers of the MAF/IAF tests (maf_test.cpp, maf_laws_test.cpp): the layer types under
// test, kept few to keep compile time down, random parameters and a context maker.
#include <cstdint>
#include <random>

#include "nflow/bijectors/masked_autoregressive.hpp"
#include "nflow/core/parameters.hpp"
#include "nflow/core/random.hpp"

namespace nflow::test_maf {

constexpr int Dyn = Eigen::Dynamic;
using nn::InputOrder;

// The types under test, kept few to keep compile time down.
template <typename S>
using FixedMaf = MAF<S, 3, 8, nn::Tanh>;  // fixed Dim and Hidden, unconditional
template <typename S>
using DynMaf = MAF<S, Dyn, Dyn, nn::Tanh, Dyn>;  // dynamic everything, context optional at run time
template <typename S>
using CondMaf = MAF<S, 4, Dyn, nn::Tanh, 2>;  // fixed context dimension

/// Every parameter drawn from N(0, scale²) (masked weight entries included: they must not matter).
template <typename B>
B randomized(B b, std::uint64_t seed, double scale = 0.3) {
  std::mt19937_64 gen(seed);
  using S = typename B::Scalar;
  const Vector<S> theta = standard_normal_matrix<S>(b.parameter_count(), 1, gen);
  set_parameters(b, theta * S(scale));
  return b;
}

template <typename S>
auto context_maker(Index rows) {
  return [rows](Index n, std::mt19937_64& gen) { return standard_normal_matrix<S>(rows, n, gen); };
}

}  // namespace nflow::test_maf
