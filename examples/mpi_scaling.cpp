// Strong and weak scaling of data-parallel training on MPI (docs/distributed.md):
//
//   mpirun -np <P> ./mpi_scaling <strong|weak> <batch> [steps] [dim] [hidden] [transforms]
//
// strong: a global batch of <batch> samples per step, split over the P ranks; weak: <batch>
// samples per rank (a global batch of P·<batch>). A Real NVP in double (dim, transforms coupling
// layers of 2 hidden layers of width hidden) is fitted for <steps> steps (after 5 of warm-up) to
// seeded Gaussian data; one thread per rank. Rank 0 prints the time per step, the samples per
// second, and the time of one allreduce of the gradient (parameter count + 1 doubles) measured on
// its own, from which docs/distributed.md models larger runs.
#include <mpi.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <iostream>
#include <nflow/mpi.hpp>
#include <nflow/nflow.hpp>
#include <random>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  using namespace nflow;
  int status = 0;
  try {
    mpi::Communicator comm;
    if (argc < 3) {
      if (comm.rank() == 0) {
        std::cerr << "usage: mpirun -np P " << argv[0]
                  << " <strong|weak> <batch> [steps=50] [dim=8] [hidden=128] [transforms=4]\n";
      }
      MPI_Finalize();
      return 2;
    }
    const std::string mode = argv[1];
    const bool weak = mode == "weak";
    const Index batch = std::atol(argv[2]);
    const Index steps = argc > 3 ? std::atol(argv[3]) : 50;
    const Index dim = argc > 4 ? std::atol(argv[4]) : 8;
    const Index hidden = argc > 5 ? std::atol(argv[5]) : 128;
    const Index transforms = argc > 6 ? std::atol(argv[6]) : 4;
    const Index global = weak ? batch * comm.size() : batch;
    const Index warmup = 5;

    auto flow = flows::real_nvp<double>(dim, {.transforms = transforms, .hidden_features = hidden});
    std::mt19937_64 gen(1);
    const Eigen::MatrixXd data =
        standard_normal_matrix<double>(dim, global * (steps + warmup), gen);

    train::FitOptions options{.batch_size = global, .epochs = 1, .seed = 2};
    options.collective = &comm;
    options.max_steps = warmup;
    train::fit(flow, {.samples = data}, options);  // warm-up: allocations, caches
    options.max_steps = steps;
    comm.barrier();
    const auto t0 = std::chrono::steady_clock::now();
    const std::clock_t c0 = std::clock();
    train::fit(flow, {.samples = data}, options);
    const double cpu = double(std::clock() - c0) / CLOCKS_PER_SEC;  // this rank's CPU time
    comm.barrier();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    // One allreduce of the gradient's size, on its own.
    std::vector<double> buffer(std::size_t(flow.parameter_count() + 1), 1.0);
    const int repeats = 200;
    comm.barrier();
    const auto a0 = std::chrono::steady_clock::now();
    for (int i = 0; i < repeats; ++i) comm.sum(std::span<double>(buffer));
    const double allreduce =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - a0).count() / repeats;

    if (comm.rank() == 0) {
      std::printf(
          "mode %s ranks %lld parameters %lld global_batch %lld per_rank %lld steps %lld: "
          "%.2f ms/step (rank 0's CPU %.2f ms/step), %.0f samples/s, allreduce of %lld doubles "
          "%.2f us\n",
          mode.c_str(), (long long)comm.size(), (long long)flow.parameter_count(),
          (long long)global, (long long)(global / comm.size()), (long long)steps,
          1e3 * seconds / double(steps), 1e3 * cpu / double(steps),
          double(global * steps) / seconds, (long long)buffer.size(), 1e6 * allreduce);
    }
  } catch (const std::exception& e) {
    std::cerr << "mpi_scaling: " << e.what() << '\n';
    status = 1;
  }
  MPI_Finalize();
  return status;
}
