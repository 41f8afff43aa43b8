// nflow_runtime: the explicit instantiations of the run-time model's loader, builder and presets
// for float and double, except the coupling and autoregressive layers (their own TUs).
#include "nflow/io/model.hpp"

namespace nflow::io {
#define NFLOW_RUNTIME_INSTANTIATE(S)                                                           \
  template AnyBijector<S> model_detail::build_continuous<S>(                                   \
      const json::Value&, model_detail::BuildContext&, const std::string&);                    \
  template AnyBijector<S> model_detail::build_simple<S>(                                       \
      const json::Value&, model_detail::BuildContext&, const std::string&);                    \
  template DynamicFlow<S> model_detail::build_composite<S>(                                    \
      const json::Value&, model_detail::BuildContext&, const std::string&, int);               \
  template RuntimeModel<S> model_detail::build_model<S>(const json::Value&, const TensorFile*, \
                                                        std::uint64_t);                        \
  template RuntimeModel<S> load_model<S>(const std::filesystem::path&);                        \
  template RuntimeModel<S> load_model<S>(std::span<const std::byte>);                          \
  template RuntimeModel<S> make_preset<S>(std::string_view, Index, const RuntimePresetOptions&);
NFLOW_RUNTIME_INSTANTIATE(float)
NFLOW_RUNTIME_INSTANTIATE(double)
#undef NFLOW_RUNTIME_INSTANTIATE

// The settings this library was compiled with, in a name (see nflow/io/model.hpp).
namespace runtime_detail {
NFLOW_DETAIL_SETTINGS_DEFINITION()
}  // namespace runtime_detail
}  // namespace nflow::io
