// Compile-time facts: concepts, traits and the Flow's derived properties. static_assert only.
#include <nflow/nflow.hpp>

namespace {
using namespace nflow;

static_assert(Bijector<ElementwiseAffine<double, 2>>);
static_assert(Bijector<Reverse<float>>);
static_assert(ForwardDifferentiable<ElementwiseAffine<float, 3>>);
static_assert(InverseDifferentiable<Permutation<double, 4>>);
static_assert(!Bijector<int>);
static_assert(!Bijector<StandardNormal<double, 2>>);

using F = Flow<ElementwiseAffine<double, 2>, Reverse<double>, Sigmoid<double, 2>>;
static_assert(Bijector<F>);
static_assert(F::Dim == 2);
static_assert(std::is_same_v<F::Scalar, double>);
static_assert(!F::IsConstantLogDet);
static_assert(Flow<Reverse<float, 3>, ElementwiseAffine<float>>::IsConstantLogDet);
static_assert(F::ForwardCost == Cost::OnePass && F::InverseCost == Cost::OnePass);
static_assert(context_dim_v<F> == 0 && !is_conditional_v<F>);
static_assert(ForwardDifferentiable<F> && InverseDifferentiable<F>);
// Flows nest.
using G = Flow<F, Flow<Reverse<double, 2>>>;
static_assert(Bijector<G> && G::Dim == 2);
// Inverted swaps directions and costs.
static_assert(Bijector<Inverted<F>>);
// A single point keeps its compile-time shape and has one log-det.
using R = decltype(std::declval<const F&>().forward_and_log_det(std::declval<Eigen::Vector2d>()));
static_assert(std::is_same_v<decltype(R::value), Eigen::Vector2d>);
static_assert(std::is_same_v<decltype(R::log_det), Eigen::Matrix<double, 1, 1>>);
using RB = decltype(std::declval<const F&>().forward_and_log_det(std::declval<Eigen::MatrixXd>()));
static_assert(std::is_same_v<decltype(RB::value), Eigen::Matrix<double, 2, Eigen::Dynamic>>);

using D = Density<StandardNormal<double, 2>, F>;
static_assert(D::Dim == 2);
}  // namespace
