// nflow_runtime: the explicit instantiation of the run-time model's coupling layers for float
// (one TU per layer family and scalar, so that the library builds in parallel).
#include "nflow/io/model.hpp"

namespace nflow::io::model_detail {
template AnyBijector<float> build_coupling<float>(const json::Value&, BuildContext&,
                                                  const std::string&);
}  // namespace nflow::io::model_detail
