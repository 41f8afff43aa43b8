#pragma once
/// @file
/// @brief Reproducible random numbers over any standard uniform random bit generator.
///
/// nflow never uses std::normal_distribution or std::uniform_real_distribution, whose algorithms
/// differ between standard libraries. Its own draws are defined bit for bit here, so the same seed
/// gives the same numbers with g++ and clang (given the same `std::log` and `std::sqrt`, which on
/// one platform's C library they are).

#include <Eigen/Core>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <type_traits>

#include "nflow/core/types.hpp"

namespace nflow {

/// @brief 64 uniformly random bits from any URBG (mt19937, mt19937_64, minstd_rand, ...).
/// Generators whose range is not a power of two are used by rejection, never by modulo.
template <std::uniform_random_bit_generator G>
std::uint64_t random_bits64(G& gen) {
  constexpr std::uint64_t range = std::uint64_t(G::max()) - std::uint64_t(G::min());
  if constexpr (range == std::numeric_limits<std::uint64_t>::max()) {
    return std::uint64_t(gen() - G::min());
  } else {
    constexpr int bits = int(std::bit_width(range + 1)) - 1;  // whole bits per accepted draw
    constexpr std::uint64_t limit = std::uint64_t(1) << bits;
    std::uint64_t out = 0;
    for (int have = 0; have < 64;) {
      const std::uint64_t v = std::uint64_t(gen() - G::min());
      if (v >= limit) continue;  // reject the incomplete top of the range
      out = (out << bits) | v;
      have += bits;
    }
    return out;
  }
}

/// @brief A double uniform on the open interval (0, 1), from 53 random bits.
template <std::uniform_random_bit_generator G>
double uniform_open01(G& gen) {
  return (double(random_bits64(gen) >> 11) + 0.5) * 0x1p-53;
}

/// @brief Two independent standard normal draws (Marsaglia's polar method, in double).
template <std::uniform_random_bit_generator G>
void standard_normal_pair(G& gen, double& first, double& second) {
  double u = 0.0;
  double v = 0.0;
  double s = 0.0;
  do {
    u = 2.0 * uniform_open01(gen) - 1.0;
    v = 2.0 * uniform_open01(gen) - 1.0;
    s = u * u + v * v;
  } while (s >= 1.0 || s == 0.0);
  const double factor = std::sqrt(-2.0 * std::log(s) / s);
  first = u * factor;
  second = v * factor;
}

/// @brief Fills `m` (any Eigen dense object of float or double) with standard normal draws, in
/// storage order, two at a time. The sequence depends only on the generator's state.
template <typename Derived, std::uniform_random_bit_generator G>
void fill_standard_normal(Eigen::DenseBase<Derived>& m, G& gen) {
  using S = typename Derived::Scalar;
  const Index n = m.size();
  auto& d = m.derived();
  Index i = 0;
  double a = 0.0;
  double b = 0.0;
  for (; i + 1 < n; i += 2) {
    standard_normal_pair(gen, a, b);
    d.coeffRef(i) = S(a);
    d.coeffRef(i + 1) = S(b);
  }
  if (i < n) {
    standard_normal_pair(gen, a, b);
    d.coeffRef(i) = S(a);
  }
}

/// @brief A `rows × cols` matrix of standard normal draws.
template <typename Scalar, int Rows = Eigen::Dynamic, std::uniform_random_bit_generator G>
Eigen::Matrix<Scalar, Rows, Eigen::Dynamic> standard_normal_matrix(Index rows, Index cols, G& gen) {
  Eigen::Matrix<Scalar, Rows, Eigen::Dynamic> m(rows, cols);
  fill_standard_normal(m, gen);
  return m;
}

/// @brief An unbiased integer in [0, bound) (bound >= 1) from 64 random bits: by rejection,
/// never by plain modulo, so every value has probability exactly 1/bound.
template <std::uniform_random_bit_generator G>
Index uniform_below(G& gen, Index bound) {
  const std::uint64_t b = std::uint64_t(bound);
  const std::uint64_t reject_from =
      std::numeric_limits<std::uint64_t>::max() - std::numeric_limits<std::uint64_t>::max() % b;
  std::uint64_t r = 0;
  do {
    r = random_bits64(gen);
  } while (r >= reject_from);
  return Index(r % b);
}

namespace detail {

/// SplitMix64 (Steele, Lea, Flood 2014): a bijective mixer of 64-bit integers.
constexpr std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

}  // namespace detail

/// @brief The seed of stream `stream` of a run seeded with `seed`: SplitMix64(SplitMix64(seed) +
/// stream). Streams of one seed are well separated, and stream s depends only on (seed, s), so
/// chains, threads or MPI ranks that each seed a generator with their own stream index draw
/// independent, reproducible numbers however many run beside them.
constexpr std::uint64_t stream_seed(std::uint64_t seed, std::uint64_t stream) {
  return detail::splitmix64(detail::splitmix64(seed) + stream);
}

/// @brief A uniformly random permutation of 0..n-1 (Fisher–Yates with unbiased bounded draws),
/// reproducible across standard libraries (unlike std::shuffle).
template <std::uniform_random_bit_generator G>
Eigen::VectorXi random_permutation(Index n, G& gen) {
  Eigen::VectorXi p(n);
  for (Index i = 0; i < n; ++i) p(i) = int(i);
  for (Index i = n - 1; i > 0; --i) {
    std::swap(p(i), p(uniform_below(gen, i + 1)));
  }
  return p;
}

}  // namespace nflow
