// Compile-time tests of nflow/ode/concepts.hpp: which types model VectorField and HasVectorField.
// static_assert only (built with the header checks).
#include <nflow/bijectors/continuous.hpp>
#include <nflow/ode/concepts.hpp>
#include <nflow/ode/vector_field.hpp>

namespace {
using nflow::Index;
using Row = Eigen::Matrix<double, 1, Eigen::Dynamic>;
using Mat = Eigen::MatrixXd;

// The sizes every field and flow reports.
struct Sizes {
  using Scalar = double;
  Index dim() const { return 2; }
  Index context_dim() const { return 0; }
  Index parameter_count() const { return 0; }
};
// The smallest field flow matching can train: every member of the concept, nothing else.
struct MinimalField : Sizes {
  Mat value(const Row&, const Mat& z, const Mat&) const { return z; }
  Mat value_backward(const Row&, const Mat&, const Mat&, const Mat& gf,
                     Eigen::Ref<Eigen::VectorXd>) const {
    return gf;
  }
};
// The same without the reverse mode: flow matching cannot compute its gradient.
struct FieldWithoutBackward : Sizes {
  Mat value(const Row&, const Mat& z, const Mat&) const { return z; }
};
// A field evaluated at one time for the whole batch only (t a scalar, not one per column).
struct FieldWithScalarTime : Sizes {
  Mat value(double, const Mat& z, const Mat&) const { return z; }
  Mat value_backward(double, const Mat&, const Mat&, const Mat& gf,
                     Eigen::Ref<Eigen::VectorXd>) const {
    return gf;
  }
};
// A flow exposing its field.
struct FlowOfMinimalField : Sizes {
  const MinimalField& field() const { return field_; }
  MinimalField field_;
};
}  // namespace

static_assert(nflow::ode::VectorField<nflow::ode::MLPVectorField<double, 2>>);
static_assert(nflow::ode::VectorField<nflow::ode::MLPVectorField<float>>);
static_assert(nflow::ode::VectorField<MinimalField>);
static_assert(!nflow::ode::VectorField<FieldWithoutBackward>);
static_assert(!nflow::ode::VectorField<FieldWithScalarTime>);
static_assert(!nflow::ode::VectorField<int>);

static_assert(nflow::ode::HasVectorField<nflow::ContinuousFlow<double, 2>>);
static_assert(nflow::ode::HasVectorField<
              nflow::ContinuousFlow<float, nflow::Dynamic, 8, nflow::nn::Tanh, 1>>);
static_assert(nflow::ode::HasVectorField<FlowOfMinimalField>);
static_assert(!nflow::ode::HasVectorField<MinimalField>);
static_assert(!nflow::ode::HasVectorField<Sizes>);
static_assert(!nflow::ode::HasVectorField<nflow::ode::MLPVectorField<double, 2>>);
