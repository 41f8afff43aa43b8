#pragma once
/// @file
/// @brief Flow MCMC: independence Metropolis–Hastings with a flow proposal over many chains in
/// one batched call, a mixed kernel that alternates it with a user's local step, and the
/// integrated autocorrelation time of an observable (Sokal's automatic window).

#include <Eigen/Core>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "nflow/core/errors.hpp"
#include "nflow/core/random.hpp"
#include "nflow/core/types.hpp"
#include "nflow/sampling/proposal.hpp"

namespace nflow::sampling {

/// @brief Independence Metropolis–Hastings with proposal q (a nflow::Density, or any
/// sampling::Proposal) for an unnormalised target p̃, on many chains at once (column c of
/// state() is chain c).
///
/// A flow step draws x' ~ q for every chain and accepts it with probability
/// min(1, p̃(x')q(x) / (p̃(x)q(x'))), i.e. when log u < log w(x') − log w(x) with
/// log w = log p̃ − log q, u uniform on (0, 1); the proposals of all chains go through the flow
/// in one batch and `log_target` is called once per step on all of them. The stationary
/// distribution is p = p̃/Z; the acceptance rate is 1 when q = p.
///
/// Randomness: chain c draws only from its own generator (chain_generators(seed, chains)), so
/// its trajectory depends on (seed, c) and on nothing else: not on the number of chains, nor
/// on how steps are split into calls. Each step takes q's draw (Dim normals for a Gaussian
/// base) then one uniform from each chain's generator.
///
/// A local step (local_step, mixed_step) is any callable
/// `local(Points& x, const Eigen::RowVectorXd& log_target, std::vector<ChainGenerator>& gens)`
/// that moves the chains by a kernel that leaves p invariant (a random-walk Metropolis or HMC
/// sweep), given the current log p̃ per chain and each chain's generator; afterwards the
/// sampler re-evaluates log p̃ and log q at the new states (one batched call of each), so the
/// next flow step is exact whatever the local step did.
///
/// Bad input: a log-target or proposal log-density that is NaN or +∞ (and a log-target result
/// that is not 1 × chains) throws (std::invalid_argument, nflow::ShapeError) before any chain
/// moves; −∞ is allowed (a proposal there is never accepted; a chain started there accepts its
/// first proposal). `q` and the target are held by reference and value: q must outlive the
/// sampler.
/// @tparam Q a sampling::Proposal (unconditional). @tparam LogTarget a callable from a
///   Dim × n batch to 1 × n log p̃.
template <typename Q, typename LogTarget>
class IndependenceMetropolis {
  static_assert(Proposal<Q>,
                "nflow::sampling::IndependenceMetropolis<Q, LogTarget>: Q must model "
                "nflow::sampling::Proposal (dim(), sample(n, gen), log_prob(x))");

 public:
  using Scalar = typename Q::Scalar;
  static constexpr int Dim = Q::Dim;
  /// The chains' states, Dim × chains.
  using Points = Batch<Scalar, Dim, Dynamic>;

  /// Starts every chain at a draw of q from its own generator.
  /// @throws std::invalid_argument for chains < 1; nflow::ShapeError for a conditional q.
  IndependenceMetropolis(const Q& proposal, LogTarget log_target, Index chains, std::uint64_t seed)
      : q_(&proposal), log_target_(std::move(log_target)) {
    if (chains < 1) {
      throw std::invalid_argument(
          "nflow::sampling::IndependenceMetropolis: chains must be >= 1, got " +
          std::to_string(chains));
    }
    detail::check_unconditional(proposal, "IndependenceMetropolis");
    gens_ = chain_generators(seed, chains);
    auto s = detail::draw_per_stream(*q_, gens_);
    const Eigen::RowVectorXd lp = evaluate_target(s.samples);
    const Eigen::RowVectorXd lq = s.log_prob.template cast<double>();
    check_log_q(lq);
    x_ = std::move(s.samples);
    lp_ = lp;
    lq_ = lq;
    accepted_ = Eigen::Matrix<Index, Dynamic, 1>::Zero(chains);
  }

  Index chains() const { return x_.cols(); }
  /// The current state of every chain (Dim × chains).
  const Points& state() const { return x_; }
  /// log p̃ at the current states (1 × chains).
  const Eigen::RowVectorXd& log_target() const { return lp_; }
  /// log q at the current states (1 × chains).
  const Eigen::RowVectorXd& log_proposal() const { return lq_; }
  /// Each chain's generator, to draw what a caller's own steps need.
  std::vector<ChainGenerator>& generators() { return gens_; }

  /// Puts the chains at `x` (Dim × chains), e.g. after a burn-in elsewhere.
  /// @throws nflow::ShapeError for another shape; std::invalid_argument as step() does.
  template <typename X>
  void set_state(const Eigen::MatrixBase<X>& x) {
    nflow::detail::check_rows("sampling::IndependenceMetropolis::set_state", "x", q_->dim(),
                              x.rows(), x.cols());
    nflow::detail::check_cols("sampling::IndependenceMetropolis::set_state", "x", chains(),
                              x.rows(), x.cols());
    Points xs = x;
    const Eigen::RowVectorXd lp = evaluate_target(xs);
    const Eigen::RowVectorXd lq = q_->log_prob(xs).template cast<double>();
    check_log_q(lq);
    x_ = std::move(xs);
    lp_ = lp;
    lq_ = lq;
  }

  /// One flow proposal for every chain, accepted or rejected. Returns how many were accepted.
  Index step() {
    auto s = detail::draw_per_stream(*q_, gens_);
    const Eigen::RowVectorXd lp = evaluate_target(s.samples);
    const Eigen::RowVectorXd lq = s.log_prob.template cast<double>();
    check_log_q(lq);
    Index accepted = 0;
    constexpr double minus_inf = -std::numeric_limits<double>::infinity();
    for (Index c = 0; c < chains(); ++c) {
      const double log_u = std::log(uniform_open01(gens_[std::size_t(c)]));
      const double lw_new = lp(c) - lq(c);
      const double lw_old = lp_(c) - lq_(c);
      // A chain at a zero of the target takes any proposal; −∞ − (−∞) is never formed.
      const bool accept = lw_old == minus_inf || (lw_new != minus_inf && log_u < lw_new - lw_old);
      if (accept) {
        x_.col(c) = s.samples.col(c);
        lp_(c) = lp(c);
        lq_(c) = lq(c);
        ++accepted_(c);
        ++accepted;
      }
    }
    ++flow_steps_;
    return accepted;
  }

  /// One call of the caller's local kernel on all chains, then log p̃ and log q are
  /// re-evaluated at the new states.
  /// @throws nflow::ShapeError when the kernel changes the shape of the states.
  template <typename Local>
  void local_step(Local&& local) {
    Points x = x_;
    local(x, std::as_const(lp_), gens_);
    if (x.rows() != x_.rows() || x.cols() != x_.cols()) {
      throw ShapeError(
          "nflow::sampling::IndependenceMetropolis::local_step: the local kernel changed the "
          "states' shape from " +
          nflow::detail::shape_string(x_.rows(), x_.cols()) + " to " +
          nflow::detail::shape_string(x.rows(), x.cols()));
    }
    set_state(x);
  }

  /// The mixed kernel: one flow step, then `local_steps` local steps. Returns the number of
  /// flow proposals accepted.
  template <typename Local>
  Index mixed_step(Local&& local, Index local_steps = 1) {
    const Index accepted = step();
    for (Index i = 0; i < local_steps; ++i) local_step(local);
    return accepted;
  }

  /// Flow steps taken so far.
  Index flow_steps() const { return flow_steps_; }
  /// Accepted flow proposals over proposals made, over all chains.
  /// @throws std::domain_error before the first flow step.
  double acceptance_rate() const {
    require_steps("acceptance_rate");
    return double(accepted_.sum()) / (double(flow_steps_) * double(chains()));
  }
  /// The same per chain (chains × 1).
  Eigen::VectorXd acceptance_rates() const {
    require_steps("acceptance_rates");
    return accepted_.template cast<double>() / double(flow_steps_);
  }

 private:
  template <typename X>
  Eigen::RowVectorXd evaluate_target(const X& x) const {
    const Eigen::MatrixXd lp = log_target_(x).template cast<double>();
    if (lp.rows() != 1 || lp.cols() != x.cols()) {
      throw ShapeError("nflow::sampling::IndependenceMetropolis: log_target must return 1 x " +
                       std::to_string(x.cols()) + " (one value per chain), got " +
                       nflow::detail::shape_string(lp.rows(), lp.cols()));
    }
    for (Index c = 0; c < lp.cols(); ++c) {
      if (std::isnan(lp(0, c)) || lp(0, c) == std::numeric_limits<double>::infinity()) {
        throw std::invalid_argument("nflow::sampling::IndependenceMetropolis: log_target is " +
                                    std::string(std::isnan(lp(0, c)) ? "NaN" : "+inf") +
                                    " at chain " + std::to_string(c) +
                                    "'s point (return -inf where the target is 0)");
      }
    }
    return lp.row(0);
  }
  static void check_log_q(const Eigen::RowVectorXd& lq) {
    for (Index c = 0; c < lq.size(); ++c) {
      if (!(lq(c) > -std::numeric_limits<double>::infinity()) ||
          lq(c) == std::numeric_limits<double>::infinity()) {
        throw std::invalid_argument(
            "nflow::sampling::IndependenceMetropolis: the proposal's log-density at chain " +
            std::to_string(c) + "'s point is " + std::to_string(lq(c)) +
            " (q must be positive and finite wherever the chains go; a non-finite draw of the "
            "flow?)");
      }
    }
  }
  void require_steps(const char* what) const {
    if (flow_steps_ == 0) {
      throw std::domain_error(std::string("nflow::sampling::IndependenceMetropolis::") + what +
                              ": no flow step taken yet");
    }
  }

  const Q* q_;
  LogTarget log_target_;
  std::vector<ChainGenerator> gens_;
  Points x_;
  Eigen::RowVectorXd lp_;
  Eigen::RowVectorXd lq_;
  Eigen::Matrix<Index, Dynamic, 1> accepted_;
  Index flow_steps_ = 0;
};

/// @brief The integrated autocorrelation time of a scalar observable and the window it used.
struct AutocorrelationTime {
  double tau;     ///< τ_int = 1 + 2 Σ_{t=1}^{W} ρ(t)
  Index window;   ///< W
  bool reliable;  ///< the window closed (W ≥ c·τ before the series ran out) and T ≥ 50·τ
};

/// @brief τ_int of a series by Sokal's automatic windowing: the normalised autocorrelation
/// ρ(t) (per chain about its own mean, averaged over chains), summed up to the first window
/// W ≥ c·τ_int(W). With this convention an AR(1) series x_t = ρ x_{t−1} + noise has
/// τ_int = (1 + ρ)/(1 − ρ), and the variance of a mean of T·C correlated draws is
/// σ²·τ_int/(T·C). Cost O(T·C·W).
/// @param series T × C: one column per chain, one row per step (a single chain: a vector).
/// @param c the window factor (Sokal: 4 to 10; 5 is usual).
/// @throws std::invalid_argument for T < 2, C < 1, c ≤ 0 or a non-finite value;
///   std::domain_error for a series with no variance (constant chains).
/// References: Sokal, "Monte Carlo methods in statistical mechanics" (1996), sec. 3;
/// Madras, Sokal, J. Stat. Phys. 50 (1988) 109.
inline AutocorrelationTime integrated_autocorrelation_time(
    const Eigen::Ref<const Eigen::MatrixXd>& series, double c = 5.0) {
  const Index t_len = series.rows();
  const Index chains = series.cols();
  if (t_len < 2 || chains < 1 || !(c > 0.0)) {
    throw std::invalid_argument(
        "nflow::sampling::integrated_autocorrelation_time: needs T >= 2 rows (steps), C >= 1 "
        "columns (chains) and c > 0, got " +
        nflow::detail::shape_string(t_len, chains) + " and c = " + std::to_string(c));
  }
  if (!series.allFinite()) {
    throw std::invalid_argument(
        "nflow::sampling::integrated_autocorrelation_time: the series is not finite");
  }
  const Eigen::MatrixXd y = series.rowwise() - series.colwise().mean();
  auto autocov = [&](Index lag) {
    double s = 0.0;
    for (Index k = 0; k < chains; ++k) {
      s += y.col(k).head(t_len - lag).dot(y.col(k).tail(t_len - lag));
    }
    return s / (double(t_len) * double(chains));
  };
  const double c0 = autocov(0);
  if (!(c0 > 0.0)) {
    throw std::domain_error(
        "nflow::sampling::integrated_autocorrelation_time: the series is constant (no variance)");
  }
  double tau = 1.0;
  Index w = 0;
  bool closed = false;
  while (w + 1 < t_len) {
    ++w;
    tau += 2.0 * autocov(w) / c0;
    if (double(w) >= c * tau) {
      closed = true;
      break;
    }
  }
  return {tau, w, closed && double(t_len) >= 50.0 * tau};
}

/// @brief A Markov-chain mean with its error bar.
struct ChainMean {
  double mean;            ///< over all steps and chains
  double standard_error;  ///< √(σ²·τ_int / (T·C)), σ² the within-chain variance
  AutocorrelationTime autocorrelation;
};

/// @brief The mean of an observable over T steps of C chains (T × C, as for
/// integrated_autocorrelation_time) and its standard error from τ_int. Assumes the chains are
/// in equilibrium (drop the burn-in first).
/// @throws as integrated_autocorrelation_time.
inline ChainMean chain_mean(const Eigen::Ref<const Eigen::MatrixXd>& series, double c = 5.0) {
  const AutocorrelationTime a = integrated_autocorrelation_time(series, c);
  const double n = double(series.size());
  const double var =
      (series.rowwise() - series.colwise().mean()).squaredNorm() / n;  // within-chain, 1/T
  return {series.mean(), std::sqrt(var * a.tau / n), a};
}

}  // namespace nflow::sampling
