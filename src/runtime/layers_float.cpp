// nflow_runtime: the explicit instantiation of the run-time model's coupling and autoregressive
// layers for float. One TU per scalar: the two families share the run-time layer machinery, which
// one TU compiles once (clang -O0, double: 22 s together against 17 + 20 s apart; with ASan and
// UBSan 30 s against 22 + 24 s).
#include "nflow/io/model.hpp"

namespace nflow::io::model_detail {
template AnyBijector<float> build_coupling<float>(const json::Value&, BuildContext&,
                                                  const std::string&);
template AnyBijector<float> build_autoregressive<float>(const json::Value&, BuildContext&,
                                                        const std::string&);
}  // namespace nflow::io::model_detail
