// Batch calls split into tiles and threads (nflow/core/parallel.hpp): the same numbers with any
// thread count, the same numbers (to rounding) as an unsplit call, contexts sliced with their
// columns, exceptions from a tile rethrown, a const density shared by several threads, and the
// settings' checks. Built a second time under ThreadSanitizer (tests/CMakeLists.txt).
#include <catch2/catch.hpp>
#include <nflow/nflow.hpp>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

#include "support/toy_bijectors.hpp"

using namespace nflow;

namespace {

/// Restores the thread count and tile width when a test ends.
struct SettingsGuard {
  int threads = num_threads();
  Index tile = tile_columns();
  ~SettingsGuard() {
    set_num_threads(threads);
    set_tile_columns(tile);
  }
};

using Coupling4 = AffineCoupling<double>;
using Maf4 = MAF<double, Dynamic, Dynamic, nn::ReLU, Dynamic>;
using TestFlow = Flow<Coupling4, Reverse<double>, Maf4, Coupling4>;

Density<StandardNormal<double>, TestFlow> make_density(Index context_dim = 0) {
  const Index d = 4;
  TestFlow flow(
      Coupling4(CouplingMask::half(d),
                CouplingOptions{
                    .hidden_width = 16, .hidden_layers = 2, .context_dim = context_dim, .seed = 1}),
      Reverse<double>(d),
      Maf4(d, {.hidden_width = 16, .hidden_layers = 2, .context_dim = context_dim, .seed = 2}),
      Coupling4(
          CouplingMask::half(d, true),
          CouplingOptions{
              .hidden_width = 16, .hidden_layers = 2, .context_dim = context_dim, .seed = 3}));
  Density density(StandardNormal<double>(d), std::move(flow));
  std::mt19937_64 gen(4);
  set_parameters(
      density,
      Vector<double>(standard_normal_matrix<double>(density.parameter_count(), 1, gen) * 0.2));
  return density;
}

/// Throws from inside its hook when it sees a column whose first entry is above 100.
struct ThrowingShift : BijectorBase<ThrowingShift> {
  using Scalar = double;
  static constexpr int Dim = Dynamic;
  ThrowingShift() = default;
  Index dim() const { return 2; }
  template <typename X, typename C>
  auto forward_impl(const X& x, const C&) const {
    if ((x.row(0).array() > 100.0).any()) throw std::domain_error("ThrowingShift: entry above 100");
    detail::ResultFor<double, Dynamic, X> r;
    r.value = x.array() + 1.0;
    r.log_det.setZero(1, x.cols());
    return r;
  }
  template <typename Z, typename C>
  auto inverse_impl(const Z& z, const C& c) const {
    auto r = forward_impl(z, c);
    r.value = z.array() - 1.0;
    return r;
  }
};

}  // namespace

TEST_CASE("Tiles give the same numbers with any thread count, and match an unsplit call",
          "[parallel]") {
  const SettingsGuard guard;
  const auto density = make_density();
  std::mt19937_64 gen(5);
  const Eigen::MatrixXd x =
      standard_normal_matrix<double>(4, 1001, gen);  // not a multiple of the tile

  set_tile_columns(100000);  // one tile: the unsplit reference
  const Eigen::RowVectorXd whole = density.log_prob(x);
  const Eigen::MatrixXd whole_inverse = density.transform().inverse(x);

  set_tile_columns(64);
  set_num_threads(1);
  const Eigen::RowVectorXd one = density.log_prob(x);
  const Eigen::MatrixXd one_inverse = density.transform().inverse(x);
  for (int threads : {2, 3, 16}) {
    set_num_threads(threads);
    const Eigen::RowVectorXd many = density.log_prob(x);
    const Eigen::MatrixXd many_inverse = density.transform().inverse(x);
    CHECK((many.array() == one.array()).all());  // bit for bit
    CHECK((many_inverse.array() == one_inverse.array()).all());
  }
  // Against the unsplit call: the same columns, so equal up to the GEMM kernels' rounding.
  CHECK((one - whole).cwiseAbs().maxCoeff() < 1e-12);
  CHECK((one_inverse - whole_inverse).cwiseAbs().maxCoeff() < 1e-12);
  // And column by column against one point at a time.
  for (Index j : {Index(0), Index(63), Index(64), Index(1000)}) {
    const Eigen::VectorXd xj = x.col(j);
    CHECK(std::abs(density.log_prob(xj) - one(j)) < 1e-12);
  }
  // inverse(forward(x)) through tiles.
  CHECK((density.transform().inverse(density.transform().forward(x)) - x).cwiseAbs().maxCoeff() <
        1e-10);
}

TEST_CASE("Tiles slice the context with their columns", "[parallel]") {
  const SettingsGuard guard;
  const auto density = make_density(3);
  std::mt19937_64 gen(6);
  const Eigen::MatrixXd x = standard_normal_matrix<double>(4, 300, gen);
  const Eigen::MatrixXd c = standard_normal_matrix<double>(3, 300, gen);
  set_tile_columns(100000);
  const Eigen::RowVectorXd whole = density.log_prob(x, c);
  set_tile_columns(50);
  set_num_threads(2);
  const Eigen::RowVectorXd tiled = density.log_prob(x, c);
  CHECK((tiled - whole).cwiseAbs().maxCoeff() < 1e-12);
  // A context with the wrong column count is still rejected before any tile runs.
  CHECK_THROWS_AS(density.log_prob(x, Eigen::MatrixXd(c.leftCols(299))), ShapeError);
}

TEST_CASE("Sampling through tiles is reproducible and independent of the thread count",
          "[parallel]") {
  const SettingsGuard guard;
  const auto density = make_density();
  set_tile_columns(32);
  set_num_threads(1);
  std::mt19937_64 g1(7);
  const auto a = density.sample_and_log_prob(500, g1);
  set_num_threads(4);
  std::mt19937_64 g2(7);
  const auto b = density.sample_and_log_prob(500, g2);
  CHECK((a.samples.array() == b.samples.array()).all());
  CHECK((a.log_prob.array() == b.log_prob.array()).all());
  CHECK((density.log_prob(a.samples) - a.log_prob).cwiseAbs().maxCoeff() < 1e-9);
}

TEST_CASE("An exception thrown inside a tile reaches the caller", "[parallel]") {
  const SettingsGuard guard;
  set_tile_columns(10);
  Eigen::MatrixXd x = Eigen::MatrixXd::Zero(2, 95);
  x(0, 77) = 1000.0;  // in the eighth tile
  const ThrowingShift shift;
  for (int threads : {1, 3}) {
    set_num_threads(threads);
    CHECK_THROWS_AS(shift.forward_and_log_det(x), std::domain_error);
  }
  x(0, 77) = 0.0;
  CHECK((shift.forward(x).array() == 1.0).all());
  CHECK_FALSE(detail::inside_tile);  // the caller's flag is restored
}

TEST_CASE("A const density evaluated from several threads at once gives the serial numbers",
          "[parallel]") {
  const SettingsGuard guard;
  const auto density = make_density();
  std::mt19937_64 gen(8);
  const Eigen::MatrixXd x = standard_normal_matrix<double>(4, 700, gen);
  set_tile_columns(128);
  set_num_threads(1);
  const Eigen::RowVectorXd expected = density.log_prob(x);
  set_num_threads(2);  // each caller also splits its batch over two threads
  std::vector<Eigen::RowVectorXd> got(4);
  std::vector<double> point(4);
  std::vector<std::thread> callers;
  for (std::size_t i = 0; i < got.size(); ++i) {
    callers.emplace_back([&, i] {
      got[i] = density.log_prob(x);
      point[i] = density.log_prob(Eigen::VectorXd(x.col(Index(i))));
    });
  }
  for (auto& t : callers) t.join();
  for (std::size_t i = 0; i < got.size(); ++i) {
    CHECK((got[i].array() == expected.array()).all());
    CHECK(std::abs(point[i] - expected(Index(i))) < 1e-12);
  }
}

TEST_CASE("Thread and tile settings reject nonsense", "[parallel]") {
  const SettingsGuard guard;
  CHECK_THROWS_AS(set_num_threads(0), ParameterError);
  CHECK_THROWS_AS(set_tile_columns(0), ParameterError);
  set_num_threads(3);
  CHECK(num_threads() == 3);
  set_tile_columns(17);
  CHECK(tile_columns() == 17);
}
