// Tests of nflow/nn/block_network.hpp: nn::BlockNetwork, the conditioner of imported models.
//
// The reference values are independent of the code under test: a per-sample evaluation of the
// documented formulas from the parameters and buffers read back by name, nn::MLP for the
// feed-forward profile, central finite differences for every gradient, and a numerical
// dependence check (perturb one input, see which outputs move) for the connectivity.

#include "nflow/nn/block_network.hpp"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "nflow/core/buffers.hpp"
#include "nflow/core/parameters.hpp"
#include "nflow/nn/mlp.hpp"

namespace {

using nflow::Index;
using nflow::nn::BlockContext;
using nflow::nn::BlockContextMode;
using nflow::nn::BlockNetworkOptions;
using Net = nflow::nn::BlockNetwork<double, nflow::nn::Tanh>;
using Mat = Eigen::MatrixXd;
using Vec = Eigen::VectorXd;

std::string label(const BlockNetworkOptions& o) {
  return "residual=" + std::to_string(o.residual) + " batch_norm=" + std::to_string(o.batch_norm) +
         " masked=" + std::to_string(o.masked) + " context=" + std::to_string(int(o.context)) +
         " block_context=" + std::to_string(int(o.block_context)) +
         " context_dim=" + std::to_string(o.context_dim) +
         " hidden_widths=" + std::to_string(o.hidden_widths.size());
}

/// The unequal hidden widths of the feed-forward cases (H_0, H_1, H_2 for 2 blocks).
const std::vector<Index> unequal_widths = {5, 3, 7};

/// Every option combination that matters, on a small network (in 3, out 4, width 5, 2 blocks);
/// each feed-forward one also with the hidden widths {5, 3, 7}.
std::vector<BlockNetworkOptions> all_combinations() {
  std::vector<BlockNetworkOptions> out;
  for (const bool residual : {true, false}) {
    for (const bool batch_norm : {false, true}) {
      for (const bool masked : {false, true}) {
        for (const BlockContext context :
             {BlockContext::None, BlockContext::InitialLayer, BlockContext::MadeInput}) {
          for (const BlockContextMode block :
               {BlockContextMode::None, BlockContextMode::Additive, BlockContextMode::Gated}) {
            if (!residual && block != BlockContextMode::None) continue;
            const bool conditional =
                context != BlockContext::None || block != BlockContextMode::None;
            out.push_back({.in_dim = 3,
                           .out_dim = 4,
                           .hidden_width = 5,
                           .blocks = 2,
                           .context_dim = conditional ? 2 : 0,
                           .residual = residual,
                           .batch_norm = batch_norm,
                           .masked = masked,
                           .context = context,
                           .block_context = block});
            if (!residual) {
              out.push_back(out.back());
              out.back().hidden_widths = unequal_widths;
            }
          }
        }
      }
    }
  }
  return out;
}

/// Random masks (entries 1 with probability 0.6), in buffer order.
template <typename N>
std::vector<typename N::Matrix> random_masks(const N& net, std::mt19937_64& gen) {
  std::vector<typename N::Matrix> masks;
  std::bernoulli_distribution keep(0.6);
  net.visit_parameters([&](const std::string& name, const auto& t) {
    const bool masked_weight = name.ends_with(".weight") && name != "context.weight" &&
                               name.find(".context.") == std::string::npos &&
                               !name.ends_with("norm0.weight") && !name.ends_with("norm1.weight") &&
                               !name.ends_with("norm.weight");
    if (!masked_weight && name != "initial.context_weight") return;
    typename N::Matrix m(t.rows(), t.cols());
    for (Index i = 0; i < m.size(); ++i) m(i) = keep(gen) ? 1 : 0;
    masks.push_back(m);
  });
  return masks;
}

/// Sets the running statistics to random values (means in (−1, 1), variances in (0.3, 2)).
template <typename N>
void randomise_statistics(N& net, std::mt19937_64& gen) {
  std::uniform_real_distribution<double> u(0.0, 1.0);
  net.visit_buffers([&](const std::string& name, nflow::BufferVector& b) {
    const bool var = name.ends_with(".running_var");
    if (!var && !name.ends_with(".running_mean")) return;
    for (Index i = 0; i < b.size(); ++i)
      b(i) = N::statistic_to_buffer(var ? 0.3 + 1.7 * u(gen) : 2.0 * u(gen) - 1.0);
  });
}

/// A network with every parameter drawn (the last layer too), random batch-norm weights and
/// biases, random statistics and, when masked, random masks.
Net make_net(const BlockNetworkOptions& o, std::uint64_t seed) {
  Net net(o);
  std::mt19937_64 gen(seed);
  if (o.masked) net.set_masks(random_masks(net, gen));
  net.initialize(gen, false);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  net.visit_parameters([&](const std::string& name, Eigen::Ref<Mat> t) {
    if (name.find("norm") != std::string::npos)
      t = t.unaryExpr([&](double v) { return v + 0.5 * u(gen); });
  });
  randomise_statistics(net, gen);
  return net;
}

Mat random_matrix(Index rows, Index cols, std::mt19937_64& gen) {
  return nflow::standard_normal_matrix<double>(rows, cols, gen);
}

// ---- the independent reference: the documented formulas, one sample at a time ----------------

struct Reference {
  BlockNetworkOptions o;
  std::map<std::string, Mat> p;
  std::map<std::string, nflow::BufferVector, std::less<>> buffers;

  explicit Reference(const Net& net) : o(net.options()), buffers(nflow::get_buffers(net)) {
    net.visit_parameters([&](const std::string& name, const auto& t) { p[name] = t; });
  }
  Mat mask(const std::string& name) const {
    const Mat& w = p.at(name + ".weight");
    if (!o.masked) return Mat::Ones(w.rows(), w.cols());
    const nflow::BufferVector& b = buffers.at(name + ".mask");
    return Eigen::Map<const Eigen::Matrix<std::int64_t, -1, -1>>(b.data(), w.rows(), w.cols())
        .cast<double>();
  }
  Vec linear(const std::string& name, const Vec& v) const {
    return p.at(name + ".weight").cwiseProduct(mask(name)) * v + p.at(name + ".bias");
  }
  Vec plain_linear(const std::string& name, const Vec& v) const {
    return p.at(name + ".weight") * v + p.at(name + ".bias");
  }
  Vec statistic(const std::string& name) const {
    const nflow::BufferVector& b = buffers.at(name);
    Vec v(b.size());
    for (Index i = 0; i < b.size(); ++i) v(i) = Net::statistic_from_buffer(b(i));
    return v;
  }
  Vec norm(const std::string& name, const Vec& v) const {
    if (!o.batch_norm) return v;
    const Vec mean = statistic(name + ".running_mean");
    const Vec var = statistic(name + ".running_var");
    Vec out(v.size());
    for (Index i = 0; i < v.size(); ++i) {
      out(i) = (v(i) - mean(i)) / std::sqrt(var(i) + o.batch_norm_eps) * p.at(name + ".weight")(i) +
               p.at(name + ".bias")(i);
    }
    return out;
  }
  static Vec act(const Vec& v) { return v.array().tanh().matrix(); }
  static Vec sigmoid(const Vec& v) { return (1.0 / (1.0 + (-v.array()).exp())).matrix(); }

  Vec operator()(const Vec& x, const Vec& c) const {
    Vec h = p.at("initial.weight").cwiseProduct(mask("initial")) * x + p.at("initial.bias");
    if (o.context == BlockContext::InitialLayer && o.context_dim > 0) {
      Mat cm = Mat::Ones(p.at("initial.context_weight").rows(), o.context_dim);
      if (o.masked) {
        const nflow::BufferVector& b = buffers.at("initial.context_mask");
        cm = Eigen::Map<const Eigen::Matrix<std::int64_t, -1, -1>>(b.data(), cm.rows(), cm.cols())
                 .cast<double>();
      }
      h += p.at("initial.context_weight").cwiseProduct(cm) * c;
    }
    if (o.context == BlockContext::MadeInput) h += act(plain_linear("context", c));
    if (!o.residual) h = act(h);
    for (Index b = 0; b < o.blocks; ++b) {
      const std::string k = "blocks." + std::to_string(b) + ".";
      if (o.residual) {
        Vec t = linear(k + "linear0", act(norm(k + "norm0", h)));
        if (o.block_context == BlockContextMode::Additive) t += plain_linear(k + "context", c);
        t = linear(k + "linear1", act(norm(k + "norm1", t)));
        if (o.block_context == BlockContextMode::Gated)
          t = t.cwiseProduct(sigmoid(plain_linear(k + "context", c)));
        h = h + t;
      } else {
        h = act(linear(k + "linear", norm(k + "norm", h)));
      }
    }
    return linear("final", h);
  }
};

/// L = Σ G ⊙ f(x, c).
template <typename N>
double loss(const N& net, const Mat& x, const Mat& c, const Mat& g) {
  const Mat y = net.context_dim() > 0 ? net.forward(x, c) : net.forward(x);
  return (y.array() * g.array()).sum();
}

/// Checks ∂L/∂θ (added into `grad`) and ∂L/∂x (`gx`) of L = Σ G ⊙ f(x, c) against central
/// differences, entry by entry (relative error ≤ 1e-7).
template <typename N>
void check_finite_differences(N& net, const Mat& x, const Mat& c, const Mat& g, const Vec& grad,
                              const Mat& gx) {
  const Vec theta = nflow::get_parameters(net);
  const double h = 1e-6;
  double worst = 0.0;
  for (Index i = 0; i < theta.size(); ++i) {
    Vec t = theta;
    t(i) += h;
    nflow::set_parameters(net, t);
    const double up = loss(net, x, c, g);
    t(i) -= 2 * h;
    nflow::set_parameters(net, t);
    const double fd = (up - loss(net, x, c, g)) / (2 * h);
    worst = std::max(worst, std::abs(fd - grad(i)) / (1.0 + std::abs(fd)));
  }
  nflow::set_parameters(net, theta);
  CHECK(worst <= 1e-7);
  double worst_x = 0.0;
  for (Index i = 0; i < x.size(); ++i) {
    Mat xp = x;
    xp(i) += h;
    Mat xm = x;
    xm(i) -= h;
    const double fd = (loss(net, xp, c, g) - loss(net, xm, c, g)) / (2 * h);
    worst_x = std::max(worst_x, std::abs(fd - gx(i)) / (1.0 + std::abs(fd)));
  }
  CHECK(worst_x <= 1e-7);
}

}  // namespace

TEST_CASE("BlockNetwork: forward equals the documented formulas for every option combination",
          "[nn][block_network]") {
  std::mt19937_64 gen(1);
  std::uint64_t seed = 100;
  for (const BlockNetworkOptions& o : all_combinations()) {
    INFO(label(o));
    const Net net = make_net(o, seed++);
    const Reference ref(net);
    const Mat x = random_matrix(o.in_dim, 6, gen);
    const Mat c = random_matrix(o.context_dim, 6, gen);
    const Mat y = o.context_dim > 0 ? net.forward(x, c) : net.forward(x);
    for (Index j = 0; j < x.cols(); ++j) {
      const Vec expected = ref(x.col(j), c.col(j));
      CHECK((y.col(j) - expected).cwiseAbs().maxCoeff() <= 1e-12 * (1.0 + expected.norm()));
    }
    // One point, and a recorded pass, give the same numbers.
    Eigen::VectorXd y0;
    if (o.context_dim > 0) {
      net.forward_point_into(x.col(0), y0, c.col(0));
    } else {
      net.forward_point_into(x.col(0), y0);
    }
    CHECK((y0 - y.col(0)).cwiseAbs().maxCoeff() <= 1e-14);
    Net::Tape tape;
    const Mat yr =
        o.context_dim > 0 ? net.forward_recorded(x, tape, c) : net.forward_recorded(x, tape);
    CHECK(yr == y);
    CHECK(tape.cols() == x.cols());
  }
}

TEST_CASE("BlockNetwork: gradients against finite differences for every option combination",
          "[nn][block_network]") {
  std::mt19937_64 gen(2);
  std::uint64_t seed = 200;
  for (const BlockNetworkOptions& o : all_combinations()) {
    INFO(label(o));
    Net net = make_net(o, seed++);
    const Index n = 3;
    const Mat x = random_matrix(o.in_dim, n, gen);
    const Mat c = random_matrix(o.context_dim, n, gen);
    const Mat g = random_matrix(o.out_dim, n, gen);

    Vec grad = Vec::Zero(net.parameter_count());
    const Mat gx = o.context_dim > 0 ? net.backward(x, g, grad, c) : net.backward(x, g, grad);
    Net::Tape tape;
    Vec grad_recorded = Vec::Constant(net.parameter_count(), 1.0);  // accumulated into
    if (o.context_dim > 0) {
      net.forward_recorded(x, tape, c);
      CHECK((net.backward_recorded(tape, g, grad_recorded, c) - gx).cwiseAbs().maxCoeff() <= 1e-14);
    } else {
      net.forward_recorded(x, tape);
      CHECK((net.backward_recorded(tape, g, grad_recorded) - gx).cwiseAbs().maxCoeff() <= 1e-14);
    }
    CHECK((grad_recorded.array() - 1.0 - grad.array()).abs().maxCoeff() <= 1e-13);

    check_finite_differences(net, x, c, g, grad, gx);
  }
}

TEST_CASE("BlockNetwork: masked weight entries get exactly zero gradient and have no effect",
          "[nn][block_network]") {
  std::mt19937_64 gen(3);
  for (const bool residual : {true, false}) {
    const BlockNetworkOptions o{.in_dim = 3,
                                .out_dim = 4,
                                .hidden_width = 5,
                                .blocks = 2,
                                .context_dim = 2,
                                .residual = residual,
                                .batch_norm = true,
                                .masked = true,
                                .context = BlockContext::InitialLayer};
    Net net = make_net(o, 7);
    const Mat x = random_matrix(3, 4, gen);
    const Mat c = random_matrix(2, 4, gen);
    const Mat y = net.forward(x, c);
    // Write large values into every masked entry: nothing changes.
    const auto buffers = nflow::get_buffers(net);
    std::vector<bool> masked(std::size_t(net.parameter_count()), false);
    Index offset = 0;
    Index masked_entries = 0;
    net.visit_parameters([&](const std::string& name, Eigen::Ref<Mat> t) {
      std::string mask_name;
      if (name == "initial.context_weight") {
        mask_name = "initial.context_mask";
      } else if (name.ends_with(".weight") && name.find("norm") == std::string::npos) {
        mask_name = name.substr(0, name.size() - 6) + "mask";
      }
      const auto it = buffers.find(mask_name);
      if (it != buffers.end()) {
        for (Index i = 0; i < t.size(); ++i) {
          if (it->second(i) == 0) {
            t(i % t.rows(), i / t.rows()) = 1e3;
            masked[std::size_t(offset + i)] = true;
            ++masked_entries;
          }
        }
      }
      offset += t.size();
    });
    REQUIRE(masked_entries > 0);
    CHECK(net.forward(x, c) == y);
    Vec grad = Vec::Zero(net.parameter_count());
    net.backward(x, random_matrix(4, 4, gen), grad, c);
    for (Index i = 0; i < grad.size(); ++i) {
      if (masked[std::size_t(i)]) CHECK(grad(i) == 0.0);
    }
  }
}

TEST_CASE("BlockNetwork: a feed-forward network equals nn::MLP with the same weights",
          "[nn][block_network]") {
  // MLP with L hidden layers = feed-forward BlockNetwork with L − 1 blocks (zuko's MLP). Hidden
  // widths H_0 … H_B of different values: the MLP of the widest width with each layer's weight
  // and bias zero outside its H_{l+1} × H_l corner (a unit with zero weights and bias is
  // tanh(0) = 0 and feeds nothing).
  using MLP =
      nflow::nn::MLP<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::Dynamic, nflow::nn::Tanh>;
  const Index layers = 3;
  for (const std::vector<Index>& widths : {std::vector<Index>{}, unequal_widths}) {
    INFO("hidden_widths of " << widths.size());
    Net net({.in_dim = 3,
             .out_dim = 4,
             .hidden_width = widths.empty() ? 6 : 0,
             .hidden_widths = widths,
             .blocks = layers - 1,
             .context_dim = 2,
             .residual = false});
    const Index widest = *std::max_element(net.hidden_widths().begin(), net.hidden_widths().end());
    MLP mlp(3, 4, widest, layers, 2);
    mlp.initialize(5, false);
    const auto mlp_name = [&](const std::string& name) {
      if (name.starts_with("initial.")) return "layers.0." + name.substr(8);
      if (name.starts_with("final."))
        return "layers." + std::to_string(layers) + "." + name.substr(6);
      // "blocks.<b>.linear.weight" -> "layers.<b+1>.weight"
      const std::size_t dot = name.find('.', 7);
      const int b = std::stoi(name.substr(7, dot - 7));
      return "layers." + std::to_string(b + 1) + name.substr(name.rfind('.'));
    };
    std::map<std::string, Mat> corner;  // by the MLP's names: the network's tensor shapes
    net.visit_parameters(
        [&](const std::string& name, const auto& t) { corner[mlp_name(name)] = t; });
    std::map<std::string, Mat> by_name;
    mlp.visit_parameters([&](const std::string& name, auto&& t) {
      const Mat& shape = corner.at(name);
      const Mat used = t.topLeftCorner(shape.rows(), shape.cols());
      t.setZero();
      t.topLeftCorner(shape.rows(), shape.cols()) = used;
      by_name[name] = used;
    });
    net.visit_parameters(
        [&](const std::string& name, Eigen::Ref<Mat> t) { t = by_name.at(mlp_name(name)); });
    std::mt19937_64 gen(4);
    const Mat x = random_matrix(3, 10, gen);
    const Mat c = random_matrix(2, 10, gen);
    CHECK((net.forward(x, c) - mlp.forward(x, c)).cwiseAbs().maxCoeff() <= 1e-13);
    if (widths.empty()) {
      CHECK(net.parameter_count() == mlp.parameter_count());
    } else {
      // [W_in C_in] b_in, then block 0 (3 × 5), block 1 (7 × 3), final (4 × 7).
      CHECK(net.parameter_count() == 5 * 5 + 5 + 3 * 5 + 3 + 7 * 3 + 7 + 4 * 7 + 4);
    }
  }
}

TEST_CASE("BlockNetwork: connectivity matches a numerical dependence check",
          "[nn][block_network]") {
  std::mt19937_64 gen(5);
  // Residual and feed-forward (the latter also with hidden widths {5, 3, 7}), masked or not.
  for (const std::vector<Index>& widths : {std::vector<Index>{}, unequal_widths}) {
    for (const bool residual : {true, false}) {
      if (residual && !widths.empty()) continue;
      for (const bool masked : {true, false}) {
        const BlockNetworkOptions o{.in_dim = 5,
                                    .out_dim = 6,
                                    .hidden_width = widths.empty() ? 4 : 0,
                                    .hidden_widths = widths,
                                    .blocks = 2,
                                    .residual = residual,
                                    .batch_norm = true,
                                    .masked = masked};
        INFO(label(o));
        Net net(o);
        std::mt19937_64 mask_gen(11);
        if (masked) {
          // Sparse masks, so that the pattern is far from full.
          auto masks = random_masks(net, mask_gen);
          std::bernoulli_distribution keep(0.5);
          for (auto& m : masks) m = m.unaryExpr([&](double v) { return keep(mask_gen) ? v : 0.0; });
          net.set_masks(masks);
        }
        net.initialize(gen, false);
        const Net::Connectivity structural = net.connectivity();
        REQUIRE(structural.rows() == 6);
        REQUIRE(structural.cols() == 5);
        Net::Connectivity numerical(6, 5);
        const Vec x = random_matrix(5, 1, gen);
        const Vec y = net.forward(x);
        for (Index i = 0; i < 5; ++i) {
          Vec xp = x;
          xp(i) += 0.5;
          numerical.col(i) = ((net.forward(xp) - y).array().abs() > 1e-12).matrix();
        }
        CHECK(numerical == structural);
        if (!masked) CHECK(structural.all());
        if (masked) CHECK_FALSE(structural.all());
        CHECK(structural.any());
      }
    }
  }
}

TEST_CASE("BlockNetwork: parameter and buffer names, counts and initialisation",
          "[nn][block_network]") {
  Net net({.in_dim = 3,
           .out_dim = 2,
           .hidden_width = 4,
           .blocks = 1,
           .context_dim = 2,
           .residual = true,
           .batch_norm = true,
           .masked = true,
           .context = BlockContext::MadeInput,
           .block_context = BlockContextMode::Additive});
  const std::vector<std::string> expected = {"initial.weight",
                                             "initial.bias",
                                             "context.weight",
                                             "context.bias",
                                             "blocks.0.linear0.weight",
                                             "blocks.0.linear0.bias",
                                             "blocks.0.linear1.weight",
                                             "blocks.0.linear1.bias",
                                             "blocks.0.context.weight",
                                             "blocks.0.context.bias",
                                             "blocks.0.norm0.weight",
                                             "blocks.0.norm0.bias",
                                             "blocks.0.norm1.weight",
                                             "blocks.0.norm1.bias",
                                             "final.weight",
                                             "final.bias"};
  CHECK(nflow::parameter_names(net) == expected);
  CHECK(net.parameter_count() == 12 + 4 + 8 + 4 + 16 + 4 + 16 + 4 + 8 + 4 + 4 * 4 + 8 + 2);
  const std::vector<std::string> buffers = {"initial.mask",
                                            "blocks.0.linear0.mask",
                                            "blocks.0.linear1.mask",
                                            "blocks.0.norm0.running_mean",
                                            "blocks.0.norm0.running_var",
                                            "blocks.0.norm1.running_mean",
                                            "blocks.0.norm1.running_var",
                                            "final.mask"};
  CHECK(nflow::buffer_names(net) == buffers);

  Net ff({.in_dim = 3,
          .out_dim = 2,
          .hidden_width = 4,
          .blocks = 1,
          .context_dim = 2,
          .batch_norm = true,
          .masked = true});
  CHECK(nflow::parameter_names(ff) ==
        std::vector<std::string>{"initial.weight", "initial.context_weight", "initial.bias",
                                 "blocks.0.linear.weight", "blocks.0.linear.bias",
                                 "blocks.0.norm.weight", "blocks.0.norm.bias", "final.weight",
                                 "final.bias"});
  CHECK(nflow::buffer_names(ff) ==
        std::vector<std::string>{"initial.mask", "initial.context_mask", "blocks.0.linear.mask",
                                 "blocks.0.norm.running_mean", "blocks.0.norm.running_var",
                                 "final.mask"});

  // Hidden widths {5, 3, 7}: block b's norm has H_b units and its linear is H_{b+1} × H_b; each
  // linear is drawn with the bound 1/√(its input width).
  Net shaped({.in_dim = 3,
              .out_dim = 2,
              .hidden_widths = unequal_widths,
              .blocks = 2,
              .context_dim = 2,
              .batch_norm = true,
              .masked = true});
  shaped.initialize(3, false);
  std::vector<std::string> shapes;
  shaped.visit_parameters([&](const std::string& name, const auto& t) {
    shapes.push_back(name + " " + std::to_string(t.rows()) + "x" + std::to_string(t.cols()));
    const double bound = name.starts_with("blocks.0.linear")   ? 1 / std::sqrt(5.0)
                         : name.starts_with("blocks.1.linear") ? 1 / std::sqrt(3.0)
                         : name.starts_with("final.")          ? 1 / std::sqrt(7.0)
                                                               : 1.0;
    INFO(name);
    CHECK(t.cwiseAbs().maxCoeff() <= bound);
    if (name == "blocks.1.linear.weight") CHECK(t.cwiseAbs().maxCoeff() > 1 / std::sqrt(7.0));
  });
  CHECK(shapes == std::vector<std::string>{"initial.weight 5x3", "initial.context_weight 5x2",
                                           "initial.bias 5x1", "blocks.0.linear.weight 3x5",
                                           "blocks.0.linear.bias 3x1", "blocks.0.norm.weight 5x1",
                                           "blocks.0.norm.bias 5x1", "blocks.1.linear.weight 7x3",
                                           "blocks.1.linear.bias 7x1", "blocks.1.norm.weight 3x1",
                                           "blocks.1.norm.bias 3x1", "final.weight 2x7",
                                           "final.bias 2x1"});
  const auto shaped_buffers = nflow::get_buffers(shaped);
  CHECK(shaped_buffers.at("blocks.0.norm.running_var").size() == 5);
  CHECK(shaped_buffers.at("blocks.1.norm.running_mean").size() == 3);
  CHECK(shaped_buffers.at("blocks.1.linear.mask").size() == 21);
  CHECK_THROWS_WITH(shaped.visit_buffers([](const std::string& name, nflow::BufferVector& b) {
    if (name == "blocks.1.norm.running_mean") b.setZero(5);
  }),
                    Catch::Contains("expected 3"));

  // Initialisation: PyTorch bounds, batch norm 1/0, a zero last layer, masked entries 0.
  std::mt19937_64 gen(6);
  std::vector<Mat> masks = random_masks(ff, gen);
  ff.set_masks(masks);
  ff.initialize(9, true);
  ff.visit_parameters([&](const std::string& name, const auto& t) {
    INFO(name);
    if (name.starts_with("initial.")) CHECK(t.cwiseAbs().maxCoeff() <= 1.0 / std::sqrt(5.0));
    if (name.starts_with("blocks.0.linear")) CHECK(t.cwiseAbs().maxCoeff() <= 0.5);
    if (name == "blocks.0.norm.weight") CHECK(t.isOnes());
    if (name == "blocks.0.norm.bias") CHECK(t.isZero());
    if (name.starts_with("final.")) CHECK(t.isZero());
    if (name == "initial.weight") {
      CHECK((t.array() * (1.0 - masks[0].array())).isZero());
      CHECK(t.cwiseAbs().maxCoeff() > 0.0);
    }
  });
  const auto stats = nflow::get_buffers(ff);
  CHECK(Net::statistic_from_buffer(stats.at("blocks.0.norm.running_var")(0)) == 1.0);
  CHECK(Net::statistic_from_buffer(stats.at("blocks.0.norm.running_mean")(0)) == 0.0);
  std::mt19937_64 gen2(7);
  CHECK(ff.forward(random_matrix(3, 5, gen2), random_matrix(2, 5, gen2)).isZero());
  // The same seed gives the same parameters.
  Net again(ff.options());
  again.set_masks(masks);
  again.initialize(9, true);
  CHECK(nflow::get_parameters(again) == nflow::get_parameters(ff));
}

TEST_CASE("BlockNetwork: buffer writes are validated and leave the network unchanged on error",
          "[nn][block_network]") {
  const BlockNetworkOptions o{.in_dim = 3,
                              .out_dim = 2,
                              .hidden_width = 4,
                              .blocks = 1,
                              .residual = true,
                              .batch_norm = true,
                              .masked = true};
  Net net = make_net(o, 8);
  std::mt19937_64 gen(8);
  const Mat x = random_matrix(3, 4, gen);
  const Mat y = net.forward(x);
  const auto before = nflow::get_buffers(net);
  const auto rejects = [&](const std::string& target, auto&& edit, const std::string& message) {
    INFO(target);
    CHECK_THROWS_WITH(net.visit_buffers([&](const std::string& name, nflow::BufferVector& b) {
      if (name == target) edit(b);
    }),
                      Catch::Contains(target) && Catch::Contains(message));
    CHECK(nflow::get_buffers(net) == before);
    CHECK(net.forward(x) == y);
  };
  rejects(
      "blocks.0.linear0.mask", [](nflow::BufferVector& b) { b(3) = 2; }, "not 0 or 1");
  rejects(
      "final.mask", [](nflow::BufferVector& b) { b.resize(3); }, "entries");
  rejects(
      "blocks.0.norm1.running_var",
      [](nflow::BufferVector& b) { b(1) = Net::statistic_to_buffer(-0.5); }, ">= 0");
  rejects(
      "blocks.0.norm0.running_mean",
      [](nflow::BufferVector& b) { b(0) = Net::statistic_to_buffer(std::nan("")); }, "finite");
  rejects(
      "blocks.0.norm0.running_var",
      [](nflow::BufferVector& b) {
        b(0) = Net::statistic_to_buffer(std::numeric_limits<double>::infinity());
      },
      "finite");
  rejects(
      "blocks.0.norm0.running_mean", [](nflow::BufferVector& b) { b.resize(5); }, "entries");

  // A valid write is applied: a zero variance is allowed (ε keeps BN defined), and changes y.
  net.visit_buffers([&](const std::string& name, nflow::BufferVector& b) {
    if (name == "blocks.0.norm0.running_var") b(0) = Net::statistic_to_buffer(0.0);
  });
  CHECK(net.forward(x) != y);
  // Round trip through set_buffers.
  Net copy(o);
  nflow::set_buffers(copy, nflow::get_buffers(net));
  CHECK(nflow::get_buffers(copy) == nflow::get_buffers(net));

  // set_masks: count, shape, entries, unmasked network.
  std::vector<Mat> masks = random_masks(net, gen);
  masks.pop_back();
  CHECK_THROWS_AS(net.set_masks(masks), nflow::ParameterError);
  masks = random_masks(net, gen);
  masks[1] = Mat::Ones(2, 2);
  CHECK_THROWS_WITH(net.set_masks(masks), Catch::Contains("blocks.0.linear0.mask"));
  masks = random_masks(net, gen);
  masks[0](0, 0) = 0.5;
  CHECK_THROWS_WITH(net.set_masks(masks), Catch::Contains("initial.mask"));
  Net unmasked({.in_dim = 3, .out_dim = 2, .hidden_width = 4});
  CHECK_THROWS_WITH(unmasked.set_masks({}), Catch::Contains("masked = false"));
  CHECK(nflow::buffer_names(unmasked).empty());
}

TEST_CASE("BlockNetwork: option and shape errors", "[nn][block_network]") {
  using nflow::ParameterError;
  using nflow::ShapeError;
  CHECK_THROWS_WITH(Net({.in_dim = 3, .out_dim = 0, .hidden_width = 4}),
                    Catch::Contains("out_dim"));
  CHECK_THROWS_WITH(Net({.in_dim = 3, .out_dim = 2, .hidden_width = 0}),
                    Catch::Contains("hidden_width"));
  CHECK_THROWS_WITH(Net({.in_dim = 3, .out_dim = 2, .hidden_width = 4, .blocks = -1}),
                    Catch::Contains("blocks"));
  CHECK_THROWS_WITH(Net({.in_dim = 3,
                         .out_dim = 2,
                         .hidden_width = 4,
                         .context_dim = 2,
                         .residual = false,
                         .block_context = BlockContextMode::Gated}),
                    Catch::Contains("feed-forward"));
  CHECK_THROWS_AS(
      Net({.in_dim = 3, .out_dim = 2, .hidden_width = 4, .context = BlockContext::MadeInput}),
      ParameterError);
  CHECK_THROWS_WITH(Net({.in_dim = 3,
                         .out_dim = 2,
                         .hidden_width = 4,
                         .context_dim = 2,
                         .context = BlockContext::None}),
                    Catch::Contains("uses the context"));
  CHECK_THROWS_AS(Net({.in_dim = 3, .out_dim = 2, .hidden_width = 4, .batch_norm_eps = 0.0}),
                  ParameterError);
  // hidden_widths: feed-forward only, blocks + 1 entries >= 1, hidden_width 0 or the first.
  const auto widths = [](std::vector<Index> w, Index hidden_width = 0, bool residual = false) {
    return BlockNetworkOptions{.in_dim = 3,
                               .out_dim = 2,
                               .hidden_width = hidden_width,
                               .hidden_widths = std::move(w),
                               .blocks = 2,
                               .residual = residual};
  };
  CHECK_THROWS_WITH(Net(widths({5, 3, 7}, 0, true)),
                    Catch::Contains("hidden_widths") && Catch::Contains("residual"));
  CHECK_THROWS_WITH(Net(widths({5, 3, 7}, 5, true)), Catch::Contains("hidden_widths"));
  CHECK_THROWS_WITH(Net(widths({5, 3})), Catch::Contains("hidden_widths must have blocks + 1 = 3"));
  CHECK_THROWS_WITH(Net(widths({5, 3, 7, 2})), Catch::Contains("got 4"));
  CHECK_THROWS_WITH(Net(widths({5, 0, 7})), Catch::Contains("hidden_widths[1] must be >= 1"));
  CHECK_THROWS_WITH(Net(widths({5, 3, -2})), Catch::Contains("hidden_widths[2]"));
  CHECK_THROWS_WITH(Net(widths({5, 3, 7}, 3)),
                    Catch::Contains("hidden_width must be 0 or hidden_widths[0] = 5"));
  const Net unequal(widths({5, 3, 7}, 5));
  CHECK(unequal.hidden_width() == 5);
  CHECK(unequal.hidden_widths() == std::vector<Index>{5, 3, 7});
  CHECK(Net(widths({}, 4)).hidden_widths() == std::vector<Index>{4, 4, 4});

  const Net net = make_net({.in_dim = 3,
                            .out_dim = 2,
                            .hidden_width = 4,
                            .blocks = 1,
                            .context_dim = 2,
                            .residual = true,
                            .block_context = BlockContextMode::Gated},
                           9);
  const Mat x = Mat::Ones(3, 5);
  const Mat c = Mat::Ones(2, 5);
  const Mat g = Mat::Ones(2, 5);
  Vec grad = Vec::Zero(net.parameter_count());
  CHECK_THROWS_WITH(net.forward(Mat::Ones(4, 5), c),
                    Catch::Contains("3 rows") && Catch::Contains("4 x 5"));
  CHECK_THROWS_WITH(net.forward(x), Catch::Contains("context_dim = 2"));
  CHECK_THROWS_WITH(net.forward(x, Mat::Ones(3, 5)), Catch::Contains("context"));
  CHECK_THROWS_WITH(net.forward(x, Mat::Ones(2, 4)), Catch::Contains("5 columns"));
  CHECK_THROWS_AS(net.backward(x, Mat::Ones(3, 5), grad, c), ShapeError);
  CHECK_THROWS_AS(net.backward(x, Mat::Ones(2, 4), grad, c), ShapeError);
  Vec short_grad = Vec::Zero(net.parameter_count() - 1);
  CHECK_THROWS_WITH(net.backward(x, g, short_grad, c), Catch::Contains("grad_params"));
  Eigen::VectorXd y;
  CHECK_THROWS_AS(net.forward_point_into(x, y, c), ShapeError);
  Net::Tape tape;
  CHECK_THROWS_AS(net.backward_recorded(tape, g, grad, c), ShapeError);
  CHECK_THROWS_AS(net.forward_recorded(x, tape, Mat::Ones(2, 4)), ShapeError);
  CHECK(tape.cols() == 0);  // unchanged by the failed call
  net.forward_recorded(x, tape, c);
  CHECK_THROWS_AS(net.backward_recorded(tape, Mat::Ones(2, 4), grad, c), ShapeError);
  CHECK_THROWS_AS(net.backward_recorded(tape, g, grad, Mat::Ones(2, 4)), ShapeError);
  const Net other({.in_dim = 3, .out_dim = 2, .hidden_width = 4, .blocks = 2});
  Vec other_grad = Vec::Zero(other.parameter_count());
  CHECK_THROWS_WITH(other.backward_recorded(tape, g, other_grad), Catch::Contains("tape"));
  // Same sizes, other options (no gate): the tape lacks the gate's values.
  const Net additive({.in_dim = 3,
                      .out_dim = 2,
                      .hidden_width = 4,
                      .blocks = 1,
                      .context_dim = 2,
                      .residual = true,
                      .block_context = BlockContextMode::Additive});
  Net::Tape additive_tape;
  additive.forward_recorded(x, additive_tape, c);
  CHECK_THROWS_WITH(net.backward_recorded(additive_tape, g, grad, c), Catch::Contains("tape"));
  // Same in, out and blocks, other hidden widths: the tape's hidden values have other rows.
  Net::Tape unequal_tape;
  unequal.forward_recorded(x, unequal_tape);
  const Net narrower(widths({5, 4, 7}));
  Vec narrower_grad = Vec::Zero(narrower.parameter_count());
  Vec unequal_grad = Vec::Zero(unequal.parameter_count());
  CHECK_NOTHROW(unequal.backward_recorded(unequal_tape, g, unequal_grad));
  CHECK_THROWS_WITH(narrower.backward_recorded(unequal_tape, g, narrower_grad),
                    Catch::Contains("tape"));
}

TEST_CASE("BlockNetwork: large batches (several blocks of columns) and NaN columns",
          "[nn][block_network]") {
  const BlockNetworkOptions o{.in_dim = 3,
                              .out_dim = 2,
                              .hidden_width = 5,
                              .blocks = 2,
                              .context_dim = 2,
                              .residual = true,
                              .batch_norm = true,
                              .masked = true,
                              .context = BlockContext::MadeInput,
                              .block_context = BlockContextMode::Additive};
  const Net net = make_net(o, 10);
  std::mt19937_64 gen(10);
  const Index n = 1500;  // more than one block of columns
  Mat x = random_matrix(3, n, gen);
  const Mat c = random_matrix(2, n, gen);
  const Mat g = random_matrix(2, n, gen);
  x(1, 700) = std::numeric_limits<double>::quiet_NaN();
  const Mat y = net.forward(x, c);
  for (Index j : {Index(0), Index(699), Index(700), Index(701), n - 1}) {
    Eigen::VectorXd yj;
    net.forward_point_into(x.col(j), yj, c.col(j));
    if (j == 700) {
      CHECK(yj.array().isNaN().all());
      CHECK(y.col(j).array().isNaN().all());
    } else {
      CHECK((yj - y.col(j)).cwiseAbs().maxCoeff() <= 1e-14);
    }
  }
  CHECK(y.leftCols(700).allFinite());
  CHECK(y.rightCols(n - 701).allFinite());
  // Block-by-block backward equals one recorded pass (NaN column left out of the sums).
  x(1, 700) = 0.25;
  Vec grad = Vec::Zero(net.parameter_count());
  const Mat gx = net.backward(x, g, grad, c);
  Net::Tape tape;
  net.forward_recorded(x, tape, c);
  Vec grad_recorded = Vec::Zero(net.parameter_count());
  const Mat gx_recorded = net.backward_recorded(tape, g, grad_recorded, c);
  CHECK((gx - gx_recorded).cwiseAbs().maxCoeff() <= 1e-13);
  CHECK((grad - grad_recorded).cwiseAbs().maxCoeff() <= 1e-10 * (1.0 + grad.cwiseAbs().maxCoeff()));
}

TEST_CASE("BlockNetwork: the SiLU path (derivative from the pre-activation)",
          "[nn][block_network]") {
  using NetS = nflow::nn::BlockNetwork<double, nflow::nn::SiLU>;
  for (const bool residual : {true, false}) {
    NetS net({.in_dim = 2,
              .out_dim = 3,
              .hidden_width = 4,
              .blocks = 2,
              .context_dim = 2,
              .residual = residual,
              .batch_norm = true,
              .context = BlockContext::MadeInput});
    std::mt19937_64 gen(12);
    net.initialize(gen, false);
    randomise_statistics(net, gen);
    const Mat x = random_matrix(2, 3, gen);
    const Mat c = random_matrix(2, 3, gen);
    const Mat g = random_matrix(3, 3, gen);
    Vec grad = Vec::Zero(net.parameter_count());
    const Mat gx = net.backward(x, g, grad, c);
    check_finite_differences(net, x, c, g, grad, gx);
    NetS::Tape tape;
    net.forward_recorded(x, tape, c);
    Vec grad_recorded = Vec::Zero(net.parameter_count());
    CHECK((net.backward_recorded(tape, g, grad_recorded, c) - gx).cwiseAbs().maxCoeff() <= 1e-14);
    CHECK((grad_recorded - grad).cwiseAbs().maxCoeff() <= 1e-13);
  }
}

TEST_CASE("BlockNetwork: float agrees with double", "[nn][block_network]") {
  const BlockNetworkOptions o{.in_dim = 3,
                              .out_dim = 2,
                              .hidden_width = 6,
                              .blocks = 2,
                              .context_dim = 2,
                              .residual = true,
                              .batch_norm = true,
                              .block_context = BlockContextMode::Gated};
  Net d(o);
  nflow::nn::BlockNetwork<float, nflow::nn::Tanh> f(o);
  d.initialize(13, false);
  std::mt19937_64 gen(13);
  randomise_statistics(d, gen);
  nflow::set_parameters(f, nflow::get_parameters(d).cast<float>());
  nflow::set_buffers(f, nflow::get_buffers(d));
  const Mat x = random_matrix(3, 7, gen);
  const Mat c = random_matrix(2, 7, gen);
  const Mat g = random_matrix(2, 7, gen);
  const Mat yd = d.forward(x, c);
  const Eigen::MatrixXf yf = f.forward(x.cast<float>(), c.cast<float>());
  CHECK((yf.cast<double>() - yd).cwiseAbs().maxCoeff() <= 1e-5 * (1.0 + yd.cwiseAbs().maxCoeff()));
  Vec gd = Vec::Zero(d.parameter_count());
  Eigen::VectorXf gf = Eigen::VectorXf::Zero(f.parameter_count());
  const Mat gxd = d.backward(x, g, gd, c);
  const Eigen::MatrixXf gxf = f.backward(x.cast<float>(), g.cast<float>(), gf, c.cast<float>());
  CHECK((gxf.cast<double>() - gxd).cwiseAbs().maxCoeff() <=
        1e-4 * (1.0 + gxd.cwiseAbs().maxCoeff()));
  CHECK((gf.cast<double>() - gd).cwiseAbs().maxCoeff() <= 1e-4 * (1.0 + gd.cwiseAbs().maxCoeff()));
}
