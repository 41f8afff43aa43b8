// Errors at the public API: messages name the call, the expected and the actual shape.
#include <catch2/catch.hpp>
#include <nflow/nflow.hpp>

using namespace nflow;

TEST_CASE("a batch with the wrong number of rows throws ShapeError naming both shapes",
          "[errors]") {
  Flow<ElementwiseAffine<double, 3>, Reverse<double, 3>> flow;
  const Eigen::MatrixXd x = Eigen::MatrixXd::Zero(2, 5);
  CHECK_THROWS_AS(flow.forward(x), ShapeError);
  CHECK_THROWS_WITH(flow.forward_and_log_det(x), Catch::Contains("forward_and_log_det") &&
                                                     Catch::Contains("3 rows") &&
                                                     Catch::Contains("2 x 5"));
  CHECK_THROWS_WITH(flow.inverse(x), Catch::Contains("inverse_and_log_det"));
  // ShapeError is a std::invalid_argument.
  CHECK_THROWS_AS(flow.forward(x), std::invalid_argument);
}

TEST_CASE("gradient buffers and upstream gradients are shape-checked", "[errors]") {
  ElementwiseAffine<double> b(2);
  const Eigen::MatrixXd x = Eigen::MatrixXd::Zero(2, 4);
  Vector<double> gp = Vector<double>::Zero(4);
  CHECK_NOTHROW(b.forward_vjp(x, x, Eigen::RowVectorXd::Zero(4), gp));
  CHECK_THROWS_WITH(b.forward_vjp(x, Eigen::MatrixXd::Zero(2, 3), Eigen::RowVectorXd::Zero(4), gp),
                    Catch::Contains("grad_value"));
  CHECK_THROWS_WITH(b.forward_vjp(x, x, Eigen::RowVectorXd::Zero(3), gp),
                    Catch::Contains("grad_log_det"));
  Vector<double> short_gp = Vector<double>::Zero(3);
  CHECK_THROWS_WITH(b.forward_vjp(x, x, Eigen::RowVectorXd::Zero(4), short_gp),
                    Catch::Contains("grad_params"));
}

TEST_CASE("invalid construction arguments are ParameterErrors", "[errors]") {
  CHECK_THROWS_AS(Reverse<double>(0), ParameterError);
  CHECK_THROWS_AS(ElementwiseAffine<double>(-1), ParameterError);
  CHECK_THROWS_AS((ElementwiseAffine<double, 3>(4)), ParameterError);
  CHECK_THROWS_AS(StandardNormal<double>(0), ParameterError);
}

TEST_CASE("non-finite inputs stay in their own column", "[errors]") {
  Flow<ElementwiseAffine<double>, Sigmoid<double>> flow(ElementwiseAffine<double>(2),
                                                        Sigmoid<double>(2));
  Eigen::MatrixXd x = Eigen::MatrixXd::Random(2, 4);
  const auto clean = flow.forward_and_log_det(x);
  x(1, 2) = std::numeric_limits<double>::infinity();
  x(0, 0) = std::numeric_limits<double>::quiet_NaN();
  const auto r = flow.forward_and_log_det(x);
  CHECK(non_finite_columns(x) == std::vector<Index>{0, 2});
  CHECK(r.value.col(1) == clean.value.col(1));
  CHECK(r.value.col(3) == clean.value.col(3));
  CHECK(std::isnan(r.log_det(0)));
}
