// Tests of nflow/nn/conv.hpp (nn::PeriodicConvNet) and the conv-conditioned couplings of
// nflow/bijectors/coupling.hpp (ConvAffineCoupling, ConvScaleShiftCoupling,
// conv_checkerboard_coupling).
//
// The references are independent of the code under test: a direct periodic convolution written
// here from the documented formula (loops over sites, taps and channels with explicit modular
// indices), central finite differences for every gradient, the law harness for the coupling, and
// lattice shifts for translation equivariance. Heavy checks in double with SiLU (smooth, and its
// derivative needs the pre-activations: the tape's second path); float with ReLU is a smoke test.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <nflow/bijectors/coupling.hpp>
#include <nflow/core/parameters.hpp>
#include <nflow/core/random.hpp>
#include <nflow/nn/conv.hpp>
#include <nflow/testing/bijector_laws.hpp>
#include <random>
#include <string>
#include <vector>

#include "support/randomized.hpp"
#include "support/reference_activations.hpp"

using namespace nflow;

namespace {

using Net = nn::PeriodicConvNet<double, nn::SiLU>;
using Layer = ConvAffineCoupling<double, nn::SiLU>;
using Mat = Eigen::MatrixXd;

Mat normals(Index rows, Index cols, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  return standard_normal_matrix<double>(rows, cols, gen);
}

/// The network's parameters as named tensors (read through visit_parameters).
std::vector<Mat> tensors(const Net& net) {
  std::vector<Mat> out;
  net.visit_parameters([&](const std::string&, const auto& t) { out.push_back(t); });
  return out;
}

/// The documented forward pass, written directly: one sample at a time, the field as
/// [channel][site], each convolution as four nested loops with explicit periodic indices.
Mat naive_forward(const Net& net, const CouplingMask& mask, const Mat& xa, const Mat& ctx) {
  const Index R = net.rows(), C = net.cols(), ch = net.channels(), K = net.kernel_size();
  const Index S = R * C, h = K / 2;
  const std::vector<Mat> t = tensors(net);
  const Index nt = Index(mask.transformed().size());
  const Index P = net.out_dim() / nt;
  Mat y(net.out_dim(), xa.cols());
  for (Index n = 0; n < xa.cols(); ++n) {
    // The first layer's input: field channels, mask channel, context channels.
    Mat a = Mat::Zero(ch + 1 + net.context_dim(), S);
    for (std::size_t i = 0; i < mask.conditioning().size(); ++i) {
      const Index f = mask.conditioning()[i];
      a(f % ch, f / ch) = xa(Index(i), n);
    }
    for (Index s = 0; s < S; ++s) {
      a(ch, s) = mask.is_transformed(s * ch) ? 0.0 : 1.0;
      for (Index k = 0; k < net.context_dim(); ++k) a(ch + 1 + k, s) = ctx(k, n);
    }
    for (Index layer = 0; layer <= net.hidden_layers(); ++layer) {
      const Mat& w = t[std::size_t(2 * layer)];
      const Mat& b = t[std::size_t(2 * layer + 1)];
      const Index cin = a.rows();
      Mat out(w.rows(), S);
      for (Index o = 0; o < w.rows(); ++o)
        for (Index i = 0; i < R; ++i)
          for (Index j = 0; j < C; ++j) {
            double v = b(o, 0);
            for (Index u = 0; u < K; ++u)
              for (Index q = 0; q < K; ++q)
                for (Index c = 0; c < cin; ++c) {
                  const Index ii = (i + u - h + 10 * R) % R, jj = (j + q - h + 10 * C) % C;
                  v += w(o, (u * K + q) * cin + c) * a(c, ii * C + jj);
                }
            out(o, i * C + j) =
                layer < net.hidden_layers() ? test_reference::scalar_activation<nn::SiLU>(v) : v;
          }
      a = out;
    }
    for (Index bb = 0; bb < nt; ++bb) {
      const Index f = mask.transformed()[std::size_t(bb)];
      for (Index p = 0; p < P; ++p) y(p * nt + bb, n) = a(p * ch + f % ch, f / ch);
    }
  }
  return y;
}

/// Central difference of a scalar function of one coordinate.
template <typename F>
double central(F&& f, double h = 1e-6) {
  return (f(h) - f(-h)) / (2 * h);
}

/// A field's copy shifted by (a, b) on the rows × cols torus: out(i, j) = in(i − a, j − b).
Mat shift(const Mat& x, Index rows, Index cols, Index a, Index b) {
  Mat out(x.rows(), x.cols());
  for (Index i = 0; i < rows; ++i)
    for (Index j = 0; j < cols; ++j)
      out.row(((i + a) % rows) * cols + (j + b) % cols) = x.row(i * cols + j);
  return out;
}

}  // namespace

TEST_CASE("PeriodicConvNet: forward equals a direct periodic convolution", "[nn][conv][forward]") {
  struct Case {
    Index rows, cols, channels, hidden, layers, kernel, context;
  };
  for (const Case c :
       {Case{4, 6, 2, 3, 2, 3, 2}, Case{6, 6, 1, 4, 0, 5, 0}, Case{5, 3, 1, 2, 1, 3, 1}}) {
    CAPTURE(c.rows, c.cols, c.channels, c.kernel);
    // A per-site mask that is not a checkerboard (open 5 x 3 lattices too): every third site.
    std::vector<bool> sites(std::size_t(c.rows * c.cols));
    for (std::size_t s = 0; s < sites.size(); ++s) sites[s] = s % 3 != 1;
    const CouplingMask mask = CouplingMask::per_site(CouplingMask(sites), c.channels);
    Net net(c.rows, c.cols, mask, 2,
            {.channels = c.channels,
             .hidden_channels = c.hidden,
             .hidden_layers = c.layers,
             .kernel_size = c.kernel,
             .context_dim = c.context,
             .seed = 4});
    net.initialize(5, false);
    const Index n = 70;  // more than one block of samples for the small lattices? (block >= 1)
    const Mat xa = normals(net.in_dim(), n, 6);
    const Mat ctx = normals(c.context, n, 7);
    const Mat ref = naive_forward(net, mask, xa, ctx);
    const Mat y = c.context > 0 ? net.forward(xa, ctx) : net.forward(xa);
    CHECK((y - ref).cwiseAbs().maxCoeff() < 1e-12 * (1 + ref.cwiseAbs().maxCoeff()));
    Net::Tape tape;
    const Mat yr =
        c.context > 0 ? net.forward_recorded(xa, tape, ctx) : net.forward_recorded(xa, tape);
    CHECK((yr - ref).cwiseAbs().maxCoeff() < 1e-12 * (1 + ref.cwiseAbs().maxCoeff()));
    // One point alone gives its column of the batch.
    const Mat one = net.forward(xa.col(3), ctx.col(3));
    CHECK((one - ref.col(3)).cwiseAbs().maxCoeff() < 1e-12 * (1 + ref.cwiseAbs().maxCoeff()));
  }
}

TEST_CASE("PeriodicConvNet: backward against finite differences (parameters, inputs, context)",
          "[nn][conv][backward]") {
  const Index rows = 4, cols = 6, ch = 2, ctx_dim = 2, n = 3;
  const CouplingMask mask = CouplingMask::per_site(CouplingMask::checkerboard(rows, cols), ch);
  Net net(rows, cols, mask, 2,
          {.channels = ch, .hidden_channels = 3, .hidden_layers = 2, .context_dim = ctx_dim});
  net.initialize(11, false);
  const Mat xa = normals(net.in_dim(), n, 12);
  const Mat ctx = normals(ctx_dim, n, 13);
  const Mat g = normals(net.out_dim(), n, 14);
  Net::Tape tape;
  net.forward_recorded(xa, tape, ctx);
  Eigen::VectorXd gp = Eigen::VectorXd::Constant(net.parameter_count(), 0.25);  // added into
  ContextGradient<double> gc = ContextGradient<double>::Constant(ctx_dim, n, -1.0);
  const Mat gx = net.backward_recorded(tape, g, gp, ctx, &gc);
  gp.array() -= 0.25;
  gc.array() += 1.0;
  auto loss = [&](const Net& m, const Mat& x, const Mat& c) {
    return (m.forward(x, c).array() * g.array()).sum();
  };

  const Eigen::VectorXd theta = get_parameters(net);
  double err = 0;
  for (Index k = 0; k < theta.size(); ++k) {
    const double fd = central([&](double h) {
      Net m = net;
      Eigen::VectorXd t = theta;
      t(k) += h;
      set_parameters(m, t);
      return loss(m, xa, ctx);
    });
    err = std::max(err, std::abs(fd - gp(k)) / (1 + std::abs(fd)));
  }
  CHECK(err < 1e-6);
  err = 0;
  for (Index k = 0; k < xa.size(); ++k) {
    const double fd = central([&](double h) {
      Mat x = xa;
      x(k) += h;
      return loss(net, x, ctx);
    });
    err = std::max(err, std::abs(fd - gx(k)) / (1 + std::abs(fd)));
  }
  CHECK(err < 1e-6);
  err = 0;
  for (Index k = 0; k < ctx.size(); ++k) {
    const double fd = central([&](double h) {
      Mat c = ctx;
      c(k) += h;
      return loss(net, xa, c);
    });
    err = std::max(err, std::abs(fd - gc(k)) / (1 + std::abs(fd)));
  }
  CHECK(err < 1e-6);
  CHECK(parameter_names(net) == std::vector<std::string>{"layers.0.weight", "layers.0.bias",
                                                         "layers.1.weight", "layers.1.bias",
                                                         "layers.2.weight", "layers.2.bias"});
}

TEST_CASE("ConvAffineCoupling: the bijector laws with random parameters and a context",
          "[nn][conv][laws]") {
  const Index rows = 4, cols = 4, ch = 2;
  Layer layer = conv_checkerboard_coupling<AffineTransformer<double>, nn::SiLU>(
      rows, cols, true,
      {.channels = ch, .hidden_channels = 3, .hidden_layers = 1, .context_dim = 2, .seed = 3});
  layer = test::randomized(layer, 21, 0.3);
  testing::LawOptions opt;
  opt.parameter_samples = 40;
  const auto results = testing::check_laws(layer, opt, [](Index n, std::mt19937_64& gen) {
    return Batch<double, Dynamic, Dynamic>(standard_normal_matrix<double>(2, n, gen));
  });
  for (const auto& r : results) {
    INFO(r.law << ": error " << r.error << " (tolerance " << r.tolerance << ") " << r.detail);
    CHECK(r.passed());
  }
}

TEST_CASE("ConvAffineCoupling: translation equivariance on the periodic lattice",
          "[nn][conv][equivariance]") {
  const Index rows = 6, cols = 8, n = 5;
  Layer layer = conv_checkerboard_coupling<AffineTransformer<double>, nn::SiLU>(
      rows, cols, false, {.hidden_channels = 4, .hidden_layers = 2, .seed = 8});
  layer = test::randomized(layer, 31, 0.4);
  const Mat x = normals(rows * cols, n, 32);
  const auto f = layer.forward_and_log_det(x);
  REQUIRE(f.log_det.cwiseAbs().maxCoeff() > 1e-3);  // not the identity
  for (const auto& [a, b] : std::vector<std::pair<Index, Index>>{{2, 0}, {0, 2}, {1, 1}, {3, 5}}) {
    CAPTURE(a, b);
    const auto g = layer.forward_and_log_det(shift(x, rows, cols, a, b));
    CHECK((g.value - shift(f.value, rows, cols, a, b)).cwiseAbs().maxCoeff() < 1e-12);
    CHECK((g.log_det - f.log_det).cwiseAbs().maxCoeff() < 1e-12);
    const auto i = layer.inverse_and_log_det(shift(f.value, rows, cols, a, b));
    CHECK((i.value - shift(x, rows, cols, a, b)).cwiseAbs().maxCoeff() < 1e-12);
  }
  // A shift that swaps the colours moves transformed sites onto conditioning ones: not a
  // symmetry of the layer (the check above can tell).
  const auto g = layer.forward_and_log_det(shift(x, rows, cols, 1, 0));
  CHECK((g.value - shift(f.value, rows, cols, 1, 0)).cwiseAbs().maxCoeff() > 1e-3);
}

TEST_CASE("conv couplings: identity at initialisation, float smoke test", "[nn][conv][init]") {
  const Layer fresh = conv_checkerboard_coupling<AffineTransformer<double>, nn::SiLU>(
      4, 6, false, {.channels = 2, .context_dim = 1, .seed = 1});
  const Mat x = normals(48, 4, 40), c = normals(1, 4, 41);
  const auto f = fresh.forward_and_log_det(x, c);
  CHECK(f.value == x);
  CHECK(f.log_det.cwiseAbs().maxCoeff() == 0.0);
  CHECK(fresh.parameter_count() > 0);

  // float, ReLU, Real NVP's scale-then-shift form: round trip with random parameters.
  auto layer = conv_checkerboard_coupling<ScaleShiftTransformer<float>>(8, 8, true, {.seed = 2});
  std::mt19937_64 gen(42);
  const Eigen::MatrixXf xf = standard_normal_matrix<float>(64, 6, gen);
  CHECK(layer.forward(xf) == xf);
  layer = test::randomized(layer, 43, 0.2);
  const auto ff = layer.forward_and_log_det(xf);
  const auto back = layer.inverse_and_log_det(ff.value);
  CHECK((back.value - xf).cwiseAbs().maxCoeff() < 1e-4f);
  CHECK((back.log_det + ff.log_det).cwiseAbs().maxCoeff() < 1e-4f);
  CHECK(ff.log_det.cwiseAbs().maxCoeff() > 1e-3f);
  static_assert(std::is_same_v<decltype(layer), ConvScaleShiftCoupling<float>>);
}

TEST_CASE("PeriodicConvNet: errors", "[nn][conv][errors]") {
  const CouplingMask m44 = CouplingMask::checkerboard(4, 4);
  auto msg = [](auto&& f) {
    try {
      f();
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string("no exception");
  };
  using Catch::Matchers::Contains;
  CHECK_THROWS_AS(Net(4, 6, m44, 2), ParameterError);
  CHECK_THAT(msg([&] { Net(4, 6, m44, 2); }), Contains("the mask has 16 features"));
  CHECK_THAT(msg([&] { Net(4, 4, m44, 2, {.kernel_size = 2}); }), Contains("odd"));
  CHECK_THAT(msg([&] { Net(4, 4, m44, 2, {.kernel_size = 5}); }), Contains("larger than the"));
  CHECK_THAT(msg([&] { Net(4, 4, m44, 2, {.hidden_channels = 0}); }),
             Contains("hidden_channels must be >= 1"));
  CHECK_THAT(msg([&] { Net(0, 4, m44, 2); }), Contains("rows must be >= 1"));
  CHECK_THAT(msg([&] { Net(4, 4, m44, 0); }), Contains("params_per_feature must be >= 1"));
  CHECK_THAT(msg([&] { Net(4, 4, m44, 2, {.hidden_layers = -1}); }), Contains(">= 0"));
  // A mask that splits a site's channels.
  std::vector<bool> split(32, false);
  split[1] = true;
  CHECK_THAT(msg([&] { Net(4, 4, CouplingMask(split), 2, {.channels = 2}); }),
             Contains("splits the 2 channels of site 0"));
  CHECK_THAT(msg([&] { CouplingMask::per_site(m44, 0); }), Contains("channels must be >= 1"));
  // Odd extents cannot carry a periodic checkerboard.
  CHECK_THROWS_AS((conv_checkerboard_coupling<AffineTransformer<double>, nn::SiLU>(5, 4, false)),
                  ParameterError);
  // Wrong input rows, a missing or misshapen context.
  const Net net(4, 4, m44, 2, {.context_dim = 1});
  CHECK_THAT(msg([&] { net.forward(Mat::Zero(7, 2), Mat::Zero(1, 2)); }), Contains("8 rows"));
  CHECK_THROWS_AS(net.forward(Mat::Zero(8, 2)), ShapeError);
  CHECK_THROWS_AS(net.forward(Mat::Zero(8, 2), Mat::Zero(2, 2)), ShapeError);
  Net::Tape tape;
  net.forward_recorded(Mat::Zero(8, 2), tape, Mat::Zero(1, 2));
  Eigen::VectorXd gp = Eigen::VectorXd::Zero(net.parameter_count());
  CHECK_THROWS_AS(net.backward_recorded(tape, Mat::Zero(16, 3), gp, Mat::Zero(1, 3)), ShapeError);
  // A coupling refuses a network built for another mask.
  CHECK_THROWS_AS(Layer(CouplingMask::checkerboard(4, 6), net), ParameterError);
}
