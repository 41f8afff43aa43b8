// The five-way cross-language check of issue 19, part 1 (C++): two models are saved once — a Real
// NVP trained here and zuko's conditional NSF imported from its PyTorch fixture — with a set of
// points and the log-densities that C++ template code gives for them. This program then checks
// the run-time flow (io::load_model of the saved file) against those numbers; the C, Python and
// Fortran checks (tests/cross_language/) read the same files and must agree too.
//
// Usage: cross_language_make <output directory> <directory holding fixtures/>
// Files written: <name>.safetensors (the model), <name>.points.txt ("n dim context_dim", then one
// line per point: its dim features, then its context_dim context values) and <name>.log_prob.txt
// (one log-density per line), for name in {real_nvp, zuko_nsf_cond}.

#include <Eigen/Core>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <string>

#include "nflow/datasets/toy.hpp"
#include "nflow/flows/presets.hpp"
#include "nflow/interop/zuko.hpp"
#include "nflow/io/model.hpp"
#include "nflow/io/safetensors.hpp"
#include "nflow/io/tensor_conversion.hpp"
#include "nflow/train/fit.hpp"

namespace {

using Mat = Eigen::MatrixXd;
using Row = Eigen::Matrix<double, 1, Eigen::Dynamic>;
namespace fs = std::filesystem;

int failures = 0;

/// max over points of |a − b| / max(1, |b|).
double max_rel(const Row& a, const Row& b) {
  return ((a - b).array().abs() / b.array().abs().max(1.0)).maxCoeff();
}

void check(const std::string& what, const Row& got, const Row& want, double tol) {
  const double err = max_rel(got, want);
  const bool ok = got.allFinite() && err <= tol;
  std::cout << (ok ? "ok   " : "FAIL ") << what << ": max relative difference " << err
            << " (tolerance " << tol << ")\n";
  if (!ok) ++failures;
}

void write(const fs::path& dir, const std::string& name, const Mat& x, const Mat& context,
           const Row& log_prob) {
  std::ofstream p(dir / (name + ".points.txt"));
  p << std::setprecision(17) << x.cols() << ' ' << x.rows() << ' ' << context.rows() << '\n';
  for (Eigen::Index j = 0; j < x.cols(); ++j) {
    for (Eigen::Index i = 0; i < x.rows(); ++i) p << (i ? " " : "") << x(i, j);
    for (Eigen::Index i = 0; i < context.rows(); ++i) p << ' ' << context(i, j);
    p << '\n';
  }
  std::ofstream l(dir / (name + ".log_prob.txt"));
  l << std::setprecision(17);
  for (Eigen::Index j = 0; j < log_prob.cols(); ++j) l << log_prob(j) << '\n';
  if (!p || !l) throw std::runtime_error("cannot write into " + dir.string());
}

}  // namespace

int main(int argc, char** argv) try {
  if (argc != 3) {
    std::cerr << "usage: cross_language_make <output dir> <test data dir>\n";
    return 2;
  }
  const fs::path out = argv[1];
  const fs::path data_dir = argv[2];
  fs::create_directories(out);

  // 1. A Real NVP trained in C++ (a compile-time type), saved once.
  {
    auto flow =
        nflow::flows::real_nvp<double, 2>({.transforms = 4, .hidden_features = 16, .seed = 7});
    const Mat data = nflow::datasets::toy(nflow::datasets::Toy::TwoMoons, 2000, /*seed=*/3);
    nflow::train::fit(flow, {.samples = data}, {.epochs = 2, .seed = 5});
    nflow::io::save(flow, out / "real_nvp.safetensors");
    Mat x(2, 40);
    x.leftCols(32) = data.leftCols(32);
    x.rightCols(8) << 0, 3, -1.5, 8, -8, 0.25, 1e-3, -4,  //
        0, -2, 0.7, 8, 3, -0.5, 1e-3, 4;
    const Row typed = flow.log_prob(x);
    write(out, "real_nvp", x, Mat(0, x.cols()), typed);
    const auto runtime = nflow::io::load_model<double>(out / "real_nvp.safetensors");
    check("real_nvp: run-time flow vs the C++ type", runtime.log_prob(x), typed, 1e-12);
  }

  // 2. zuko's conditional NSF, imported from PyTorch's state dict (a C++ template model), saved
  // once as an nflow file; zuko's own log-densities come with the fixture.
  {
    const std::string fixture = (data_dir / "fixtures" / "zuko_nsf_cond").string();
    auto imported = nflow::interop::load_zuko_nsf<double>(
        nflow::interop::StateDict::from_file(fixture + ".safetensors"),
        {.features = 4,
         .context = 2,
         .transforms = 3,
         .bins = 8,
         .randperm = true,
         .hidden_features = {16, 16}});
    const auto io = nflow::io::read_safetensors(fixture + ".io.safetensors");
    const Mat x = nflow::io::to_matrix<double>(io.tensors.at("x"), "x").transpose();
    const Mat c = nflow::io::to_matrix<double>(io.tensors.at("context"), "context").transpose();
    const Row zuko =
        nflow::io::to_matrix<double>(io.tensors.at("log_prob"), "log_prob").transpose();
    const Row typed = imported.log_prob(x, c);
    check("zuko_nsf_cond: the C++ import vs zuko (PyTorch)", typed, zuko, 1e-10);
    // Saved as a run-time model (the same layers, the base as a RuntimeBase): a file that
    // describes itself.
    nflow::io::save(nflow::io::to_runtime_model(std::move(imported)),
                    out / "zuko_nsf_cond.safetensors");
    write(out, "zuko_nsf_cond", x, c, typed);
    const auto runtime = nflow::io::load_model<double>(out / "zuko_nsf_cond.safetensors");
    check("zuko_nsf_cond: run-time flow vs the C++ import", runtime.log_prob(x, c), typed, 1e-12);
  }
  return failures == 0 ? 0 : 1;
} catch (const std::exception& e) {
  std::cerr << "cross_language_make: " << e.what() << '\n';
  return 1;
}
