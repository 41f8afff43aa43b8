// Tests of nflow/nn/network.hpp through its unmasked face nn::MLP (nflow/nn/mlp.hpp), and of
// nflow/nn/activations.hpp and nflow/nn/dense.hpp. The masked face is tested in made_test.cpp.
//
// The reference values are independent of the code under test: a naive per-sample loop over the
// weights for the forward pass, central finite differences (4-point stencil) for every gradient
// and Jacobian, and the documented random stream for the initialisation.

// Makes Eigen assert on any heap allocation while set_is_malloc_allowed(false) is in effect
// (only in builds without NDEBUG); used to check the allocation-free single-point path.
#define EIGEN_RUNTIME_NO_MALLOC

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "nflow/core/random.hpp"
#include "nflow/nn/activations.hpp"
#include "nflow/nn/dense.hpp"
#include "nflow/nn/mlp.hpp"
#include "support/reference_activations.hpp"

namespace {

using nflow::Index;
using nflow::nn::ELU;
using nflow::nn::Identity;
using nflow::nn::MLP;
using nflow::nn::ReLU;
using nflow::nn::SiLU;
using nflow::nn::Tanh;
constexpr int Dyn = Eigen::Dynamic;

// ---- independent references ------------------------------------------------------------------

using nflow::test_reference::scalar_activation;

/// y = MLP(x, c) for one sample, by explicit loops over the stored weights.
template <typename Net>
Eigen::VectorXd naive_forward(const Net& net, const Eigen::VectorXd& x, const Eigen::VectorXd& c) {
  std::vector<double> h(x.data(), x.data() + x.size());
  for (Index k = 0; k < net.layer_count(); ++k) {
    const auto& w = net.weight(k);
    const auto& b = net.bias(k);
    std::vector<double> z(std::size_t(w.rows()));
    for (Index i = 0; i < w.rows(); ++i) {
      double s = double(b(i));
      for (Index j = 0; j < w.cols(); ++j) s += double(w(i, j)) * h[std::size_t(j)];
      if (k == 0) {
        for (Index j = 0; j < net.context_dim(); ++j)
          s += double(net.context_weight()(i, j)) * c(j);
      }
      z[std::size_t(i)] =
          k + 1 < net.layer_count() ? scalar_activation<typename Net::Activation>(s) : s;
    }
    h = z;
  }
  return Eigen::Map<Eigen::VectorXd>(h.data(), Index(h.size()));
}

template <typename Net>
Eigen::Matrix<typename Net::Scalar, Dyn, 1> get_flat(const Net& net) {
  Eigen::Matrix<typename Net::Scalar, Dyn, 1> flat(net.parameter_count());
  Index offset = 0;
  net.visit_parameters([&](const std::string&, const auto& t) {
    for (Index j = 0; j < t.cols(); ++j)
      for (Index i = 0; i < t.rows(); ++i) flat(offset++) = t(i, j);
  });
  REQUIRE(offset == net.parameter_count());
  return flat;
}

template <typename Net, typename V>
void set_flat(Net& net, const V& flat) {
  Index offset = 0;
  net.visit_parameters([&](const std::string&, auto t) {
    for (Index j = 0; j < t.cols(); ++j)
      for (Index i = 0; i < t.rows(); ++i) t(i, j) = flat(offset++);
  });
}

/// The 4-point central difference [8(f(v+h) − f(v−h)) − (f(v+2h) − f(v−2h))] / (12h).
template <typename F>
double stencil(F&& f, double& v, double h) {
  const double v0 = v;
  v = v0 + h;
  const double p1 = f();
  v = v0 - h;
  const double m1 = f();
  v = v0 + 2 * h;
  const double p2 = f();
  v = v0 - 2 * h;
  const double m2 = f();
  v = v0;
  return (8 * (p1 - m1) - (p2 - m2)) / (12 * h);
}

double relative_error(const Eigen::MatrixXd& got, const Eigen::MatrixXd& want) {
  REQUIRE(got.rows() == want.rows());
  REQUIRE(got.cols() == want.cols());
  const double scale = want.norm();
  return scale > 0 ? (got - want).norm() / scale : got.norm();
}

Eigen::MatrixXd normal_matrix(Index rows, Index cols, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  Eigen::MatrixXd m(rows, cols);
  nflow::fill_standard_normal(m, gen);
  return m;
}

/// Runtime sizes for a network type: the fixed ones where fixed, else the given defaults.
template <typename Net>
Net make_net(Index context_dim, Index hidden_layers, Index in = 3, Index out = 2,
             Index hidden = 7) {
  return Net(Net::In == Dyn ? in : Net::In, Net::Out == Dyn ? out : Net::Out,
             Net::Hidden == Dyn ? hidden : Net::Hidden, hidden_layers, context_dim);
}

constexpr double fd_step = 1e-3;
constexpr double fd_tolerance = 1e-6;

/// The finite-difference step for a network with activation Act. The 4-point stencil's error
/// bound needs five smooth derivatives; ELU has a jump in f'' at 0, so a pre-activation within
/// 2h of 0 costs O(h) accuracy (seen: 2.7e-4 relative with h = 1e-3). A smaller step makes such
/// a crossing both less likely and less harmful; rounding error stays near 1e-10.
template <typename Net>
constexpr double fd_step_for() {
  return std::is_same_v<typename Net::Activation, ELU> ? 1e-5 : fd_step;
}

}  // namespace

// ---- activations
// ---------------------------------------------------------------------------------

TEMPLATE_TEST_CASE("activation apply and backward match the scalar formulas", "[nn][activations]",
                   Identity, ReLU, Tanh, SiLU, ELU) {
  Eigen::ArrayXXd a(3, 4);
  a << -3.0, -1.0, -0.5, -1e-3, 1e-3, 0.25, 0.5, 1.0, 2.0, 3.5, -7.0, 0.75;
  Eigen::ArrayXXd y = a;
  TestType::apply(y);
  for (Index i = 0; i < a.size(); ++i) {
    CHECK(y(i) == Approx(scalar_activation<TestType>(a(i))).epsilon(1e-14).margin(1e-15));
  }
  // backward multiplies the gradient by f'(a) (from the output or the pre-activation).
  Eigen::ArrayXXd g = Eigen::ArrayXXd::Constant(3, 4, 2.0);
  TestType::backward(TestType::BackwardFromOutput ? y : a, g);
  for (Index i = 0; i < a.size(); ++i) {
    double v = a(i);
    const double slope = stencil([&] { return scalar_activation<TestType>(v); }, v, 1e-4);
    CHECK(g(i) == Approx(2.0 * slope).epsilon(1e-8).margin(1e-10));
  }
  // Works in place on a block of a matrix (not only on arrays).
  Eigen::MatrixXd m = a.matrix();
  TestType::apply(m.middleCols(1, 2));
  CHECK(m.col(0) == a.matrix().col(0));
  CHECK(m.middleCols(1, 2) == y.matrix().middleCols(1, 2));
  CHECK(std::string(TestType::name).size() > 0);
}

TEMPLATE_TEST_CASE("activations map NaN to NaN and touch no other coefficient", "[nn][activations]",
                   Identity, ReLU, Tanh, SiLU, ELU) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  Eigen::ArrayXd a(3);
  a << -1.0, nan, 2.0;
  Eigen::ArrayXd y = a;
  TestType::apply(y);
  CHECK(std::isnan(y(1)));
  CHECK(y(0) == Approx(scalar_activation<TestType>(-1.0)));
  CHECK(y(2) == Approx(scalar_activation<TestType>(2.0)));
}

TEST_CASE("activation names", "[nn][activations]") {
  CHECK(std::string(ReLU::name) == "relu");
  CHECK(std::string(Tanh::name) == "tanh");
  CHECK(std::string(SiLU::name) == "silu");
  CHECK(std::string(ELU::name) == "elu");
  CHECK(std::string(Identity::name) == "identity");
  STATIC_REQUIRE(nflow::nn::ActivationPolicy<ReLU>);
  STATIC_REQUIRE_FALSE(nflow::nn::ActivationPolicy<int>);
  STATIC_REQUIRE_FALSE(SiLU::BackwardFromOutput);
}

// ---- forward
// -------------------------------------------------------------------------------------

using ForwardNets = std::tuple<MLP<double, Dyn, Dyn, Dyn, Tanh>, MLP<double, 3, 2, 8, SiLU>,
                               MLP<double, 4, Dyn, 16, ELU>, MLP<double, Dyn, 5, Dyn, ReLU>,
                               MLP<double, 2, 4, Dyn, Identity>>;

TEMPLATE_LIST_TEST_CASE("MLP forward matches a naive per-sample loop", "[nn][mlp]", ForwardNets) {
  using Net = TestType;
  const Index context_dim = GENERATE(0, 2);
  const Index layers = GENERATE(1, 3);
  Net net = make_net<Net>(context_dim, layers);
  net.initialize(11, false);
  const Index n = 6;
  const Eigen::MatrixXd xd = normal_matrix(net.in_dim(), n, 1);
  const Eigen::MatrixXd c = normal_matrix(context_dim, n, 2);
  const Eigen::Matrix<double, Net::In, Dyn> x = xd;

  const auto y = context_dim > 0 ? net.forward(x, c) : net.forward(x);
  STATIC_REQUIRE(
      std::is_same_v<std::remove_const_t<decltype(y)>, Eigen::Matrix<double, Net::Out, Dyn>>);
  REQUIRE(y.rows() == net.out_dim());
  REQUIRE(y.cols() == n);
  for (Index j = 0; j < n; ++j) {
    const Eigen::VectorXd want = naive_forward(net, xd.col(j), c.col(j));
    CHECK(relative_error(y.col(j), want) < 1e-13);
    // One point (compile-time one column) gives the same values.
    const Eigen::Matrix<double, Net::In, 1> xj = x.col(j);
    const auto yj = context_dim > 0 ? net.forward(xj, c.col(j)) : net.forward(xj);
    STATIC_REQUIRE(
        std::is_same_v<std::remove_const_t<decltype(yj)>, Eigen::Matrix<double, Net::Out, 1>>);
    CHECK(relative_error(yj, want) < 1e-13);
  }
  // An empty batch is fine.
  const Eigen::MatrixXd empty(net.in_dim(), 0);
  const Eigen::MatrixXd empty_c(context_dim, 0);
  CHECK((context_dim > 0 ? net.forward(empty, empty_c) : net.forward(empty)).cols() == 0);
}

TEST_CASE("MLP forward accepts expressions, blocks and the NoContext tag", "[nn][mlp]") {
  MLP<double, Dyn, Dyn> net(3, 2, 5, 2);
  net.initialize(3, false);
  const Eigen::MatrixXd x = normal_matrix(3, 4, 9);
  const Eigen::MatrixXd y = net.forward(x);
  CHECK(net.forward(x, nflow::no_context) == y);
  CHECK(Eigen::MatrixXd(net.forward(x.middleCols(1, 2))) == y.middleCols(1, 2));
  CHECK(Eigen::MatrixXd(net.forward(2.0 * x - x)) == y);
  // A row-major input is copied, not misread.
  const Eigen::Matrix<double, Dyn, Dyn, Eigen::RowMajor> xr = x;
  CHECK(Eigen::MatrixXd(net.forward(xr)) == y);
}

TEST_CASE("MLP with a linear (Identity) activation is the product of its layers", "[nn][mlp]") {
  MLP<double, 3, 2, 4, Identity> net(3, 2, 4, 2, 1);
  net.initialize(5, false);
  const Eigen::MatrixXd x = normal_matrix(3, 5, 6);
  const Eigen::MatrixXd c = normal_matrix(1, 5, 7);
  const Eigen::MatrixXd w = net.weight(2) * net.weight(1) * net.weight(0);
  const Eigen::MatrixXd wc = net.weight(2) * net.weight(1) * net.context_weight();
  const Eigen::VectorXd b =
      net.weight(2) * (net.weight(1) * net.bias(0) + net.bias(1)) + net.bias(2);
  const Eigen::MatrixXd want = (w * x + wc * c).colwise() + b;
  CHECK(relative_error(net.forward(x, c), want) < 1e-13);
}

TEST_CASE("MLP in float agrees with the same network in double", "[nn][mlp]") {
  MLP<double, 4, 3, 32, SiLU> netd(4, 3, 32, 2, 2);
  MLP<float, 4, 3, 32, SiLU> netf(4, 3, 32, 2, 2);
  netd.initialize(21, false);
  netf.initialize(21, false);
  // The same seed gives the same draws, rounded to float.
  CHECK(get_flat(netf) == get_flat(netd).cast<float>());
  const Eigen::MatrixXd x = normal_matrix(4, 50, 8);
  const Eigen::MatrixXd c = normal_matrix(2, 50, 9);
  const Eigen::MatrixXf yf = netf.forward(x.cast<float>(), c.cast<float>());
  const Eigen::MatrixXd yd = netd.forward(x, c);
  CHECK(yf.allFinite());
  CHECK(relative_error(yf.cast<double>(), yd) < 1e-5);
  const Eigen::Vector4f x0 = x.col(0).cast<float>();
  const Eigen::Vector2f c0 = c.col(0).cast<float>();
  CHECK(relative_error(netf.forward(x0, c0).cast<double>(), yd.col(0)) < 1e-5);
}

// ---- gradients
// -----------------------------------------------------------------------------------

using GradientNets = std::tuple<MLP<double, Dyn, Dyn, Dyn, Tanh>, MLP<double, 3, 2, 8, SiLU>,
                                MLP<double, 4, Dyn, 6, ELU>, MLP<double, Dyn, 5, Dyn, SiLU>>;

TEMPLATE_LIST_TEST_CASE("MLP backward matches finite differences", "[nn][mlp][gradient]",
                        GradientNets) {
  using Net = TestType;
  const Index context_dim = GENERATE(0, 2);
  const Index layers = GENERATE(1, 2, 3);
  INFO("context_dim = " << context_dim << ", hidden layers = " << layers);
  Net net = make_net<Net>(context_dim, layers);
  net.initialize(std::uint64_t(100 + layers), false);
  const Index n = 4;
  const double h = fd_step_for<Net>();
  Eigen::MatrixXd x = normal_matrix(net.in_dim(), n, 31);
  Eigen::MatrixXd c = normal_matrix(context_dim, n, 32);
  const Eigen::MatrixXd r = normal_matrix(net.out_dim(), n, 33);  // L = Σ r ⊙ y, so ∂L/∂y = r

  auto loss = [&] {
    const Eigen::MatrixXd y = context_dim > 0 ? net.forward(x, c) : net.forward(x);
    return (r.array() * y.array()).sum();
  };

  Eigen::VectorXd grad_params = Eigen::VectorXd::Zero(net.parameter_count());
  Eigen::MatrixXd grad_x;
  Eigen::MatrixXd grad_c;
  if (context_dim > 0) {
    const auto both = net.backward_with_context_grad(x, r, grad_params, c);
    grad_x = both.input;
    grad_c = both.context;
  } else {
    grad_x = net.backward(x, r, grad_params);
  }

  // ∂L/∂x
  Eigen::MatrixXd fd_x(x.rows(), x.cols());
  for (Index i = 0; i < x.size(); ++i) fd_x(i) = stencil(loss, x(i), h);
  CHECK(relative_error(grad_x, fd_x) < fd_tolerance);

  // ∂L/∂c
  if (context_dim > 0) {
    Eigen::MatrixXd fd_c(c.rows(), c.cols());
    for (Index i = 0; i < c.size(); ++i) fd_c(i) = stencil(loss, c(i), h);
    CHECK(relative_error(grad_c, fd_c) < fd_tolerance);
  }

  // ∂L/∂θ, tensor by tensor (so a failure names the tensor).
  Eigen::VectorXd theta = get_flat(net);
  Eigen::VectorXd fd_theta(theta.size());
  for (Index i = 0; i < theta.size(); ++i) {
    fd_theta(i) = stencil(
        [&] {
          set_flat(net, theta);
          return loss();
        },
        theta(i), h);
  }
  set_flat(net, theta);
  Index offset = 0;
  net.visit_parameters([&](const std::string& name, const auto& t) {
    INFO(name);
    CHECK(relative_error(grad_params.segment(offset, t.size()),
                         fd_theta.segment(offset, t.size())) < fd_tolerance);
    offset += t.size();
  });

  // The input-only backward gives the same ∂L/∂x.
  const Eigen::MatrixXd grad_x_only =
      context_dim > 0 ? net.backward_input(x, r, c) : net.backward_input(x, r);
  CHECK(relative_error(grad_x_only, grad_x) < 1e-14);

  // The recorded forward pass and the backward pass from its tape give the same numbers as
  // forward() and backward(), and the tape holds copies (x changed afterwards does not matter).
  {
    typename Net::Tape tape;
    Eigen::VectorXd gp_rec = Eigen::VectorXd::Zero(net.parameter_count());
    Eigen::MatrixXd x_rec = x;
    const Eigen::MatrixXd y_rec =
        context_dim > 0 ? net.forward_recorded(x_rec, tape, c) : net.forward_recorded(x_rec, tape);
    x_rec.setConstant(std::numeric_limits<double>::quiet_NaN());
    const Eigen::MatrixXd y = context_dim > 0 ? net.forward(x, c) : net.forward(x);
    CHECK(relative_error(y_rec, y) < 1e-14);
    const Eigen::MatrixXd gx_rec = context_dim > 0 ? net.backward_recorded(tape, r, gp_rec, c)
                                                   : net.backward_recorded(tape, r, gp_rec);
    CHECK(relative_error(gx_rec, grad_x) < 1e-14);
    CHECK(relative_error(gp_rec, grad_params) < 1e-14);
  }

  // Single points (compile-time one column) agree with the batch, and gradients add up.
  Eigen::VectorXd summed = Eigen::VectorXd::Zero(net.parameter_count());
  for (Index j = 0; j < n; ++j) {
    const Eigen::Matrix<double, Net::In, 1> xj = x.col(j);
    const Eigen::Matrix<double, Net::Out, 1> rj = r.col(j);
    const auto gj =
        context_dim > 0 ? net.backward(xj, rj, summed, c.col(j)) : net.backward(xj, rj, summed);
    CHECK(relative_error(gj, grad_x.col(j)) < 1e-13);
  }
  CHECK(relative_error(summed, grad_params) < 1e-13);
}

TEST_CASE("MLP: a batch larger than one block equals its columns taken one at a time",
          "[nn][mlp][gradient]") {
  // Large batches are processed in blocks of columns (256 KiB of activations: 128 columns at
  // width 256 in double); 300 columns make two full blocks and a partial one.
  MLP<double, 3, Dyn, 256, SiLU> net(3, 2, 256, 2, 1);
  net.initialize(17, false);
  const Index n = 300;
  const Eigen::MatrixXd x = normal_matrix(3, n, 1);
  const Eigen::MatrixXd c = normal_matrix(1, n, 2);
  const Eigen::MatrixXd r = normal_matrix(2, n, 3);
  const Eigen::MatrixXd y = net.forward(x, c);
  Eigen::VectorXd gp = Eigen::VectorXd::Zero(net.parameter_count());
  const auto g = net.backward_with_context_grad(x, r, gp, c);
  Eigen::VectorXd gp_sum = Eigen::VectorXd::Zero(net.parameter_count());
  for (Index j = 0; j < n; ++j) {
    const Eigen::Vector3d xj = x.col(j);
    CHECK(relative_error(y.col(j), naive_forward(net, xj, c.col(j))) < 1e-13);
    Eigen::VectorXd gp_j = Eigen::VectorXd::Zero(net.parameter_count());
    const auto gj = net.backward_with_context_grad(xj, r.col(j), gp_j, c.col(j));
    // Rounding only: one point takes GEMV kernels, the batch GEMM ones (different summation order).
    CHECK(relative_error(gj.input, g.input.col(j)) < 1e-12);
    CHECK(relative_error(gj.context, g.context.col(j)) < 1e-12);
    gp_sum += gp_j;
  }
  CHECK(relative_error(gp, gp_sum) < 1e-12);
  CHECK(relative_error(net.backward_input(x, r, c), g.input) < 1e-14);
}

TEST_CASE("MLP backward accumulates into grad_params", "[nn][mlp][gradient]") {
  MLP<double, Dyn, Dyn> net(3, 2, 5, 2, 1);
  net.initialize(4, false);
  const Eigen::MatrixXd x = normal_matrix(3, 5, 1);
  const Eigen::MatrixXd c = normal_matrix(1, 5, 2);
  const Eigen::MatrixXd r = normal_matrix(2, 5, 3);
  Eigen::VectorXd once = Eigen::VectorXd::Zero(net.parameter_count());
  net.backward(x, r, once, c);
  Eigen::VectorXd twice = Eigen::VectorXd::Constant(net.parameter_count(), 1.5);
  net.backward(x, r, twice, c);
  net.backward(x, r, twice, c);
  CHECK(relative_error(twice, (2 * once).array() + 1.5) < 1e-14);
  // A segment of a larger flat gradient is accepted (as a Flow will pass it).
  Eigen::VectorXd big = Eigen::VectorXd::Zero(net.parameter_count() + 7);
  net.backward(x, r, big.segment(3, net.parameter_count()), c);
  CHECK(big.head(3).isZero(0));
  CHECK(big.tail(4).isZero(0));
  // (Not bit for bit: an unaligned destination may change the summation order.)
  CHECK(relative_error(big.segment(3, net.parameter_count()), once) < 1e-14);
}

TEST_CASE("MLP with ReLU: gradients match finite differences away from the kinks",
          "[nn][mlp][gradient]") {
  // ReLU networks are piecewise linear; with these seeds no pre-activation lies within the
  // stencil's reach of 0, so the differences are exact up to rounding.
  MLP<double, Dyn, Dyn, 16, ReLU> net(3, 2, 16, 2);
  net.initialize(8, false);
  Eigen::MatrixXd x = normal_matrix(3, 3, 41);
  const Eigen::MatrixXd r = normal_matrix(2, 3, 42);
  auto loss = [&] { return (r.array() * net.forward(x).array()).sum(); };
  Eigen::VectorXd grad_params = Eigen::VectorXd::Zero(net.parameter_count());
  const Eigen::MatrixXd grad_x = net.backward(x, r, grad_params);
  Eigen::MatrixXd fd_x(x.rows(), x.cols());
  const double h = 1e-6;
  for (Index i = 0; i < x.size(); ++i) fd_x(i) = stencil(loss, x(i), h);
  CHECK(relative_error(grad_x, fd_x) < 1e-6);
  Eigen::VectorXd theta = get_flat(net);
  Eigen::VectorXd fd_theta(theta.size());
  for (Index i = 0; i < theta.size(); ++i) {
    fd_theta(i) = stencil(
        [&] {
          set_flat(net, theta);
          return loss();
        },
        theta(i), h);
  }
  CHECK(relative_error(grad_params, fd_theta) < 1e-6);
}

// ---- Jacobian
// ------------------------------------------------------------------------------------

using JacobianNets = std::tuple<MLP<double, Dyn, Dyn, Dyn, Tanh>, MLP<double, 3, 3, 8, SiLU>,
                                MLP<double, 5, 2, Dyn, ELU>, MLP<double, 2, 6, 4, SiLU>>;

TEMPLATE_LIST_TEST_CASE("MLP input_jacobian matches finite differences", "[nn][mlp][jacobian]",
                        JacobianNets) {
  using Net = TestType;
  const Index context_dim = GENERATE(0, 1);
  const Index layers = GENERATE(1, 3);
  // Dynamic case: out < in (reverse accumulation) and out > in (forward accumulation).
  const Index out = GENERATE(2, 4);
  Net net = make_net<Net>(context_dim, layers, 3, out, 6);
  net.initialize(77, false);
  Eigen::VectorXd x = normal_matrix(net.in_dim(), 1, 51);
  Eigen::VectorXd c = normal_matrix(context_dim, 1, 52);
  const Eigen::Matrix<double, Net::In, 1> xf = x;
  const Eigen::MatrixXd jac = context_dim > 0 ? net.input_jacobian(xf, c) : net.input_jacobian(xf);
  REQUIRE(jac.rows() == net.out_dim());
  REQUIRE(jac.cols() == net.in_dim());
  Eigen::MatrixXd fd(net.out_dim(), net.in_dim());
  for (Index o = 0; o < net.out_dim(); ++o) {
    for (Index i = 0; i < net.in_dim(); ++i) {
      fd(o, i) = stencil(
          [&] {
            const Eigen::VectorXd y = context_dim > 0 ? net.forward(x, c) : net.forward(x);
            return y(o);
          },
          x(i), fd_step_for<Net>());
    }
  }
  CHECK(relative_error(jac, fd) < fd_tolerance);
  // Jᵀ·g is what backward returns for one point.
  const Eigen::VectorXd g = normal_matrix(net.out_dim(), 1, 53);
  const Eigen::VectorXd vjp =
      context_dim > 0 ? net.backward_input(x, g, c) : net.backward_input(x, g);
  CHECK(relative_error(vjp, jac.transpose() * g) < 1e-13);
}

TEST_CASE("MLP input_jacobian has a fixed-size type when In and Out are fixed", "[nn][mlp]") {
  STATIC_REQUIRE(std::is_same_v<MLP<double, 3, 2, 8>::Jacobian, Eigen::Matrix<double, 2, 3>>);
  STATIC_REQUIRE(std::is_same_v<MLP<float, Dyn, 2, 8>::Jacobian, Eigen::MatrixXf>);
}

// ---- initialisation
// ------------------------------------------------------------------------------

TEST_CASE("MLP initialize: zero last layer, bounds, reproducibility", "[nn][mlp][init]") {
  MLP<double, 3, 2, 16, Tanh> net(3, 2, 16, 2, 1);

  SECTION("a fresh network is all zeros until initialised") { CHECK(get_flat(net).isZero(0)); }
  SECTION("zero_last_layer gives exactly zero output") {
    net.initialize(1);
    CHECK(net.weight(2).isZero(0));
    CHECK(net.bias(2).isZero(0));
    CHECK_FALSE(net.weight(1).isZero(0));
    const Eigen::MatrixXd x = 100.0 * normal_matrix(3, 9, 4);
    const Eigen::MatrixXd c = normal_matrix(1, 9, 5);
    const Eigen::MatrixXd y = net.forward(x, c);
    CHECK((y.array() == 0.0).all());
    const Eigen::Vector3d x0 = x.col(0);
    CHECK((net.forward(x0, c.col(0)).array() == 0.0).all());
  }
  SECTION("values lie within ±1/sqrt(fan_in), fan_in counting the context") {
    net.initialize(2, false);
    const double b0 = 1.0 / std::sqrt(3.0 + 1.0);
    const double b1 = 1.0 / std::sqrt(16.0);
    CHECK(net.weight(0).cwiseAbs().maxCoeff() <= b0);
    CHECK(net.context_weight().cwiseAbs().maxCoeff() <= b0);
    CHECK(net.bias(0).cwiseAbs().maxCoeff() <= b0);
    CHECK(net.weight(1).cwiseAbs().maxCoeff() <= b1);
    CHECK(net.weight(2).cwiseAbs().maxCoeff() <= b1);
    // and fill it: the largest of 48 draws exceeds half the bound.
    CHECK(net.weight(0).cwiseAbs().maxCoeff() > 0.5 * b0);
  }
  SECTION("the documented random stream: visit order, column-major, 53 bits") {
    net.initialize(12345, false);
    std::mt19937_64 gen(12345);
    const double b0 = 1.0 / std::sqrt(4.0);
    auto draw = [&](double bound) {
      const double u = (double(gen() >> 11) + 0.5) * 0x1p-53;
      return bound * (2.0 * u - 1.0);
    };
    CHECK(net.weight(0)(0, 0) == draw(b0));
    CHECK(net.weight(0)(1, 0) == draw(b0));  // column-major: (1, 0) comes second
    for (int i = 2; i < 16 * 3; ++i) draw(b0);
    CHECK(net.context_weight()(0, 0) == draw(b0));  // then the context weight
    for (int i = 1; i < 16; ++i) draw(b0);
    CHECK(net.bias(0)(0) == draw(b0));  // then the bias
  }
  SECTION("same seed, same weights; different seed, different weights") {
    MLP<double, 3, 2, 16, Tanh> other(3, 2, 16, 2, 1);
    net.initialize(7, false);
    other.initialize(7, false);
    CHECK(get_flat(net) == get_flat(other));
    other.initialize(8, false);
    CHECK(get_flat(net) != get_flat(other));
    // A caller's generator continues its stream.
    std::mt19937_64 gen(7);
    other.initialize(gen, false);
    CHECK(get_flat(net) == get_flat(other));
    other.initialize(gen, false);
    CHECK(get_flat(net) != get_flat(other));
  }
}

// ---- parameters
// ----------------------------------------------------------------------------------

TEST_CASE("MLP parameters: names, shapes, count, storage", "[nn][mlp][parameters]") {
  MLP<float, 3, 2, Dyn, ELU> net(3, 2, 5, 2, 4);
  std::vector<std::string> names;
  std::vector<std::pair<Index, Index>> shapes;
  Index total = 0;
  net.visit_parameters([&](const std::string& name, Eigen::Ref<nflow::ParameterMatrix<float>> t) {
    names.push_back(name);
    shapes.emplace_back(t.rows(), t.cols());
    total += t.size();
  });
  const std::vector<std::string> want_names = {
      "layers.0.weight", "layers.0.context_weight", "layers.0.bias", "layers.1.weight",
      "layers.1.bias",   "layers.2.weight",         "layers.2.bias"};
  CHECK(names == want_names);
  const std::vector<std::pair<Index, Index>> want_shapes = {{5, 3}, {5, 4}, {5, 1}, {5, 5},
                                                            {5, 1}, {2, 5}, {2, 1}};
  CHECK(shapes == want_shapes);
  CHECK(total == 15 + 20 + 5 + 25 + 5 + 10 + 2);
  CHECK(net.parameter_count() == total);

  // The const visit sees the storage itself (no copy) and writes through the mutable one land.
  const auto& cnet = net;
  std::vector<const float*> pointers;
  cnet.visit_parameters([&](const std::string&, Eigen::Ref<const nflow::ParameterMatrix<float>> t) {
    pointers.push_back(t.data());
  });
  CHECK(pointers[0] == net.weight(0).data());
  CHECK(pointers[1] == net.context_weight().data());
  CHECK(pointers[2] == net.bias(0).data());
  net.visit_parameters([](const std::string& name, Eigen::Ref<nflow::ParameterMatrix<float>> t) {
    if (name == "layers.1.bias") t(3, 0) = 4.5f;
  });
  CHECK(net.bias(1)(3) == 4.5f);

  MLP<double, Dyn, Dyn> plain(2, 1, 3, 1);
  CHECK(plain.parameter_count() == 3 * 2 + 3 + 1 * 3 + 1);
  CHECK(plain.context_dim() == 0);
  CHECK(plain.in_dim() == 2);
  CHECK(plain.out_dim() == 1);
  CHECK(plain.hidden_width() == 3);
  CHECK(plain.hidden_layers() == 1);
}

TEST_CASE("MLP with no input features, only a context", "[nn][mlp]") {
  MLP<double, Dyn, Dyn, Dyn, Tanh> net(0, 2, 4, 2, 3);
  net.initialize(9, false);
  const Eigen::MatrixXd x(0, 5);
  Eigen::MatrixXd c = normal_matrix(3, 5, 1);
  const Eigen::MatrixXd y = net.forward(x, c);
  for (Index j = 0; j < 5; ++j) {
    CHECK(relative_error(y.col(j), naive_forward(net, Eigen::VectorXd(0), c.col(j))) < 1e-13);
  }
  Eigen::VectorXd gp = Eigen::VectorXd::Zero(net.parameter_count());
  const auto g = net.backward_with_context_grad(x, Eigen::MatrixXd::Ones(2, 5), gp, c);
  CHECK(g.input.rows() == 0);
  auto loss = [&] { return net.forward(x, c).sum(); };
  Eigen::MatrixXd fd_c(3, 5);
  for (Index i = 0; i < c.size(); ++i) fd_c(i) = stencil(loss, c(i), fd_step);
  CHECK(relative_error(g.context, fd_c) < fd_tolerance);
}

// ---- errors
// --------------------------------------------------------------------------------------

TEST_CASE("MLP constructor rejects invalid sizes with ParameterError", "[nn][mlp][errors]") {
  using Net = MLP<double, Dyn, Dyn>;
  CHECK_THROWS_AS(Net(3, 2, 4, 0), nflow::ParameterError);
  CHECK_THROWS_WITH(Net(3, 2, 4, 0), Catch::Contains("hidden_layers") && Catch::Contains(">= 1"));
  CHECK_THROWS_AS(Net(3, 2, 0, 1), nflow::ParameterError);
  CHECK_THROWS_AS(Net(3, 0, 4, 1), nflow::ParameterError);
  CHECK_THROWS_AS(Net(-1, 2, 4, 1), nflow::ParameterError);
  CHECK_THROWS_AS(Net(3, 2, 4, 1, -2), nflow::ParameterError);
  CHECK_THROWS_AS(Net(0, 2, 4, 1, 0), nflow::ParameterError);
  using Fixed = MLP<double, 3, 2, 8>;
  CHECK_THROWS_WITH(Fixed(4, 2, 8, 1), Catch::Contains("in_dim = 4") && Catch::Contains("3"));
  CHECK_THROWS_AS(Fixed(3, 1, 8, 1), nflow::ParameterError);
  CHECK_THROWS_WITH(Fixed(3, 2, 9, 1), Catch::Contains("hidden_width"));
  CHECK_NOTHROW(Fixed(3, 2, 8, 1));
}

TEST_CASE("MLP rejects bad shapes with ShapeError", "[nn][mlp][errors]") {
  MLP<double, Dyn, Dyn> net(3, 2, 4, 2);
  MLP<double, Dyn, Dyn> cnet(3, 2, 4, 2, 2);
  const Eigen::MatrixXd x(3, 5);
  const Eigen::MatrixXd bad_x(4, 5);
  const Eigen::MatrixXd c = Eigen::MatrixXd::Zero(2, 5);
  const Eigen::MatrixXd g = Eigen::MatrixXd::Zero(2, 5);
  Eigen::VectorXd gp = Eigen::VectorXd::Zero(net.parameter_count());
  Eigen::VectorXd cgp = Eigen::VectorXd::Zero(cnet.parameter_count());
  Eigen::VectorXd short_gp = Eigen::VectorXd::Zero(net.parameter_count() - 1);

  CHECK_THROWS_AS(net.forward(bad_x), nflow::ShapeError);
  CHECK_THROWS_WITH(net.forward(bad_x), Catch::Contains("3 rows") && Catch::Contains("4 x 5"));
  CHECK_THROWS_AS(cnet.forward(x), nflow::ShapeError);  // context required
  CHECK_THROWS_WITH(cnet.forward(x), Catch::Contains("context"));
  CHECK_THROWS_AS(cnet.forward(x, Eigen::MatrixXd::Zero(3, 5)), nflow::ShapeError);
  CHECK_THROWS_WITH(cnet.forward(x, Eigen::MatrixXd::Zero(2, 4)),
                    Catch::Contains("5 columns") && Catch::Contains("2 x 4"));
  CHECK_THROWS_AS(net.forward(x, c), nflow::ShapeError);  // a context where none is expected
  CHECK_NOTHROW(net.forward(x, Eigen::MatrixXd(0, 5)));   // an empty context is no context

  CHECK_THROWS_AS(net.backward(bad_x, g, gp), nflow::ShapeError);
  CHECK_THROWS_AS(net.backward(x, Eigen::MatrixXd::Zero(3, 5), gp), nflow::ShapeError);
  CHECK_THROWS_AS(net.backward(x, Eigen::MatrixXd::Zero(2, 4), gp), nflow::ShapeError);
  CHECK_THROWS_WITH(net.backward(x, g, short_gp), Catch::Contains("grad_params"));
  CHECK_THROWS_AS(cnet.backward(x, g, cgp), nflow::ShapeError);
  CHECK_THROWS_AS(cnet.backward(x, g, cgp, Eigen::MatrixXd::Zero(2, 3)), nflow::ShapeError);
  CHECK_THROWS_AS(cnet.backward_input(x, g), nflow::ShapeError);
  CHECK_THROWS_AS(cnet.backward_with_context_grad(x, g, gp, c), nflow::ShapeError);
  CHECK_NOTHROW(cnet.backward_with_context_grad(x, g, cgp, c));

  // The recorded pair: the same checks, and a tape must come from a network of this shape.
  MLP<double, Dyn, Dyn>::Tape tape;
  CHECK_THROWS_AS(net.forward_recorded(bad_x, tape), nflow::ShapeError);
  CHECK_THROWS_AS(cnet.forward_recorded(x, tape), nflow::ShapeError);  // context required
  CHECK_THROWS_WITH(net.backward_recorded(tape, g, gp), Catch::Contains("tape"));  // empty tape
  net.forward_recorded(x, tape);
  CHECK_NOTHROW(net.backward_recorded(tape, g, gp));
  CHECK_THROWS_AS(net.backward_recorded(tape, Eigen::MatrixXd::Zero(2, 4), gp), nflow::ShapeError);
  CHECK_THROWS_WITH(net.backward_recorded(tape, g, short_gp), Catch::Contains("grad_params"));
  MLP<double, Dyn, Dyn> wide(3, 2, 5, 2);
  Eigen::VectorXd wgp = Eigen::VectorXd::Zero(wide.parameter_count());
  CHECK_THROWS_WITH(wide.backward_recorded(tape, g, wgp), Catch::Contains("tape"));
  cnet.forward_recorded(x, tape, c);
  CHECK_THROWS_AS(cnet.backward_recorded(tape, g, cgp), nflow::ShapeError);  // context required

  CHECK_THROWS_AS(net.input_jacobian(x), nflow::ShapeError);  // 5 columns, not one point
  CHECK_THROWS_AS(net.input_jacobian(Eigen::VectorXd::Zero(2)), nflow::ShapeError);
  CHECK_THROWS_AS(cnet.input_jacobian(Eigen::VectorXd::Zero(3)), nflow::ShapeError);
  CHECK_THROWS_AS(cnet.input_jacobian(Eigen::VectorXd::Zero(3), Eigen::VectorXd::Zero(1)),
                  nflow::ShapeError);
  CHECK_THROWS_AS(net.weight(3), std::out_of_range);
}

// ---- non-finite inputs
// ---------------------------------------------------------------------------

TEMPLATE_TEST_CASE("MLP: a NaN or Inf in one column never reaches another", "[nn][mlp][nan]", ReLU,
                   Tanh, SiLU, ELU) {
  MLP<double, 3, 2, 8, TestType> net(3, 2, 8, 2, 1);
  net.initialize(13, false);
  const Eigen::MatrixXd x = normal_matrix(3, 5, 61);
  const Eigen::MatrixXd c = normal_matrix(1, 5, 62);
  const Eigen::MatrixXd r = normal_matrix(2, 5, 63);
  const double bad =
      GENERATE(std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity());
  const bool in_context = GENERATE(false, true);
  Eigen::MatrixXd xb = x;
  Eigen::MatrixXd cb = c;
  if (in_context) {
    cb(0, 2) = bad;
  } else {
    xb(1, 2) = bad;
  }

  const Eigen::MatrixXd y = net.forward(x, c);
  const Eigen::MatrixXd yb = net.forward(xb, cb);
  Eigen::VectorXd gp = Eigen::VectorXd::Zero(net.parameter_count());
  const auto g = net.backward_with_context_grad(x, r, gp, c);
  const auto gb = net.backward_with_context_grad(xb, r, gp, cb);
  for (Index j = 0; j < 5; ++j) {
    if (j == 2) {
      // NaN in, NaN out. (An infinite input may legitimately saturate: tanh(±inf) = ±1.)
      if (std::isnan(bad)) CHECK(yb.col(j).array().isNaN().all());
    } else {
      CHECK(yb.col(j) == y.col(j));  // bit for bit
      CHECK(gb.input.col(j) == g.input.col(j));
      CHECK(gb.context.col(j) == g.context.col(j));
    }
  }
}

// ---- allocation
// ----------------------------------------------------------------------------------

TEST_CASE("MLP forward of one point with fixed Hidden and Out does not allocate",
          "[nn][mlp][alloc]") {
#ifdef NDEBUG
  WARN("NDEBUG is defined: Eigen's malloc check is disabled, this test checks nothing");
#endif
  MLP<double, 4, 3, 32, SiLU> net(4, 3, 32, 3, 2);
  net.initialize(1, false);
  const Eigen::Vector4d x(0.1, -0.2, 0.3, 0.4);
  const Eigen::Vector2d c(1.0, -1.0);
  const Eigen::MatrixXd xs = normal_matrix(4, 3, 1);
  Eigen::Vector3d y;
  Eigen::Vector3d y_col;
  Eigen::internal::set_is_malloc_allowed(false);
  y = net.forward(x, c);
  y_col = net.forward(xs.col(1), c);  // a column of a dynamic batch is one point too
  Eigen::internal::set_is_malloc_allowed(true);
  CHECK(relative_error(y, naive_forward(net, x, c)) < 1e-13);
  CHECK(relative_error(y_col, naive_forward(net, xs.col(1), c)) < 1e-13);

  MLP<float, 2, 2, 64, ReLU> netf(2, 2, 64, 2);
  netf.initialize(2, false);
  const Eigen::Vector2f xf(0.5f, -1.5f);
  Eigen::Vector2f yf;
  Eigen::internal::set_is_malloc_allowed(false);
  yf = netf.forward(xf);
  Eigen::internal::set_is_malloc_allowed(true);
  CHECK(yf.allFinite());
}

// ---- dense helpers
// -------------------------------------------------------------------------------

TEST_CASE("dense_forward and dense gradients", "[nn][dense]") {
  const Eigen::MatrixXd w = normal_matrix(3, 2, 1);
  const Eigen::VectorXd b = normal_matrix(3, 1, 2);
  const Eigen::MatrixXd x = normal_matrix(2, 4, 3);
  Eigen::MatrixXd y(3, 4);
  nflow::nn::dense_forward(y, w, x, b);
  for (Index j = 0; j < 4; ++j) CHECK(relative_error(y.col(j), w * x.col(j) + b) < 1e-15);
  const Eigen::MatrixXd delta = normal_matrix(3, 4, 4);
  Eigen::MatrixXd gw = Eigen::MatrixXd::Zero(3, 2);
  Eigen::VectorXd gb = Eigen::VectorXd::Zero(3);
  nflow::nn::dense_accumulate_parameter_gradients(delta, x, gw, gb);
  Eigen::MatrixXd want_gw = Eigen::MatrixXd::Zero(3, 2);
  for (Index j = 0; j < 4; ++j) want_gw += delta.col(j) * x.col(j).transpose();
  CHECK(relative_error(gw, want_gw) < 1e-14);
  CHECK(relative_error(gb, delta.rowwise().sum()) < 1e-14);
  CHECK(nflow::nn::default_init_bound(16) == 0.25);
}
