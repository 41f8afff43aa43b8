// Tests of nflow/nn/made.hpp and nflow/nn/masks.hpp: degrees, masks, the exact autoregressive property, the forward pass
// against a naive masked MLP, gradients against finite differences (masked entries exactly 0),
// and the allocation-free single point. (The Dim-pass solve is MaskedAutoregressive's: its test is
// in tests/bijectors/maf_test.cpp.)
//
// References are independent of the code under test: explicit loops over the stored weights with
// the documented masks rebuilt from the degree rules, and fourth-order central differences.

// Makes Eigen assert on any heap allocation while set_is_malloc_allowed(false) is in effect
// (only in builds without NDEBUG); used to check the allocation-free single-point path.
#define EIGEN_RUNTIME_NO_MALLOC

#include "nflow/nn/made.hpp"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "nflow/core/parameters.hpp"
#include "nflow/core/random.hpp"
#include "support/reference_activations.hpp"

namespace {

using nflow::Index;
using nflow::nn::HiddenDegrees;
using nflow::nn::Identity;
using nflow::nn::MADE;
using nflow::nn::ReLU;
using nflow::nn::SiLU;
using nflow::nn::Tanh;
constexpr int Dyn = Eigen::Dynamic;

using nflow::test_reference::scalar_activation;

/// Every parameter (masked entries included) drawn from N(0, scale²).
template <typename Net>
void randomize(Net& net, std::uint64_t seed, double scale) {
  std::mt19937_64 gen(seed);
  using S = typename Net::Scalar;
  nflow::Vector<S> theta = nflow::standard_normal_matrix<S>(net.parameter_count(), 1, gen);
  nflow::set_parameters(net, theta * S(scale));
}

/// The mask of layer l rebuilt from the degree rules of the documentation.
template <typename Net>
Eigen::MatrixXd expected_mask(const Net& net, Index l) {
  const Index L = net.hidden_layers();
  const Index D = net.dim();
  const Index rows = l == L ? net.out_dim() : net.hidden_width();
  const Index cols = l == 0 ? D : net.hidden_width();
  Eigen::MatrixXd m(rows, cols);
  for (Index r = 0; r < rows; ++r) {
    for (Index c = 0; c < cols; ++c) {
      const int in = l == 0 ? net.input_degrees()(c) : net.hidden_degrees(l - 1)(c);
      if (l == L) {
        m(r, c) = net.input_degrees()(r % D) > in ? 1.0 : 0.0;
      } else {
        m(r, c) = net.hidden_degrees(l)(r) >= in ? 1.0 : 0.0;
      }
    }
  }
  return m;
}

/// y = MADE(x, c) for one sample, by loops over the stored weights with the masks applied.
template <typename Net>
Eigen::VectorXd naive_forward(const Net& net, const Eigen::VectorXd& x, const Eigen::VectorXd& c) {
  using Act = typename Net::Activation;
  Eigen::VectorXd h = x;
  const Index L = net.hidden_layers();
  for (Index l = 0; l <= L; ++l) {
    const Eigen::MatrixXd w = net.weight(l).template cast<double>();
    const Eigen::MatrixXd mask = expected_mask(net, l);
    Eigen::VectorXd a(w.rows());
    for (Index r = 0; r < w.rows(); ++r) {
      double s = double(net.bias(l)(r));
      for (Index k = 0; k < w.cols(); ++k) s += w(r, k) * mask(r, k) * h(k);
      if (l == 0) {
        for (Index k = 0; k < net.context_dim(); ++k)
          s += double(net.context_weight()(r, k)) * c(k);
      }
      a(r) = l < L ? scalar_activation<Act>(s) : s;
    }
    h = a;
  }
  return h;
}

template <typename Net, typename X, typename C>
auto call_forward(const Net& net, const X& x, const C& c) {
  if (net.context_dim() > 0) return net.forward(x, c);
  return net.forward(x);
}

double relative_error(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b) {
  return (a - b).cwiseAbs().maxCoeff() / std::max(1.0, b.cwiseAbs().maxCoeff());
}

/// Checks, for every input j, that perturbing x_j leaves every output of degree ≤ deg(j)
/// bit-identical, and that some output of higher degree moves (the dependency is real).
template <typename Net>
void check_autoregressive(const Net& net, std::uint64_t seed) {
  using S = typename Net::Scalar;
  std::mt19937_64 gen(seed);
  const Index D = net.dim();
  const Index n = 3;
  const auto x = nflow::standard_normal_matrix<S, Net::Dim>(D, n, gen);
  const auto c = nflow::standard_normal_matrix<S>(net.context_dim(), n, gen);
  const auto y = call_forward(net, x, c);
  for (Index j = 0; j < D; ++j) {
    for (const double delta : {3.75, -1e6, 1e-3}) {
      auto xp = x;
      xp.row(j).array() += S(delta);
      const auto yp = call_forward(net, xp, c);
      bool higher_moved = false;
      for (Index r = 0; r < net.out_dim(); ++r) {
        if (net.output_degree(r) <= net.input_degrees()(j)) {
          INFO("input " << j << " (degree " << net.input_degrees()(j) << "), output row " << r
                        << " (degree " << net.output_degree(r) << "), delta " << delta);
          CHECK((yp.row(r).array() == y.row(r).array()).all());
        } else if ((yp.row(r).array() != y.row(r).array()).any()) {
          higher_moved = true;
        }
      }
      if (net.input_degrees()(j) < D && net.hidden_width() >= D) CHECK(higher_moved);
    }
  }
}

}  // namespace

// ---- degrees and masks ---------------------------------------------------------------------------

TEST_CASE("MADE gives input order(k) the degree k + 1", "[nn][made][degrees]") {
  MADE<double, Dyn, Dyn, Tanh> natural(4, 8, 1);
  CHECK(natural.input_degrees() == Eigen::Vector4i(1, 2, 3, 4));
  MADE<double, Dyn, Dyn, Tanh> reversed(4, 8, 1, 0, nflow::nn::reversed_order(4));
  CHECK(reversed.input_degrees() == Eigen::Vector4i(4, 3, 2, 1));
  MADE<double, Dyn, Dyn, Tanh> custom(4, 8, 1, 0, Eigen::Vector4i(2, 0, 3, 1));
  CHECK(custom.input_degrees() == Eigen::Vector4i(2, 4, 1, 3));
  CHECK(custom.order() == Eigen::Vector4i(2, 0, 3, 1));

  std::mt19937_64 g1(5);
  std::mt19937_64 g2(5);
  const Eigen::VectorXi r1 = nflow::nn::make_order(nflow::nn::InputOrder::Random, 9, g1);
  const Eigen::VectorXi r2 = nflow::nn::make_order(nflow::nn::InputOrder::Random, 9, g2);
  CHECK(r1 == r2);
  Eigen::VectorXi sorted = r1;
  std::sort(sorted.data(), sorted.data() + sorted.size());
  CHECK(sorted == nflow::nn::natural_order(9));
}

TEST_CASE("MADE hidden degrees are sorted, in range, and sequential ones cycle",
          "[nn][made][degrees]") {
  // Unconditional: degrees in [1, D−1]; sequential counts as in lo + (u mod (D − lo)).
  MADE<double, Dyn, Dyn, Tanh> net(5, 10, 3);
  for (Index l = 0; l < 3; ++l) {
    const Eigen::VectorXi& d = net.hidden_degrees(l);
    CHECK(std::is_sorted(d.data(), d.data() + d.size()));
    CHECK(d.minCoeff() == 1);
    CHECK(d.maxCoeff() == 4);
    for (int g = 1; g <= 4; ++g) CHECK((d.array() == g).count() == (g <= 2 ? 3 : 2));
  }
  // Conditional: degree-0 units (context only) exist.
  MADE<double, Dyn, Dyn, Tanh> cond(5, 10, 2, 3);
  CHECK(cond.hidden_degrees(0).minCoeff() == 0);
  CHECK((cond.hidden_degrees(0).array() == 0).count() == 2);
  // D = 1: every hidden unit has degree 0.
  MADE<double, Dyn, Dyn, Tanh> one(1, 4, 2);
  CHECK(one.hidden_degrees(0) == Eigen::VectorXi::Zero(4));

  // Random degrees: in range, lo of layer l = min of layer l−1, reproducible, seed-dependent.
  MADE<float, Dyn, Dyn, Tanh> a(6, 32, 3, 0, Eigen::VectorXi(), HiddenDegrees::Random, 11);
  MADE<float, Dyn, Dyn, Tanh> b(6, 32, 3, 0, Eigen::VectorXi(), HiddenDegrees::Random, 11);
  MADE<float, Dyn, Dyn, Tanh> c(6, 32, 3, 0, Eigen::VectorXi(), HiddenDegrees::Random, 12);
  bool any_differs = false;
  for (Index l = 0; l < 3; ++l) {
    const Eigen::VectorXi& d = a.hidden_degrees(l);
    CHECK(std::is_sorted(d.data(), d.data() + d.size()));
    CHECK(d.minCoeff() >= (l == 0 ? 1 : a.hidden_degrees(l - 1).minCoeff()));
    CHECK(d.maxCoeff() <= 5);
    CHECK(d == b.hidden_degrees(l));
    any_differs = any_differs || d != c.hidden_degrees(l);
  }
  CHECK(any_differs);
  CHECK(nflow::get_parameters(a) == nflow::get_parameters(b));
}

TEST_CASE("MADE masks follow the degree rules", "[nn][made][masks]") {
  MADE<double, Dyn, Dyn, SiLU, 3> net(4, 7, 2, 0, Eigen::Vector4i(3, 1, 0, 2),
                                      HiddenDegrees::Random, 4);
  for (Index l = 0; l <= 2; ++l) CHECK(Eigen::MatrixXd(net.mask(l)) == expected_mask(net, l));
  MADE<float, Dyn, Dyn, Tanh> direct(3, 5,
                                     0);  // no hidden layer: output ← input, strictly lower degree
  CHECK(direct.mask(0).template cast<double>() == expected_mask(direct, 0));
  CHECK(direct.mask(0).rows() == 6);
}

// ---- the autoregressive property, exactly --------------------------------------------------------

TEMPLATE_TEST_CASE("MADE output i is exactly independent of inputs of degree >= deg(i)",
                   "[nn][made][autoregressive]", float, double) {
  using S = TestType;
  {
    MADE<S, 5, 16, Tanh> net(5, 16, 2);
    randomize(net, 1, 1.0);
    check_autoregressive(net, 2);
  }
  {
    MADE<S, Dyn, Dyn, Tanh> net(6, 12, 3, 2, nflow::nn::reversed_order(6), HiddenDegrees::Random,
                                3);
    randomize(net, 4, 1.0);
    check_autoregressive(net, 5);
  }
  {
    std::mt19937_64 gen(6);
    MADE<S, Dyn, Dyn, Tanh> net(7, 9, 1, 3, nflow::random_permutation(7, gen));
    randomize(net, 7, 1.0);
    check_autoregressive(net, 8);
  }
  {
    MADE<S, Dyn, Dyn, Tanh> net(4, 8, 0, 2, nflow::nn::reversed_order(4));  // no hidden layer
    randomize(net, 9, 1.0);
    check_autoregressive(net, 10);
  }
}

TEST_CASE("MADE with ReLU and Identity activations is exactly autoregressive too",
          "[nn][made][autoregressive]") {
  {
    MADE<double, Dyn, Dyn, ReLU> net(5, 16, 2, 0, nflow::nn::reversed_order(5));
    randomize(net, 1, 1.0);
    check_autoregressive(net, 2);
  }
  {
    std::mt19937_64 gen(6);
    MADE<double, Dyn, Dyn, Identity> net(7, 9, 1, 3, nflow::random_permutation(7, gen));
    randomize(net, 7, 1.0);
    check_autoregressive(net, 8);
  }
}

TEST_CASE("Conditional MADE: every output, the first in the order included, depends on the context",
          "[nn][made][context]") {
  MADE<double, Dyn, Dyn, Tanh> net(3, 12, 2, 2, Eigen::Vector3i(1, 2, 0));
  randomize(net, 1, 1.0);
  const Eigen::Vector3d x(0.1, -0.4, 0.7);
  const Eigen::Vector2d c(0.3, -0.2);
  const Eigen::VectorXd y = net.forward(x, c);
  const Eigen::VectorXd y2 = net.forward(x, Eigen::Vector2d(c + Eigen::Vector2d(0.5, 0.5)));
  for (Index r = 0; r < net.out_dim(); ++r) CHECK(y(r) != y2(r));
}

// ---- forward against an independent reference ---------------------------------------------------

TEST_CASE(
    "MADE forward equals a naive masked MLP on the stored weights, whatever the masked entries "
    "hold",
    "[nn][made][forward]") {
  std::mt19937_64 gen(3);
  {
    MADE<double, Dyn, Dyn, Tanh> net(5, 11, 2, 3, nflow::nn::reversed_order(5),
                                     HiddenDegrees::Random, 2);
    randomize(net, 5, 0.8);  // masked entries hold non-zero garbage
    const Eigen::MatrixXd x = nflow::standard_normal_matrix<double>(5, 4, gen);
    const Eigen::MatrixXd c = nflow::standard_normal_matrix<double>(3, 4, gen);
    const Eigen::MatrixXd y = net.forward(x, c);
    for (Index j = 0; j < 4; ++j)
      CHECK(relative_error(y.col(j), naive_forward(net, x.col(j), c.col(j))) < 1e-13);
  }
  {
    MADE<float, 5, 16, Tanh> net(5, 16, 1);
    randomize(net, 6, 0.8);
    const Eigen::Matrix<float, 5, Dyn> x = nflow::standard_normal_matrix<float, 5>(5, 5, gen);
    const Eigen::Matrix<float, 10, Dyn> y = net.forward(x);
    for (Index j = 0; j < 5; ++j) {
      CHECK(relative_error(y.col(j).cast<double>(),
                           naive_forward(net, x.col(j).cast<double>(), Eigen::VectorXd())) < 1e-5);
    }
  }
}

TEST_CASE("A fresh MADE outputs exactly zero and names its parameters like PyTorch",
          "[nn][made][parameters]") {
  MADE<double, Dyn, Dyn, Tanh> net(3, 8, 2, 2);
  std::mt19937_64 gen(1);
  const Eigen::MatrixXd x = nflow::standard_normal_matrix<double>(3, 4, gen);
  const Eigen::MatrixXd c = nflow::standard_normal_matrix<double>(2, 4, gen);
  CHECK(net.forward(x, c).isZero(0.0));
  const std::vector<std::string> expected{
      "layers.0.weight", "layers.0.context_weight", "layers.0.bias", "layers.1.weight",
      "layers.1.bias",   "layers.2.weight",         "layers.2.bias"};
  CHECK(nflow::parameter_names(net) == expected);
  CHECK(net.parameter_count() == 8 * 3 + 8 * 2 + 8 + 8 * 8 + 8 + 6 * 8 + 6);
  CHECK(net.weight(0).rows() == 8);
  CHECK(net.weight(0).cols() == 3);
  CHECK(net.weight(2).rows() == 6);
  // Unmasked entries of the hidden layers were drawn; masked entries start at 0.
  CHECK(net.weight(1).cwiseProduct(net.mask(1)).norm() > 0.0);
  CHECK(net.weight(0).cwiseProduct((1.0 - net.mask(0).array()).matrix()).isZero(0.0));
  MADE<double, Dyn, Dyn, Tanh> same(3, 8, 2, 2);
  CHECK(nflow::get_parameters(net) == nflow::get_parameters(same));
}

// ---- gradients ---------------------------------------------------------------------------------

TEST_CASE("MADE backward matches finite differences, masked weight entries get exactly 0",
          "[nn][made][gradients]") {
  auto check = [](auto net, Index n, std::uint64_t seed) {
    using Net = decltype(net);
    randomize(net, seed, 0.7);
    std::mt19937_64 gen(seed + 1);
    const Index D = net.dim();
    const Index cd = net.context_dim();
    const Eigen::MatrixXd x = nflow::standard_normal_matrix<double>(D, n, gen);
    const Eigen::MatrixXd c = nflow::standard_normal_matrix<double>(cd, n, gen);
    const Eigen::MatrixXd gy = nflow::standard_normal_matrix<double>(net.out_dim(), n, gen);
    auto loss = [&](const Net& m, const Eigen::MatrixXd& xv) {
      const Eigen::MatrixXd y =
          cd > 0 ? Eigen::MatrixXd(m.forward(xv, c)) : Eigen::MatrixXd(m.forward(xv));
      return (y.array() * gy.array()).sum();
    };
    nflow::Vector<double> gp =
        nflow::Vector<double>::Constant(net.parameter_count(), 0.25);  // adds into
    const Eigen::MatrixXd gx = cd > 0 ? Eigen::MatrixXd(net.backward(x, gy, gp, c))
                                      : Eigen::MatrixXd(net.backward(x, gy, gp));
    gp.array() -= 0.25;
    const double h = 1e-3;
    auto stencil = [&](auto&& f) {
      return (8.0 * (f(h) - f(-h)) - (f(2 * h) - f(-2 * h))) / (12.0 * h);
    };
    Eigen::MatrixXd fd_x(D, n);
    for (Index i = 0; i < x.size(); ++i) {
      fd_x(i) = stencil([&](double s) {
        Eigen::MatrixXd xs = x;
        xs(i) += s;
        return loss(net, xs);
      });
    }
    CHECK(relative_error(gx, fd_x) < 1e-6);
    const nflow::Vector<double> theta = nflow::get_parameters(net);
    Eigen::VectorXd fd_p(theta.size());
    Net probe = net;
    for (Index i = 0; i < theta.size(); ++i) {
      fd_p(i) = stencil([&](double s) {
        nflow::Vector<double> t = theta;
        t(i) += s;
        nflow::set_parameters(probe, t);
        return loss(probe, x);
      });
    }
    CHECK(relative_error(gp, fd_p) < 1e-6);
    // Masked entries: exactly zero, analytically and numerically.
    Index offset = 0;
    Index masked = 0;
    net.visit_parameters([&](const std::string& name, const auto& t) {
      if (name.size() >= 6 && name.compare(name.size() - 6, 6, "weight") == 0 &&
          name.find("context") == std::string::npos) {
        const Index l = Index(std::stoi(name.substr(7)));
        for (Index k = 0; k < t.size(); ++k) {
          if (net.mask(l)(k) == 0.0) {
            ++masked;
            CHECK(gp(offset + k) == 0.0);
            CHECK(fd_p(offset + k) == 0.0);
          }
        }
      }
      offset += t.size();
    });
    CHECK(masked > 0);
  };
  check(MADE<double, Dyn, Dyn, Tanh>(4, 6, 2, 2, nflow::nn::reversed_order(4),
                                     HiddenDegrees::Random, 1),
        3, 10);
  check(MADE<double, 5, 16, Tanh>(5, 16, 1), 1, 20);
  check(MADE<double, Dyn, Dyn, Tanh>(3, 4, 0, 2), 2, 30);
  check(MADE<double, Dyn, Dyn, SiLU, 3>(3, 5, 3, 0), 2, 40);  // f′ from the pre-activation
}

TEST_CASE("MADE over many column blocks equals MADE column by column", "[nn][made][batch]") {
  // Wide hidden layers force several column blocks in forward, backward and the solve.
  MADE<double, Dyn, Dyn, Tanh> net(3, 700, 2, 2);
  randomize(net, 3, 0.05);
  std::mt19937_64 gen(4);
  const Index n = 150;
  const Eigen::MatrixXd x = nflow::standard_normal_matrix<double>(3, n, gen);
  const Eigen::MatrixXd c = nflow::standard_normal_matrix<double>(2, n, gen);
  const Eigen::MatrixXd gy = nflow::standard_normal_matrix<double>(6, n, gen);
  const Eigen::MatrixXd y = net.forward(x, c);
  nflow::Vector<double> gp = nflow::Vector<double>::Zero(net.parameter_count());
  const Eigen::MatrixXd gx = net.backward(x, gy, gp, c);
  nflow::Vector<double> gp_cols = nflow::Vector<double>::Zero(net.parameter_count());
  for (Index j = 0; j < n; ++j) {
    const Eigen::VectorXd xj = x.col(j);
    const Eigen::VectorXd cj = c.col(j);
    CHECK(relative_error(net.forward(xj, cj), y.col(j)) < 1e-12);
    const Eigen::VectorXd gxj = net.backward(xj, gy.col(j), gp_cols, cj);
    CHECK(relative_error(gxj, gx.col(j)) < 1e-12);
  }
  CHECK(relative_error(gp_cols, gp) < 1e-12);
}

// ---- errors and allocation ---------------------------------------------------------------------

TEST_CASE("MADE rejects bad sizes, orders and shapes with named errors", "[nn][made][errors]") {
  CHECK_THROWS_AS((MADE<double, Dyn, Dyn, Tanh>(0, 4, 1)), nflow::ParameterError);
  // Outputs per dimension: the fixed ParamsPerDim or, when Dynamic, a given count >= 1.
  CHECK_THROWS_WITH((MADE<double, Dyn, Dyn, Tanh>(3, 4, 1, 0, {}, HiddenDegrees::Sequential, 0, 3)),
                    Catch::Contains("ParamsPerDim = 2, got 3"));
  CHECK_THROWS_WITH((MADE<double, Dyn, Dyn, Tanh, Dyn>(3, 4, 1)),
                    Catch::Contains("given (>= 1) when ParamsPerDim is Dynamic, got -1"));
  CHECK((MADE<double, Dyn, Dyn, Tanh, Dyn>(3, 4, 1, 0, {}, HiddenDegrees::Sequential, 0, 5)
             .out_dim() == 15));
  CHECK_THROWS_AS((MADE<double, 5, 16, Tanh>(4, 16, 1)), nflow::ParameterError);
  CHECK_THROWS_AS((MADE<double, 5, 16, Tanh>(5, 4, 1)), nflow::ParameterError);
  CHECK_THROWS_WITH((MADE<double, Dyn, Dyn, Tanh>(3, 4, 1, 0, Eigen::Vector3i(0, 0, 1))),
                    Catch::Contains("permutation"));
  CHECK_THROWS_AS((MADE<double, Dyn, Dyn, Tanh>(3, 4, 1, 0, Eigen::Vector2i(0, 1))),
                  nflow::ParameterError);
  MADE<double, Dyn, Dyn, Tanh> net(3, 4, 1, 2);
  CHECK_THROWS_AS(net.forward(Eigen::MatrixXd::Zero(3, 2)), nflow::ShapeError);
  CHECK_THROWS_AS(net.forward(Eigen::MatrixXd::Zero(4, 2), Eigen::MatrixXd::Zero(2, 2)),
                  nflow::ShapeError);
  CHECK_THROWS_AS(net.forward(Eigen::MatrixXd::Zero(3, 2), Eigen::MatrixXd::Zero(2, 3)),
                  nflow::ShapeError);
  MADE<double, Dyn, Dyn, Tanh> plain(3, 4, 1);
  CHECK_THROWS_AS(plain.forward(Eigen::MatrixXd::Zero(3, 2), Eigen::MatrixXd::Zero(2, 2)),
                  nflow::ShapeError);
  nflow::Vector<double> gp(plain.parameter_count() + 1);
  CHECK_THROWS_AS(plain.backward(Eigen::MatrixXd::Zero(3, 2), Eigen::MatrixXd::Zero(6, 2), gp),
                  nflow::ShapeError);
}

TEST_CASE("MADE forward of one point with fixed Dim and Hidden does not allocate",
          "[nn][made][alloc]") {
#ifdef NDEBUG
  WARN("NDEBUG is defined: Eigen's malloc check is disabled, this test checks nothing");
#endif
  MADE<double, 5, 16, Tanh> net(5, 16, 3, 2);
  randomize(net, 1, 0.5);
  const Eigen::Matrix<double, 5, 1> x(0.1, -0.2, 0.3, 0.4, -0.5);
  const Eigen::Vector2d c(1.0, -1.0);
  Eigen::Matrix<double, 10, 1> y;
  Eigen::internal::set_is_malloc_allowed(false);
  y = net.forward(x, c);
  Eigen::internal::set_is_malloc_allowed(true);
  CHECK(relative_error(y, naive_forward(net, x, c)) < 1e-13);

  MADE<float, 5, 16, Tanh> netf(5, 16, 2);
  const Eigen::Matrix<float, 5, 1> xf(0.5f, -1.5f, 0.f, 1.f, 2.f);
  Eigen::Matrix<float, 10, 1> yf;
  Eigen::internal::set_is_malloc_allowed(false);
  yf = netf.forward(xf);
  Eigen::internal::set_is_malloc_allowed(true);
  CHECK(yf.isZero(0.0f));
}
