// Self-describing model files and the run-time model (nflow/io/model.hpp, linked from
// nflow::runtime): typed presets saved and loaded without their type, the description check of
// typed loads, files from before the schema, newer schemas, hostile descriptions, make_preset,
// and imported zuko/nflows models saved and reloaded. Typed instantiations are kept few: every
// typed flow is double with dynamic sizes.

#include "nflow/io/model.hpp"

#include <Eigen/Core>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstddef>
#include <functional>
#include <random>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "nflow/interop/nflows.hpp"
#include "nflow/interop/zuko.hpp"

#ifndef NFLOW_TEST_DATA_DIR
#error "NFLOW_TEST_DATA_DIR must name the directory that holds fixtures/"
#endif

namespace {

using nflow::Dynamic;
using nflow::Index;
using Mat = Eigen::MatrixXd;
namespace io = nflow::io;
namespace flows = nflow::flows;

std::string bytes_of(const io::TensorFile& f) {
  std::stringstream s;
  io::write_safetensors(s, f);
  return s.str();
}
template <typename T>
std::string saved(const T& object) {
  std::stringstream s;
  io::save(object, s);
  return s.str();
}
std::span<const std::byte> span_of(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}
io::TensorFile file_of(const std::string& s) {
  return io::parse_safetensors(
      std::span<const unsigned char>(reinterpret_cast<const unsigned char*>(s.data()), s.size()));
}
template <typename S = double>
io::RuntimeModel<S> runtime(const std::string& s) {
  return io::load_model<S>(span_of(s));
}

/// Every parameter uniform in (−a, a), from a seed: a trained-looking model.
template <typename T>
void randomize(T& object, unsigned seed, double a = 0.4) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> u(-a, a);
  object.visit_parameters([&](const std::string&, auto t) {
    for (Index j = 0; j < t.cols(); ++j)
      for (Index i = 0; i < t.rows(); ++i) t(i, j) = typename decltype(t)::Scalar(u(gen));
  });
}

double max_rel(const Mat& a, const Mat& b) {
  REQUIRE(a.rows() == b.rows());
  REQUIRE(a.cols() == b.cols());
  return ((a - b).array().abs() / b.array().abs().max(1.0)).maxCoeff();
}

Mat points(Index dim, Index n, unsigned seed, double lo = -1.5, double hi = 1.5) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> u(lo, hi);
  Mat x(dim, n);
  for (Index j = 0; j < n; ++j)
    for (Index i = 0; i < dim; ++i) x(i, j) = u(gen);
  return x;
}

/// inverse(forward(x)) = x, log-dets opposite, and the forward log-det against the log|det| of
/// a central-difference Jacobian, on a run-time model.
void check_laws(const io::RuntimeModel<double>& m, const Mat& x, const Mat& c) {
  const auto& t = m.transform();
  const bool cond = c.rows() > 0;
  const auto f = cond ? t.forward_and_log_det(x, c) : t.forward_and_log_det(x);
  const auto b = cond ? t.inverse_and_log_det(f.value, c) : t.inverse_and_log_det(f.value);
  CHECK(max_rel(b.value, x) < 1e-9);
  CHECK(max_rel(b.log_det, -f.log_det) < 1e-9);
  const double h = 1e-6;
  for (Index j = 0; j < std::min<Index>(x.cols(), 3); ++j) {
    Mat jac(x.rows(), x.rows());
    for (Index k = 0; k < x.rows(); ++k) {
      Mat xp = x.col(j), xm = x.col(j);
      xp(k) += h;
      xm(k) -= h;
      const Mat cj = cond ? Mat(c.col(j)) : Mat();
      const Mat zp = cond ? t.forward(xp, cj) : t.forward(xp);
      const Mat zm = cond ? t.forward(xm, cj) : t.forward(xm);
      jac.col(k) = (zp - zm) / (2 * h);
    }
    CHECK(std::abs(std::log(std::abs(jac.determinant())) - f.log_det(j)) < 1e-5);
  }
}

/// Saves `typed`, loads it with load_model<double> and <float>, and compares log_prob,
/// forward/inverse (`laws`: not for a continuous flow, whose discretised inverse and log-det
/// match the exact ones only to the solver's error) and the description; saves the run-time
/// model and loads it back into the typed one.
template <typename T>
void round_trip(T typed, Index context, double lo = -1.5, double hi = 1.5, bool laws = true) {
  randomize(typed, 7);
  const Index dim = typed.dim();
  const Mat x = points(dim, 16, 3, lo, hi);
  const Mat c = points(context, 16, 4);
  const std::string file = saved(typed);
  CHECK(io::model_schema_version_of(span_of(file)) == 1);
  const io::RuntimeModel<double> m = runtime(file);
  CHECK(m.dim() == dim);
  CHECK(m.context_dim() == context);
  CHECK(io::describe(m) == io::json::write(describe_architecture(typed)));
  const Mat want = context ? Mat(typed.log_prob(x, c)) : Mat(typed.log_prob(x));
  const Mat got = context ? Mat(m.log_prob(x, c)) : Mat(m.log_prob(x));
  CHECK(max_rel(got, want) <= 1e-12);
  if (laws) check_laws(m, x, c);
  // float from the double file
  const io::RuntimeModel<float> mf = runtime<float>(file);
  const Eigen::MatrixXf xf = x.cast<float>(), cf = c.cast<float>();
  const Mat gotf =
      (context ? Eigen::MatrixXf(mf.log_prob(xf, cf)) : Eigen::MatrixXf(mf.log_prob(xf)))
          .cast<double>();
  CHECK(max_rel(gotf, want) <= 1e-5 * (1 + want.cwiseAbs().maxCoeff()));
  // the run-time model's own file loads into the typed model
  T back = typed;
  randomize(back, 99);
  io::load(back, file_of(saved(m)));
  const Mat again = context ? Mat(back.log_prob(x, c)) : Mat(back.log_prob(x));
  CHECK(max_rel(again, want) == 0);
}

}  // namespace

TEST_CASE("load_model: every preset family saved typed loads without its type", "[io][model]") {
  SECTION("real_nvp") {
    round_trip(flows::real_nvp<double>(4, {.transforms = 2, .hidden_features = 8}), 0);
  }
  SECTION("real_nvp, conditional") {
    round_trip(flows::real_nvp<double>(4, {.transforms = 2, .hidden_features = 8, .context = 2}),
               2);
  }
  SECTION("nice") {
    round_trip(flows::nice<double>(4, {.transforms = 2, .hidden_features = 8}), 0);
  }
  SECTION("glow") {
    round_trip(flows::glow<double>(3, {.transforms = 2, .hidden_features = 8}), 0);
  }
  SECTION("maf, conditional") {
    round_trip(flows::maf<double>(3, {.transforms = 2, .hidden_features = 8, .context = 2}), 2);
  }
  SECTION("iaf") { round_trip(flows::iaf<double>(3, {.transforms = 2, .hidden_features = 8}), 0); }
  SECTION("coupling_nsf") {
    round_trip(flows::coupling_nsf<double>(3, {.transforms = 2, .hidden_features = 8}), 0, -6, 6);
  }
  SECTION("autoregressive_nsf, 10 bins, conditional") {
    round_trip(flows::autoregressive_nsf<double, Dynamic, Dynamic, 10>(
                   3, {.transforms = 2, .hidden_features = 8, .context = 1}),
               1);
  }
  SECTION("cnf (RK4, exact trace)") {
    round_trip(flows::cnf<double>(2, {.hidden_features = 8}), 0, -1.5, 1.5, false);
  }
  SECTION("cnf, two blocks, conditional, Dopri5, Hutchinson trace") {
    round_trip(flows::cnf<double>(2, {.transforms = 2,
                                      .hidden_features = 8,
                                      .context = 1,
                                      .solver = nflow::OdeSolver::Dopri5,
                                      .dopri5 = {.rtol = 1e-7, .atol = 1e-7},
                                      .trace = nflow::ode::TraceEstimator::HutchinsonRademacher}),
               1, -1.5, 1.5, false);
  }
  SECTION("coupling_nsf on a bounded domain") {
    round_trip(flows::coupling_nsf<double, Dynamic, Dynamic, 8, nflow::SplineDomain::Bounded>(
                   3, {.transforms = 2, .hidden_features = 8}),
               0, 0.01, 0.99);
  }
}

TEST_CASE("make_preset: the typed preset's description, parameters and log_prob", "[io][model]") {
  const Mat x = points(4, 8, 5);
  const auto same = [&](const auto& typed, const io::RuntimeModel<double>& m) {
    CHECK(io::describe(m) == io::json::write(describe_architecture(typed)));
    CHECK(max_rel(m.log_prob(x), typed.log_prob(x)) == 0);
    std::vector<double> a, b;
    typed.visit_parameters([&](const std::string&, const auto& t) {
      for (Index i = 0; i < t.size(); ++i) a.push_back(t.data()[i]);
    });
    m.visit_parameters([&](const std::string&, const auto& t) {
      for (Index i = 0; i < t.size(); ++i) b.push_back(t.data()[i]);
    });
    CHECK(a == b);
  };
  const io::RuntimePresetOptions o{.transforms = 2, .hidden_features = 8, .seed = 11};
  same(flows::real_nvp<double>(4, {.transforms = 2, .hidden_features = 8, .seed = 11}),
       io::make_preset<double>("real_nvp", 4, o));
  same(flows::nice<double>(4, {.transforms = 2, .hidden_features = 8, .seed = 11}),
       io::make_preset<double>("nice", 4, o));
  same(flows::glow<double>(4, {.transforms = 2, .hidden_features = 8, .seed = 11}),
       io::make_preset<double>("glow", 4, o));
  same(flows::maf<double>(4, {.transforms = 2, .hidden_features = 8, .seed = 11}),
       io::make_preset<double>("maf", 4, o));
  same(flows::iaf<double>(4, {.transforms = 2, .hidden_features = 8, .seed = 11}),
       io::make_preset<double>("iaf", 4, o));
  same(flows::coupling_nsf<double>(4, {.transforms = 2, .hidden_features = 8, .seed = 11}),
       io::make_preset<double>("coupling_nsf", 4, o));
  same(flows::cnf<double>(4, {.transforms = 2, .hidden_features = 8, .seed = 11}),
       io::make_preset<double>("cnf", 4, o));

  SECTION("every family is a valid flow once trained-looking (laws)") {
    for (const char* family :
         {"real_nvp", "nice", "glow", "maf", "iaf", "coupling_nsf", "autoregressive_nsf"}) {
      INFO(family);
      for (Index context : {0, 2}) {
        io::RuntimeModel<double> m = io::make_preset<double>(
            family, 4, {.transforms = 2, .hidden_features = 8, .context = context, .seed = 3});
        randomize(m, 5, 0.3);
        check_laws(m, points(4, 5, 6), points(context, 5, 7));
      }
    }
  }
  SECTION("splines of any bin count up to 64 (one compiled type per domain) are valid flows") {
    for (const char* family : {"coupling_nsf", "autoregressive_nsf"}) {
      for (Index bins : {1, 3, 12, 64}) {
        INFO(family << ", " << bins << " bins");
        io::RuntimeModel<double> m = io::make_preset<double>(
            family, 3, {.transforms = 2, .hidden_features = 8, .bins = bins, .seed = 3});
        randomize(m, 5, 0.3);
        check_laws(m, points(3, 5, 6), points(0, 5, 7));
      }
    }
  }
  SECTION("bad options") {
    CHECK_THROWS_AS(io::make_preset<double>("realnvp", 4, {}), nflow::ParameterError);
    CHECK_THROWS_AS(io::make_preset<double>("real_nvp", 1, {}), nflow::ParameterError);
    CHECK_THROWS_WITH(io::make_preset<double>("coupling_nsf", 4, {.bins = 65}),
                      Catch::Contains("(1 to 64)"));
    CHECK_THROWS_AS(io::make_preset<double>("maf", 4, {.hidden_features = Index(1) << 40}),
                    nflow::ParameterError);
  }
}

TEST_CASE("the run-time model's context_score matches finite differences of log_prob",
          "[io][model][context_gradient]") {
  // make_preset and, saved and loaded back, load_model: ∇_c log p(x | c) of every conditional
  // family against central differences (ReLU conditioners: no kink lies within a step of these
  // points), and the IAF, which has no density gradient.
  const Mat x = points(4, 6, 21);
  const Mat c = points(2, 6, 22);
  for (const char* family :
       {"real_nvp", "nice", "glow", "maf", "coupling_nsf", "autoregressive_nsf"}) {
    INFO(family);
    io::RuntimeModel<double> made = io::make_preset<double>(
        family, 4, {.transforms = 2, .hidden_features = 8, .context = 2, .seed = 3});
    randomize(made, 23, 0.3);
    const io::RuntimeModel<double> loaded = runtime(saved(made));
    const Mat g = made.context_score(x, c);
    const double h = 1e-5;
    Mat fd(2, x.cols());
    for (Index i = 0; i < 2; ++i) {
      Mat up = c;
      Mat down = c;
      up.row(i).array() += h;
      down.row(i).array() -= h;
      fd.row(i) = (made.log_prob(x, up) - made.log_prob(x, down)) / (2 * h);
    }
    CHECK(max_rel(g, fd) <= 1e-6);
    CHECK(fd.cwiseAbs().maxCoeff() > 1e-3);
    CHECK(max_rel(loaded.context_score(x, c), g) == 0);
  }
  io::RuntimeModel<double> iaf = io::make_preset<double>(
      "iaf", 4, {.transforms = 2, .hidden_features = 8, .context = 2, .seed = 3});
  CHECK_THROWS_AS(iaf.context_score(x, c), nflow::UnsupportedError);
  const io::RuntimeModel<double> plain = io::make_preset<double>("maf", 4, {.transforms = 1});
  CHECK_THROWS_AS(plain.context_score(x, c), nflow::ShapeError);
}

TEST_CASE("typed load checks the description, old files, newer schemas", "[io][model]") {
  auto typed = flows::real_nvp<double>(4, {.transforms = 2, .hidden_features = 8});
  randomize(typed, 1);
  const std::string file = saved(typed);

  SECTION("a different architecture is named by its first difference") {
    auto deeper = flows::real_nvp<double>(4, {.transforms = 3, .hidden_features = 8});
    CHECK_THROWS_WITH(io::load(deeper, file_of(file)),
                      Catch::Contains("transform (repeat): count 2 in the file, 3 in the type"));
    auto wider = flows::real_nvp<double>(4, {.transforms = 2, .hidden_features = 16});
    CHECK_THROWS_WITH(io::load(wider, file_of(file)),
                      Catch::Contains("step 0 (coupling), conditioner: hidden_width 8 in the "
                                      "file, 16 in the type"));
    CHECK_THROWS_AS(io::load(wider, file_of(file)), io::FormatError);
  }
  SECTION("a file from before the schema loads into its type, not into load_model") {
    std::stringstream s;
    io::save<decltype(typed), false>(typed, s);  // what main's io::save wrote: no description
    const std::string old = s.str();
    CHECK(file_of(old).metadata.empty());
    CHECK(io::model_schema_version_of(span_of(old)) == 0);
    auto back = flows::real_nvp<double>(4, {.transforms = 2, .hidden_features = 8});
    io::load(back, file_of(old));
    const Mat x = points(4, 5, 2);
    CHECK(max_rel(back.log_prob(x), typed.log_prob(x)) == 0);
    CHECK_THROWS_WITH(runtime(old), Catch::Contains("written before nflow's model-file schema"));
    CHECK_THROWS_AS(runtime(old), io::FormatError);
  }
  SECTION("a newer schema is a VersionError naming both versions") {
    io::TensorFile f = file_of(file);
    f.metadata["nflow.schema"] = "2";
    const std::string newer = bytes_of(f);
    CHECK_THROWS_AS(runtime(newer), io::VersionError);
    CHECK_THROWS_WITH(runtime(newer), Catch::Contains("schema 2") && Catch::Contains("schema 1"));
    auto back = typed;
    CHECK_THROWS_AS(io::load(back, file_of(newer)), io::VersionError);
  }
  SECTION("user metadata may not use the nflow. prefix") {
    std::stringstream s;
    CHECK_THROWS_AS(
        io::save(typed, s, {.dtype = std::nullopt, .metadata = {{"nflow.architecture", "{}"}}}),
        std::invalid_argument);
  }
  SECTION("the metadata nflow writes") {
    const io::TensorFile f = file_of(file);
    CHECK(f.metadata.at("nflow.version") == NFLOW_VERSION_STRING);
    CHECK(f.metadata.at("nflow.schema") == "1");
    CHECK(f.metadata.at("nflow.architecture") == io::json::write(describe_architecture(typed)));
  }
}

TEST_CASE("load_model refuses hostile descriptions with a FormatError", "[io][model]") {
  auto typed = flows::coupling_nsf<double>(4, {.transforms = 2, .hidden_features = 8});
  const io::TensorFile good = file_of(saved(typed));
  const std::string text = good.metadata.at("nflow.architecture");
  const auto replaced = [&](const std::string& from, const std::string& to) {
    const std::size_t p = text.find(from);
    REQUIRE(p != std::string::npos);
    return text.substr(0, p) + to + text.substr(p + from.size());
  };
  std::string deep =
      "{\"type\":\"density\",\"dim\":4,\"context\":0,\"base\":{\"type\":"
      "\"standard_normal\"},\"transform\":";
  for (int i = 0; i < 40; ++i) deep += "{\"type\":\"repeat\",\"count\":4096,\"step\":";
  deep += "{\"type\":\"reverse\",\"dim\":4}";
  for (int i = 0; i < 40; ++i) deep += "}";
  deep += "}";
  const std::vector<std::pair<const char*, std::string>> table = {
      {"not JSON", "{\"type\": "},
      {"not an object", "[1, 2]"},
      {"huge hidden width", replaced("\"hidden_width\":8", "\"hidden_width\":1000000000000")},
      {"hidden width not matching the tensors",
       replaced("\"hidden_width\":8", "\"hidden_width\":9")},
      {"missing base", replaced("\"base\"", "\"bass\"")},
      {"dim of the wrong type", replaced("\"dim\":4", "\"dim\":\"four\"")},
      {"negative dim", replaced("\"dim\":4", "\"dim\":-4")},
      {"huge dim", replaced("\"dim\":4", "\"dim\":4000000000000")},
      {"too many layers", replaced("\"count\":2", "\"count\":5000")},
      {"repeats nested past 4096 layers", deep},
      {"unsupported bins", replaced("\"bins\":8", "\"bins\":12")},
      {"unknown layer", replaced("\"type\":\"permutation\"", "\"type\":\"shuffle\"")},
      {"unsupported activation", replaced("\"relu\"", "\"tanh\"")},
      {"unsupported domain", replaced("\"unbounded\"", "\"circular\"")},
      {"context not matching the tensors", replaced("\"context\":0", "\"context\":3")},
      {"an extra key", replaced("\"type\":\"permutation\"", "\"type\":\"permutation\",\"x\":1")},
      {"steps not an array", replaced("\"steps\":[", "\"steps\":{\"a\":[") + "}"},
      {"a bare layer as the transform",
       replaced("\"transform\":{\"type\":\"repeat\"", "\"transform\":{\"type\":\"permutation\"")},
  };
  for (const auto& [what, description] : table) {
    INFO(what);
    io::TensorFile f = good;
    f.metadata["nflow.architecture"] = description;
    CHECK_THROWS_AS(runtime(bytes_of(f)), io::FormatError);
  }
  SECTION("the unmodified file loads") { CHECK_NOTHROW(runtime(bytes_of(good))); }
  SECTION("continuous flows: unknown or invalid solvers, traces, fields and probe seeds") {
    const io::TensorFile cnf = file_of(saved(flows::cnf<double>(
        2, {.hidden_features = 8, .solver = nflow::OdeSolver::Dopri5, .dopri5 = {.rtol = 1e-6}})));
    const std::string c = cnf.metadata.at("nflow.architecture");
    const auto with = [&](const std::string& from, const std::string& to) {
      const std::size_t p = c.find(from);
      REQUIRE(p != std::string::npos);
      io::TensorFile f = cnf;
      f.metadata["nflow.architecture"] = c.substr(0, p) + to + c.substr(p + from.size());
      return bytes_of(f);
    };
    CHECK_NOTHROW(runtime(bytes_of(cnf)));
    using Catch::Contains;
    CHECK_THROWS_WITH(runtime(with("\"dopri5\"", "\"rk5\"")), Contains("unknown solver 'rk5'"));
    CHECK_THROWS_WITH(runtime(with("\"rtol\":1e-06", "\"rtol\":-1")), Contains("dopri5 options"));
    CHECK_THROWS_WITH(runtime(with("\"max_factor\":10", "\"max_factor\":1e999")),
                      Contains("'max_factor' must be a number"));
    CHECK_THROWS_WITH(runtime(with("\"tanh\"", "\"relu\"")), Contains("tanh fields only"));
    CHECK_THROWS_WITH(runtime(with("\"mlp_field\"", "\"mlp\"")), Contains("vector field"));
    CHECK_THROWS_WITH(runtime(with("\"exact\"", "\"approximate\"")), Contains("unknown trace"));
    CHECK_THROWS_WITH(runtime(with("\"probe_seed\":\"0\"", "\"probe_seed\":\"12x\"")),
                      Contains("'probe_seed' must be a decimal"));
    CHECK_THROWS_WITH(runtime(with("\"probe_seed\":\"0\"", "\"probe_seed\":\"-1\"")),
                      Contains("'probe_seed' must be a decimal"));
    CHECK_THROWS_WITH(runtime(with("\"hidden_width\":8", "\"hidden_width\":9")),
                      Contains("more values than the file's tensors hold"));
    const io::TensorFile rk4 = file_of(saved(flows::cnf<double>(2, {.hidden_features = 8})));
    io::TensorFile f = rk4;
    const std::string r = rk4.metadata.at("nflow.architecture");
    const std::size_t p = r.find("\"steps\":20");
    REQUIRE(p != std::string::npos);
    f.metadata["nflow.architecture"] = r.substr(0, p) + "\"steps\":0" + r.substr(p + 10);
    CHECK_THROWS_WITH(runtime(bytes_of(f)), Contains("'steps' must be an integer in [1,"));
  }
  SECTION("bins outside the supported range are named; other bins than the tensors' fail") {
    io::TensorFile f = good;
    f.metadata["nflow.architecture"] = replaced("\"bins\":8", "\"bins\":65");
    CHECK_THROWS_WITH(runtime(bytes_of(f)), Catch::Contains("(1 to 64)"));
    f.metadata["nflow.architecture"] = replaced("\"bins\":8", "\"bins\":12");
    CHECK_THROWS_AS(runtime(bytes_of(f)), io::FormatError);
  }
  SECTION("not a safetensors file") {
    CHECK_THROWS_AS(runtime(std::string("nonsense")), io::FormatError);
  }
}

TEST_CASE("imported zuko and nflows models save and reload as run-time models", "[io][model]") {
  const std::string dir = std::string(NFLOW_TEST_DATA_DIR) + "/fixtures/";
  struct Case {
    const char* name;
    std::function<nflow::interop::ImportedFlow<double>(const std::string&)> load;
  };
  const std::vector<Case> cases = {
      {"zuko_nsf", [](const std::string& p) { return nflow::interop::load_zuko_nsf<double>(p); }},
      {"zuko_realnvp",
       [](const std::string& p) { return nflow::interop::load_zuko_realnvp<double>(p); }},
      {"nflows_maf",
       [](const std::string& p) { return nflow::interop::load_nflows_flow<double>(p); }},
  };
  for (const Case& c : cases) {
    INFO(c.name);
    const io::TensorFile ref = io::read_safetensors(dir + c.name + ".io.safetensors");
    const Mat x = io::to_matrix<double>(ref.tensors.at("x"), "x").transpose();
    const Mat want = io::to_matrix<double>(ref.tensors.at("log_prob"), "log_prob").transpose();
    const bool conditional = ref.tensors.count("context") > 0;
    const Mat ctx =
        conditional ? Mat(io::to_matrix<double>(ref.tensors.at("context"), "context").transpose())
                    : Mat();
    const io::RuntimeModel<double> m =
        runtime(saved(io::to_runtime_model(c.load(dir + c.name + ".safetensors"))));
    const Mat got = conditional ? Mat(m.log_prob(x, ctx)) : Mat(m.log_prob(x));
    CHECK(max_rel(got, want) <= 1e-10);
  }
}
