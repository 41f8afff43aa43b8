// A single point through a fixed-size flow allocates nothing on the heap. This executable counts
// every operator new and, through Eigen's EIGEN_RUNTIME_NO_MALLOC hook, every Eigen heap
// allocation, so it is kept separate from the other tests.
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <random>

namespace {
std::atomic<long> allocations{0};
std::atomic<long> allocated_bytes{0};
}  // namespace
// Eigen checks each of its heap allocations with eigen_assert(is_malloc_allowed() && ...); with
// malloc "forbidden" that check counts instead of aborting.
#define EIGEN_RUNTIME_NO_MALLOC
#define eigen_assert(x)                                            \
  do {                                                             \
    if (!(x)) allocations.fetch_add(1, std::memory_order_relaxed); \
  } while (false)

#include <catch2/catch.hpp>
#include <nflow/nflow.hpp>

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
// Every (non-aligned) form is replaced, so that each new is paired with a matching delete (the
// sanitizers' own operators would otherwise report alloc-dealloc mismatches).
namespace {
void* counted_malloc(std::size_t size) noexcept {
  allocations.fetch_add(1, std::memory_order_relaxed);
  allocated_bytes.fetch_add(long(size), std::memory_order_relaxed);
  return std::malloc(size == 0 ? 1 : size);
}
}  // namespace
void* operator new(std::size_t size) {
  if (void* p = counted_malloc(size)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size) {
  if (void* p = counted_malloc(size)) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  return counted_malloc(size);
}
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept {
  return counted_malloc(size);
}
// The aligned forms too (the scratch arena's chunks, nflow/core/scratch.hpp), so that its
// allocations are counted as well.
namespace {
void* counted_aligned(std::size_t size, std::align_val_t al) noexcept {
  allocations.fetch_add(1, std::memory_order_relaxed);
  allocated_bytes.fetch_add(long(size), std::memory_order_relaxed);
  const std::size_t a = std::size_t(al);
  return std::aligned_alloc(a, (size + a - 1) / a * a);
}
}  // namespace
void* operator new(std::size_t size, std::align_val_t al) {
  if (void* p = counted_aligned(size, al)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size, std::align_val_t al) {
  if (void* p = counted_aligned(size, al)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }

using namespace nflow;

namespace {
template <typename F>
long count_allocations(F&& f) {
  const long before = allocations.load();
  Eigen::internal::set_is_malloc_allowed(false);
  f();
  Eigen::internal::set_is_malloc_allowed(true);
  return allocations.load() - before;
}
}  // namespace

TEMPLATE_TEST_CASE("one point through a fixed-size flow does not allocate", "[allocation]", float,
                   double) {
  using S = TestType;
  using F = Flow<ElementwiseAffine<S, 4>, Reverse<S, 4>, Sigmoid<S, 4>, Logit<S, 4>,
                 Permutation<S, 4>, Inverted<ElementwiseAffine<S, 4>>>;
  const F flow{ElementwiseAffine<S, 4>{},
               Reverse<S, 4>{},
               Sigmoid<S, 4>{},
               Logit<S, 4>{},
               Permutation<S, 4>::random(4, 3),
               Inverted<ElementwiseAffine<S, 4>>{}};
  const Density density(StandardNormal<S, 4>{}, flow);
  const Eigen::Matrix<S, 4, 1> x(S(0.1), S(-0.4), S(0.7), S(1.2));
  Eigen::Matrix<S, 4, 1> out = Eigen::Matrix<S, 4, 1>::Zero();
  S sink = 0;
  // The counter must see allocations at all (a control): a dynamic batch allocates.
  CHECK(count_allocations(
            [&] { sink += flow.forward(Eigen::Matrix<S, 4, Eigen::Dynamic>(x)).sum(); }) > 0);
  CHECK(count_allocations([&] {
          auto r = flow.forward_and_log_det(x);
          auto back = flow.inverse_and_log_det(r.value);
          out = back.value;
          sink += r.log_det(0) + back.log_det(0);
          sink += density.log_prob(x);
        }) == 0);
  CHECK((out - x).norm() < S(1e-4));
  CHECK(std::isfinite(double(sink)));
}

namespace {
/// log_prob of one point, and forward and inverse with their log-dets: must not allocate.
template <typename Density, typename Point>
long point_allocations(const Density& density, const Point& x) {
  typename Point::Scalar sink = 0;
  const long n = count_allocations([&] {
    sink += density.log_prob(x);
    const auto r = density.transform().forward_and_log_det(x);
    const auto back = density.transform().inverse_and_log_det(r.value);
    sink += r.log_det(0) + back.log_det(0) + back.value(0);
  });
  CHECK(std::isfinite(double(sink)));
  return n;
}

template <typename Model>
void randomize(Model& m) {
  using S = typename Model::Scalar;
  std::mt19937_64 gen(11);
  set_parameters(m, Vector<S>(standard_normal_matrix<S>(m.parameter_count(), 1, gen) * S(0.05)));
}
}  // namespace

TEMPLATE_TEST_CASE(
    "one point through every discrete family, fixed Dim and Hidden, does not allocate",
    "[allocation]", float, double) {
  using S = TestType;
  constexpr int D = 6;
  constexpr int H = 16;
  std::mt19937_64 gen(3);
  const Eigen::Matrix<S, D, 1> x = standard_normal_matrix<S, D>(D, 1, gen);
  const CouplingOptions copt{.hidden_width = H, .hidden_layers = 2, .seed = 1};

  // NICE: additive couplings and a diagonal scaling.
  using Add = AdditiveCoupling<S, D, H>;
  Density nice(StandardNormal<S, D>{},
               Flow<Add, Add, ElementwiseAffine<S, D>>(Add(CouplingMask::half(D), copt),
                                                       Add(CouplingMask::half(D, true), copt),
                                                       ElementwiseAffine<S, D>{}));
  randomize(nice);
  CHECK(point_allocations(nice, x) == 0);

  // Real NVP: affine couplings and reversals.
  using Aff = AffineCoupling<S, D, H>;
  Density realnvp(StandardNormal<S, D>{},
                  Flow<Aff, Reverse<S, D>, Aff>(Aff(CouplingMask::half(D), copt), Reverse<S, D>{},
                                                Aff(CouplingMask::alternating(D), copt)));
  randomize(realnvp);
  CHECK(point_allocations(realnvp, x) == 0);

  // Glow: ActNorm, LU linear, affine coupling.
  ActNorm<S, D> an;
  an.set_initialized();
  Density glow(StandardNormal<S, D>{},
               Flow<ActNorm<S, D>, LULinear<S, D>, Aff>(an, LULinear<S, D>::random_orthogonal(D, 4),
                                                        Aff(CouplingMask::half(D), copt)));
  randomize(glow);
  CHECK(point_allocations(glow, x) == 0);

  // MAF: MADE layers in both orders (its inverse is Dim passes), and an IAF.
  using M = MAF<S, D, H>;
  Density maf(
      StandardNormal<S, D>{},
      Flow<M, M, IAF<S, D, H>>(M({.hidden_width = H, .seed = 5}),
                               M({.hidden_width = H, .seed = 6, .order = nn::InputOrder::Reversed}),
                               IAF<S, D, H>{M({.hidden_width = H, .seed = 7})}));
  randomize(maf);
  CHECK(point_allocations(maf, x) == 0);

  // Neural spline flows: spline couplings and an autoregressive spline layer (Dim passes).
  using Sc = SplineCoupling<S, D, H, 5>;
  using Sa = SplineAutoregressive<S, D, H, 5>;
  Density nsf(StandardNormal<S, D>{},
              Flow<Sc, Reverse<S, D>, Sa>(Sc(CouplingMask::half(D), copt), Reverse<S, D>{},
                                          Sa({.hidden_width = H, .seed = 8})));
  randomize(nsf);
  CHECK(point_allocations(nsf, x) == 0);
}

TEST_CASE("one point through a Stack of fixed-size blocks does not allocate",
          "[allocation][stack]") {
  // The blocks live in a std::vector; the per-call values are fixed-size, block to block.
  using S = double;
  constexpr int D = 6;
  using Aff = AffineCoupling<S, D, 16>;
  std::mt19937_64 gen(5);
  const Eigen::Matrix<S, D, 1> x = standard_normal_matrix<S, D>(D, 1, gen);
  Density stack(StandardNormal<S, D>{}, Stack<Aff>(3, [](Index i) {
                  return Aff(CouplingMask::half(D, i % 2 == 1),
                             CouplingOptions{.hidden_width = 16, .hidden_layers = 2, .seed = 1});
                }));
  randomize(stack);
  CHECK(point_allocations(stack, x) == 0);
}

TEST_CASE("one point through a fixed-size continuous flow (RK4, Euler) does not allocate",
          "[allocation][continuous]") {
  // The fixed-size path: the MLP pass and the closed-form exact trace on fixed-size vectors, the
  // H × H trace matrix on the stack; one and two hidden layers, with a context. Double only (the
  // float path is the same code; tests/bijectors/continuous_test.cpp checks it against the batch).
  using S = double;
  using Cnf = ContinuousFlow<S, 2, 16, nn::Tanh, 1>;
  const Eigen::Matrix<S, 2, 1> x(S(0.3), S(-0.7));
  const Eigen::Matrix<S, 1, 1> c(S(0.4));
  for (Index layers : {Index(1), Index(2)}) {
    for (auto solver : {OdeSolver::RK4, OdeSolver::Euler}) {
      INFO("hidden layers: " << layers << ", solver: " << int(solver));
      Cnf cnf(2, {.hidden_width = 16, .hidden_layers = layers, .seed = 1});
      randomize(cnf);
      cnf.set_solver(solver, 10);
      const Density density(StandardNormal<S, 2>{}, Flow<Cnf>(cnf));
      S sink = 0;
      Eigen::Matrix<S, 2, 1> back = Eigen::Matrix<S, 2, 1>::Zero();
      CHECK(count_allocations([&] {
              sink += density.log_prob(x, c);
              const auto r = cnf.forward_and_log_det(x, c);
              const auto b = cnf.inverse_and_log_det(r.value, c);
              back = b.value;
              sink += r.log_det(0) + b.log_det(0);
            }) == 0);
      CHECK(std::isfinite(double(sink)));
      CHECK((back - x).norm() < S(0.05));  // inverse to the solver's accuracy
    }
  }
}

TEST_CASE("a batch through MAF layers takes its temporaries from the thread's scratch memory",
          "[allocation][scratch]") {
  using S = double;
  constexpr int D = 6;
  constexpr int H = 16;
  using M = MAF<S, D, H>;
  const Flow<M, M> flow(M({.hidden_width = H, .seed = 5}),
                        M({.hidden_width = H, .seed = 6, .order = nn::InputOrder::Reversed}));
  std::mt19937_64 gen(3);
  const Batch<S, D, Dynamic> x = standard_normal_matrix<S, D>(D, 256, gen);
  auto bytes_of = [](auto&& f) {
    const long before = allocated_bytes.load();
    f();
    return allocated_bytes.load() - before;
  };
  auto forward = [&] { return flow.forward_and_log_det(x); };
  auto inverse = [&] { return flow.inverse_and_log_det(x); };
  const auto z = forward();  // the first calls size the thread's arena
  (void)inverse();
  // Each layer's MADE needs two hidden blocks of H × 256 and an output block of 2D × 256 (88 KB in
  // all), its inverse a record of both hidden layers and a parameter block; after the first call
  // none of them comes from the heap: what is left are the results (a value and a log-det per
  // layer, and the flow's).
  const long warm_forward = count_allocations(forward);
  const long warm_inverse = count_allocations(inverse);
  INFO("heap allocations of a warm call: forward " << warm_forward << ", inverse " << warm_inverse);
  CHECK(warm_forward <= 6);
  CHECK(warm_inverse <= 6);
  CHECK(bytes_of(forward) <= long(3 * (D + 1) * 256 * sizeof(S)));
  CHECK(detail::ScratchArena::local().capacity() >= std::size_t(2 * H * 256 * sizeof(S)));
  // The same numbers as before the arena was warm.
  CHECK((forward().value - z.value).cwiseAbs().maxCoeff() == 0.0);

  // The arena itself: LIFO blocks, aligned, distinct; a block larger than the free space takes a
  // new chunk, and once every block is back the chunks merge into one that holds them all.
  detail::ScratchArena& arena = detail::ScratchArena::local();
  const std::size_t big = arena.capacity() + 1000;
  {
    detail::ScratchMatrix<S> a(3, 5);
    detail::ScratchMatrix<S> b(1000, 1);
    a.setConstant(1.0);
    b.setConstant(2.0);
    CHECK(reinterpret_cast<std::uintptr_t>(a.data()) % detail::ScratchArena::Alignment == 0);
    CHECK(reinterpret_cast<std::uintptr_t>(b.data()) % detail::ScratchArena::Alignment == 0);
    CHECK(b.data() >= a.data() + 15);
    {
      detail::ScratchMatrix<S> c(Index(big / sizeof(S)), 1);
      c.setZero();
      CHECK(arena.capacity() >= big + 1000 * sizeof(S));
    }
    CHECK(a.sum() == 15.0);
    CHECK(b.sum() == 2000.0);
  }
  const std::size_t merged = arena.capacity();
  CHECK(merged >= big);
  CHECK(bytes_of([&] { detail::ScratchMatrix<S> c(Index(big / sizeof(S)), 1); }) == 0);
  CHECK(arena.capacity() == merged);
}
