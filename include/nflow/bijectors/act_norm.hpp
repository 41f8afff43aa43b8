#pragma once
/// @file
/// @brief ActNorm: z = (x + bias) ⊙ exp(log_scale), with data-dependent initialisation (Glow).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "nflow/core/bijector_base.hpp"
#include "nflow/core/buffers.hpp"
#include "nflow/core/errors.hpp"
#include "nflow/core/flow.hpp"
#include "nflow/core/stack.hpp"

namespace nflow {

/// @brief Activation normalisation: a per-feature shift then scale, initialised from data.
///
/// forward:  z = (x + b) ⊙ exp(s)          (shift first, then scale, as in Glow's code),
///           log|det| = Σᵢ sᵢ (constant in x)
/// inverse:  x = z ⊙ exp(−s) − b,          log|det| = −Σᵢ sᵢ
///
/// Parameters, in visit order: "bias" b (Dim × 1), "log_scale" s (Dim × 1). Invariant: b finite,
/// |s| < log(largest Scalar) (so exp(±s) is finite and nonzero); the cached exp(±s) match s. Every mutating call (setters, initialize, the non-const
/// visit_parameters) re-validates and refreshes the cache, and on a rejected value throws
/// ParameterError naming the parameter and leaves the layer unchanged.
///
/// **Data-dependent initialisation.** `initialize(batch)` sets b = −mean and
/// s = −½ log(max(var, variance_floor)) per feature, with the population mean and variance
/// (divided by N) of the batch computed in double, so that the layer's output on that batch has
/// mean 0 and variance 1 in every feature. A feature that is constant in the batch (var = 0) gets
/// the finite scale 1/√variance_floor instead of an infinite one; the default floor is
/// `default_variance_floor` = NumTraits<Scalar>::epsilon() (so the scale is at most 6.7·10⁷ in
/// double, 2.9·10³ in float); pass another floor if your data's variances are smaller.
///
/// Users call `initialize` explicitly, once, on the first training batch (or use
/// nflow::initialize_act_norms to initialise every ActNorm of a flow, each on the batch as it
/// arrives at that step). Evaluation never initialises lazily: every evaluation member is `const`
/// and touches no mutable state, so a `const` layer can be shared between threads; a lazy "first
/// call initialises" would be a data race. Until it is initialised the layer is the identity.
/// `is_initialized()` is false on construction and becomes true only through `initialize` or
/// `set_initialized(true)`, or by loading a file saved from an initialised layer (the flag is the
/// buffer "initialized", saved and loaded by nflow::io with the parameters).
///
/// References: Kingma & Dhariwal 2018, Glow: Generative Flow with Invertible 1×1 Convolutions,
/// §3.1, arXiv:1807.03039.
/// @tparam Scalar_ float or double. @tparam Dim_ fixed or Eigen::Dynamic.
template <typename Scalar_, int Dim_ = Dynamic>
class ActNorm : public BijectorBase<ActNorm<Scalar_, Dim_>> {
 public:
  using Scalar = Scalar_;
  static constexpr int Dim = Dim_;
  static constexpr bool IsConstantLogDet = true;
  using Column = Eigen::Matrix<Scalar, Dim, 1>;

  /// The default floor on the per-feature variance in initialize(): machine epsilon of Scalar.
  static constexpr Scalar default_variance_floor = Eigen::NumTraits<Scalar>::epsilon();

  /// The identity of dimension Dim, not yet initialised.
  ActNorm() requires(Dim_ != Dynamic) : ActNorm(Index(Dim_)) {}
  /// The identity of dimension `dim`, not yet initialised.
  explicit ActNorm(Index dim) {
    if (dim <= 0 || (Dim_ != Dynamic && dim != Dim_)) {
      throw ParameterError("nflow::ActNorm: dim must be positive (and equal Dim when fixed), got " +
                           std::to_string(dim));
    }
    bias_ = Column::Zero(dim);
    log_scale_ = Column::Zero(dim);
    scale_ = Column::Ones(dim);
    inv_scale_ = Column::Ones(dim);
  }

  Index dim() const { return bias_.size(); }
  const Column& bias() const { return bias_; }
  const Column& log_scale() const { return log_scale_; }
  bool is_initialized() const { return initialized_; }
  /// Marks the layer as initialised (for example after loading trained parameters) or not.
  void set_initialized(bool value = true) { initialized_ = value; }

  /// Data-dependent initialisation from `batch` (Dim × N, N ≥ 2): afterwards forward(batch) has
  /// mean 0 and (population) variance 1 in every feature; see the class comment for the floor.
  /// Throws ShapeError for a wrong number of rows or fewer than 2 columns, ParameterError if the
  /// batch holds non-finite values or the floor is not positive and finite. Marks the layer
  /// initialised; calling it again re-initialises.
  template <typename D>
  void initialize(const Eigen::MatrixBase<D>& batch,
                  Scalar variance_floor = default_variance_floor) {
    static_assert(std::is_same_v<typename D::Scalar, Scalar>,
                  "nflow::ActNorm::initialize: the batch's Scalar must match the layer's Scalar");
    const char* where = "ActNorm::initialize";
    detail::check_rows(where, "batch", dim(), batch.rows(), batch.cols());
    if (batch.cols() < 2) {
      throw ShapeError(std::string("nflow: ") + where +
                       ": batch needs at least 2 columns (samples) to estimate a variance, got " +
                       detail::shape_string(batch.rows(), batch.cols()));
    }
    if (!(variance_floor > Scalar(0)) || !std::isfinite(double(variance_floor))) {
      throw ParameterError(std::string("nflow::") + where +
                           ": variance_floor must be positive and finite");
    }
    const std::vector<Index> bad = non_finite_columns(batch);
    if (!bad.empty()) {
      throw ParameterError(
          std::string("nflow::") + where + ": the batch has non-finite values (first in column " +
          std::to_string(bad.front()) + "), which would make 'bias' and 'log_scale' non-finite");
    }
    const Index n = batch.cols();
    Column bias(dim());
    Column log_scale(dim());
    for (Index i = 0; i < dim(); ++i) {
      const auto row = batch.row(i).template cast<double>();
      const double mean = row.sum() / double(n);
      const double var = (row.array() - mean).square().sum() / double(n);
      bias(i) = Scalar(-mean);
      log_scale(i) = Scalar(-0.5 * std::log(std::max(var, double(variance_floor))));
    }
    mutate([&] {
      bias_ = bias;
      log_scale_ = log_scale;
    });
    initialized_ = true;
  }

  template <typename D>
  void set_bias(const Eigen::MatrixBase<D>& v) {
    check_shape("bias", v);
    mutate([&] { bias_ = v; });
  }
  template <typename D>
  void set_log_scale(const Eigen::MatrixBase<D>& v) {
    check_shape("log_scale", v);
    mutate([&] { log_scale_ = v; });
  }

  // ---- hooks for BijectorBase ----------------------------------------------------------------
  template <typename X, typename C>
  detail::ResultFor<Scalar, Dim, X> forward_impl(const X& x, const C&) const {
    detail::ResultFor<Scalar, Dim, X> r;
    r.value = ((x.colwise() + bias_).array().colwise() * scale_.array()).matrix();
    r.log_det.setConstant(1, x.cols(), log_scale_.sum());
    return r;
  }
  template <typename Z, typename C>
  detail::ResultFor<Scalar, Dim, Z> inverse_impl(const Z& z, const C&) const {
    detail::ResultFor<Scalar, Dim, Z> r;
    r.value = (z.array().colwise() * inv_scale_.array()).matrix().colwise() - bias_;
    r.log_det.setConstant(1, z.cols(), -log_scale_.sum());
    return r;
  }
  template <typename X, typename GV, typename GL, typename C>
  detail::BatchFor<Scalar, Dim, X> forward_vjp_impl(const X& x, const GV& gv, const GL& gl,
                                                    Eigen::Ref<Vector<Scalar>> gp, const C&) const {
    // z = (x + b) e^s: ∂z/∂x = ∂z/∂b = e^s, ∂z/∂s = z.
    detail::BatchFor<Scalar, Dim, X> gx = gv.array().colwise() * scale_.array();
    // Column by column: contiguous (and fixed-size when Dim is) vector operations, several times
    // faster than Eigen's row-wise reductions of a broadcast expression.
    Column g_bias = Column::Zero(dim());
    Column g_log_scale = Column::Constant(dim(), gl.sum());
    for (Index j = 0; j < x.cols(); ++j) {
      g_bias += gx.col(j);
      g_log_scale += gx.col(j).cwiseProduct(x.col(j) + bias_);
    }
    add_gradients(gp, g_bias, g_log_scale);
    return gx;
  }
  template <typename Z, typename GV, typename GL, typename C>
  detail::BatchFor<Scalar, Dim, Z> inverse_vjp_impl(const Z& z, const GV& gv, const GL& gl,
                                                    Eigen::Ref<Vector<Scalar>> gp, const C&) const {
    // x = z e^{−s} − b: ∂x/∂z = e^{−s}, ∂x/∂b = −1, ∂x/∂s = −z e^{−s}.
    detail::BatchFor<Scalar, Dim, Z> gz = gv.array().colwise() * inv_scale_.array();
    Column g_bias = Column::Zero(dim());
    Column g_log_scale = Column::Constant(dim(), gl.sum());
    for (Index j = 0; j < z.cols(); ++j) {
      g_bias += gv.col(j);
      g_log_scale += gz.col(j).cwiseProduct(z.col(j));
    }
    add_gradients(gp, -g_bias, -g_log_scale);
    return gz;
  }

  // ---- parameters --------------------------------------------------------------------------------
  /// The parameters "bias", "log_scale". A non-const visit_parameters() re-validates afterwards
  /// (restoring the previous values and rethrowing if a written value is not finite); it does not
  /// change is_initialized().
  template <typename Self, typename F>
  static void parameters_impl(Self& self, F&& f) {
    f("bias", self.bias_);
    f("log_scale", self.log_scale_);
  }
  template <typename Write>
  void update_parameters_impl(Write&& write) {
    mutate(std::forward<Write>(write));
  }

  /// @brief The buffer "initialized" (see nflow/core/buffers.hpp): one entry, 1 if the layer has
  /// been initialised, else 0 (so a saved, trained layer loads as initialised). Any other value
  /// throws ParameterError.
  template <typename F>
  void visit_buffers(F&& f) const {
    const BufferVector b = BufferVector::Constant(1, initialized_ ? 1 : 0);
    f(std::string("initialized"), b);
  }
  template <typename F>
  void visit_buffers(F&& f) {
    BufferVector b = BufferVector::Constant(1, initialized_ ? 1 : 0);
    f(std::string("initialized"), b);
    initialized_ = detail::buffer_to_indices("nflow::ActNorm", "initialized", b, 1, 0, 1)(0) == 1;
  }

 private:
  template <typename D>
  void check_shape(const char* name, const Eigen::MatrixBase<D>& v) const {
    detail::check_rows("ActNorm", name, dim(), v.rows(), v.cols());
    detail::check_cols("ActNorm", name, 1, v.rows(), v.cols());
  }

  /// Adds the two gradients into the flat vector through maps of the layer's own (fixed, when Dim
  /// is) size: a dynamic-size map += a tiny fixed-size vector makes g++ 12 at -O3 warn
  /// (-Warray-bounds) about Eigen's unreachable packet path.
  template <typename A, typename B>
  void add_gradients(Eigen::Ref<Vector<Scalar>> gp, const A& g_bias, const B& g_log_scale) const {
    Eigen::Map<Column>(gp.data(), dim()) += g_bias;
    Eigen::Map<Column>(gp.data() + dim(), dim()) += g_log_scale;
  }

  /// Runs `write`, validates and refreshes the cached scales; restores the old state on failure.
  template <typename Write>
  void mutate(Write&& write) {
    const Column old_bias = bias_;
    const Column old_log_scale = log_scale_;
    try {
      write();
      if (!bias_.allFinite())
        throw ParameterError("nflow::ActNorm: parameter 'bias' must be finite");
      if (!log_scale_.allFinite())
        throw ParameterError("nflow::ActNorm: parameter 'log_scale' must be finite");
      if (!(log_scale_.cwiseAbs().array() < std::log(std::numeric_limits<Scalar>::max())).all()) {
        throw ParameterError(
            "nflow::ActNorm: parameter 'log_scale' must satisfy |log_scale| < log(largest Scalar), "
            "so that "
            "exp(±log_scale) is finite and nonzero");
      }
      scale_ = log_scale_.array().exp();
      inv_scale_ = (-log_scale_.array()).exp();
    } catch (...) {
      bias_ = old_bias;
      log_scale_ = old_log_scale;
      throw;
    }
  }

  Column bias_;
  Column log_scale_;
  Column scale_;      // cache: exp(log_scale)
  Column inv_scale_;  // cache: exp(−log_scale)
  bool initialized_ = false;
};

namespace detail {

template <typename T>
struct IsActNorm : std::false_type {};
template <typename S, int D>
struct IsActNorm<ActNorm<S, D>> : std::true_type {};
template <typename T>
struct IsFlow : std::false_type {};
template <typename... Bs>
struct IsFlow<Flow<Bs...>> : std::true_type {};
template <typename T>
struct IsStack : std::false_type {};
template <typename B>
struct IsStack<Stack<B>> : std::true_type {};

template <typename B, typename V, typename C>
V initialize_act_norms_step(B& b, V v, const C& ctx) {
  if constexpr (IsActNorm<B>::value) {
    b.initialize(v);
    return V(b.forward(v));
  } else if constexpr (IsFlow<B>::value) {
    visit_steps(b,
                [&](auto& step, auto) { v = initialize_act_norms_step(step, std::move(v), ctx); });
    return v;
  } else if constexpr (IsStack<B>::value) {
    for (Index i = 0; i < b.size(); ++i)
      v = initialize_act_norms_step(b.step(i), std::move(v), ctx);
    return v;
  } else {
    return V(with_context<B>(ctx, [&](const auto&... c) {
               return b.forward_and_log_det(v, c...);
             }).value);
  }
}

}  // namespace detail

/// @brief Data-dependent initialisation of every ActNorm in `bijector` (an ActNorm, a Flow or a
/// Stack, nested ones included): pushes `batch` forward step by step and initialises each ActNorm on
/// the batch as it arrives there, so that its output has mean 0 and variance 1 per feature.
/// Returns the batch at the output of `bijector` (computed with the new parameters). Steps that
/// are not ActNorms, Flows or Stacks (including Inverted<...>) are only evaluated. Conditional steps
/// receive `context`.
template <typename B, typename X, ContextArg C = NoContext>
Batch<typename B::Scalar, B::Dim, Dynamic> initialize_act_norms(B& bijector,
                                                                const Eigen::MatrixBase<X>& batch,
                                                                const C& context = C{}) {
  detail::check_rows("initialize_act_norms", "batch", bijector.dim(), batch.rows(), batch.cols());
  Batch<typename B::Scalar, B::Dim, Dynamic> v = batch;
  return detail::initialize_act_norms_step(bijector, std::move(v), context);
}

}  // namespace nflow
