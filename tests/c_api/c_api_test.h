/* Shared helpers of the C ABI's tests (plain C11): a CHECK macro that counts failures, a
 * reproducible generator, and file helpers. */
#ifndef NFLOW_C_API_TEST_H
#define NFLOW_C_API_TEST_H

#include <math.h>
#include <nflow/c/nflow.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_failures = 0;
static int test_checks = 0;

#define CHECK(cond)                                                                            \
  do {                                                                                         \
    ++test_checks;                                                                             \
    if (!(cond)) {                                                                             \
      ++test_failures;                                                                         \
      fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n", __FILE__, __LINE__, #cond, \
              nflow_last_error());                                                             \
    }                                                                                          \
  } while (0)

/* A call must return `expected`; a failure must leave a message naming the entry point. */
#define CHECK_STATUS(call, expected)                                                               \
  do {                                                                                             \
    const nflow_status got_ = (call);                                                              \
    ++test_checks;                                                                                 \
    if (got_ != (expected)) {                                                                      \
      ++test_failures;                                                                             \
      fprintf(stderr, "%s:%d: %s returned %s, expected %s (last error: %s)\n", __FILE__, __LINE__, \
              #call, nflow_status_name(got_), nflow_status_name(expected), nflow_last_error());    \
    } else if (got_ != NFLOW_OK && strncmp(nflow_last_error(), "nflow_", 6) != 0) {                \
      ++test_failures;                                                                             \
      fprintf(stderr, "%s:%d: %s failed without a message naming the call: \"%s\"\n", __FILE__,    \
              __LINE__, #call, nflow_last_error());                                                \
    }                                                                                              \
  } while (0)

#define CHECK_OK(call) CHECK_STATUS(call, NFLOW_OK)

/* splitmix64: the tests' own reproducible numbers. */
static uint64_t test_state = 12345;
static uint64_t test_next(void) {
  uint64_t z = (test_state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}
static double test_uniform(void) { return ((double)(test_next() >> 11) + 0.5) * 0x1p-53; }
static double test_normal(void) {
  return sqrt(-2.0 * log(test_uniform())) * cos(6.283185307179586 * test_uniform());
}

/* The standard normal quantile by bisection on Phi (an independent check of the library's). */
static double test_normal_quantile(double u) {
  double lo = -40, hi = 40;
  for (int k = 0; k < 200; ++k) {
    const double mid = 0.5 * (lo + hi);
    if (0.5 * erfc(-mid / sqrt(2.0)) < u) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return 0.5 * (lo + hi);
}

static int test_report(const char* name) {
  printf("%s: %d checks, %d failed\n", name, test_checks, test_failures);
  return test_failures == 0 ? 0 : 1;
}

/* The bytes of a file (malloc'd; *size set), or null. */
static unsigned char* test_read_file(const char* path, size_t* size) {
  FILE* f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  const long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char* bytes = (unsigned char*)malloc(n > 0 ? (size_t)n : 1);
  *size = fread(bytes, 1, (size_t)n, f);
  fclose(f);
  return bytes;
}

#endif
