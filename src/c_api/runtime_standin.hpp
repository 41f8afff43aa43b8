#pragma once
/// @file
/// @brief TEMPORARY stand-in for nflow/io/model.hpp (helper A, branch wip-19-model) until it lands:
/// real_nvp and iaf presets only, no loader. Used only when that header does not exist; delete it
/// then.
#include <cstdint>
#include <filesystem>
#include <nflow/io.hpp>
#include <nflow/nflow.hpp>
#include <span>
#include <string>
#include <string_view>
namespace nflow::io {
class VersionError : public FormatError {
 public:
  using FormatError::FormatError;
};
template <typename S>
using RuntimeBase = StandardNormal<S, Dynamic>;
template <typename S>
using RuntimeModel = Density<RuntimeBase<S>, DynamicFlow<S>>;
struct RuntimePresetOptions {
  Index transforms = 0, hidden_features = 0, hidden_layers = 0, context = 0, bins = 0;
  double bound = 0;
  std::uint64_t seed = 0;
};
inline int schema_version() { return 1; }
inline int model_schema_version_of(std::span<const std::byte>) { return 1; }
template <typename S>
RuntimeModel<S> load_model(std::span<const std::byte>) {
  throw FormatError("stub: no loader");
}
template <typename S>
std::string describe(const RuntimeModel<S>&) {
  return "{\"stub\":true}";
}
template <typename S>
RuntimeModel<S> make_preset(std::string_view family, Index dim, const RuntimePresetOptions& o) {
  DynamicFlow<S> f;
  auto conv = [&](auto d) {
    for (Index i = 0; i < Index(d.transform().size()); ++i)
      f.push_back(AnyBijector<S>(d.transform().step(i)));
  };
  if (family == "real_nvp")
    conv(flows::real_nvp<S>(dim, {.transforms = o.transforms ? o.transforms : 3,
                                  .hidden_features = o.hidden_features ? o.hidden_features : 16,
                                  .context = o.context,
                                  .seed = o.seed}));
  else if (family == "iaf")
    conv(flows::iaf<S>(dim, {.transforms = o.transforms ? o.transforms : 3,
                             .hidden_features = o.hidden_features ? o.hidden_features : 16,
                             .context = o.context,
                             .seed = o.seed}));
  else
    throw ParameterError("unknown preset family '" + std::string(family) + "'");
  return RuntimeModel<S>(RuntimeBase<S>(dim), std::move(f));
}
}  // namespace nflow::io
