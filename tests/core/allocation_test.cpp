// A single point through a fixed-size flow allocates nothing on the heap. This executable counts
// every operator new and, through Eigen's EIGEN_RUNTIME_NO_MALLOC hook, every Eigen heap
// allocation, so it is kept separate from the other tests.
#include <atomic>
#include <cstdlib>
#include <new>

namespace {
std::atomic<long> allocations{0};
}
// Eigen checks each of its heap allocations with eigen_assert(is_malloc_allowed() && ...); with
// malloc "forbidden" that check counts instead of aborting.
#define EIGEN_RUNTIME_NO_MALLOC
#define eigen_assert(x) \
  do {                  \
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
void* operator new(std::size_t size, const std::nothrow_t&) noexcept { return counted_malloc(size); }
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept { return counted_malloc(size); }
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

TEMPLATE_TEST_CASE("one point through a fixed-size flow does not allocate", "[allocation]", float, double) {
  using S = TestType;
  using F = Flow<ElementwiseAffine<S, 4>, Reverse<S, 4>, Sigmoid<S, 4>, Logit<S, 4>, Permutation<S, 4>,
                 Inverted<ElementwiseAffine<S, 4>>>;
  const F flow{ElementwiseAffine<S, 4>{}, Reverse<S, 4>{}, Sigmoid<S, 4>{}, Logit<S, 4>{},
               Permutation<S, 4>::random(4, 3), Inverted<ElementwiseAffine<S, 4>>{}};
  const Density density(StandardNormal<S, 4>{}, flow);
  const Eigen::Matrix<S, 4, 1> x(S(0.1), S(-0.4), S(0.7), S(1.2));
  Eigen::Matrix<S, 4, 1> out = Eigen::Matrix<S, 4, 1>::Zero();
  S sink = 0;
  // The counter must see allocations at all (a control): a dynamic batch allocates.
  CHECK(count_allocations([&] { sink += flow.forward(Eigen::Matrix<S, 4, Eigen::Dynamic>(x)).sum(); }) > 0);
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
