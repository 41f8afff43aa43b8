#pragma once
// NFLOW_UNLESS_SMOKE(registrations): CI (scripts/test, CMake option NFLOW_BENCHMARK_SMOKE) only
// compiles the benchmarks and runs them briefly, so that none rots; there the double-precision
// registrations and the fixed-size d = 64 ones (the same templates as the float, smaller ones)
// are left out, which halves the benchmarks' compile time. Builds for figures (benchmarks/compare.py) register everything.
#ifdef NFLOW_BENCHMARK_SMOKE
#define NFLOW_UNLESS_SMOKE(...)
#else
#define NFLOW_UNLESS_SMOKE(...) __VA_ARGS__
#endif
