// libFuzzer target for the safetensors loader: arbitrary bytes are loaded into a small flow.
// Every input must either load or throw one of nflow's documented exceptions (io::IoError and its
// io::FormatError, ParameterError, ShapeError); anything else (a crash, an out-of-bounds read, a
// leak, a sanitizer report, another exception type) is a bug. On failure the flow must be unchanged.
//
// Built by CMake with -DNFLOW_BUILD_FUZZERS=ON (clang; scripts/test does so in its sanitizer
// build) and run for NFLOW_FUZZ_SECONDS as the test "fuzz:safetensors". By hand, longer:
//   clang++ -std=c++20 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -O1 -g \
//     -Iinclude -isystem /usr/include/eigen3 tests/fuzz/safetensors_fuzz.cpp -o /tmp/safetensors_fuzz
//   mkdir -p /tmp/st_corpus
//   NFLOW_FUZZ_WRITE_SEED=/tmp/st_corpus/seed.safetensors /tmp/safetensors_fuzz -runs=0 /tmp/st_corpus
//   /tmp/safetensors_fuzz -max_total_time=60 -max_len=4096 /tmp/st_corpus
// (the second line writes the two seed files of LLVMFuzzerInitialize as the first corpus entries).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <nflow/io/safetensors.hpp>
#include <nflow/nflow.hpp>
#include <span>
#include <string>

namespace {
using FuzzFlow = nflow::Flow<nflow::AffineCoupling<double, 2>, nflow::ActNorm<double, 2>,
                             nflow::LULinear<double, 2>>;

FuzzFlow make_flow() {
  return FuzzFlow(
      nflow::AffineCoupling<double, 2>(nflow::CouplingMask::half(2),
                                       {.hidden_width = 4, .hidden_layers = 1, .seed = 1}),
      nflow::ActNorm<double, 2>{}, nflow::LULinear<double, 2>{});
}
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // With NFLOW_FUZZ_WRITE_SEED=<path> in the environment, write two valid files to start from:
  // the flow's own file at <path>, and at <path>_bytes one with a tensor of every integer dtype
  // (as PyTorch writes buffers and masks: I64, I32, I8, U8, BOOL).
  if (const char* path = std::getenv("NFLOW_FUZZ_WRITE_SEED")) {
    std::ofstream out(path, std::ios::binary);
    nflow::io::save(make_flow(), out, {nflow::io::DType::F32, {{"seed", "1"}}});
    nflow::io::TensorFile bytes;
    const Eigen::Matrix<int, 2, 3> values =
        (Eigen::Matrix<int, 2, 3>() << 1, 0, 1, 0, 0, 1).finished();
    for (const nflow::io::DType d : nflow::io::all_dtypes) {
      if (nflow::io::is_floating(d)) continue;
      bytes.tensors.emplace(std::string(nflow::io::dtype_name(d)),
                            nflow::io::make_tensor(values, d));
    }
    std::ofstream more(std::string(path) + "_bytes", std::ios::binary);
    nflow::io::write_safetensors(more, bytes);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const FuzzFlow reference = make_flow();
  FuzzFlow flow = reference;
  const std::span<const unsigned char> bytes(data, size);
  try {
    nflow::io::load(flow, bytes);
  } catch (const nflow::io::IoError&) {
    if (nflow::get_parameters(flow) != nflow::get_parameters(reference)) std::abort();
  } catch (const nflow::ParameterError&) {
    if (nflow::get_parameters(flow) != nflow::get_parameters(reference)) std::abort();
  } catch (const nflow::ShapeError&) {
    if (nflow::get_parameters(flow) != nflow::get_parameters(reference)) std::abort();
  }
  // The low-level reader and the inspection view must be just as safe.
  try {
    (void)nflow::io::load_parameters(nflow::io::parse_safetensors(bytes));
  } catch (const nflow::io::IoError&) {
  } catch (const nflow::ParameterError&) {
  }
  return 0;
}
