#pragma once
/// @file
/// @brief What the samplers of nflow/sampling/ draw from: the `Proposal` concept (a
/// nflow::Density or a base distribution), draws with their log-densities, and reproducible
/// per-chain random streams derived from one seed.

#include <Eigen/Core>
#include <concepts>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "nflow/core/errors.hpp"
#include "nflow/core/random.hpp"
#include "nflow/core/types.hpp"
#include "nflow/distributions/density.hpp"

namespace nflow::sampling {

/// @brief A distribution the samplers can draw from and evaluate: `Scalar`, `Dim`, `dim()`,
/// `sample(n, gen)` (Dim × n) and `log_prob(x)` (1 × n). nflow::Density models it (then draws
/// come with their log-densities from one inverse pass), and so do the base distributions
/// (StandardNormal, DiagonalNormal, UniformBox), which make exact proposals for tests.
template <typename Q>
concept Proposal = requires(const Q& q, std::mt19937_64& gen,
                            const Batch<typename Q::Scalar, Q::Dim, Dynamic>& x) {
  { q.dim() } -> std::convertible_to<Index>;
  q.sample(Index(1), gen);
  q.log_prob(x);
};

/// @brief The random bit generator of each chain: std::mt19937_64, whose output the C++
/// standard fixes bit for bit, so a seed gives the same chains with every compiler.
using ChainGenerator = std::mt19937_64;

namespace detail {

/// Throws ShapeError when `q` is conditional: the samplers draw without a context.
template <typename Q>
void check_unconditional(const Q& q, const char* where) {
  if constexpr (requires { q.context_dim(); }) {
    if (q.context_dim() != 0) {
      throw ShapeError(std::string("nflow::sampling::") + where +
                       ": the proposal is conditional (context_dim() = " +
                       std::to_string(q.context_dim()) + "); the samplers draw without a context");
    }
  }
}

/// `n` draws of `q` from one generator, with log q at them. A Density returns both from one
/// inverse pass; other proposals are sampled, then evaluated.
template <Proposal Q, std::uniform_random_bit_generator G>
SamplesAndLogProb<typename Q::Scalar, Q::Dim> draw(const Q& q, Index n, G& gen) {
  if constexpr (requires { q.sample_and_log_prob(n, gen); }) {
    return q.sample_and_log_prob(n, gen);
  } else {
    Batch<typename Q::Scalar, Q::Dim, Dynamic> x = q.sample(n, gen);
    PerSample<typename Q::Scalar, Dynamic> lp = q.log_prob(x);
    return {std::move(x), std::move(lp)};
  }
}

/// One draw of `q` per generator (column c from gens[c]), with log q at them, evaluated as one
/// batch. For a Density, column c is what `q.sample_and_log_prob(1, gens[c])` returns (the
/// base draw comes from gens[c]; the inverse pass then runs once over all columns).
template <Proposal Q, std::uniform_random_bit_generator G>
SamplesAndLogProb<typename Q::Scalar, Q::Dim> draw_per_stream(const Q& q, std::vector<G>& gens) {
  using S = typename Q::Scalar;
  const Index n = Index(gens.size());
  if constexpr (requires {
                  q.base();
                  q.transform().inverse_and_log_det(q.base().sample(1, gens[0]));
                }) {
    const auto& base = q.base();
    Batch<S, Q::Dim, Dynamic> z(q.dim(), n);
    for (Index c = 0; c < n; ++c) z.col(c) = base.sample(1, gens[std::size_t(c)]);
    const PerSample<S, Dynamic> base_lp = base.log_prob(z);
    auto r = q.transform().inverse_and_log_det(z);
    return {std::move(r.value), base_lp - r.log_det};
  } else {
    Batch<S, Q::Dim, Dynamic> x(q.dim(), n);
    for (Index c = 0; c < n; ++c) x.col(c) = q.sample(1, gens[std::size_t(c)]);
    PerSample<S, Dynamic> lp = q.log_prob(x);
    return {std::move(x), std::move(lp)};
  }
}

}  // namespace detail

/// @brief The generators of chains first, ..., first + chains − 1 for one seed: chain c's stream
/// depends only on (seed, c), never on how many chains run beside it or in which call, so a run
/// of 4 chains reproduces the first 4 of a run of 64, and chains can be split across threads or
/// processes. Each is std::mt19937_64 seeded with nflow::stream_seed(seed, c).
/// @throws std::invalid_argument when `chains` or `first` is negative.
inline std::vector<ChainGenerator> chain_generators(std::uint64_t seed, Index chains,
                                                    Index first = 0) {
  if (chains < 0 || first < 0) {
    throw std::invalid_argument("nflow::sampling::chain_generators: chains (" +
                                std::to_string(chains) + ") and first (" + std::to_string(first) +
                                ") must be non-negative");
  }
  std::vector<ChainGenerator> gens;
  gens.reserve(std::size_t(chains));
  for (Index c = 0; c < chains; ++c) gens.emplace_back(stream_seed(seed, std::uint64_t(first + c)));
  return gens;
}

}  // namespace nflow::sampling
