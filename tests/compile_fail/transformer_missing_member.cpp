// Must not compile: a transformer without inverse_backward given to a coupling layer.
#include <nflow/nflow.hpp>
struct HalfTransformer {
  using Scalar = double;
  static constexpr int ParamsPerDim = 1;
  template <typename X, typename P, typename Z, typename L>
  void forward(const Eigen::MatrixBase<X>& x, const Eigen::MatrixBase<P>& params, Z&& z,
               L&&) const {
    z = x - params;
  }
  template <typename Z, typename P, typename X, typename L>
  void inverse(const Eigen::MatrixBase<Z>& z, const Eigen::MatrixBase<P>& params, X&& x,
               L&&) const {
    x = z + params;
  }
  template <typename X, typename P, typename GZ, typename GL, typename GX, typename GP>
  void forward_backward(const Eigen::MatrixBase<X>&, const Eigen::MatrixBase<P>&,
                        const Eigen::MatrixBase<GZ>& gz, const Eigen::MatrixBase<GL>&, GX&& gx,
                        GP&& gp) const {
    gx = gz;
    gp = -gz;
  }
};
int main() {
  nflow::Coupling<HalfTransformer, 2> layer(nflow::CouplingMask::half(2));
  (void)layer;
}
