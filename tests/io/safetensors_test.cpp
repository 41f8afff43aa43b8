// safetensors save/load: hand-built files as the independent truth for the byte layout, round
// trips of flows and densities (bit-exact parameters and log-probs), float <-> double conversion,
// and every malformed-file case: each must throw a documented type naming the problem and leave
// the object unchanged.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <map>
#include <nflow/io/json.hpp>
#include <nflow/io/safetensors.hpp>
#include <nflow/nflow.hpp>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

using namespace nflow;
using Catch::Matchers::Contains;

namespace {

using Bytes = std::vector<unsigned char>;

/// A minimal Parameterized object: a 2 × 3 weight and a 2-vector bias.
template <typename S>
struct Grid {
  using Scalar = S;
  ParameterMatrix<S> weight = ParameterMatrix<S>::Zero(2, 3);
  Vector<S> bias = Vector<S>::Zero(2);
  Index parameter_count() const { return 8; }
  template <typename F>
  void visit_parameters(F&& f) {
    f(std::string("weight"), Eigen::Ref<ParameterMatrix<S>>(weight));
    f(std::string("bias"), Eigen::Ref<ParameterMatrix<S>>(bias));
  }
  template <typename F>
  void visit_parameters(F&& f) const {
    f(std::string("weight"), Eigen::Ref<const ParameterMatrix<S>>(weight));
    f(std::string("bias"), Eigen::Ref<const ParameterMatrix<S>>(bias));
  }
};

template <typename S>
using BigFlow = Flow<AffineCoupling<S, 4>, Reverse<S, 4>, ActNorm<S, 4>, LULinear<S, 4>>;
template <typename S>
using SmallFlow = Flow<ActNorm<S, 2>, LULinear<S, 2>>;

template <typename S>
BigFlow<S> make_big_flow(std::uint64_t seed) {
  BigFlow<S> f(AffineCoupling<S, 4>(CouplingMask::half(4),
                                    {.hidden_width = 8, .hidden_layers = 1, .seed = seed}),
               Reverse<S, 4>{}, ActNorm<S, 4>{}, LULinear<S, 4>{});
  std::mt19937_64 gen(seed);
  set_parameters(f, Vector<S>(standard_normal_matrix<S>(f.parameter_count(), 1, gen) * S(0.3)));
  f.template step<2>().set_initialized(true);
  return f;
}

template <typename S>
SmallFlow<S> make_small_flow(std::uint64_t seed) {
  SmallFlow<S> f;
  std::mt19937_64 gen(seed);
  set_parameters(f, Vector<S>(standard_normal_matrix<S>(f.parameter_count(), 1, gen) * S(0.3)));
  return f;
}

Bytes to_bytes(const std::string& s) { return Bytes(s.begin(), s.end()); }

std::string to_string(const Bytes& b) { return std::string(b.begin(), b.end()); }

/// A safetensors file: the 8-byte little-endian length of `header`, `header`, then `data`.
Bytes file_bytes(const std::string& header, const Bytes& data = {}) {
  Bytes out;
  std::uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<unsigned char>(n >> (8 * i)));
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

template <typename T>
Bytes saved(const T& object, const io::SaveOptions& options = {}) {
  std::stringstream s;
  io::save(object, s, options);
  return to_bytes(s.str());
}

template <typename T>
void load_bytes(T& object, const Bytes& bytes) {
  io::load(object, std::span<const unsigned char>(bytes));
}

template <typename T>
void load_stream(T& object, const Bytes& bytes) {
  std::stringstream s(to_string(bytes));
  io::load(object, s);
}

// Little-endian bytes of a few float32 / float64 values, written out by hand.
const Bytes f32_one = {0x00, 0x00, 0x80, 0x3F};    // 1.0f
const Bytes f32_two = {0x00, 0x00, 0x00, 0x40};    // 2.0f
const Bytes f32_three = {0x00, 0x00, 0x40, 0x40};  // 3.0f
const Bytes f32_four = {0x00, 0x00, 0x80, 0x40};   // 4.0f
const Bytes f32_five = {0x00, 0x00, 0xA0, 0x40};   // 5.0f
const Bytes f32_six = {0x00, 0x00, 0xC0, 0x40};    // 6.0f
const Bytes f32_half = {0x00, 0x00, 0x00, 0x3F};   // 0.5f
const Bytes f32_neg = {0x00, 0x00, 0x80, 0xBF};    // -1.0f
const Bytes f32_nan = {0x00, 0x00, 0xC0, 0x7F};    // quiet NaN
const Bytes f32_inf = {0x00, 0x00, 0x80, 0xFF};    // -inf

Bytes cat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const Bytes& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

// The grid's data: bias (0.5, -1), then the weight [[1, 2, 3], [4, 5, 6]] row by row.
const Bytes grid_data =
    cat({f32_half, f32_neg, f32_one, f32_two, f32_three, f32_four, f32_five, f32_six});
const std::string grid_header = R"({"bias":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                R"("weight":{"dtype":"F32","shape":[2,3],"data_offsets":[8,32]}})";

template <typename T>
void check_unchanged(const T& object, const Vector<typename T::Scalar>& before) {
  CHECK(get_parameters(object) == before);
}

/// Every parameter and buffer name of an object: what a file saved from it holds.
template <typename T>
std::size_t tensor_count(const T& object) {
  return parameter_names(object).size() + buffer_names(object).size();
}

// A flow with every kind of buffer: a permutation, a coupling mask, MADE orders and hidden
// degrees (MAF and IAF), ActNorm's flag, an LU permutation and signs.
using BufferFlow = Flow<Permutation<double, 4>, AffineCoupling<double, 4>, MAF<double, 4, 8>,
                        ActNorm<double, 4>, LULinear<double, 4>, IAF<double, 4, 8>>;

BufferFlow make_buffer_flow(std::uint64_t seed, bool alternate) {
  AutoregressiveOptions maf;
  maf.hidden_layers = 2;
  maf.order = nn::InputOrder::Random;
  maf.hidden_degrees = nn::HiddenDegrees::Random;
  maf.seed = seed;
  AutoregressiveOptions iaf = maf;
  iaf.seed = seed + 100;
  BufferFlow f(Permutation<double, 4>::random(4, seed),
               AffineCoupling<double, 4>(
                   alternate ? CouplingMask::alternating(4) : CouplingMask::half(4, true),
                   {.hidden_width = 8, .hidden_layers = 1, .seed = seed}),
               MAF<double, 4, 8>(maf), ActNorm<double, 4>{},
               LULinear<double, 4>::random_orthogonal(4, seed),
               IAF<double, 4, 8>(MAF<double, 4, 8>(iaf)));
  std::mt19937_64 gen(seed);
  set_parameters(f,
                 Vector<double>(standard_normal_matrix<double>(f.parameter_count(), 1, gen) * 0.2));
  f.step<3>().set_initialized(alternate);
  return f;
}

}  // namespace

// ---- the byte layout, against files written by hand ---------------------------------------------

TEST_CASE("a hand-built 2x3 F32 file is read row-major", "[io][safetensors]") {
  const Bytes bytes = file_bytes(grid_header, grid_data);
  const io::TensorFile file = io::parse_safetensors(bytes);
  REQUIRE(file.tensors.size() == 2);
  const io::Tensor& w = file.tensors.at("weight");
  CHECK(w.dtype == io::DType::F32);
  CHECK(w.shape == std::vector<std::uint64_t>{2, 3});
  const auto m = io::to_matrix<double>(w, "weight");
  Eigen::MatrixXd expected(2, 3);
  expected << 1, 2, 3, 4, 5, 6;
  CHECK(m == expected);

  Grid<float> g;
  load_bytes(g, bytes);
  CHECK(g.weight(0, 1) == 2.0f);  // row 0, column 1: the second value of the buffer's weight
  CHECK(g.weight(1, 0) == 4.0f);
  CHECK(g.weight == expected.cast<float>());
  CHECK(g.bias == Eigen::Vector2f(0.5f, -1.0f));
}

TEST_CASE("save writes exactly the bytes of the hand-built file", "[io][safetensors]") {
  Grid<float> g;
  g.weight << 1, 2, 3, 4, 5, 6;
  g.bias << 0.5f, -1.0f;
  // The writer pads the header with spaces so that the data starts at a multiple of 8.
  std::string header = grid_header;
  while ((8 + header.size()) % 8) header += ' ';
  CHECK(saved(g) == file_bytes(header, grid_data));
  // A double grid saved as F32 gives the same bytes.
  Grid<double> gd;
  gd.weight = g.weight.cast<double>();
  gd.bias = g.bias.cast<double>();
  CHECK(saved(gd, {io::DType::F32, {}}) == file_bytes(header, grid_data));
  // Trailing spaces are accepted on read, as is a header without padding.
  Grid<float> back;
  load_bytes(back, file_bytes(header, grid_data));
  CHECK(back.weight == g.weight);
}

TEST_CASE("F64 tensors are written little-endian, 8-byte types first", "[io][safetensors]") {
  io::TensorFile file;
  Eigen::Matrix<double, 1, 1> one;
  one << 1.0;
  file.tensors.emplace("b_f32", io::make_tensor(Eigen::Vector2f(2.0f, 3.0f), io::DType::F32));
  file.tensors.emplace("a_f64", io::make_tensor(one, io::DType::F64));
  const Bytes bytes = io::serialize_safetensors(file);
  const std::string text = to_string(bytes);
  CHECK_THAT(text, Contains(R"("a_f64":{"dtype":"F64","shape":[1],"data_offsets":[0,8]})"));
  CHECK_THAT(text, Contains(R"("b_f32":{"dtype":"F32","shape":[2],"data_offsets":[8,16]})"));
  const std::size_t start = bytes.size() - 16;
  CHECK(start % 8 == 0);
  const Bytes f64_one = {0, 0, 0, 0, 0, 0, 0xF0, 0x3F};
  CHECK(Bytes(bytes.begin() + long(start), bytes.begin() + long(start) + 8) == f64_one);
  CHECK(Bytes(bytes.begin() + long(start) + 8, bytes.end()) == cat({f32_two, f32_three}));
}

TEST_CASE("integer tensors are readable for inspection", "[io][safetensors]") {
  const Bytes data = {1,    0,    0,    0,    0,    0,    0, 0, 0xFE, 0xFF,
                      0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 7, 0, 0,    0};
  const Bytes bytes = file_bytes(R"({"order":{"dtype":"I64","shape":[2],"data_offsets":[0,16]},)"
                                 R"("n":{"dtype":"I32","shape":[],"data_offsets":[16,20]}})",
                                 data);
  std::stringstream stream(to_string(bytes));
  const auto params = io::load_parameters(stream);
  CHECK(params.at("order") == Eigen::Vector2d(1, -2));
  CHECK(params.at("n").rows() == 1);
  CHECK(params.at("n")(0, 0) == 7.0);
  // ...but never loadable into a floating-point parameter.
  Grid<double> g;
  const Bytes as_param =
      file_bytes(R"({"bias":{"dtype":"I64","shape":[2],"data_offsets":[0,16]},)"
                 R"("weight":{"dtype":"F32","shape":[2,3],"data_offsets":[16,40]}})",
                 cat({Bytes(data.begin(), data.begin() + 16), Bytes(24, 0)}));
  CHECK_THROWS_AS(load_bytes(g, as_param), io::FormatError);
  CHECK_THROWS_WITH(load_bytes(g, as_param), Contains("'bias'") && Contains("I64"));
}

TEST_CASE("PyTorch's one-byte dtypes, I64 and F32 are read and converted", "[io][safetensors]") {
  // As safetensors.torch.save_file writes an int64 buffer, a float32 weight, a bool mask, a uint8
  // and an int8 tensor (8-byte types first, each little-endian).
  const Bytes data = cat({{1, 0, 0, 0, 0, 0, 0, 0, 0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF},
                          f32_half,
                          f32_neg,
                          {1, 0, 1, 0, 0, 1},
                          {200, 7},
                          {0xFF, 0x80}});
  const Bytes bytes =
      file_bytes(R"({"__metadata__":{"format":"pt"},)"
                 R"("order":{"dtype":"I64","shape":[2],"data_offsets":[0,16]},)"
                 R"("w":{"dtype":"F32","shape":[2],"data_offsets":[16,24]},)"
                 R"("x.mask":{"dtype":"BOOL","shape":[2,3],"data_offsets":[24,30]},)"
                 R"("u":{"dtype":"U8","shape":[2],"data_offsets":[30,32]},)"
                 R"("i":{"dtype":"I8","shape":[2],"data_offsets":[32,34]}})",
                 data);
  const io::TensorFile file = io::parse_safetensors(bytes);
  CHECK(file.tensors.at("x.mask").dtype == io::DType::BOOL);
  CHECK(file.tensors.at("u").dtype == io::DType::U8);
  CHECK(file.tensors.at("i").dtype == io::DType::I8);
  std::stringstream stream(to_string(bytes));
  const auto m = io::load_parameters(stream);
  CHECK(m.at("order") == Eigen::Vector2d(1, -2));
  CHECK(m.at("w") == Eigen::Vector2d(0.5, -1));
  Eigen::MatrixXd mask(2, 3);
  mask << 1, 0, 1, 0, 0, 1;
  CHECK(m.at("x.mask") == mask);
  CHECK(m.at("u") == Eigen::Vector2d(200, 7));
  CHECK(m.at("i") == Eigen::Vector2d(-1, -128));
  CHECK(io::to_matrix<float>(file.tensors.at("i"), "i") == Eigen::Vector2f(-1, -128));

  // make_tensor writes the same bytes, and the writer keeps the dtypes (one-byte types last).
  CHECK(io::make_tensor(mask.cast<int>(), io::DType::BOOL).data == file.tensors.at("x.mask").data);
  CHECK(io::make_tensor(Eigen::Vector2i(200, 7), io::DType::U8).data == file.tensors.at("u").data);
  CHECK(io::make_tensor(Eigen::Vector2i(-1, -128), io::DType::I8).data ==
        file.tensors.at("i").data);
  const io::TensorFile back = io::parse_safetensors(io::serialize_safetensors(file));
  for (const auto& [name, t] : file.tensors) {
    INFO(name);
    CHECK(back.tensors.at(name).dtype == t.dtype);
    CHECK(back.tensors.at(name).shape == t.shape);
    CHECK(back.tensors.at(name).data == t.data);
  }
  // Values that do not fit the dtype are refused, and a BOOL byte other than 0/1 is not written.
  CHECK_THROWS_AS(io::make_tensor(Eigen::Vector2i(0, 2), io::DType::BOOL), std::invalid_argument);
  CHECK_THROWS_AS(io::make_tensor(Eigen::Vector2i(0, 256), io::DType::U8), std::invalid_argument);
  CHECK_THROWS_AS(io::make_tensor(Eigen::Vector2i(0, -1), io::DType::U8), std::invalid_argument);
  CHECK_THROWS_AS(io::make_tensor(Eigen::Vector2i(0, -129), io::DType::I8), std::invalid_argument);
  CHECK_THROWS_AS(io::make_tensor(Eigen::Vector2d(0, 1), io::DType::BOOL), std::invalid_argument);
  io::TensorFile two = file;
  two.tensors.at("x.mask").data[1] = 2;
  CHECK_THROWS_WITH(io::serialize_safetensors(two), Contains("'x.mask'") && Contains("byte 2"));
}

TEST_CASE("files with BOOL tensors get every strict check", "[io][safetensors][strict]") {
  // A [4, 3] BOOL mask (12 bytes) and a [2] F32 weight.
  const std::string mask = R"("x.mask":{"dtype":"BOOL","shape":[4,3],"data_offsets":[0,12]})";
  const std::string weight = R"("w":{"dtype":"F32","shape":[2],"data_offsets":[12,20]})";
  const Bytes data = cat({Bytes(12, 1), f32_one, f32_two});
  auto header = [&](const std::string& m, const std::string& extra = "") {
    return "{" + extra + m + "," + weight + "}";
  };
  REQUIRE_NOTHROW(io::parse_safetensors(file_bytes(header(mask), data)));
  // Both readers (a whole buffer, a stream) must reject `bytes` naming `what1` and `what2`.
  auto expect = [&](const Bytes& bytes, const std::string& what1, const std::string& what2,
                    bool stream_too = true) {
    INFO(to_string(bytes));
    CHECK_THROWS_AS(io::parse_safetensors(bytes), io::FormatError);
    CHECK_THROWS_WITH(io::parse_safetensors(bytes),
                      Contains(what1) && Contains(what2) && !Contains("not supported"));
    if (stream_too) {
      std::stringstream in(to_string(bytes));
      CHECK_THROWS_WITH(io::read_safetensors(in),
                        Contains(what1) && Contains(what2) && !Contains("not supported"));
    }
  };
  SECTION("an unknown entry field") {
    expect(file_bytes(header(R"("x.mask":{"dtype":"BOOL","shape":[4,3],"data_offsets":[0,12],)"
                             R"("x":1})"),
                      data),
           "'x.mask'", "unexpected field 'x'");
  }
  SECTION("a __metadata__ that is not an object") {
    expect(file_bytes(header(mask, R"("__metadata__":"pt",)"), data),
           "'__metadata__' must be an object", "");
  }
  SECTION("trailing bytes after the data") {
    expect(file_bytes(header(mask), cat({data, Bytes(4, 0)})), "cover only 20", "", false);
  }
  SECTION("a truncated file: the size, and the tensor cut short") {
    const std::string w_first = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                R"("x.mask":{"dtype":"BOOL","shape":[4,3],"data_offsets":[8,20]}})";
    expect(file_bytes(w_first, cat({f32_one, f32_two, Bytes(4, 1)})),
           "truncated: the tensors need 20 bytes of data",
           "tensor 'x.mask' (BOOL, shape [4, 3]) at data_offsets [8, 20] is cut short");
    expect(file_bytes(header(mask), Bytes(8, 1)), "truncated",
           "tensor 'x.mask' (BOOL, shape [4, 3]) at data_offsets [0, 12] is cut short");
  }
  SECTION("a shape that does not match the offsets, in the file's dtype and sizes") {
    expect(file_bytes(R"({"x.mask":{"dtype":"BOOL","shape":[4,3],"data_offsets":[0,8]}})",
                      Bytes(8, 1)),
           "tensor 'x.mask' (BOOL, shape [4, 3]) needs 12 bytes", "its data_offsets [0, 8] span 8");
    expect(file_bytes(R"({"u":{"dtype":"U8","shape":[3],"data_offsets":[0,4]}})", Bytes(4, 1)),
           "tensor 'u' (U8, shape [3]) needs 3 bytes", "span 4");
  }
  SECTION("a BOOL byte that is neither 0 nor 1") {
    Bytes bad = data;
    bad[5] = 2;
    expect(file_bytes(header(mask), bad), "tensor 'x.mask' (BOOL, shape [4, 3]) holds the byte 2",
           "at element 5");
  }
  SECTION("half precision is named and refused") {
    for (const char* dt : {"F16", "BF16"}) {
      const std::string half =
          std::string(R"({"h":{"dtype":")") + dt + R"(","shape":[2],"data_offsets":[0,4]}})";
      const Bytes bytes = file_bytes(half, Bytes(4, 0));
      CHECK_THROWS_WITH(
          io::parse_safetensors(bytes),
          Contains("tensor 'h'") && Contains(std::string("dtype '") + dt + "' is not supported"));
    }
  }
  SECTION("a BOOL tensor is no parameter") {
    Grid<double> g;
    const Bytes bytes =
        file_bytes(R"({"bias":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]},)"
                   R"("weight":{"dtype":"F32","shape":[2,3],"data_offsets":[2,26]}})",
                   cat({{1, 0}, Bytes(24, 0)}));
    CHECK_THROWS_WITH(load_bytes(g, bytes), Contains("'bias'") && Contains("BOOL"));
  }
}

// ---- round trips ----------------------------------------------------------------------------------

TEST_CASE("a flow round-trips bit-exactly into a differently initialised flow",
          "[io][safetensors]") {
  const BigFlow<double> a = make_big_flow<double>(1);
  BigFlow<double> b = make_big_flow<double>(2);
  REQUIRE(get_parameters(a) != get_parameters(b));
  const Bytes bytes = saved(a, {std::nullopt, {{"model", "test"}}});
  std::stringstream s(to_string(bytes));
  const io::Metadata meta = io::load(b, s);
  CHECK(meta.at("model") == "test");
  CHECK(get_parameters(b) == get_parameters(a));
  std::mt19937_64 gen(3);
  const Eigen::MatrixXd x = standard_normal_matrix<double>(4, 50, gen);
  const auto ra = a.forward_and_log_det(x);
  const auto rb = b.forward_and_log_det(x);
  CHECK(ra.value == rb.value);
  CHECK(ra.log_det == rb.log_det);
  CHECK(saved(b, {std::nullopt, {{"model", "test"}}}) == bytes);
  // Every composed name is in the file, with its shape.
  const io::TensorFile file = io::parse_safetensors(bytes);
  CHECK(file.tensors.size() == tensor_count(a));
  for (const std::string& name : parameter_names(a)) CHECK(file.tensors.contains(name));
  for (const std::string& name : buffer_names(a))
    CHECK(file.tensors.at(name).dtype == io::DType::I64);
  CHECK(file.tensors.at("0.conditioner.layers.0.weight").shape == std::vector<std::uint64_t>{8, 2});
  CHECK(file.tensors.at("3.lower").shape == std::vector<std::uint64_t>{4, 4});
  CHECK(file.tensors.at("3.log_s").shape == std::vector<std::uint64_t>{4});
}

TEST_CASE("a density round-trips, with identical log_prob", "[io][safetensors]") {
  using D = Density<DiagonalNormal<double, 4>, BigFlow<double>>;
  D a(DiagonalNormal<double, 4>{}, make_big_flow<double>(4));
  a.base().set_loc(Eigen::Vector4d(0.1, -0.2, 0.3, 0.0));
  a.base().set_log_scale(Eigen::Vector4d(0.2, 0.1, -0.1, 0.05));
  D b(DiagonalNormal<double, 4>{}, make_big_flow<double>(5));
  std::mt19937_64 gen(6);
  const Eigen::MatrixXd x = standard_normal_matrix<double>(4, 64, gen);
  REQUIRE(a.log_prob(x) != b.log_prob(x));
  load_stream(b, saved(a));
  CHECK(get_parameters(b) == get_parameters(a));
  CHECK(a.log_prob(x) == b.log_prob(x));
  const io::TensorFile file = io::parse_safetensors(saved(a));
  CHECK(file.tensors.contains("base.loc"));
  CHECK(file.tensors.contains("transform.3.bias"));
}

TEST_CASE("float files load into double flows and back", "[io][safetensors]") {
  const BigFlow<double> d = make_big_flow<double>(7);
  // double → F32 file → float flow: each value rounded to the nearest float.
  BigFlow<float> f = make_big_flow<float>(8);
  load_bytes(f, saved(d, {io::DType::F32, {}}));
  CHECK(get_parameters(f) == get_parameters(d).cast<float>());
  CHECK(io::parse_safetensors(saved(f)).tensors.at("3.bias").dtype == io::DType::F32);
  // float → F32 file → double flow: exact.
  BigFlow<double> d2 = make_big_flow<double>(9);
  load_bytes(d2, saved(f));
  CHECK(get_parameters(d2) == get_parameters(f).cast<double>());
  // ... and the same through an F64 file written from the float flow.
  BigFlow<double> d3 = make_big_flow<double>(10);
  load_bytes(d3, saved(f, {io::DType::F64, {}}));
  CHECK(get_parameters(d3) == get_parameters(d2));
  // F64 → float flow: converted.
  BigFlow<float> f2 = make_big_flow<float>(11);
  load_bytes(f2, saved(d));
  CHECK(get_parameters(f2) == get_parameters(d).cast<float>());
}

TEST_CASE("metadata with escapes and non-ASCII text round-trips", "[io][safetensors]") {
  const io::Metadata meta = {{"format", "pt"},
                             {"note", "quote \" backslash \\ newline \n tab \t \x01 end"},
                             {"unicode", "\xC3\xBC\xE2\x82\xAC\xF0\x9F\x98\x80"}};
  Grid<double> g;
  g.weight.setConstant(1.5);
  Grid<double> h;
  const Bytes bytes = saved(g, {std::nullopt, meta});
  load_bytes(h, bytes);
  CHECK(io::load(h, io::parse_safetensors(bytes)) == meta);
  CHECK(h.weight == g.weight);
  // Invalid UTF-8 cannot be written (it could not be read back).
  CHECK_THROWS_AS(saved(g, {std::nullopt, {{"bad", "\xFF"}}}), io::FormatError);
}

TEST_CASE("a file on disk round-trips and nothing is left behind", "[io][safetensors]") {
  namespace fs = std::filesystem;
  std::random_device rd;
  const fs::path path = fs::temp_directory_path() /
                        ("nflow_safetensors_test_" + std::to_string(rd()) + ".safetensors");
  const SmallFlow<double> a = make_small_flow<double>(12);
  SmallFlow<double> b = make_small_flow<double>(13);
  io::save(a, path);
  REQUIRE(fs::exists(path));
  io::load(b, path);
  CHECK(get_parameters(b) == get_parameters(a));
  CHECK(io::load_parameters(path).size() == tensor_count(a));
  // A file must hold exactly one safetensors file: a trailing byte is an error.
  {
    std::ofstream out(path, std::ios::binary | std::ios::app);
    out.put('x');
  }
  const Vector<double> before = get_parameters(b);
  CHECK_THROWS_AS(io::load(b, path), io::FormatError);
  check_unchanged(b, before);
  fs::remove(path);
  CHECK(!fs::exists(path));
  CHECK_THROWS_AS(io::load(b, path), io::IoError);
}

TEST_CASE("a stream may hold several files back to back", "[io][safetensors]") {
  const SmallFlow<double> a = make_small_flow<double>(14);
  const SmallFlow<double> b = make_small_flow<double>(15);
  std::stringstream s;
  io::save(a, s);
  io::save(b, s);
  SmallFlow<double> c;
  io::load(c, s);
  CHECK(get_parameters(c) == get_parameters(a));
  io::load(c, s);
  CHECK(get_parameters(c) == get_parameters(b));
}

// ---- buffers -----------------------------------------------------------------------------------------

TEST_CASE("buffers are saved and make a differently built flow the same map",
          "[io][safetensors][buffers]") {
  const BufferFlow a = make_buffer_flow(1, true);
  BufferFlow b = make_buffer_flow(2, false);
  const auto ba = get_buffers(a);
  REQUIRE(buffer_names(a) ==
          std::vector<std::string>{"0.permutation", "1.mask", "2.made.order",
                                   "2.made.hidden_degrees.0", "2.made.hidden_degrees.1",
                                   "3.initialized", "4.permutation", "4.sign", "5.made.order",
                                   "5.made.hidden_degrees.0", "5.made.hidden_degrees.1"});
  // The two flows differ in every buffer (and so in their maps) before the load.
  for (const auto& [name, value] : get_buffers(b)) {
    INFO(name);
    CHECK(value != ba.at(name));
  }
  std::mt19937_64 gen(3);
  const Eigen::MatrixXd x = standard_normal_matrix<double>(4, 40, gen);
  REQUIRE(a.forward_and_log_det(x).log_det != b.forward_and_log_det(x).log_det);
  const Bytes bytes = saved(a);
  load_bytes(b, bytes);
  CHECK(get_buffers(b) == ba);
  CHECK(get_parameters(b) == get_parameters(a));
  CHECK(b.step<3>().is_initialized());
  const auto ra = a.forward_and_log_det(x);
  const auto rb = b.forward_and_log_det(x);
  CHECK(ra.value == rb.value);
  CHECK(ra.log_det == rb.log_det);
  CHECK(a.inverse(ra.value) == b.inverse(ra.value));
  CHECK(saved(b) == bytes);
  // The loaded MADE masks follow the loaded degrees: the autoregressive structure is intact, so
  // the inverse (D sequential passes, which relies on it) still inverts the forward.
  CHECK((b.inverse(rb.value) - x).cwiseAbs().maxCoeff() < 1e-10);
  // Values as documented: the permutation is the layer's indices, the mask 1 = transformed.
  CHECK(ba.at("0.permutation") == a.step<0>().indices().cast<std::int64_t>());
  CHECK(ba.at("1.mask") == (BufferVector(4) << 0, 1, 0, 1).finished());
  CHECK(ba.at("3.initialized") == BufferVector::Ones(1));
  CHECK(ba.at("4.sign").cwiseAbs() == BufferVector::Ones(4));
}

TEST_CASE("malformed buffers throw and leave the flow unchanged",
          "[io][safetensors][buffers][strict]") {
  const BufferFlow good = make_buffer_flow(4, true);
  BufferFlow f = make_buffer_flow(5, false);
  const Vector<double> before = get_parameters(f);
  const auto buffers_before = get_buffers(f);
  auto with = [&](const std::string& name, const io::Tensor& t) {
    io::TensorFile file = io::parse_safetensors(saved(good));
    file.tensors.at(name) = t;
    return io::serialize_safetensors(file);
  };
  auto i64 = [](std::initializer_list<std::int64_t> v) {
    BufferVector b(Index(v.size()));
    Index i = 0;
    for (std::int64_t e : v) b(i++) = e;
    return io::make_tensor(b, io::DType::I64);
  };
  auto expect = [&](const Bytes& bytes, auto error_type, const std::string& what1,
                    const std::string& what2) {
    using E = typename decltype(error_type)::type;
    CHECK_THROWS_AS(load_bytes(f, bytes), E);
    CHECK_THROWS_WITH(load_bytes(f, bytes), Contains(what1) && Contains(what2));
    check_unchanged(f, before);
    CHECK(get_buffers(f) == buffers_before);
  };
  // Structure: missing, wrong dtype, wrong shape.
  {
    io::TensorFile file = io::parse_safetensors(saved(good));
    file.tensors.erase("2.made.order");
    expect(io::serialize_safetensors(file), std::type_identity<io::FormatError>{},
           "missing buffer '2.made.order'", "[4]");
  }
  expect(with("0.permutation", io::make_tensor(Eigen::Vector4d(0, 1, 2, 3), io::DType::F64)),
         std::type_identity<io::FormatError>{}, "buffer '0.permutation'", "dtype F64");
  expect(with("0.permutation", i64({0, 1, 2})), std::type_identity<io::FormatError>{},
         "buffer '0.permutation'", "shape [3], expected [4]");
  // Values each layer rejects (the message names the full buffer name).
  expect(with("0.permutation", i64({0, 1, 1, 3})), std::type_identity<ParameterError>{},
         "'0.permutation'", "not a permutation");
  expect(with("4.permutation", i64({0, 1, 2, 7})), std::type_identity<ParameterError>{},
         "'4.permutation'", "outside [0, 3]");
  expect(with("4.sign", i64({1, -1, 0, 1})), std::type_identity<ParameterError>{}, "'4.sign'",
         "+1 or -1");
  expect(with("1.mask", i64({0, 1, 1, 1})), std::type_identity<ParameterError>{}, "'1.mask'",
         "built for 2");
  expect(with("1.mask", i64({0, 2, 0, 1})), std::type_identity<ParameterError>{}, "'1.mask'",
         "outside [0, 1]");
  expect(with("2.made.order", i64({3, 3, 0, 1})), std::type_identity<ParameterError>{},
         "'2.made.order'", "not a permutation");
  expect(with("2.made.hidden_degrees.0", i64({3, 1, 1, 1, 2, 2, 3, 3})),
         std::type_identity<ParameterError>{}, "'2.made.hidden_degrees.0'", "ascending");
  expect(with("5.made.hidden_degrees.1", i64({0, 1, 1, 1, 2, 2, 3, 3})),
         std::type_identity<ParameterError>{}, "'5.made.hidden_degrees.1'", "outside [");
  expect(with("3.initialized", i64({2})), std::type_identity<ParameterError>{}, "'3.initialized'",
         "outside [0, 1]");
  // I32 buffers are accepted (the same values).
  io::TensorFile file = io::parse_safetensors(saved(good));
  file.tensors.at("0.permutation") = io::make_tensor(
      get_buffers(good).at("0.permutation").cast<std::int32_t>().eval(), io::DType::I32);
  load_bytes(f, io::serialize_safetensors(file));
  CHECK(get_buffers(f) == get_buffers(good));
}

TEST_CASE("visit_buffers validates what it is given, layer by layer", "[buffers]") {
  // Setting a MADE's degrees by hand: the masks follow, and the network stays autoregressive.
  nn::MADE<double, 3, 6> made(3, 6, 1, 0, Eigen::Vector3i(2, 0, 1), nn::HiddenDegrees::Sequential,
                              7);
  std::mt19937_64 gen(8);
  made.initialize(gen, false);
  const std::map<std::string, BufferVector, std::less<>> values = {
      {"order", (BufferVector(3) << 0, 1, 2).finished()},
      {"hidden_degrees.0", (BufferVector(6) << 1, 1, 1, 1, 2, 2).finished()}};
  set_buffers(made, values);
  CHECK(get_buffers(made) == values);
  for (Index r = 0; r < made.out_dim(); ++r) {
    for (Index u = 0; u < 6; ++u)
      CHECK(made.mask(1)(r, u) == (made.output_degree(r) > made.hidden_degrees(0)(u) ? 1.0 : 0.0));
  }
  // Output 0 (degree 1) depends on nothing; output 2 on inputs 0 and 1 — by finite differences.
  const Eigen::Vector3d x(0.3, -0.5, 0.8);
  for (Index j = 0; j < 3; ++j) {
    Eigen::Vector3d xp = x;
    xp(j) += 1e-6;
    const Eigen::VectorXd dy = made.forward(xp) - made.forward(x);
    for (Index r = 0; r < made.out_dim(); ++r) {
      if (made.output_degree(r) <= j + 1) CHECK(dy(r) == 0.0);
    }
  }
  // A missing value throws; the network is unchanged.
  CHECK_THROWS_WITH(set_buffers(made, {{"order", values.at("order")}}),
                    Contains("'hidden_degrees.0'"));
  CHECK(get_buffers(made) == values);
  // A Coupling mask can move (same counts); a Permutation takes any permutation of its size.
  AffineCoupling<double> c(CouplingMask::half(4),
                           {.hidden_width = 4, .hidden_layers = 1, .seed = 1});
  set_buffers(c, {{"mask", (BufferVector(4) << 1, 0, 1, 0).finished()}});
  CHECK(c.mask().transformed() == std::vector<int>{0, 2});
  Permutation<double> p = Permutation<double>::random(5, 2);
  set_buffers(p, {{"permutation", (BufferVector(5) << 4, 3, 2, 1, 0).finished()}});
  CHECK(p.indices() == Eigen::Vector<int, 5>(4, 3, 2, 1, 0));
  CHECK_THROWS_AS(set_buffers(p, {{"permutation", (BufferVector(4) << 3, 2, 1, 0).finished()}}),
                  ParameterError);
  CHECK(p.indices() == Eigen::Vector<int, 5>(4, 3, 2, 1, 0));
}

// ---- malformed files ------------------------------------------------------------------------------

TEST_CASE("every truncation of a valid file throws and leaves the flow unchanged",
          "[io][safetensors][strict]") {
  const Bytes bytes = saved(make_small_flow<double>(16));
  SmallFlow<double> f = make_small_flow<double>(17);
  const Vector<double> before = get_parameters(f);
  for (std::size_t k = 0; k < bytes.size(); ++k) {
    const Bytes cut(bytes.begin(), bytes.begin() + long(k));
    INFO("truncated to " << k << " of " << bytes.size() << " bytes");
    CHECK_THROWS_AS(load_stream(f, cut), io::FormatError);
    CHECK_THROWS_AS(load_bytes(f, cut), io::FormatError);
  }
  check_unchanged(f, before);
  // The untruncated file loads; one byte more is an error for a whole-file buffer.
  Bytes longer = bytes;
  longer.push_back(0);
  CHECK_THROWS_WITH(load_bytes(f, longer), Contains("cover only"));
  check_unchanged(f, before);
  load_bytes(f, bytes);
  CHECK(get_parameters(f) != before);
}

TEST_CASE("every corrupted header byte is rejected and leaves the flow unchanged",
          "[io][safetensors][strict]") {
  const Bytes bytes = saved(make_small_flow<double>(18));
  std::uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= std::uint64_t(bytes[std::size_t(i)]) << (8 * i);
  SmallFlow<double> f = make_small_flow<double>(19);
  const Vector<double> before = get_parameters(f);
  int thrown = 0;
  for (std::size_t k = 0; k < 8 + n; ++k) {
    for (unsigned char flip : {0x01, 0x80}) {
      Bytes bad = bytes;
      bad[k] ^= flip;
      INFO("byte " << k << " xor " << int(flip) << ": " << to_string(bad).substr(8));
      try {
        load_bytes(f, bad);
        FAIL_CHECK("accepted");
      } catch (const io::FormatError& e) {
        ++thrown;
        CHECK(std::string(e.what()).size() > 20);
      }
      check_unchanged(f, before);
    }
  }
  CHECK(thrown == int(2 * (8 + n)));
}

TEST_CASE("structural errors name the tensor and the problem", "[io][safetensors][strict]") {
  Grid<double> g;
  g.weight.setConstant(7.0);
  const Vector<double> before = get_parameters(g);
  const Bytes data32 = grid_data;
  auto expect = [&](const Bytes& bytes, const std::string& what1, const std::string& what2 = "") {
    INFO(to_string(bytes));
    CHECK_THROWS_AS(load_bytes(g, bytes), io::FormatError);
    CHECK_THROWS_WITH(load_bytes(g, bytes), Contains(what1) && Contains(what2));
    check_unchanged(g, before);
  };
  auto header = [](const std::string& bias, const std::string& weight) {
    return "{\"bias\":" + bias + ",\"weight\":" + weight + "}";
  };
  const std::string bias_ok = R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  const std::string weight_ok = R"({"dtype":"F32","shape":[2,3],"data_offsets":[8,32]})";
  REQUIRE_NOTHROW(io::parse_safetensors(file_bytes(header(bias_ok, weight_ok), data32)));

  SECTION("the length field") {
    expect(Bytes{1, 2, 3}, "fewer than the 8-byte header length");
    Bytes huge = file_bytes("{}");
    huge[7] = 0x7F;
    expect(huge, "exceeds the limit");
    Bytes past = file_bytes(header(bias_ok, weight_ok), data32);
    past[0] = 0xFF;
    past[1] = 0x01;  // 511 > the bytes that follow
    expect(past, "runs past the end of the file");
  }
  SECTION("the JSON") {
    expect(file_bytes("not json"), "does not start with '{'");
    expect(file_bytes("[1, 2]"), "does not start with '{'");
    expect(file_bytes("{\"bias\": }"), "not valid JSON");
    expect(file_bytes(header(bias_ok, weight_ok) + "x", data32), "not valid JSON",
           "after the JSON value");
    expect(file_bytes(
               "{\"bias\":" + bias_ok + ",\"bias\":" + bias_ok + ",\"weight\":" + weight_ok + "}",
               data32),
           "duplicate key \"bias\"");
    expect(file_bytes(R"({"bias":[1,2]})"), "'bias'", "must be an object");
    expect(file_bytes(R"({"__metadata__":{"a":1}})"), "'__metadata__'", "must be a string");
    expect(file_bytes(R"({"__metadata__":[]})"), "'__metadata__' must be an object");
  }
  SECTION("the tensor entries") {
    expect(file_bytes(header(R"({"dtype":"F16","shape":[2],"data_offsets":[0,4]})", weight_ok),
                      data32),
           "'bias'", "dtype 'F16' is not supported");
    expect(file_bytes(header(R"({"dtype":"F32","shape":[2]})", weight_ok), data32), "'bias'",
           "needs 'dtype'");
    expect(
        file_bytes(header(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1})", weight_ok),
                   data32),
        "'bias'", "unexpected field 'x'");
    expect(file_bytes(header(R"({"dtype":"F32","shape":[-2],"data_offsets":[0,8]})", weight_ok),
                      data32),
           "'bias'", "non-negative integer");
    expect(file_bytes(header(R"({"dtype":"F32","shape":[2.0],"data_offsets":[0,8]})", weight_ok),
                      data32),
           "'bias'", "non-negative integer");
    expect(
        file_bytes(header(R"({"dtype":"F32","shape":[2],"data_offsets":[0]})", weight_ok), data32),
        "'bias'", "[begin, end]");
    expect(file_bytes(header(R"({"dtype":"F32","shape":[3],"data_offsets":[0,8]})", weight_ok),
                      data32),
           "'bias'", "needs 12");
    expect(
        file_bytes(header(R"({"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]})",
                          weight_ok),
                   data32),
        "'bias'", "more than 2^64");
    expect(file_bytes(header(R"({"dtype":"F32","shape":[2],"data_offsets":[8,0]})", weight_ok),
                      data32),
           "'bias'", "end before they begin");
  }
  SECTION("the offsets") {
    expect(file_bytes(header(bias_ok, R"({"dtype":"F32","shape":[2,3],"data_offsets":[4,28]})"),
                      Bytes(28, 0)),
           "'weight'", "overlap tensor 'bias'");
    expect(file_bytes(header(bias_ok, R"({"dtype":"F32","shape":[2,3],"data_offsets":[12,36]})"),
                      Bytes(36, 0)),
           "'weight'", "leave a gap");
    expect(file_bytes(header(bias_ok, R"({"dtype":"F32","shape":[2,3],"data_offsets":[800,824]})"),
                      data32),
           "'weight'", "leave a gap");
    expect(file_bytes(header(bias_ok, weight_ok), Bytes(data32.begin(), data32.end() - 1)),
           "truncated", "need 32 bytes");
    expect(file_bytes(header(bias_ok, weight_ok), cat({data32, Bytes(8, 0)})), "cover only 32");
    expect(
        file_bytes(
            header(
                bias_ok,
                R"({"dtype":"F32","shape":[2,3],"data_offsets":[18446744073709551608,18446744073709551632]})"),
            data32),
        "'weight'", "non-negative integer");
  }
  SECTION("names and shapes against the object") {
    expect(file_bytes(R"({"bias":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                      Bytes(data32.begin(), data32.begin() + 8)),
           "missing tensor 'weight'", "[2, 3]");
    expect(file_bytes(header(bias_ok, weight_ok).substr(0, header(bias_ok, weight_ok).size() - 1) +
                          R"(,"extra":{"dtype":"F32","shape":[],"data_offsets":[32,36]}})",
                      cat({data32, f32_one})),
           "unexpected tensor 'extra'");
    expect(file_bytes(header(bias_ok, R"({"dtype":"F32","shape":[3,2],"data_offsets":[8,32]})"),
                      data32),
           "tensor 'weight' has shape [3, 2], expected [2, 3]");
    expect(
        file_bytes(header(bias_ok, R"({"dtype":"F32","shape":[6],"data_offsets":[8,32]})"), data32),
        "tensor 'weight' has shape [6], expected [2, 3]");
    expect(file_bytes(header(R"({"dtype":"F32","shape":[1,2],"data_offsets":[0,8]})", weight_ok),
                      data32),
           "tensor 'bias' has shape [1, 2], expected [2] (or [2, 1])");
  }
  // A one-column parameter accepts [rows, 1] too (the same bytes).
  Grid<double> h;
  load_bytes(h,
             file_bytes(header(R"({"dtype":"F32","shape":[2,1],"data_offsets":[0,8]})", weight_ok),
                        data32));
  CHECK(h.bias == Eigen::Vector2d(0.5, -1.0));
}

TEST_CASE("invalid values throw ParameterError naming the tensor", "[io][safetensors][strict]") {
  Grid<float> g;
  const Vector<float> before = get_parameters(g);
  for (const Bytes& bad : {f32_nan, f32_inf}) {
    const Bytes bytes = file_bytes(
        grid_header, cat({f32_one, f32_one, f32_one, f32_one, f32_one, bad, f32_one, f32_one}));
    CHECK_THROWS_AS(load_bytes(g, bytes), ParameterError);
    CHECK_THROWS_WITH(load_bytes(g, bytes),
                      Contains("'weight'") && Contains("non-finite") && Contains("[1, 0]"));
    check_unchanged(g, before);
  }
  // A double too large for a float parameter.
  Grid<double> big;
  big.weight(1, 2) = 1e300;
  const Bytes bytes = saved(big);
  CHECK_THROWS_AS(load_bytes(g, bytes), ParameterError);
  CHECK_THROWS_WITH(load_bytes(g, bytes), Contains("'weight'") && Contains("range of a float"));
  check_unchanged(g, before);
  Grid<double> ok;
  CHECK_NOTHROW(load_bytes(ok, bytes));
  // ... and it cannot be saved as F32 either; a non-finite parameter cannot be saved at all.
  CHECK_THROWS_AS(saved(big, {io::DType::F32, {}}), ParameterError);
  big.weight(0, 0) = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_WITH(saved(big), Contains("'weight'") && Contains("non-finite"));
  CHECK_THROWS_AS(saved(ok, {io::DType::I64, {}}), std::invalid_argument);
}

TEST_CASE("values a layer rejects leave the flow unchanged", "[io][safetensors][strict]") {
  const SmallFlow<double> good = make_small_flow<double>(20);
  SmallFlow<double> f = make_small_flow<double>(21);
  const Vector<double> before = get_parameters(f);
  auto with_log_s = [&](double value) {
    io::TensorFile file = io::parse_safetensors(saved(good));
    Eigen::Vector2d log_s(0.1, value);
    file.tensors.at("1.log_s") = io::make_tensor(log_s, io::DType::F64);
    return io::serialize_safetensors(file);
  };
  // -inf: W singular. The loader rejects it as non-finite before the layer sees it.
  CHECK_THROWS_AS(load_bytes(f, with_log_s(-std::numeric_limits<double>::infinity())),
                  ParameterError);
  CHECK_THROWS_WITH(load_bytes(f, with_log_s(-std::numeric_limits<double>::infinity())),
                    Contains("'1.log_s'"));
  check_unchanged(f, before);
  // Finite but exp(log_s) overflows: LULinear itself rejects it; the message gains the full name.
  CHECK_THROWS_AS(load_bytes(f, with_log_s(1000.0)), ParameterError);
  CHECK_THROWS_WITH(load_bytes(f, with_log_s(1000.0)),
                    Contains("tensor '1.log_s'") && Contains("nflow::LULinear"));
  check_unchanged(f, before);
  // ActNorm's log_scale likewise.
  io::TensorFile file = io::parse_safetensors(saved(good));
  file.tensors.at("0.log_scale") = io::make_tensor(Eigen::Vector2d(-800.0, 0.0), io::DType::F64);
  CHECK_THROWS_WITH(load_bytes(f, io::serialize_safetensors(file)),
                    Contains("tensor '0.log_scale'"));
  check_unchanged(f, before);
  load_bytes(f, saved(good));
  CHECK(get_parameters(f) == get_parameters(good));
}

// ---- the JSON parser ------------------------------------------------------------------------------

TEST_CASE("the JSON parser accepts JSON and rejects everything else", "[io][json]") {
  using io::json::parse;
  const auto v =
      parse(R"( {"a": [1, -2.5e3, true, false, null], "b": {"c": "\u00fc\ud83d\ude00\n\"\\\/"}} )");
  REQUIRE(v.is_object());
  REQUIRE(v.find("a")->items.size() == 5);
  CHECK(v.find("a")->items[0].as_uint64() == 1u);
  CHECK(!v.find("a")->items[1].as_uint64());
  CHECK(v.find("a")->items[1].text == "-2.5e3");
  CHECK(v.find("b")->find("c")->text == "\xC3\xBC\xF0\x9F\x98\x80\n\"\\/");
  CHECK(parse("18446744073709551615").as_uint64() == UINT64_MAX);
  CHECK(!parse("18446744073709551616").as_uint64());
  CHECK(!parse("1.0").as_uint64());
  CHECK(parse("[]").items.empty());
  CHECK(parse("{}").members.empty());
  for (const char* bad : {"",
                          " ",
                          "{",
                          "[1,]",
                          "{\"a\":1,}",
                          "{\"a\" 1}",
                          "01",
                          "-",
                          "1.",
                          "1e",
                          "+1",
                          ".5",
                          "tru",
                          "nul",
                          "\"abc",
                          "\"\\x\"",
                          "\"\\u12\"",
                          "\"\\ud800\"",
                          "\"\\udc00\"",
                          "\"\\ud800\\u0041\"",
                          "\"a\tb\"",
                          "\"\xC0\xAF\"",
                          "\"\xED\xA0\x80\"",
                          "\"\xF5\x80\x80\x80\"",
                          "\"\xE2\x82\"",
                          "{\"a\":1,\"a\":2}",
                          "[1] [2]",
                          "{\"a\":1}}",
                          "NaN",
                          "Infinity",
                          "'a'",
                          "[1 2]"}) {
    INFO(bad);
    CHECK_THROWS_AS(parse(bad), io::FormatError);
  }
  // Nesting: 64 levels are fine, 65 are not (the recursion is bounded).
  CHECK_NOTHROW(parse(std::string(64, '[') + std::string(64, ']')));
  CHECK_THROWS_WITH(parse(std::string(65, '[') + std::string(65, ']')),
                    Contains("nesting deeper than 64"));
  CHECK_THROWS_AS(parse(std::string(100000, '[')), io::FormatError);
  // Value count: a million values parse, one more does not (bounds the memory of a hostile header).
  auto zeros = [](std::size_t n) {  // an array of n − 1 zeros: n values in all
    std::string s = "[";
    for (std::size_t i = 0; i + 1 < n; ++i) s += i == 0 ? "0" : ",0";
    return s + "]";
  };
  CHECK_NOTHROW(parse(zeros(io::json::max_values)));
  CHECK_THROWS_WITH(parse(zeros(io::json::max_values + 1)), Contains("more than 1000000 values"));
  CHECK(io::json::is_valid_utf8("abc\xC3\xBC"));
  CHECK(!io::json::is_valid_utf8("\xC3"));
  CHECK(!io::json::is_valid_utf8("\xC1\x81"));
}
