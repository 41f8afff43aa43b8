// The laws on the elementwise maps, permutations and Glow layers (the Elementwise part of the
// conformance list, conformance.hpp), and the check that the list misses no bijector: every
// header under include/nflow/bijectors/ (and the composites core/flow.hpp, core/inverted.hpp) has
// entries in float and double, with a fixed and a Dynamic size, with a context where its family
// takes one, and every transformer appears through both structures. The headers are listed when
// the test runs, so a new bijectors/foo.hpp fails it until it has its entries.
#include <filesystem>
#include <map>
#include <set>

#include "conformance/conformance.hpp"

namespace {

using namespace nflow;
using namespace nflow::conformance;

[[maybe_unused]] const bool registered = register_laws<Elementwise>();

/// What one entry covers, for the checks below.
struct Row {
  std::string name;
  std::vector<std::string> headers;
  bool is_float;
  bool fixed;          ///< a compile-time size (Dim, or Conv1x1's Channels)
  bool takes_context;  ///< the type accepts a context (ContextDim fixed or Dynamic)
  bool with_context;   ///< its laws run with one
};

template <typename B>
constexpr bool fixed_size() {
  if constexpr (requires { B::Channels; }) {
    return B::Channels != Dynamic;
  } else {
    return B::Dim != Dynamic;
  }
}

template <typename... Entries>
std::vector<Row> rows_of(std::tuple<Entries...>*) {
  return {Row{name_of<Entries>(),
              std::vector<std::string>(Entries::Headers.begin(), Entries::Headers.end()),
              std::is_same_v<typename Entries::Bijector::Scalar, float>,
              fixed_size<typename Entries::Bijector>(),
              is_conditional_v<typename Entries::Bijector>, Entries::ContextRows > 0}...};
}

/// Headers relative to include/nflow/, as the entries name them.
std::set<std::string> bijector_headers() {
  const std::filesystem::path root = std::filesystem::path(NFLOW_SOURCE_DIR) / "include" / "nflow";
  std::set<std::string> out;
  for (const auto& f : std::filesystem::recursive_directory_iterator(root / "bijectors")) {
    if (f.is_regular_file() && f.path().extension() == ".hpp") {
      out.insert(f.path().lexically_relative(root).generic_string());
    }
  }
  return out;
}

}  // namespace

TEST_CASE(
    "every bijector header has conformance entries: float and double, fixed and Dynamic, "
    "conditional",
    "[conformance]") {
  const std::vector<Row> rows = rows_of(static_cast<Every*>(nullptr));
  std::set<std::string> required = bijector_headers();
  REQUIRE(required.size() >= 10);  // the directory was found
  required.insert("core/flow.hpp");
  required.insert("core/inverted.hpp");

  std::map<std::string, std::vector<const Row*>> by_header;
  for (const auto& r : rows) {
    for (const auto& h : r.headers) by_header[h].push_back(&r);
  }
  for (const auto& h : required) {
    INFO(h << " needs entries in tests/conformance/conformance.hpp");
    const auto it = by_header.find(h);
    REQUIRE(it != by_header.end());
    const auto& es = it->second;
    auto any = [&](auto pred) { return std::any_of(es.begin(), es.end(), pred); };
    CHECK(any([](const Row* r) { return r->is_float; }));
    CHECK(any([](const Row* r) { return !r->is_float; }));
    CHECK(any([](const Row* r) { return r->fixed; }));
    CHECK(any([](const Row* r) { return !r->fixed; }));
    if (any([](const Row* r) { return r->takes_context; })) {
      CHECK(any([](const Row* r) { return r->with_context; }));
    }
    if (h.starts_with("bijectors/transformers/")) {
      // A transformer is checked through both structures.
      for (const std::string structure :
           {"bijectors/coupling.hpp", "bijectors/masked_autoregressive.hpp"}) {
        INFO("through " << structure);
        CHECK(any([&](const Row* r) {
          return std::find(r->headers.begin(), r->headers.end(), structure) != r->headers.end();
        }));
      }
    }
  }
  // No entry names a header that does not exist (a renamed header would leave its entries stale).
  for (const auto& [h, es] : by_header) {
    INFO(es.front()->name << " names " << h);
    CHECK(
        std::filesystem::exists(std::filesystem::path(NFLOW_SOURCE_DIR) / "include" / "nflow" / h));
  }
  // Names are unique: they are the test cases' names.
  std::set<std::string> names;
  for (const auto& r : rows) names.insert(r.name);
  CHECK(names.size() == rows.size());
}
