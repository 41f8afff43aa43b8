// Stack<Block> (run-time depth) and Repeat<N, Block> (compile-time repetition): a Stack of three
// fixed-size blocks checked against the Repeat of the same blocks (the independent truth: Flow's
// fold), the bijector laws with gradients, files both ways, and the errors. One TU, double only,
// one block type: few instantiations.
#include <catch2/catch.hpp>
#include <nflow/io.hpp>
#include <nflow/nflow.hpp>
#include <nflow/testing/catch2.hpp>
#include <sstream>
#include <stdexcept>
#include <type_traits>

#include "support/same_map.hpp"
#include "support/toy_bijectors.hpp"

using namespace nflow;
using nflow::test::check_same_map;
using nflow::test::max_diff;

namespace {

constexpr int kDim = 4;
using Coupling4 = AffineCoupling<double, kDim, Dynamic, nn::Tanh>;
using Perm4 = Permutation<double, kDim>;
/// The repeated block: a coupling layer and a permutation (fixed Dim 4; the coupling's context
/// is set at run time, so one type serves the unconditional and the conditional cases).
using Block = Flow<Coupling4, Perm4>;
using Stacked = Stack<Block>;
using Repeated = Repeat<3, Block>;

/// Block i, with random parameters (a fresh coupling layer is the identity) and its own seed.
Block make_block(Index i, Index context_dim) {
  const auto seed = std::uint64_t(10 * i + context_dim);
  Block b(Coupling4(CouplingMask::half(kDim, i % 2 == 1), CouplingOptions{8, 1, context_dim, seed}),
          Perm4::random(kDim, seed + 1));
  std::mt19937_64 gen(seed + 2);
  set_parameters(b,
                 Vector<double>(standard_normal_matrix<double>(b.parameter_count(), 1, gen) * 0.3));
  return b;
}

}  // namespace

TEST_CASE("Stack and Repeat: sizes and capabilities are the Block's", "[stack]") {
  STATIC_REQUIRE(std::is_same_v<Repeated, Flow<Block, Block, Block>>);
  STATIC_REQUIRE(Stacked::Dim == kDim);
  STATIC_REQUIRE(Stacked::ContextDim == Block::ContextDim);
  STATIC_REQUIRE(ForwardDifferentiable<Stacked>);
  STATIC_REQUIRE(InverseDifferentiable<Stacked>);
  STATIC_REQUIRE(Stack<Perm4>::IsConstantLogDet);
  STATIC_REQUIRE_FALSE(Stacked::IsConstantLogDet);
  // A user's bijector without vjps: the Stack has none either (a concept, not a run-time throw).
  using Plain = test::PlainShift<double, 3>;
  STATIC_REQUIRE(Bijector<Stack<Plain>>);
  STATIC_REQUIRE_FALSE(ForwardDifferentiable<Stack<Plain>>);
  const Stack<Plain> plain(2, [](Index) { return Plain{}; });
  CHECK_FALSE(plain.has_forward_vjp());
  CHECK(plain.is_constant_log_det());
  CHECK(max_diff(plain.forward(Eigen::MatrixXd::Zero(3, 2)), Eigen::MatrixXd::Constant(3, 2, 2)) ==
        0);
  // One point of a fixed-size stack stays fixed-size.
  const Stacked s(3, [](Index i) { return make_block(i, 0); });
  const Eigen::Matrix<double, kDim, 1> x0(0.1, -0.4, 0.7, 1.2);
  STATIC_REQUIRE(std::is_same_v<decltype(s.forward(x0)), Eigen::Matrix<double, kDim, 1>>);
  CHECK(s.has_forward_vjp());
  CHECK(s.has_inverse_vjp());
  CHECK(s.forward_cost() == Cost::OnePass);
  CHECK(s.summary() ==
        "0: block (dim 4, 60 parameters)\n1: block (dim 4, 60 parameters)\n"
        "2: block (dim 4, 60 parameters)\n");
}

TEST_CASE("A Stack computes what the Repeat of the same blocks computes", "[stack]") {
  std::mt19937_64 gen(3);
  const Eigen::MatrixXd x = standard_normal_matrix<double>(kDim, 9, gen);
  SECTION("unconditional") {
    const Stacked s(3, [](Index i) { return make_block(i, 0); });
    const Repeated r = repeat<3>([](Index i) { return make_block(i, 0); });
    CHECK(s.size() == 3);
    CHECK(s.context_dim() == 0);
    CHECK(parameter_names(s) == parameter_names(r));
    CHECK(parameter_names(s).front() == "0.0.conditioner.layers.0.weight");
    CHECK(buffer_names(s) == buffer_names(r));
    CHECK(max_diff(get_parameters(s), get_parameters(r)) == 0);
    check_same_map(s, r, x);
    // One fixed-size point.
    const Eigen::Matrix<double, kDim, 1> x0 = x.col(0);
    const auto p = s.inverse_and_log_det(x0);
    CHECK(max_diff(p.value, r.inverse(x).col(0)) < 1e-12);
    CHECK(std::abs(p.log_det(0) - r.inverse_log_det(x)(0)) < 1e-12);
  }
  SECTION("conditional: every block's coupling takes the context") {
    const Stacked s(std::vector<Block>{make_block(0, 2), make_block(1, 2), make_block(2, 2)});
    const Repeated r = repeat<3>([](Index i) { return make_block(i, 2); });
    CHECK(s.context_dim() == 2);
    const Eigen::MatrixXd c = standard_normal_matrix<double>(2, x.cols(), gen);
    check_same_map(s, r, x, c);
    CHECK(max_diff(s.forward(x, c * 1.0), r.forward(x, c)) < 1e-12);  // an expression context
    CHECK_THROWS_AS(s.forward(x), ShapeError);
  }
  SECTION("repeat<N>(block) copies one block; push_back and emplace_back append") {
    const Block b = make_block(5, 0);
    const Repeated r = repeat<3>(b);
    Stacked s;
    s.push_back(b);
    s.emplace_back(b.step<0>(), b.step<1>());
    s.emplace_back(b);
    CHECK(s.size() == 3);
    check_same_map(s, r, x);
    CHECK(max_diff(get_parameters(r.step<2>()), get_parameters(b)) == 0);
  }
}

TEST_CASE("A Stack obeys the bijector laws, gradients included", "[stack][laws]") {
  NFLOW_CHECK_LAWS(Stacked(3, [](Index i) { return make_block(i, 0); }), testing::LawOptions{});
  NFLOW_CHECK_LAWS(Stacked(2, [](Index i) { return make_block(i, 2); }), testing::LawOptions{},
                   test::context_maker<double>(2));
}

TEST_CASE("Stack and Repeat load each other's files", "[stack][io]") {
  std::mt19937_64 gen(4);
  const Eigen::MatrixXd x = standard_normal_matrix<double>(kDim, 5, gen);
  const Stacked source(3, [](Index i) { return make_block(i, 0); });
  Repeated r = repeat<3>([](Index i) { return make_block(i + 3, 0); });
  REQUIRE(max_diff(r.forward(x), source.forward(x)) > 1e-3);  // really different to start with
  std::stringstream from_stack;
  io::save(source, from_stack);
  io::load(r, from_stack);
  CHECK(max_diff(r.forward(x), source.forward(x)) < 1e-12);
  CHECK(get_buffers(r) == get_buffers(source));

  const Repeated other = repeat<3>([](Index i) { return make_block(i + 6, 0); });
  Stacked s(3, [](Index i) { return make_block(i, 0); });
  std::stringstream from_repeat;
  io::save(other, from_repeat);
  io::load(s, from_repeat);
  CHECK(max_diff(s.forward(x), other.forward(x)) < 1e-12);
  CHECK(get_buffers(s) == get_buffers(other));
  // A stack of another depth has other names: the file does not fit it.
  Stacked two(2, [](Index i) { return make_block(i, 0); });
  std::stringstream again;
  io::save(other, again);
  CHECK_THROWS(io::load(two, again));
}

TEST_CASE("Stack errors name the block", "[stack][errors]") {
  std::mt19937_64 gen(9);
  const Eigen::MatrixXd x = standard_normal_matrix<double>(kDim, 3, gen);
  SECTION("dimension mismatch at push_back; the stack is unchanged") {
    Stack<Permutation<double>> s(std::vector{Permutation<double>::random(4, 1)});
    CHECK_THROWS_AS(s.push_back(Permutation<double>::random(3, 2)), ParameterError);
    CHECK_THROWS_WITH(s.push_back(Permutation<double>::random(3, 2)),
                      "nflow::Stack: step 1 has dimension 3, but step 0 has dimension 4");
    CHECK(s.size() == 1);
  }
  SECTION("context dimension mismatch") {
    Stacked s(1, [](Index i) { return make_block(i, 2); });
    CHECK_THROWS_WITH(s.push_back(make_block(1, 3)),
                      "nflow::Stack: step 1 takes a context of 3 rows, but an earlier conditional "
                      "step takes 2");
    s.push_back(make_block(1, 0));  // an unconditional block joins any stack
    CHECK(s.size() == 2);
  }
  SECTION("an empty stack is rejected when called") {
    const Stacked empty;
    CHECK(empty.empty());
    CHECK(empty.parameter_count() == 0);
    CHECK_THROWS_AS(empty.forward(x), UnsupportedError);
    CHECK_THROWS_WITH(empty.inverse(x), Catch::Contains("the stack has no steps"));
    CHECK_THROWS_AS(empty.dim(), UnsupportedError);
    CHECK(Stacked(0, [](Index i) { return make_block(i, 0); }).empty());
    CHECK_THROWS_WITH(Stacked(-1, [](Index i) { return make_block(i, 0); }),
                      "nflow::Stack: the number of blocks must not be negative, got -1");
  }
  SECTION("a step out of range") {
    Stacked s(3, [](Index i) { return make_block(i, 0); });
    CHECK_THROWS_AS(s.step(3), std::out_of_range);
    CHECK_THROWS_WITH(s[-1], "nflow::Stack: step(-1): the stack has 3 steps");
    CHECK(&s[2] == &s.step(2));
  }
}
