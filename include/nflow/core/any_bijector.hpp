#pragma once
/// @file
/// @brief AnyBijector<Scalar>: a value that holds any bijector of one Scalar type, itself a
/// bijector of run-time dimension. The step type of nflow::DynamicFlow (run-time composition).
///
/// A model whose structure is known only when a file is read (importers, self-describing files,
/// the C ABI, Python) is a sequence of these, each holding one of nflow's own bijector templates at
/// run-time sizes: nothing is implemented twice, every call goes to the held bijector.
///
/// Type erasure in the usual form: AnyBijector owns a heap-held model (an interface with virtual
/// forward, inverse, vjps, recording and visits, and one implementation per held type). Copies are
/// deep (the held bijector is copied); moves transfer it (a moved-from AnyBijector may only be
/// assigned to or destroyed: any other call throws nflow::UnsupportedError).

#include <concepts>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include "nflow/core/bijector_base.hpp"
#include "nflow/core/buffers.hpp"
#include "nflow/core/composite.hpp"
#include "nflow/core/concepts.hpp"
#include "nflow/core/errors.hpp"
#include "nflow/core/flow_gradients.hpp"
#include "nflow/core/parameters.hpp"
#include "nflow/core/traits.hpp"
#include "nflow/core/types.hpp"

namespace nflow {

namespace detail {

/// An address unique to type T: identifies a held type without RTTI.
template <typename T>
struct TypeTag {
  static constexpr char id = 0;
};
template <typename T>
const void* type_tag() {
  return &TypeTag<T>::id;
}

/// A type-erased tape: the held bijector's nflow::tape_t, behind a virtual interface.
struct AnyTapeBase {
  virtual ~AnyTapeBase() = default;
  virtual Index cols() const = 0;
  virtual const void* type() const = 0;
};
template <typename T>
struct AnyTapeModel final : AnyTapeBase {
  T tape;
  Index cols() const override { return tape.cols(); }
  const void* type() const override { return type_tag<T>(); }
};

/// The interface every held bijector is seen through: batches are plain dynamic matrices, a
/// context is a pointer (null: none), visits go through std::function.
template <typename S>
struct AnyBijectorConcept {
  using Mat = Batch<S, Dynamic, Dynamic>;
  using Row = PerSample<S, Dynamic>;
  using Result = ValueAndLogDet<S, Dynamic, Dynamic>;
  using GradRef = Eigen::Ref<Vector<S>>;
  using ParamVisitor = std::function<void(const std::string&, Eigen::Ref<ParameterMatrix<S>>)>;
  using ConstParamVisitor =
      std::function<void(const std::string&, Eigen::Ref<const ParameterMatrix<S>>)>;
  using BufferVisitor = std::function<void(const std::string&, BufferVector&)>;
  using ConstBufferVisitor = std::function<void(const std::string&, const BufferVector&)>;

  virtual ~AnyBijectorConcept() = default;
  virtual std::unique_ptr<AnyBijectorConcept> clone() const = 0;
  virtual const void* type() const = 0;
  virtual void* object() = 0;
  virtual const void* object() const = 0;
  virtual Index dim() const = 0;
  virtual Index context_dim() const = 0;
  virtual bool splits_batches() const = 0;
  virtual bool has_forward_vjp() const = 0;
  virtual bool has_inverse_vjp() const = 0;
  virtual bool has_buffers() const = 0;
  virtual bool is_constant_log_det() const = 0;
  virtual Cost forward_cost() const = 0;
  virtual Cost inverse_cost() const = 0;
  virtual Result forward(const Mat& x, const Mat* ctx) const = 0;
  virtual Result inverse(const Mat& z, const Mat* ctx) const = 0;
  // The vjps are called only when has_forward_vjp() / has_inverse_vjp() (AnyBijector checks).
  // gc: where ∂L/∂c is added (nullptr: not wanted).
  virtual Mat forward_vjp(const Mat& x, const Mat& gv, const Row& gl, GradRef gp, const Mat* ctx,
                          Mat* gc) const = 0;
  virtual Mat inverse_vjp(const Mat& z, const Mat& gv, const Row& gl, GradRef gp, const Mat* ctx,
                          Mat* gc) const = 0;
  /// Records into `tape`, reusing it when it already holds this held type's tape.
  virtual Result record(const Mat& x, const Mat* ctx, std::unique_ptr<AnyTapeBase>& tape) const = 0;
  virtual const void* tape_type() const = 0;
  virtual Mat taped_vjp(const AnyTapeBase& tape, const Mat& gv, const Row& gl, GradRef gp,
                        const Mat* ctx, Mat* gc) const = 0;
  virtual void visit_mutable_parameters(const ParamVisitor& f) = 0;
  virtual void visit_const_parameters(const ConstParamVisitor& f) const = 0;
  virtual void visit_mutable_buffers(const BufferVisitor& f) = 0;
  virtual void visit_const_buffers(const ConstBufferVisitor& f) const = 0;
};

/// The implementation of AnyBijectorConcept for a held bijector of type B: every call goes to B's
/// own deduced API on Batch<S, B::Dim, Dynamic> (a reference to the input when B::Dim is Dynamic).
template <typename B>
class AnyBijectorModel final : public AnyBijectorConcept<typename B::Scalar> {
  using S = typename B::Scalar;
  using Base = AnyBijectorConcept<S>;
  using typename Base::GradRef;
  using typename Base::Mat;
  using typename Base::Result;
  using typename Base::Row;
  using Tape = tape_t<B>;

 public:
  explicit AnyBijectorModel(B b) : b_(std::move(b)) {}

  std::unique_ptr<Base> clone() const override { return std::make_unique<AnyBijectorModel>(b_); }
  const void* type() const override { return type_tag<B>(); }
  void* object() override { return &b_; }
  const void* object() const override { return &b_; }
  Index dim() const override { return b_.dim(); }
  Index context_dim() const override {
    if constexpr (is_conditional_v<B>) {
      return b_.context_dim();
    } else {
      return 0;
    }
  }
  bool splits_batches() const override {
    // Only types derived from BijectorBase take part in batch tiling (nflow/core/tiling.hpp).
    if constexpr (requires { b_.splits_batches(); }) {
      return b_.splits_batches();
    } else {
      return false;
    }
  }
  // The compile-time traits of B, refined by B's own run-time answers when B is type-erased
  // itself (an AnyBijector or DynamicFlow held in another).
  bool has_forward_vjp() const override {
    if constexpr (requires { b_.has_forward_vjp(); }) {
      return ForwardDifferentiable<B> && b_.has_forward_vjp();
    } else {
      return ForwardDifferentiable<B>;
    }
  }
  bool has_inverse_vjp() const override {
    if constexpr (requires { b_.has_inverse_vjp(); }) {
      return InverseDifferentiable<B> && b_.has_inverse_vjp();
    } else {
      return InverseDifferentiable<B>;
    }
  }
  bool has_buffers() const override {
    return requires(B & b, const typename Base::BufferVisitor& f) { b.visit_buffers(f); };
  }
  bool is_constant_log_det() const override {
    if constexpr (requires { b_.is_constant_log_det(); }) {
      return b_.is_constant_log_det();
    } else {
      return is_constant_log_det_v<B>;
    }
  }
  Cost forward_cost() const override {
    if constexpr (requires { b_.forward_cost(); }) {
      return b_.forward_cost();
    } else {
      return forward_cost_v<B>;
    }
  }
  Cost inverse_cost() const override {
    if constexpr (requires { b_.inverse_cost(); }) {
      return b_.inverse_cost();
    } else {
      return inverse_cost_v<B>;
    }
  }

  Result forward(const Mat& x, const Mat* ctx) const override { return call<false>(x, ctx); }
  Result inverse(const Mat& z, const Mat* ctx) const override { return call<true>(z, ctx); }
  Mat forward_vjp(const Mat& x, const Mat& gv, const Row& gl, GradRef gp, const Mat* ctx,
                  Mat* gc) const override {
    return vjp<false>(x, gv, gl, gp, ctx, gc);
  }
  Mat inverse_vjp(const Mat& z, const Mat& gv, const Row& gl, GradRef gp, const Mat* ctx,
                  Mat* gc) const override {
    return vjp<true>(z, gv, gl, gp, ctx, gc);
  }
  Result record(const Mat& x, const Mat* ctx, std::unique_ptr<AnyTapeBase>& tape) const override {
    if (!tape || tape->type() != tape_type()) tape = std::make_unique<AnyTapeModel<Tape>>();
    Tape& t = static_cast<AnyTapeModel<Tape>&>(*tape).tape;
    return on_context(ctx, [&](const auto&... c) {
      return to_result(step_record(b_, as_batch<S, B::Dim>(x), t, context_of(c...)));
    });
  }
  const void* tape_type() const override { return type_tag<Tape>(); }
  Mat taped_vjp(const AnyTapeBase& tape, const Mat& gv, const Row& gl, GradRef gp, const Mat* ctx,
                Mat* gc) const override {
    if constexpr (ForwardDifferentiable<B>) {
      const Tape& t = static_cast<const AnyTapeModel<Tape>&>(tape).tape;
      return on_context(ctx, [&](const auto&... c) {
        return Mat(step_vjp_recorded(b_, t, as_batch<S, B::Dim>(gv), gl, gp, context_of(c...), gc));
      });
    } else {
      throw UnsupportedError("nflow::AnyBijector: taped vjp called without a check");
    }
  }
  void visit_mutable_parameters(const typename Base::ParamVisitor& f) override {
    visit_part_parameters(b_, std::string(), f);
  }
  void visit_const_parameters(const typename Base::ConstParamVisitor& f) const override {
    visit_part_parameters(b_, std::string(), f);
  }
  void visit_mutable_buffers(const typename Base::BufferVisitor& f) override {
    nflow::visit_buffers(b_, f);
  }
  void visit_const_buffers(const typename Base::ConstBufferVisitor& f) const override {
    nflow::visit_buffers(b_, f);
  }

 private:
  /// Calls f() or f(*ctx): the context only when B is conditional and one was given (AnyBijector
  /// has already checked that a context is given exactly when context_dim() > 0).
  template <typename F>
  static auto on_context(const Mat* ctx, F&& f) {
    if constexpr (!is_conditional_v<B>) {
      return f();
    } else if constexpr (context_dim_v<B> == Dynamic) {
      return ctx != nullptr ? f(*ctx) : f();
    } else {
      return f(*ctx);
    }
  }
  template <bool Inverse>
  Result call(const Mat& x, const Mat* ctx) const {
    return on_context(ctx, [&](const auto&... c) {
      const auto& xb = as_batch<S, B::Dim>(x);
      if constexpr (Inverse) {
        return to_result(b_.inverse_and_log_det(xb, c...));
      } else {
        return to_result(b_.forward_and_log_det(xb, c...));
      }
    });
  }
  template <bool Inverse>
  Mat vjp(const Mat& x, const Mat& gv, const Row& gl, GradRef gp, const Mat* ctx, Mat* gc) const {
    if constexpr (Inverse ? InverseDifferentiable<B> : ForwardDifferentiable<B>) {
      return on_context(ctx, [&](const auto&... c) {
        const auto& xb = as_batch<S, B::Dim>(x);
        const auto& gb = as_batch<S, B::Dim>(gv);
        return Mat(step_vjp<Inverse>(b_, xb, gb, gl, gp, gc, c...));
      });
    } else {
      throw UnsupportedError("nflow::AnyBijector: a vjp the held bijector lacks was called");
    }
  }
  static NoContext context_of() { return {}; }
  static const Mat& context_of(const Mat& c) { return c; }
  template <typename R>
  static Result to_result(R&& r) {
    return {Mat(std::move(r.value)), std::move(r.log_det)};
  }

  B b_;
};

}  // namespace detail

/// @brief Any bijector of scalar type `Scalar_`, held by value behind a virtual interface: itself
/// a bijector of run-time dimension (Dim = ContextDim = Eigen::Dynamic).
///
/// forward, inverse, their log-dets and vjps, the recorded pass, parameters and buffers are those
/// of the held bijector B, unchanged: AnyBijector(b).forward_and_log_det(x) is
/// b.forward_and_log_det(x) of the same batch, its parameters are b's (same visit order, same names,
/// unprefixed) and so are its buffers. Inputs of any Eigen expression type are evaluated once to
/// a dynamic matrix and given to B as a Batch<Scalar, B::Dim, Dynamic> (copied only when B's Dim
/// is fixed). A context is passed through when B is conditional; context_dim() is B's (0 for an
/// unconditional B, so a context given then is a ShapeError, as for B itself).
///
/// Capabilities the held type lacks are answered at run time: has_forward_vjp(),
/// has_inverse_vjp() and has_buffers() tell, and calling a missing vjp (forward_vjp,
/// forward_vjp_recorded, inverse_vjp) throws nflow::UnsupportedError naming the description.
/// The compile-time traits are conservative (IsConstantLogDet false, both costs
/// Cost::Iterative); is_constant_log_det(), forward_cost() and inverse_cost() give B's.
///
/// Class invariant: it holds a bijector (unless moved from). Const calls only read it, so a const
/// AnyBijector is safe to share between threads when B is.
/// @tparam Scalar_ float or double: the Scalar of every bijector it may hold.
template <typename Scalar_>
class AnyBijector : public BijectorBase<AnyBijector<Scalar_>> {
  using Concept = detail::AnyBijectorConcept<Scalar_>;
  using Mat = typename Concept::Mat;

 public:
  using Scalar = Scalar_;
  static constexpr int Dim = Dynamic;
  static constexpr int ContextDim = Dynamic;
  static constexpr bool IsConstantLogDet = false;
  static constexpr Cost ForwardCost = Cost::Iterative;
  static constexpr Cost InverseCost = Cost::Iterative;

  /// @brief Holds `bijector` (any nflow::Bijector with this Scalar; fixed or Dynamic Dim and
  /// ContextDim), described by `name` in messages and summaries.
  template <typename B>
  requires(!std::is_same_v<std::remove_cvref_t<B>, AnyBijector>) explicit AnyBijector(
      B bijector, std::string name = "bijector")
      : model_(make_model(std::move(bijector))), name_(std::move(name)) {}

  AnyBijector(const AnyBijector& other) : model_(other.model().clone()), name_(other.name_) {}
  AnyBijector(AnyBijector&&) noexcept = default;
  AnyBijector& operator=(const AnyBijector& other) {
    if (this != &other) *this = AnyBijector(other);
    return *this;
  }
  AnyBijector& operator=(AnyBijector&&) noexcept = default;
  ~AnyBijector() = default;

  /// The description given at construction.
  const std::string& name() const { return name_; }
  /// One line: the description, dimension, context rows and parameter count.
  std::string describe() const {
    std::string s = name_ + " (dim " + std::to_string(dim());
    if (context_dim() > 0) s += ", context " + std::to_string(context_dim());
    return s + ", " + std::to_string(this->parameter_count()) + " parameters)";
  }

  /// @brief The held bijector if it is a `B` (exactly), otherwise nullptr.
  template <typename B>
  const B* get_if() const {
    return model().type() == detail::type_tag<B>() ? static_cast<const B*>(model().object())
                                                   : nullptr;
  }
  template <typename B>
  B* get_if() {
    return model().type() == detail::type_tag<B>() ? static_cast<B*>(model().object()) : nullptr;
  }

  Index dim() const { return model().dim(); }
  Index context_dim() const { return model().context_dim(); }
  bool splits_batches() const { return model().splits_batches(); }
  /// Whether the held bijector has a forward (resp. inverse) vjp: nflow::ForwardDifferentiable.
  bool has_forward_vjp() const { return model().has_forward_vjp(); }
  bool has_inverse_vjp() const { return model().has_inverse_vjp(); }
  /// Whether the held bijector has buffers (a visit_buffers member; nflow/core/buffers.hpp).
  bool has_buffers() const { return model().has_buffers(); }
  /// The held bijector's compile-time traits, at run time.
  bool is_constant_log_det() const { return model().is_constant_log_det(); }
  Cost forward_cost() const { return model().forward_cost(); }
  Cost inverse_cost() const { return model().inverse_cost(); }

  /// The held bijector's parameters, in its order, under its names (the hook BijectorBase derives
  /// the visits and the count from).
  template <typename Self, typename F>
  static void parameters_impl(Self& self, F&& f) {
    if constexpr (std::is_const_v<Self>) {
      self.model().visit_const_parameters(
          [&f](const std::string& name, Eigen::Ref<const ParameterMatrix<Scalar>> t) {
            f(name, t);
          });
    } else {
      self.model().visit_mutable_parameters(
          [&f](const std::string& name, Eigen::Ref<ParameterMatrix<Scalar>> t) { f(name, t); });
    }
  }
  /// The held bijector's buffers under its names (none if it has no visit_buffers).
  template <typename F>
  void visit_buffers(F&& f) {
    model().visit_mutable_buffers([&f](const std::string& name, BufferVector& b) { f(name, b); });
  }
  template <typename F>
  void visit_buffers(F&& f) const {
    model().visit_const_buffers(
        [&f](const std::string& name, const BufferVector& b) { f(name, b); });
  }

  // ---- hooks for BijectorBase ---------------------------------------------------------------
  template <typename X, typename C>
  ResultFor<Scalar, Dynamic, X> forward_impl(const X& x, const C& ctx) const {
    return on_context(ctx, [&](const Mat* c) {
      auto r = model().forward(detail::as_batch<Scalar, Dynamic>(x), c);
      return ResultFor<Scalar, Dynamic, X>{std::move(r.value), std::move(r.log_det)};
    });
  }
  template <typename Z, typename C>
  ResultFor<Scalar, Dynamic, Z> inverse_impl(const Z& z, const C& ctx) const {
    return on_context(ctx, [&](const Mat* c) {
      auto r = model().inverse(detail::as_batch<Scalar, Dynamic>(z), c);
      return ResultFor<Scalar, Dynamic, Z>{std::move(r.value), std::move(r.log_det)};
    });
  }
  template <typename X, typename GV, typename GL, typename C>
  BatchFor<Scalar, Dynamic, X> forward_vjp_impl(const X& x, const GV& gv, const GL& gl,
                                                Eigen::Ref<Vector<Scalar>> gp, const C& ctx,
                                                ContextGradient<Scalar>* gc = nullptr) const {
    return vjp_impl<false>(x, gv, gl, gp, ctx, gc);
  }
  template <typename Z, typename GV, typename GL, typename C>
  BatchFor<Scalar, Dynamic, Z> inverse_vjp_impl(const Z& z, const GV& gv, const GL& gl,
                                                Eigen::Ref<Vector<Scalar>> gp, const C& ctx,
                                                ContextGradient<Scalar>* gc = nullptr) const {
    return vjp_impl<true>(z, gv, gl, gp, ctx, gc);
  }

  /// What forward_recorded() keeps: the held bijector's tape (nflow::tape_t), type-erased. A
  /// default-constructed tape is empty; recording fills it and, when it already holds a tape of
  /// the same held type, reuses its buffers.
  struct Tape {
    std::unique_ptr<detail::AnyTapeBase> held;
    /// The number of samples recorded (0 when nothing was).
    Index cols() const { return held ? held->cols() : 0; }
  };
  template <typename C>
  ValueAndLogDet<Scalar, Dynamic, Dynamic> record_forward_impl(const Mat& x, const C& ctx,
                                                               Tape& tape) const {
    return on_context(ctx, [&](const Mat* c) { return model().record(x, c, tape.held); });
  }
  template <typename GV, typename GL, typename C>
  Mat taped_vjp_impl(const Tape& tape, const GV& gv, const GL& gl, Eigen::Ref<Vector<Scalar>> gp,
                     const C& ctx, ContextGradient<Scalar>* gc = nullptr) const {
    require(has_forward_vjp(), "forward_vjp_recorded", false);
    if (!tape.held || tape.held->type() != model().tape_type()) {
      throw ShapeError("nflow::AnyBijector (" + name_ +
                       "): forward_vjp_recorded: the tape was not recorded by forward_recorded of "
                       "a bijector of this held type");
    }
    return on_context(ctx, [&](const Mat* c) {
      return model().taped_vjp(*tape.held, detail::as_batch<Scalar, Dynamic>(gv),
                               detail::as_batch<Scalar, 1>(gl), gp, c, gc);
    });
  }

 private:
  template <bool Inverse, typename X, typename GV, typename GL, typename C>
  BatchFor<Scalar, Dynamic, X> vjp_impl(const X& x, const GV& gv, const GL& gl,
                                        Eigen::Ref<Vector<Scalar>> gp, const C& ctx,
                                        ContextGradient<Scalar>* gc) const {
    require(Inverse ? has_inverse_vjp() : has_forward_vjp(),
            Inverse ? "inverse_vjp" : "forward_vjp", Inverse);
    return on_context(ctx, [&](const Mat* c) {
      const auto& xb = detail::as_batch<Scalar, Dynamic>(x);
      const auto& gb = detail::as_batch<Scalar, Dynamic>(gv);
      const auto& glb = detail::as_batch<Scalar, 1>(gl);
      return BatchFor<Scalar, Dynamic, X>(Inverse ? model().inverse_vjp(xb, gb, glb, gp, c, gc)
                                                  : model().forward_vjp(xb, gb, glb, gp, c, gc));
    });
  }

  template <typename B>
  static std::unique_ptr<Concept> make_model(B bijector) {
    static_assert(Bijector<B>,
                  "nflow::AnyBijector<Scalar>: the held type must model nflow::Bijector");
    static_assert(std::is_same_v<typename B::Scalar, Scalar>,
                  "nflow::AnyBijector<Scalar>: the held bijector's Scalar must be Scalar; "
                  "do not mix float and double");
    static_assert(detail::CheckParameterMembers<0, B>::ok);
    return std::make_unique<detail::AnyBijectorModel<B>>(std::move(bijector));
  }

  const Concept& model() const {
    if (!model_)
      throw UnsupportedError("nflow::AnyBijector (" + name_ + "): this object was moved from");
    return *model_;
  }
  Concept& model() { return const_cast<Concept&>(static_cast<const AnyBijector&>(*this).model()); }

  /// Throws UnsupportedError unless the held bijector has the vjp `call` needs.
  void require(bool has, const char* call, bool inverse) const {
    if (has) return;
    const std::string dir = inverse ? "inverse" : "forward";
    throw UnsupportedError(std::string("nflow::AnyBijector: ") + call + ": the held bijector '" +
                           name_ + "' has no " + dir + " vjp (it is not " +
                           (inverse ? "Inverse" : "Forward") + "Differentiable); ask has_" + dir +
                           "_vjp() first");
  }

  /// Calls f(pointer to the context as a dynamic matrix, or nullptr): evaluated once, a reference
  /// when it already is one.
  template <typename C, typename F>
  static auto on_context(const C& ctx, F&& f) {
    if constexpr (is_no_context_v<C>) {
      return f(static_cast<const Mat*>(nullptr));
    } else {
      const auto& c = detail::as_batch<Scalar, Dynamic>(ctx);
      return f(&c);
    }
  }

  std::unique_ptr<Concept> model_;
  std::string name_;
};

}  // namespace nflow
