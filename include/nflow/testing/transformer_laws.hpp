#pragma once
/// @file
/// @brief Laws every transformer must obey (the elementwise maps that Coupling and
/// MaskedAutoregressive apply; the contract is documented in bijectors/transformers/affine.hpp),
/// checked numerically on their own, without a structure or a conditioner around them. Like the
/// bijector laws, the checks return {law, error, tolerance} results; run your own transformer
/// through them with `nflow::testing::check_transformer_laws(t)`.
///
/// The laws, on seeded random inputs x, z ~ N(0, scale²) and parameters ~ N(0, 1) (n features,
/// `batch` samples):
/// - round_trip:           inverse(forward(x)) ≈ x and forward(inverse(z)) ≈ z
/// - log_det_sum:          forward log-det at x + inverse log-det at forward(x) ≈ 0
/// - forward_log_det:      forward log-det ≈ Σᵢ log|∂zᵢ/∂xᵢ| by finite differences (the map is
///                         coefficient-wise, so its Jacobian is diagonal)
/// - inverse_log_det:      the same for the inverse
/// - log_det_accumulates:  forward and inverse add their log-det into the one they are given
/// - forward_vjp_input, forward_vjp_params, inverse_vjp_input, inverse_vjp_params (double only):
///   forward_backward and inverse_backward ≈ finite differences of
///   L = Σ grad_value ⊙ value + Σ grad_log_det ⊙ log_det
///
/// Finite-difference gradients need a smooth map (a transformer with kinks, like a spline at its
/// knots, needs inputs away from them).

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "nflow/testing/bijector_laws.hpp"

namespace nflow::testing {

namespace detail {

/// The coefficient-wise derivative of a coefficient-wise map of matrices, by a fourth-order
/// central difference (every coefficient perturbed at once).
template <typename Map, typename M>
Eigen::MatrixXd fd_diagonal(Map&& map, const M& at, double h) {
  auto f = [&](double s) {
    M moved = at;
    moved.array() += typename M::Scalar(s);
    return map(moved).template cast<double>().eval();
  };
  return (8.0 * (f(h) - f(-h)) - (f(2 * h) - f(-2 * h))) / (12.0 * h);
}

/// The reverse-mode laws of one direction: `backward` is forward_backward or inverse_backward,
/// `loss(input, params)` the linear loss L of that direction.
template <typename Scalar, typename Backward, typename Loss>
void check_transformer_gradients(const std::string& dir, Backward&& backward, Loss&& loss,
                                 const Eigen::Matrix<Scalar, Dynamic, Dynamic>& input,
                                 const Eigen::Matrix<Scalar, Dynamic, Dynamic>& params,
                                 const Eigen::Matrix<Scalar, Dynamic, Dynamic>& g_value,
                                 const Eigen::Matrix<Scalar, 1, Dynamic>& g_log_det, double h,
                                 double tol, std::vector<LawResult>& out) {
  using M = Eigen::Matrix<Scalar, Dynamic, Dynamic>;
  M g_input(input.rows(), input.cols());
  M g_params(params.rows(), params.cols());
  backward(input, params, g_value, g_log_det, g_input, g_params);
  auto fd_of = [&](const M& at, auto&& loss_at) {
    Eigen::MatrixXd fd(at.rows(), at.cols());
    for (Index i = 0; i < at.size(); ++i) {
      fd(i) = stencil(
          [&](double s) {
            M moved = at;
            moved(i) += Scalar(s);
            return loss_at(moved);
          },
          h);
    }
    return fd;
  };
  const Eigen::MatrixXd fd_input = fd_of(input, [&](const M& v) { return loss(v, params); });
  const Eigen::MatrixXd fd_params = fd_of(params, [&](const M& p) { return loss(input, p); });
  auto relative = [](const M& analytic, const Eigen::MatrixXd& fd) {
    return (analytic.template cast<double>() - fd).cwiseAbs().maxCoeff() /
           std::max(1.0, fd.cwiseAbs().maxCoeff());
  };
  out.push_back({dir + "_vjp_input", relative(g_input, fd_input), tol,
                 "direct gradient of the input vs finite differences"});
  out.push_back({dir + "_vjp_params", relative(g_params, fd_params), tol,
                 "gradient of the parameters vs finite differences"});
}

}  // namespace detail

/// @brief Runs the transformer laws on `t` over `features` features. Uses LawOptions' batch,
/// seed, input_scale, tolerances and fd_step (the domains do not apply); the gradient laws run in
/// double unless `opt` skips "forward_vjp_params" (LawOptions::skip).
template <typename T>
std::vector<LawResult> check_transformer_laws(const T& t, const LawOptions& opt = {},
                                              Index features = 3) {
  using Scalar = typename T::Scalar;
  using Defaults = detail::Defaults<Scalar>;
  using M = Eigen::Matrix<Scalar, Dynamic, Dynamic>;
  using Row = Eigen::Matrix<Scalar, 1, Dynamic>;
  std::vector<LawResult> out;
  std::mt19937_64 gen(opt.seed);
  const Index n = features;
  const Index m = opt.batch;
  const double rt_tol = detail::pick(opt.round_trip_tol, Defaults::round_trip);
  const double ld_tol = detail::pick(opt.log_det_tol, Defaults::log_det);
  const double h = detail::pick(opt.fd_step, Defaults::fd_step);

  const M x = detail::draw<Scalar, Dynamic>(n, m, Domain::Real, opt.input_scale, gen);
  const M z0 = detail::draw<Scalar, Dynamic>(n, m, Domain::Real, opt.input_scale, gen);
  const M params = detail::draw<Scalar, Dynamic>(T::ParamsPerDim * n, m, Domain::Real, 1.0, gen);

  // Each direction from a log-det of `start`, returning the value and the log-det added.
  struct Out {
    M value;
    Row log_det;
  };
  auto forward = [&](const M& in, const M& p, Scalar start = Scalar(0)) {
    Out o{M(in.rows(), in.cols()), Row::Constant(in.cols(), start)};
    t.forward(in, p, o.value, o.log_det);
    o.log_det.array() -= start;
    return o;
  };
  auto inverse = [&](const M& in, const M& p, Scalar start = Scalar(0)) {
    Out o{M(in.rows(), in.cols()), Row::Constant(in.cols(), start)};
    t.inverse(in, p, o.value, o.log_det);
    o.log_det.array() -= start;
    return o;
  };

  const Out fx = forward(x, params);
  const Out ifx = inverse(fx.value, params);
  const Out iz = inverse(z0, params);
  const Out fiz = forward(iz.value, params);
  out.push_back({"round_trip",
                 std::max(detail::scaled_error(ifx.value, x), detail::scaled_error(fiz.value, z0)),
                 rt_tol, "inverse(forward(x)) vs x and forward(inverse(z)) vs z"});
  out.push_back({"log_det_sum", detail::scaled_error(fx.log_det + ifx.log_det, Row::Zero(m)),
                 rt_tol, "forward log-det + inverse log-det at forward(x)"});

  auto log_det_error = [&](const Eigen::MatrixXd& diagonal, const Row& log_det) {
    const Eigen::RowVectorXd fd = diagonal.array().abs().log().colwise().sum();
    return ((fd - log_det.template cast<double>()).array().abs() / (1.0 + fd.array().abs()))
        .maxCoeff();
  };
  out.push_back({"forward_log_det",
                 log_det_error(detail::fd_diagonal(
                                   [&](const M& v) { return forward(v, params).value; }, x, h),
                               fx.log_det),
                 ld_tol, "vs Σ log|∂zᵢ/∂xᵢ| by finite differences"});
  out.push_back({"inverse_log_det",
                 log_det_error(detail::fd_diagonal(
                                   [&](const M& v) { return inverse(v, params).value; }, z0, h),
                               iz.log_det),
                 ld_tol, "vs Σ log|∂xᵢ/∂zᵢ| by finite differences"});

  // Structures accumulate one feature at a time: the calls add into the log-det they are given.
  const Scalar start = Scalar(1.5);
  const double acc = std::max(detail::scaled_error(forward(x, params, start).log_det, fx.log_det),
                              detail::scaled_error(inverse(z0, params, start).log_det, iz.log_det));
  out.push_back(
      {"log_det_accumulates", acc, rt_tol, "log-det added to a non-zero log-det vs from zero"});

  if constexpr (std::is_same_v<Scalar, double>) {
    if (!detail::LawReport(opt.skipped).skipped("forward_vjp_params")) {
      const double g_tol = detail::pick(opt.gradient_tol, Defaults::gradient);
      const M g_value = detail::draw<Scalar, Dynamic>(n, m, Domain::Real, 1.0, gen);
      const Row g_log_det = detail::draw<Scalar, Dynamic>(1, m, Domain::Real, 1.0, gen);
      auto linear = [&](const Out& o) {
        return (o.value.array() * g_value.array()).sum() +
               (o.log_det.array() * g_log_det.array()).sum();
      };
      detail::check_transformer_gradients<Scalar>(
          "forward",
          [&](const M& v, const M& p, const M& gv, const Row& gl, M& gx, M& gp) {
            t.forward_backward(v, p, gv, gl, gx, gp);
          },
          [&](const M& v, const M& p) { return linear(forward(v, p)); }, x, params, g_value,
          g_log_det, h, g_tol, out);
      detail::check_transformer_gradients<Scalar>(
          "inverse",
          [&](const M& v, const M& p, const M& gv, const Row& gl, M& gz, M& gp) {
            t.inverse_backward(v, p, gv, gl, gz, gp);
          },
          [&](const M& v, const M& p) { return linear(inverse(v, p)); }, z0, params, g_value,
          g_log_det, h, g_tol, out);
    }
  }
  return out;
}

}  // namespace nflow::testing
