// One handle, eight threads: the const calls of the C ABI give every thread the serial results,
// and each thread's last-error message is its own.
#include <nflow/c/nflow.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr std::size_t kDim = 3;
constexpr std::size_t kPoints = 64;
constexpr int kThreads = 8;
constexpr int kRounds = 8;

struct Results {
  std::vector<double> log_prob = std::vector<double>(kPoints);
  std::vector<double> z = std::vector<double>(kPoints * kDim);
  std::vector<double> score = std::vector<double>(kPoints * kDim);
  std::vector<double> samples = std::vector<double>(kPoints * kDim);
};

bool evaluate(const nflow_model* m, const std::vector<double>& x, std::uint64_t seed, Results& r) {
  return nflow_log_prob_d(m, kPoints, NFLOW_POINTS_CONTIGUOUS, x.data(), kDim, nullptr, 0,
                          r.log_prob.data()) == NFLOW_OK &&
         nflow_forward_d(m, kPoints, NFLOW_POINTS_CONTIGUOUS, x.data(), kDim, nullptr, 0,
                         r.z.data(), kDim, nullptr) == NFLOW_OK &&
         nflow_score_d(m, kPoints, NFLOW_POINTS_CONTIGUOUS, x.data(), kDim, nullptr, 0,
                       r.score.data(), kDim) == NFLOW_OK &&
         nflow_sample_d(m, kPoints, seed, NFLOW_POINTS_CONTIGUOUS, nullptr, 0, r.samples.data(),
                        kDim, nullptr) == NFLOW_OK;
}

bool same(const Results& a, const Results& b) {
  return a.log_prob == b.log_prob && a.z == b.z && a.score == b.score && a.samples == b.samples;
}

}  // namespace

int main() {
  nflow_model* m = nullptr;
  if (nflow_create_preset("maf", kDim, R"({"transforms": 2, "hidden_features": 16, "seed": 4})",
                          NFLOW_FLOAT64, &m) != NFLOW_OK) {
    std::printf("create_preset failed: %s\n", nflow_last_error());
    return 1;
  }
  std::vector<double> x(kPoints * kDim);
  for (std::size_t k = 0; k < x.size(); ++k) x[k] = std::sin(0.7 * double(k)) * 2.0;
  // Not the identity: a few steps of fitting first.
  if (nflow_fit_d(m, kPoints, NFLOW_POINTS_CONTIGUOUS, x.data(), kDim, nullptr, 0,
                  R"({"epochs": 5, "batch_size": 16, "learning_rate": 0.01})",
                  nullptr) != NFLOW_OK) {
    std::printf("fit failed: %s\n", nflow_last_error());
    return 1;
  }
  Results serial;
  if (!evaluate(m, x, 99, serial)) {
    std::printf("serial evaluation failed: %s\n", nflow_last_error());
    return 1;
  }
  std::vector<int> ok(kThreads, 1);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < kRounds; ++round) {
        Results r;
        if (!evaluate(m, x, 99, r) || !same(r, serial)) ok[t] = 0;
        // A failing call on this thread sets this thread's message only: even threads pass a
        // NaN, odd ones a short stride, at the same time; the message outlives a good call.
        double nan[kDim] = {std::nan(""), 0, 0};
        double out = 0;
        if (t % 2 == 0) {
          nflow_log_prob_d(m, 1, NFLOW_POINTS_CONTIGUOUS, nan, kDim, nullptr, 0, &out);
        } else {
          nflow_log_prob_d(m, 1, NFLOW_POINTS_CONTIGUOUS, x.data(), kDim - 1, nullptr, 0, &out);
        }
        Results again;
        if (!evaluate(m, x, 99, again)) ok[t] = 0;
        const std::string mine = nflow_last_error();
        const char* expected = t % 2 == 0 ? "is NaN" : "x_stride is 2";
        if (mine.find(expected) == std::string::npos) ok[t] = 0;
      }
    });
  }
  for (auto& th : threads) th.join();
  nflow_close(m);
  int failed = 0;
  for (int t = 0; t < kThreads; ++t) {
    if (!ok[t]) {
      std::printf(
          "thread %d: results differ from the serial ones, or its message was not its own\n", t);
      ++failed;
    }
  }
  std::printf("c_api_thread_test: %d threads x %d rounds, %d failed\n", kThreads, kRounds, failed);
  return failed == 0 ? 0 : 1;
}
