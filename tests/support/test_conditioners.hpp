#pragma once
// Conditioners that are not the structures' own networks, for the generic paths of Coupling and
// MaskedAutoregressive (generic_conditioner_test.cpp and the conformance list):
//   Opaque<Net>        an nn::MLP or nn::MADE behind the bare nn::Conditioner contract (no
//                      forward_point_into, no initialize, no MADE accessors), with a connectivity()
//                      read off the MADE's masks: the structures must then take their generic
//                      paths and still compute what the fast paths compute;
//   SplitConditioner   the P parameters of the features `targets` from an MLP of the features
//                      `inputs` (and the context), every other feature's from a trained bias alone:
//                      the two-group dependency graph of zuko's passes = 2 (not MADE-shaped).
#include <Eigen/Core>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "nflow/core/parameters.hpp"
#include "nflow/nn/conditioner.hpp"
#include "nflow/nn/made.hpp"
#include "nflow/nn/mlp.hpp"

namespace nflow::test {

/// `Net` (an nn::DenseNetwork) seen through the required members of nn::Conditioner only, plus
/// its buffers and, for a MADE, its connectivity (the boolean product of its masks).
template <typename Net>
class Opaque {
 public:
  using Scalar = typename Net::Scalar;
  using Tape = typename Net::Tape;

  explicit Opaque(Net net) : net_(std::move(net)) {}

  Index in_dim() const { return net_.in_dim(); }
  Index out_dim() const { return net_.out_dim(); }
  Index context_dim() const { return net_.context_dim(); }
  Index parameter_count() const { return net_.parameter_count(); }
  const Net& net() const { return net_; }

  template <typename X, typename C>
  auto forward(const X& x, const C& ctx) const {
    return net_.forward(x, ctx);
  }
  template <typename X, typename C>
  auto forward_recorded(const X& x, Tape& tape, const C& ctx) const {
    return net_.forward_recorded(x, tape, ctx);
  }
  template <typename G, typename C>
  auto backward_recorded(const Tape& tape, const G& g, Eigen::Ref<Vector<Scalar>> gp,
                         const C& ctx) const {
    return net_.backward_recorded(tape, g, gp, ctx);
  }
  template <typename F>
  void visit_parameters(F&& f) {
    net_.visit_parameters(f);
  }
  template <typename F>
  void visit_parameters(F&& f) const {
    net_.visit_parameters(f);
  }
  template <typename F>
  void visit_buffers(F&& f) requires requires(Net& n, F& g) {
    n.visit_buffers(g);
  }
  { net_.visit_buffers(f); }
  template <typename F>
  void visit_buffers(F&& f) const requires requires(const Net& n, F& g) {
    n.visit_buffers(g);
  }
  { net_.visit_buffers(f); }

  /// A MADE's: output r depends on input j iff a path of unmasked weights joins them. A test may
  /// set `claimed` to state another graph (a cyclic one, to see it rejected).
  nn::Connectivity connectivity() const requires requires(const Net& n) { n.mask(0); }
  {
    if (claimed) return *claimed;
    ParameterMatrix<double> reach = net_.mask(0).template cast<double>();
    for (Index l = 1; l <= net_.hidden_layers(); ++l) {
      reach = (net_.mask(l).template cast<double>() * reach).eval();
    }
    return reach.array() > 0.0;
  }
  std::optional<nn::Connectivity> claimed;

 private:
  Net net_;
};

/// θ = bias + scatter(MLP(x[inputs], c)) into the rows of the features `targets` (out_dim
/// P·D, rows blocked p·D + i as the transformer contract says). Parameters "net.*" (the MLP's)
/// then "bias" (P·D × 1). Feature i in `targets` depends on the `inputs`, every other on nothing.
template <typename S>
class SplitConditioner {
 public:
  using Scalar = S;
  using Mlp = nn::MLP<S, Dynamic, Dynamic, Dynamic, nn::Tanh>;
  struct Tape {
    typename Mlp::Tape net;
    Index cols() const { return net.cols(); }
  };

  SplitConditioner(Index dim, Index params_per_dim, std::vector<int> inputs,
                   std::vector<int> targets, Index hidden, Index context_dim, std::uint64_t seed)
      : dim_(dim),
        p_(params_per_dim),
        inputs_(std::move(inputs)),
        targets_(std::move(targets)),
        mlp_(Index(inputs_.size()), p_ * Index(targets_.size()), hidden, 1, context_dim),
        bias_(ParameterMatrix<S>::Zero(p_ * dim, 1)) {
    mlp_.initialize(seed, false);
  }

  Index in_dim() const { return dim_; }
  Index out_dim() const { return p_ * dim_; }
  Index context_dim() const { return mlp_.context_dim(); }
  Index parameter_count() const { return mlp_.parameter_count() + bias_.size(); }

  template <typename X, typename C>
  ParameterMatrix<S> forward(const X& x, const C& ctx) const {
    return assemble(mlp_.forward(gather(x), ctx));
  }
  template <typename X, typename C>
  ParameterMatrix<S> forward_recorded(const X& x, Tape& tape, const C& ctx) const {
    return assemble(mlp_.forward_recorded(gather(x), tape.net, ctx));
  }
  template <typename G, typename C>
  ParameterMatrix<S> backward_recorded(const Tape& tape, const G& g, Eigen::Ref<Vector<S>> gp,
                                       const C& ctx) const {
    const Index t = Index(targets_.size());
    ParameterMatrix<S> gt(p_ * t, g.cols());
    for (Index p = 0; p < p_; ++p) {
      for (Index k = 0; k < t; ++k) gt.row(p * t + k) = g.row(p * dim_ + targets_[std::size_t(k)]);
    }
    const Index m = mlp_.parameter_count();
    const ParameterMatrix<S> ga = mlp_.backward_recorded(tape.net, gt, gp.head(m), ctx);
    gp.tail(bias_.size()) += g.rowwise().sum();
    ParameterMatrix<S> gx = ParameterMatrix<S>::Zero(dim_, g.cols());
    for (std::size_t k = 0; k < inputs_.size(); ++k) gx.row(inputs_[k]) += ga.row(Index(k));
    return gx;
  }
  template <typename F>
  void visit_parameters(F&& f) {
    mlp_.visit_parameters(nflow::detail::prefixed_visitor("net.", f));
    f(std::string("bias"), Eigen::Ref<ParameterMatrix<S>>(bias_));
  }
  template <typename F>
  void visit_parameters(F&& f) const {
    mlp_.visit_parameters(nflow::detail::prefixed_visitor("net.", f));
    f(std::string("bias"), Eigen::Ref<const ParameterMatrix<S>>(bias_));
  }
  nn::Connectivity connectivity() const {
    nn::Connectivity c = nn::Connectivity::Constant(out_dim(), dim_, false);
    for (Index p = 0; p < p_; ++p) {
      for (int i : targets_) {
        for (int j : inputs_) c(p * dim_ + i, j) = true;
      }
    }
    return c;
  }
  const Mlp& mlp() const { return mlp_; }

 private:
  template <typename X>
  ParameterMatrix<S> gather(const X& x) const {
    ParameterMatrix<S> xa(Index(inputs_.size()), x.cols());
    for (std::size_t k = 0; k < inputs_.size(); ++k) xa.row(Index(k)) = x.row(inputs_[k]);
    return xa;
  }
  template <typename T>
  ParameterMatrix<S> assemble(const T& t) const {
    ParameterMatrix<S> y = bias_.replicate(1, t.cols());
    const Index n = Index(targets_.size());
    for (Index p = 0; p < p_; ++p) {
      for (Index k = 0; k < n; ++k) y.row(p * dim_ + targets_[std::size_t(k)]) += t.row(p * n + k);
    }
    return y;
  }

  Index dim_;
  Index p_;
  std::vector<int> inputs_;
  std::vector<int> targets_;
  Mlp mlp_;
  ParameterMatrix<S> bias_;
};

}  // namespace nflow::test
