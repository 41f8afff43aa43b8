// libFuzzer target for the C ABI's file loading: arbitrary bytes go to nflow_open_memory. Every
// input must either open (and then evaluate a point and close cleanly) or fail with one of the
// statuses a bad file gets (NFLOW_ERROR_FORMAT, NFLOW_ERROR_VERSION) and a message; anything else
// — a crash, a sanitizer report, a leak, NFLOW_ERROR_INTERNAL, another status, an empty
// message — is a bug.
//
// Built by CMake with -DNFLOW_BUILD_FUZZERS=ON (clang; scripts/test does so in its sanitizer
// build) and run for NFLOW_FUZZ_SECONDS as the test "fuzz:c_api_open", from a corpus that starts
// with a saved preset (written by the target itself: NFLOW_FUZZ_WRITE_SEED=<path>).
#include <nflow/c/nflow.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {
[[noreturn]] void finding(const char* what, nflow_status s) {
  std::fprintf(stderr, "c_api_open_fuzz: %s: %s: %s\n", what, nflow_status_name(s),
               nflow_last_error());
  std::abort();
}

// Writes a small saved model (a float Real NVP and a conditional double MAF) as seed inputs.
void write_seed(const char* path) {
  nflow_model* m = nullptr;
  if (nflow_create_preset("real_nvp", 2,
                          R"({"transforms": 1, "hidden_features": 4, "hidden_layers": 1})",
                          NFLOW_FLOAT32, &m) != NFLOW_OK ||
      nflow_save(m, path) != NFLOW_OK) {
    finding("writing the seed", NFLOW_ERROR_INTERNAL);
  }
  nflow_close(m);
  std::vector<char> second(path, path + std::char_traits<char>::length(path));
  const char suffix[] = "_maf";
  second.insert(second.end(), suffix, suffix + sizeof suffix);
  if (nflow_create_preset(
          "maf", 2, R"({"transforms": 1, "hidden_features": 4, "hidden_layers": 1, "context": 1})",
          NFLOW_FLOAT64, &m) != NFLOW_OK ||
      nflow_save(m, second.data()) != NFLOW_OK) {
    finding("writing the seed", NFLOW_ERROR_INTERNAL);
  }
  nflow_close(m);
}
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* path = std::getenv("NFLOW_FUZZ_WRITE_SEED")) write_seed(path);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  nflow_model* m = nullptr;
  const nflow_scalar scalar = size % 2 == 0 ? NFLOW_SCALAR_FILE : NFLOW_FLOAT64;
  const nflow_status s = nflow_open_memory(data, size, scalar, &m);
  if (s != NFLOW_OK) {
    if (s != NFLOW_ERROR_FORMAT && s != NFLOW_ERROR_VERSION) finding("unexpected status", s);
    if (nflow_last_error()[0] == '\0') finding("no message", s);
    if (m != nullptr) finding("*out set on failure", s);
    return 0;
  }
  std::size_t dim = 0, context_dim = 0;
  nflow_scalar type = NFLOW_SCALAR_FILE;
  if (nflow_dim(m, &dim) != NFLOW_OK || nflow_context_dim(m, &context_dim) != NFLOW_OK ||
      nflow_scalar_type(m, &type) != NFLOW_OK || dim == 0) {
    finding("queries of an opened model", NFLOW_ERROR_INTERNAL);
  }
  // One point at the origin (small models only: a huge dim is a valid file, not a finding).
  if (dim <= 64 && context_dim <= 64) {
    std::vector<double> x(dim, 0.0), c(context_dim, 0.0);
    std::vector<float> xf(dim, 0.0f), cf(context_dim, 0.0f);
    double lp = 0;
    float lpf = 0;
    const nflow_status e =
        type == NFLOW_FLOAT64
            ? nflow_log_prob_d(m, 1, NFLOW_POINTS_CONTIGUOUS, x.data(), dim,
                               context_dim ? c.data() : nullptr, context_dim, &lp)
            : nflow_log_prob_f(m, 1, NFLOW_POINTS_CONTIGUOUS, xf.data(), dim,
                               context_dim ? cf.data() : nullptr, context_dim, &lpf);
    if (e != NFLOW_OK && e != NFLOW_ERROR_UNSUPPORTED && e != NFLOW_ERROR_ARGUMENT &&
        e != NFLOW_ERROR_SIZE) {
      finding("log_prob of an opened model", e);
    }
  }
  nflow_close(m);
  return 0;
}
