#pragma once
/// @file
/// @brief Streaming importance sampling: log Ẑ with its standard error, Kish's effective sample
/// size, self-normalised expectations with error bars, reverse- and forward-KL estimates and the
/// Pareto-smoothed tail diagnostic k̂, accumulated over batches without storing the weights.
/// docs/science.md gives the formulas.

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <functional>
#include <limits>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "nflow/core/errors.hpp"
#include "nflow/core/types.hpp"
#include "nflow/sampling/proposal.hpp"

namespace nflow::sampling {

/// @brief A generalised Pareto distribution fitted to exceedances over a threshold:
/// P(X > x) = (1 + k·x/σ)^(−1/k), x ≥ 0. k > 0 is a heavy tail whose moments of order ≥ 1/k
/// are infinite; k ≤ 0 a light or bounded tail.
struct ParetoFit {
  double k;      ///< shape (the negative of Zhang and Stephens' k; positive = heavy tail)
  double sigma;  ///< scale
};

/// @brief Fits a generalised Pareto distribution to exceedances `x` (every entry finite and
/// ≥ 0, at least 5, some positive; any order) by the empirical-Bayes method of Zhang and
/// Stephens (2009) that PSIS uses: a posterior mean of b = −k/σ over a grid of 30 + ⌊√n⌋
/// points, then k = mean log(1 − b·x), σ = −k/b. With `weakly_informative_prior` (PSIS's
/// default) k is shrunk towards 0.5 as by 10 pseudo-observations: k ← (n·k + 5)/(n + 10).
/// Cost O(n·√n).
/// @throws std::invalid_argument with fewer than 5 values or a negative or non-finite one;
///   std::domain_error when a quarter or more of them are 0 (no scale to fit).
/// References: Zhang, Stephens, Technometrics 51 (2009) 316; Vehtari, Simpson, Gelman, Yao,
/// Gabry, "Pareto smoothed importance sampling", arXiv:1507.02646.
inline ParetoFit fit_generalized_pareto(std::vector<double> x,
                                        bool weakly_informative_prior = true) {
  const std::size_t n = x.size();
  if (n < 5) {
    throw std::invalid_argument(
        "nflow::sampling::fit_generalized_pareto: needs at least 5 exceedances, got " +
        std::to_string(n));
  }
  for (double v : x) {
    if (!std::isfinite(v) || v < 0.0) {
      throw std::invalid_argument(
          "nflow::sampling::fit_generalized_pareto: exceedances must be finite and >= 0, got " +
          std::to_string(v));
    }
  }
  std::sort(x.begin(), x.end());
  const double x_max = x[n - 1];
  const double x_quarter = x[std::size_t(double(n) / 4.0 + 0.5) - 1];
  if (!(x_quarter > 0.0)) {
    throw std::domain_error(
        "nflow::sampling::fit_generalized_pareto: a quarter or more of the exceedances are 0");
  }
  const double dn = double(n);
  // mean log(1 − b·x) over the sample (k of the profile likelihood at b).
  auto k_of = [&](double b) {
    double s = 0.0;
    for (double v : x) s += std::log1p(-b * v);
    return s / dn;
  };
  const std::size_t m = 30 + std::size_t(std::floor(std::sqrt(dn)));
  const double prior = 3.0;
  std::vector<double> b(m);
  std::vector<double> log_lik(m);
  for (std::size_t j = 0; j < m; ++j) {
    // The grid stays below 1/x_max, so 1 − b·x > 0 for every x.
    b[j] = 1.0 / x_max + (1.0 - std::sqrt(double(m) / (double(j) + 0.5))) / (prior * x_quarter);
    if (b[j] == 0.0) {
      // The exponential limit (k → 0): σ = mean x, log-likelihood n·(−log σ − 1).
      double mean = 0.0;
      for (double v : x) mean += v / dn;
      log_lik[j] = dn * (-std::log(mean) - 1.0);
    } else {
      const double k = k_of(b[j]);
      log_lik[j] = dn * (std::log(-b[j] / k) - k - 1.0);
    }
  }
  // Posterior weights w_j ∝ exp(L_j), normalised without overflow; negligible ones dropped.
  const double l_max = *std::max_element(log_lik.begin(), log_lik.end());
  double w_sum = 0.0;
  std::vector<double> w(m);
  for (std::size_t j = 0; j < m; ++j) {
    w[j] = std::exp(log_lik[j] - l_max);
    w_sum += w[j];
  }
  double b_hat = 0.0;
  double kept = 0.0;
  for (std::size_t j = 0; j < m; ++j) {
    if (w[j] / w_sum < 10.0 * std::numeric_limits<double>::epsilon()) continue;
    b_hat += b[j] * w[j];
    kept += w[j];
  }
  b_hat /= kept;
  ParetoFit fit{0.0, 0.0};
  if (b_hat == 0.0) {
    double mean = 0.0;
    for (double v : x) mean += v / dn;
    fit = {0.0, mean};
  } else {
    fit.k = k_of(b_hat);
    fit.sigma = -fit.k / b_hat;
  }
  if (weakly_informative_prior) {
    const double a = 10.0;
    fit.k = (dn * fit.k + a * 0.5) / (dn + a);
  }
  return fit;
}

/// @brief Streaming importance-sampling estimates from batches of log-weights
/// log w = log p̃(x) − log q(x), x ~ q, where p̃ = Z·p is an unnormalised target.
///
/// Nothing per sample is stored except the largest log-weights for k̂ (at most
/// `tail_capacity`); sums are kept in double relative to the running maximum log-weight, so
/// weights of any magnitude (log w = ±10⁴) neither overflow nor underflow. Inputs may be float
/// or double; every result is a double. Optionally each sample carries k observables f(x)
/// (a k × n batch beside the 1 × n log-weights), whose self-normalised expectations
/// E_p[f] ≈ Σ w f / Σ w come with delta-method error bars.
///
/// Estimates (N samples; docs/science.md has the formulas and their bias):
/// - log_z(): log((1/N) Σ w) = log Ẑ; log_z_standard_error(): √((N/ESS − 1)/(N − 1)), the
///   delta-method standard error of log Ẑ (sd(w)/(√N·mean w)).
/// - ess() = (Σ w)² / Σ w² (Kish) and ess_per_sample() = ess()/N ∈ (0, 1].
/// - mean(), mean_standard_error(): Σ w f / Σ w and √(Σ w² (f − mean)²) / Σ w.
/// - elbo() = mean log w, an unbiased estimate of E_q[log w] ≤ log Z (a lower bound);
///   eubo() = Σ w log w / Σ w, a consistent (biased) estimate of E_p[log w] ≥ log Z (an upper
///   bound in the limit; at finite N it is low when q misses part of p).
/// - reverse_kl() = log_z() − elbo() estimates KL(q‖p) (low in expectation, since
///   E[log Ẑ] ≤ log Z); forward_kl() = eubo() − log_z() estimates KL(p‖q) (consistent, and
///   low when the weights are heavy-tailed: trust it only when pareto_k() < 0.7).
/// - pareto_k(): PSIS's k̂: a generalised Pareto fitted (fit_generalized_pareto) to the
///   M = ⌈min(N/5, 3√N)⌉ largest weights over the (M+1)-th largest. k̂ < 0.5: the weights have
///   a finite variance and the estimates their stated errors; 0.5–0.7: usable, slow
///   convergence; > 0.7: unreliable (Vehtari et al.).
///
/// Bad input: a NaN or +∞ log-weight, or a non-finite observable, throws std::invalid_argument
/// naming the column, and the accumulator is left as it was (−∞ is a zero weight and allowed);
/// shapes that do not fit throw nflow::ShapeError; a statistic asked of an empty accumulator,
/// or one that needs a positive weight when all are zero, or the standard error from one sample,
/// throws std::domain_error.
///
/// The tail bound: M grows as 3√N, and the accumulator keeps the `tail_capacity` largest
/// log-weights (default 30 001: exact for N ≤ 10⁸). Beyond that M = tail_capacity − 1, a
/// higher threshold than PSIS's: k̂ stays a consistent estimate of the tail shape, with more
/// variance than PSIS's; tail_size() says which M was used.
///
/// Merging (merge()) two accumulators gives what one fed with both sets of batches gives, up
/// to rounding: accumulate per thread or per MPI rank, then merge.
class ImportanceAccumulator {
 public:
  /// @param observables k, the rows of the observables given with every batch (0: none).
  /// @param tail_capacity the most log-weights kept for k̂ (at least 6).
  /// @throws std::invalid_argument for a negative k or a capacity below 6.
  explicit ImportanceAccumulator(Index observables = 0, Index tail_capacity = 30001)
      : observables_(observables), tail_capacity_(tail_capacity) {
    if (observables < 0 || tail_capacity < 6) {
      throw std::invalid_argument(
          "nflow::sampling::ImportanceAccumulator: observables must be >= 0 and tail_capacity "
          ">= 6, got " +
          std::to_string(observables) + " and " + std::to_string(tail_capacity));
    }
    clear_sums();
  }

  /// Adds a batch of log-weights (a row or column vector, any length, float or double).
  /// @throws nflow::ShapeError when the accumulator tracks observables (use add(log_w, f)) or
  ///   `log_weights` is a matrix; std::invalid_argument for NaN or +∞.
  template <typename L>
  void add(const Eigen::MatrixBase<L>& log_weights) {
    if (observables_ != 0) {
      throw ShapeError("nflow::sampling::ImportanceAccumulator::add: this accumulator tracks " +
                       std::to_string(observables_) +
                       " observables; pass them with the log-weights, add(log_weights, f)");
    }
    const Eigen::Matrix<double, 1, Dynamic> lw = as_row(log_weights);
    add_impl(lw, nullptr);
  }

  /// Adds a batch of log-weights (n entries) with its observables f (k × n: column j is f(x_j)).
  /// @throws nflow::ShapeError when f does not have k rows and n columns or `log_weights` is a
  ///   matrix; std::invalid_argument for a NaN or +∞ log-weight or a non-finite observable.
  template <typename L, typename F>
  void add(const Eigen::MatrixBase<L>& log_weights, const Eigen::MatrixBase<F>& f) {
    const Eigen::Matrix<double, 1, Dynamic> lw = as_row(log_weights);
    nflow::detail::check_rows("sampling::ImportanceAccumulator::add", "the observables f",
                              observables_, f.rows(), f.cols());
    nflow::detail::check_cols("sampling::ImportanceAccumulator::add", "the observables f",
                              lw.size(), f.rows(), f.cols());
    const Eigen::MatrixXd fd = f.template cast<double>();
    for (Index j = 0; j < fd.cols(); ++j) {
      if (!fd.col(j).allFinite()) {
        throw std::invalid_argument(
            "nflow::sampling::ImportanceAccumulator::add: observable column " + std::to_string(j) +
            " of the batch is not finite");
      }
    }
    add_impl(lw, &fd);
  }

  /// Adds everything `other` has seen, as if its batches had been added here. The tail keeps
  /// the smaller of the two capacities.
  /// @throws nflow::ShapeError when the two track different numbers of observables.
  void merge(const ImportanceAccumulator& other) {
    if (other.observables_ != observables_) {
      throw ShapeError("nflow::sampling::ImportanceAccumulator::merge: this accumulator tracks " +
                       std::to_string(observables_) + " observables, the other " +
                       std::to_string(other.observables_));
    }
    if (&other == this) {
      const ImportanceAccumulator copy = other;
      merge(copy);
      return;
    }
    const Index capacity = std::min(tail_capacity_, other.tail_capacity_);
    for (double v : other.tail_) push_tail(v, capacity);
    shrink_tail(capacity);
    tail_capacity_ = capacity;
    if (other.count_ == 0) return;
    // Shift both sets of sums to the common references, then add.
    const double new_max = std::max(max_, other.max_);
    Sums mine = rescaled(sums_, max_, new_max);
    Sums theirs = rescaled(other.sums_, other.max_, new_max);
    if (!has_ref_ && other.has_ref_) {
      ref_ = other.ref_;
      has_ref_ = true;
    }
    theirs.sum_lw += double(other.count_) * (other.ref_ - ref_);
    if (observables_ > 0) {
      if (!has_f_ref_) {
        f_ref_ = other.f_ref_;
        has_f_ref_ = true;
      }
      shift_observables(theirs, other.f_ref_ - f_ref_);
    }
    sums_ = add_sums(mine, theirs);
    max_ = new_max;
    count_ += other.count_;
  }

  /// Everything the accumulator holds, as doubles (sums, references, the kept tail), so that
  /// it can be sent to another process and rebuilt there with from_state(): merge the
  /// accumulators of MPI ranks (nflow::mpi::importance_sample does).
  std::vector<double> state() const {
    std::vector<double> out = {
        double(observables_), double(tail_capacity_), double(count_), max_,     ref_,
        double(has_ref_),     double(has_f_ref_),     sums_.s1,       sums_.s2, sums_.wl,
        sums_.sum_lw,         double(tail_.size())};
    for (const Eigen::VectorXd* v : {&sums_.wf, &sums_.w2f, &sums_.w2f2, &f_ref_})
      out.insert(out.end(), v->data(), v->data() + v->size());
    out.insert(out.end(), tail_.begin(), tail_.end());
    return out;
  }
  /// The accumulator whose state() is `state`.
  /// @throws std::invalid_argument when `state` is not one (wrong length or counts).
  static ImportanceAccumulator from_state(std::span<const double> state) {
    auto bad = [] {
      return std::invalid_argument(
          "nflow::sampling::ImportanceAccumulator::from_state: not the state() of an "
          "accumulator");
    };
    constexpr std::size_t head = 12;
    if (state.size() < head || !(state[0] >= 0) || !(state[1] >= 6) || !(state[2] >= 0) ||
        !(state[11] >= 0)) {
      throw bad();
    }
    const std::size_t k = std::size_t(state[0]);
    const std::size_t tail = std::size_t(state[11]);
    if (state.size() != head + 4 * k + tail || double(tail) > state[1]) throw bad();
    ImportanceAccumulator a{Index(k), Index(state[1])};
    a.count_ = Index(state[2]);
    a.max_ = state[3];
    a.ref_ = state[4];
    a.has_ref_ = state[5] != 0;
    a.has_f_ref_ = state[6] != 0;
    a.sums_.s1 = state[7];
    a.sums_.s2 = state[8];
    a.sums_.wl = state[9];
    a.sums_.sum_lw = state[10];
    std::size_t at = head;
    for (Eigen::VectorXd* v : {&a.sums_.wf, &a.sums_.w2f, &a.sums_.w2f2, &a.f_ref_}) {
      *v = Eigen::Map<const Eigen::VectorXd>(state.data() + at, Index(k));
      at += k;
    }
    a.tail_.assign(state.begin() + std::ptrdiff_t(at), state.end());
    std::make_heap(a.tail_.begin(), a.tail_.end(), std::greater<double>());
    return a;
  }

  /// Samples added so far (N).
  Index count() const { return count_; }
  /// Rows k of the observables.
  Index observables() const { return observables_; }

  /// log Ẑ = log((1/N) Σ w): −∞ when every weight is 0.
  double log_z() const {
    require_samples("log_z");
    if (sums_.s1 == 0.0) return -std::numeric_limits<double>::infinity();
    return max_ + std::log(sums_.s1) - std::log(double(count_));
  }
  /// The delta-method standard error of log Ẑ, √((N/ESS − 1)/(N − 1)).
  double log_z_standard_error() const {
    require_weight("log_z_standard_error");
    if (count_ < 2) {
      throw std::domain_error(
          "nflow::sampling::ImportanceAccumulator::log_z_standard_error: needs at least 2 "
          "samples");
    }
    const double ratio = double(count_) * sums_.s2 / (sums_.s1 * sums_.s1);
    return std::sqrt(std::max(0.0, ratio - 1.0) / double(count_ - 1));
  }
  /// Kish's effective sample size (Σ w)² / Σ w².
  double ess() const {
    require_weight("ess");
    return sums_.s1 * sums_.s1 / sums_.s2;
  }
  /// ess() / N, in (0, 1]; its limit is 1 / E_q[(w/Z)²].
  double ess_per_sample() const { return ess() / double(count_); }

  /// The self-normalised estimates of E_p[f] (k entries).
  Eigen::VectorXd mean() const {
    require_observables("mean");
    require_weight("mean");
    return f_ref_ + sums_.wf / sums_.s1;
  }
  /// Their delta-method standard errors √(Σ w²(f − mean)²) / Σ w.
  Eigen::VectorXd mean_standard_error() const {
    require_observables("mean_standard_error");
    require_weight("mean_standard_error");
    const Eigen::ArrayXd d = sums_.wf.array() / sums_.s1;  // mean − f_ref
    const Eigen::ArrayXd sq =
        sums_.w2f2.array() - 2.0 * d * sums_.w2f.array() + d.square() * sums_.s2;
    return (sq.max(0.0).sqrt() / sums_.s1).matrix();
  }

  /// mean log w: unbiased for E_q[log w] = log Z − KL(q‖p) ≤ log Z. −∞ when a weight is 0.
  double elbo() const {
    require_samples("elbo");
    return ref_ + sums_.sum_lw / double(count_);
  }
  /// Σ w log w / Σ w: consistent for E_p[log w] = log Z + KL(p‖q) ≥ log Z.
  double eubo() const {
    require_weight("eubo");
    return max_ + sums_.wl / sums_.s1;
  }
  /// log Ẑ − mean log w, an estimate of KL(q‖p) (+∞ when a weight is 0: q puts mass where p
  /// has none).
  double reverse_kl() const {
    require_weight("reverse_kl");
    return log_z() - elbo();
  }
  /// Σ w log w / Σ w − log Ẑ, an estimate of KL(p‖q).
  double forward_kl() const {
    require_weight("forward_kl");
    return eubo() - log_z();
  }

  /// M, the number of largest weights pareto_k() fits: ⌈min(N/5, 3√N)⌉, at most
  /// tail_capacity − 1.
  Index tail_size() const {
    const double n = double(count_);
    const Index m = Index(std::ceil(std::min(0.2 * n, 3.0 * std::sqrt(n))));
    return std::min(m, tail_capacity_ - 1);
  }
  /// PSIS's k̂ of the weights. −∞ when fewer than 5 of the M largest weights exceed the
  /// threshold because they are tied (equal weights: no tail at all).
  /// @throws std::domain_error when N < 21 (M < 5), or every weight is 0.
  double pareto_k() const {
    require_weight("pareto_k");
    const Index m = tail_size();
    if (m < 5) {
      throw std::domain_error(
          "nflow::sampling::ImportanceAccumulator::pareto_k: needs at least 21 samples (a tail "
          "of 5), got " +
          std::to_string(count_));
    }
    std::vector<double> top = tail_;
    std::sort(top.begin(), top.end(), std::greater<double>());
    // Relative to the largest log-weight; thresholds below the smallest normal double are
    // clamped to it (PSIS does the same), so tails of zero weights are not fitted.
    const double lw_max = top[0];
    const double cut =
        std::max(top[std::size_t(m)] - lw_max, std::log(std::numeric_limits<double>::min()));
    const double exp_cut = std::exp(cut);
    std::vector<double> exceed;
    exceed.reserve(std::size_t(m));
    for (std::size_t i = 0; i < std::size_t(m); ++i) {
      const double rel = top[i] - lw_max;
      if (rel > cut) exceed.push_back(std::exp(rel) - exp_cut);
    }
    if (exceed.size() < 5) return -std::numeric_limits<double>::infinity();
    return fit_generalized_pareto(std::move(exceed)).k;
  }

 private:
  // Sums relative to the running maximum log-weight `max_` (e = exp(lw − max_)) and, for the
  // log-weights and observables, to reference values (ref_, f_ref_) taken from the first batch
  // so that the sums of squares do not cancel.
  struct Sums {
    double s1 = 0.0;       // Σ e
    double s2 = 0.0;       // Σ e²
    double wl = 0.0;       // Σ e·(lw − max_) over lw > −∞
    double sum_lw = 0.0;   // Σ (lw − ref_)
    Eigen::VectorXd wf;    // Σ e·(f − f_ref_)
    Eigen::VectorXd w2f;   // Σ e²·(f − f_ref_)
    Eigen::VectorXd w2f2;  // Σ e²·(f − f_ref_)²
  };

  void clear_sums() {
    sums_.wf = Eigen::VectorXd::Zero(observables_);
    sums_.w2f = Eigen::VectorXd::Zero(observables_);
    sums_.w2f2 = Eigen::VectorXd::Zero(observables_);
    f_ref_ = Eigen::VectorXd::Zero(observables_);
  }

  template <typename L>
  static Eigen::Matrix<double, 1, Dynamic> as_row(const Eigen::MatrixBase<L>& lw) {
    if (lw.rows() != 1 && lw.cols() != 1 && lw.size() != 0) {
      throw ShapeError(
          "nflow::sampling::ImportanceAccumulator::add: the log-weights must be a row or a column "
          "vector, got " +
          nflow::detail::shape_string(lw.rows(), lw.cols()));
    }
    Eigen::Matrix<double, 1, Dynamic> row(lw.size());
    for (Index i = 0; i < lw.size(); ++i) {
      const double v = double(lw.derived().coeff(lw.rows() == 1 ? 0 : i, lw.rows() == 1 ? i : 0));
      if (std::isnan(v) || v == std::numeric_limits<double>::infinity()) {
        throw std::invalid_argument(
            "nflow::sampling::ImportanceAccumulator::add: log-weight " + std::to_string(i) +
            " of the batch is " + (std::isnan(v) ? "NaN" : "+inf") +
            " (log p(x) or log q(x) is not a number, or q(x) = 0 where p(x) > 0)");
      }
      row(i) = v;
    }
    return row;
  }

  // Rescales sums kept relative to `from` to be relative to `to` ≥ from.
  static Sums rescaled(Sums s, double from, double to) {
    if (s.s1 == 0.0 || from == to) return s;  // nothing positive yet, or nothing to do
    const double e = std::exp(from - to);
    s.wl = e * (s.wl + (from - to) * s.s1);
    s.s1 *= e;
    s.s2 *= e * e;
    s.wf *= e;
    s.w2f *= e * e;
    s.w2f2 *= e * e;
    return s;
  }

  // Re-expresses observable sums kept relative to a reference r as relative to r − delta
  // (delta = r − r_new).
  static void shift_observables(Sums& s, const Eigen::VectorXd& delta) {
    s.w2f2 = (s.w2f2.array() + 2.0 * delta.array() * s.w2f.array() + delta.array().square() * s.s2)
                 .matrix();
    s.w2f += delta * s.s2;
    s.wf += delta * s.s1;
  }

  static Sums add_sums(const Sums& a, const Sums& b) {
    Sums s;
    s.s1 = a.s1 + b.s1;
    s.s2 = a.s2 + b.s2;
    s.wl = a.wl + b.wl;
    s.sum_lw = a.sum_lw + b.sum_lw;
    s.wf = a.wf + b.wf;
    s.w2f = a.w2f + b.w2f;
    s.w2f2 = a.w2f2 + b.w2f2;
    return s;
  }

  void add_impl(const Eigen::Matrix<double, 1, Dynamic>& lw, const Eigen::MatrixXd* f) {
    const Index n = lw.size();
    if (n == 0) return;
    if (observables_ > 0 && !has_f_ref_) {
      f_ref_ = f->col(0);
      has_f_ref_ = true;
    }
    const double batch_max = lw.maxCoeff();
    if (!has_ref_ && batch_max > -std::numeric_limits<double>::infinity()) {
      ref_ = batch_max;
      has_ref_ = true;
    }
    sums_.sum_lw += (lw.array() - ref_).sum();
    if (batch_max > -std::numeric_limits<double>::infinity()) {
      const double new_max = std::max(max_, batch_max);
      sums_ = rescaled(sums_, max_, new_max);
      max_ = new_max;
      // Zero weights (lw = −∞) give e = 0 and are left out of Σ e·rel (0·∞ is not formed).
      const Eigen::ArrayXd rel = (lw.array() - max_).transpose();
      const Eigen::ArrayXd e = rel.exp();
      const Eigen::ArrayXd e2 = e.square();
      sums_.s1 += e.sum();
      sums_.s2 += e2.sum();
      sums_.wl += (e > 0.0).select(e * rel, 0.0).sum();
      if (f != nullptr) {
        const Eigen::MatrixXd d = f->colwise() - f_ref_;
        sums_.wf.noalias() += d * e.matrix();
        sums_.w2f.noalias() += d * e2.matrix();
        sums_.w2f2.noalias() += d.cwiseAbs2() * e2.matrix();
      }
    }
    // The tail: only values above the heap's smallest can enter once it is full.
    const double* v = lw.data();
    for (Index i = 0; i < n; ++i) {
      if (Index(tail_.size()) < tail_capacity_ || v[i] > tail_.front()) {
        push_tail(v[i], tail_capacity_);
      }
    }
    count_ += n;
  }

  // Keeps the `capacity` largest values in a min-heap (smallest on top).
  void push_tail(double v, Index capacity) {
    if (Index(tail_.size()) < capacity) {
      tail_.push_back(v);
      std::push_heap(tail_.begin(), tail_.end(), std::greater<double>());
    } else if (v > tail_.front()) {
      std::pop_heap(tail_.begin(), tail_.end(), std::greater<double>());
      tail_.back() = v;
      std::push_heap(tail_.begin(), tail_.end(), std::greater<double>());
    }
  }
  void shrink_tail(Index capacity) {
    while (Index(tail_.size()) > capacity) {
      std::pop_heap(tail_.begin(), tail_.end(), std::greater<double>());
      tail_.pop_back();
    }
  }

  void require_samples(const char* what) const {
    if (count_ == 0) {
      throw std::domain_error(std::string("nflow::sampling::ImportanceAccumulator::") + what +
                              ": no samples yet (count() == 0)");
    }
  }
  void require_weight(const char* what) const {
    require_samples(what);
    if (sums_.s1 == 0.0) {
      throw std::domain_error(std::string("nflow::sampling::ImportanceAccumulator::") + what +
                              ": all " + std::to_string(count_) +
                              " weights are 0 (every log-weight is -inf)");
    }
  }
  void require_observables(const char* what) const {
    if (observables_ == 0) {
      throw std::domain_error(std::string("nflow::sampling::ImportanceAccumulator::") + what +
                              ": this accumulator tracks no observables (construct it with k > 0 "
                              "and add them with add(log_weights, f))");
    }
  }

  Index observables_;
  Index tail_capacity_;
  Index count_ = 0;
  double max_ = -std::numeric_limits<double>::infinity();
  double ref_ = 0.0;
  bool has_ref_ = false;
  Eigen::VectorXd f_ref_;
  bool has_f_ref_ = false;
  Sums sums_;
  std::vector<double> tail_;
};

/// @brief Draws `n` samples from the proposal `q` in batches of `batch` (the last one shorter)
/// and accumulates their log-weights log_target(x) − log q(x) and the observables f(x);
/// nothing of size n is stored. `log_target` maps a Dim × b batch to its 1 × b unnormalised
/// log-densities (a lambda, or a Density's log_prob); `observable` maps it to a k × b matrix
/// (k fixed by the first batch). q is a nflow::Density (sample_and_log_prob: one inverse pass
/// per batch) or a base distribution. The draws come from `gen` in order, so the result depends
/// on `batch` only through the rounding of the sums.
/// @throws std::invalid_argument for n < 0 or batch < 1 (and what add() throws);
///   nflow::ShapeError when log_target returns other than 1 × b, or q is conditional.
template <Proposal Q, typename LogTarget, std::uniform_random_bit_generator G, typename Observable>
ImportanceAccumulator importance_sample(const Q& q, LogTarget&& log_target, Index n, G& gen,
                                        Index batch, Observable&& observable) {
  if (n < 0 || batch < 1) {
    throw std::invalid_argument(
        "nflow::sampling::importance_sample: n must be >= 0 and batch >= 1, got n = " +
        std::to_string(n) + ", batch = " + std::to_string(batch));
  }
  detail::check_unconditional(q, "importance_sample");
  constexpr bool with_f = !std::is_same_v<std::remove_cvref_t<Observable>, std::nullptr_t>;
  ImportanceAccumulator acc;
  for (Index done = 0; done < n;) {
    const Index b = std::min(batch, n - done);
    auto s = detail::draw(q, b, gen);
    const Eigen::MatrixXd lp = log_target(s.samples).template cast<double>();
    if (lp.rows() != 1 || lp.cols() != b) {
      throw ShapeError("nflow::sampling::importance_sample: log_target must return 1 x " +
                       std::to_string(b) + " (one value per column), got " +
                       nflow::detail::shape_string(lp.rows(), lp.cols()));
    }
    const Eigen::Matrix<double, 1, Dynamic> lw = lp.row(0) - s.log_prob.template cast<double>();
    if constexpr (with_f) {
      const Eigen::MatrixXd f = observable(s.samples).template cast<double>();
      if (done == 0) acc = ImportanceAccumulator(f.rows());
      acc.add(lw, f);
    } else {
      static_cast<void>(observable);
      acc.add(lw);
    }
    done += b;
  }
  return acc;
}

/// @brief importance_sample() without observables.
template <Proposal Q, typename LogTarget, std::uniform_random_bit_generator G>
ImportanceAccumulator importance_sample(const Q& q, LogTarget&& log_target, Index n, G& gen,
                                        Index batch = 4096) {
  return importance_sample(q, log_target, n, gen, batch, nullptr);
}

}  // namespace nflow::sampling
