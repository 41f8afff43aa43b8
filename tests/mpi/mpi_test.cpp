// nflow's MPI module under mpirun (tests/CMakeLists.txt runs it on 1 and 2 ranks): data-parallel
// training equals one process to rounding, the divergence and agreement checks, resuming from a
// checkpoint, distributed evaluation and sampling. Every rank runs every test case in the same
// order; checks are CHECK (not REQUIRE) so that a failing rank still makes the collective calls
// the others make.
#define CATCH_CONFIG_RUNNER
#include <mpi.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdint>
#include <filesystem>
#include <nflow/mpi.hpp>
#include <nflow/nflow.hpp>
#include <random>
#include <string>

namespace {

using namespace nflow;
using TestFlow = decltype(flows::real_nvp<double, 2>({}));

TestFlow make_flow() { return flows::real_nvp<double, 2>({.transforms = 2, .hidden_features = 8}); }

const Eigen::MatrixXd& data() {
  static const Eigen::MatrixXd x = datasets::toy(datasets::Toy::TwoMoons, 500, /*seed=*/1);
  return x;
}

mpi::Communicator& world() {
  static mpi::Communicator comm(MPI_COMM_WORLD);
  return comm;
}

// Each rank alone: a communicator of one process.
mpi::Communicator& self() {
  static MPI_Comm comm = [] {
    MPI_Comm c;
    MPI_Comm_split(MPI_COMM_WORLD, int(world().rank()), 0, &c);
    return c;
  }();
  static mpi::Communicator wrapped(comm);
  return wrapped;
}

double relative_difference(const Eigen::VectorXd& a, const Eigen::VectorXd& b) {
  return (a - b).cwiseAbs().maxCoeff() / a.cwiseAbs().maxCoeff();
}

// 500 samples in batches of 64: 7 full batches and a short one (52) per epoch.
train::FitOptions options() {
  return {.batch_size = 64, .epochs = 2, .seed = 3, .adam = {.learning_rate = 1e-2}};
}

// A directory every rank names alike: rank 0's process id, broadcast.
std::filesystem::path shared_directory(const std::string& name) {
  double pid = double(::getpid());
  world().broadcast(std::span(&pid, 1));
  return std::filesystem::temp_directory_path() /
         ("nflow_mpi_test_" + std::to_string(std::uint64_t(pid)) + "_" + name);
}

struct Gaussian {  // log p̃(x) = −|x − 1|²/2, for reverse KL and importance sampling
  Eigen::RowVectorXd operator()(const Eigen::MatrixXd& x) const {
    return -0.5 * (x.array() - 1.0).square().colwise().sum().matrix();
  }
};

}  // namespace

TEST_CASE("data-parallel fit equals one process to rounding", "[mpi]") {
  TestFlow reference = make_flow();
  const train::FitResult plain = train::fit(reference, {.samples = data()}, options());

  // One rank through the collective: the same numbers bit for bit.
  TestFlow alone = make_flow();
  train::FitOptions one = options();
  one.collective = &self();
  train::fit(alone, {.samples = data()}, one);
  CHECK(get_parameters(alone) == get_parameters(reference));

  TestFlow parallel = make_flow();
  train::FitOptions all = options();
  all.collective = &world();
  all.consistency_check_every_steps = 4;
  const train::FitResult r = train::fit(parallel, {.samples = data()}, all);
  CHECK(r.steps == plain.steps);
  CHECK(r.steps == 16);
  const double rel = relative_difference(get_parameters(reference), get_parameters(parallel));
  INFO("P = " << world().size() << ": max relative difference " << rel);
  CHECK(rel < 1e-12);
  CHECK(std::abs(r.final_train_loss - plain.final_train_loss) <
        1e-12 * std::abs(plain.final_train_loss));
  if (world().size() > 1) CHECK(rel > 0);  // the sums really were split
  // Buckets of 7 values (many allreduces per step) sum the same numbers.
  mpi::Communicator small_buckets(MPI_COMM_WORLD, 7);
  TestFlow bucketed = make_flow();
  all.collective = &small_buckets;
  train::fit(bucketed, {.samples = data()}, all);
  CHECK(get_parameters(bucketed) == get_parameters(parallel));
  // The parameters moved: the comparison is not of two untrained flows.
  CHECK(relative_difference(get_parameters(make_flow()), get_parameters(parallel)) > 1e-3);
}

TEST_CASE("the ranks must agree, diverged parameters are caught", "[mpi]") {
  if (world().size() < 2) return;
  TestFlow flow = make_flow();
  train::FitOptions o = options();
  o.collective = &world();

  SECTION("a global batch that does not divide") {
    o.batch_size = 63 + (world().size() % 2 == 0 ? 0 : 1);
    CHECK_THROWS_WITH(train::fit(flow, {.samples = data()}, o),
                      Catch::Contains("must be divisible by the number of processes"));
  }
  SECTION("different initial parameters") {
    if (world().rank() == 1)
      set_parameters(flow, Eigen::VectorXd(get_parameters(flow).array() + 1e-9));
    CHECK_THROWS_WITH(train::fit(flow, {.samples = data()}, o),
                      Catch::Contains("disagree on the initial parameters"));
    mpi::broadcast_parameters(world(), flow);
    CHECK(get_parameters(flow) == get_parameters(make_flow()));
  }
  SECTION("bad data on one rank: every rank throws") {
    const Eigen::MatrixXd bad = Eigen::MatrixXd::Zero(3, 100);
    if (world().rank() == 1) {
      CHECK_THROWS_AS(train::fit(flow, {.samples = bad}, o), ShapeError);
    } else {
      CHECK_THROWS_WITH(train::fit(flow, {.samples = data()}, o),
                        Catch::Contains("failed on 1 other process"));
    }
  }
  SECTION("different seeds") {
    o.seed = 3 + std::uint64_t(world().rank());
    CHECK_THROWS_WITH(train::fit(flow, {.samples = data()}, o),
                      Catch::Contains("disagree on the seed"));
  }
  SECTION("a rank perturbed during training") {
    o.consistency_check_every_steps = 4;
    o.report_every_steps = 1;
    o.callback = [&](const train::Progress& p) {
      if (p.step == 2 && world().rank() == 1) {
        Eigen::VectorXd theta = get_parameters(flow);
        theta(0) += 1e-12;
        set_parameters(flow, theta);
      }
    };
    try {
      train::fit(flow, {.samples = data()}, o);
      FAIL("no divergence detected");
    } catch (const train::TrainingError& e) {
      CHECK(e.step() == 4);
      CHECK_THAT(e.what(), Catch::Contains("parameters of rank 1 differ from rank 0's"));
    }
  }
  SECTION("mismatched parameter counts, before the broadcast") {
    auto bigger = flows::real_nvp<double, 2>(
        {.transforms = 2, .hidden_features = world().rank() == 0 ? 8 : 9});
    CHECK_THROWS_WITH(mpi::broadcast_parameters(world(), bigger),
                      Catch::Contains("disagree on the parameter count"));
  }
}

TEST_CASE("data-parallel fit on a sampler: a stream per rank", "[mpi]") {
  TestFlow flow = make_flow();
  train::FitOptions o{.batch_size = 32, .max_steps = 6, .seed = 5};
  o.collective = &world();
  o.consistency_check_every_steps = 3;
  Index columns = 0;
  Eigen::VectorXd first(2);
  train::fit(flow, train::sampler([&](auto& x, auto&, Index step, std::mt19937_64& gen) {
               fill_standard_normal(x, gen);
               columns = x.cols();
               if (step == 0) first = x.col(0);
             }),
             o);
  CHECK(columns == 32 / world().size());
  CHECK_NOTHROW(mpi::check_parameters(world(), flow, 6));
  // Rank r's generator is seeded with stream_seed(seed, r).
  std::mt19937_64 gen(stream_seed(5, std::uint64_t(world().rank())));
  CHECK(first == standard_normal_matrix<double>(2, columns, gen).col(0));
}

TEST_CASE("resume from a checkpoint equals the uninterrupted run", "[mpi]") {
  const std::filesystem::path dir = shared_directory("checkpoint");
  train::FitOptions o = options();
  o.collective = &world();
  TestFlow uninterrupted = make_flow();
  train::fit(uninterrupted, {.samples = data()}, o);

  // Killed at step 8; the last checkpoint is that of step 6 (every 3 steps).
  struct Killed {};
  TestFlow killed = make_flow();
  train::FitOptions k = o;
  k.checkpoint_every_steps = 3;
  k.checkpoint = mpi::checkpoint(world(), killed, dir);
  k.report_every_steps = 1;
  k.callback = [](const train::Progress& p) {
    if (p.step == 8) throw Killed{};
  };
  CHECK_THROWS_AS(train::fit(killed, {.samples = data()}, k), Killed);

  TestFlow resumed =
      flows::real_nvp<double, 2>({.transforms = 2, .hidden_features = 8, .seed = 99});
  train::FitOptions r = o;
  r.resume = mpi::load_checkpoint(world(), resumed, dir);
  CHECK(r.resume->step == 6);
  const train::FitResult result = train::fit(resumed, {.samples = data()}, r);
  CHECK(result.steps == 16);
  CHECK(result.epochs == 2);
  CHECK(get_parameters(resumed) == get_parameters(uninterrupted));
  // A checkpoint that is not there: every rank throws.
  CHECK_THROWS(mpi::load_checkpoint(world(), resumed, dir / "missing"));
  world().barrier();
  if (world().rank() == 0) std::filesystem::remove_all(dir);
}

TEST_CASE("distributed mean NLL, importance sampling and reverse KL", "[mpi]") {
  TestFlow flow = make_flow();
  train::fit(flow, {.samples = data()}, {.batch_size = 100, .max_steps = 5});
  const train::Slice mine = train::batch_slice(data().cols(), world().rank(), world().size());
  const double nll = mpi::mean_nll(world(), flow, data().middleCols(mine.first, mine.count));
  const double whole = train::nll_value(flow, data());
  CHECK(std::abs(nll - whole) < 1e-13 * std::abs(whole));
  const Eigen::RowVectorXd lp =
      mpi::gather_log_prob(world(), flow, data().middleCols(mine.first, mine.count));
  CHECK((lp - flow.log_prob(data())).cwiseAbs().maxCoeff() == 0);

  const Index n = 1001;
  const sampling::ImportanceAccumulator acc =
      mpi::importance_sample(world(), flow, Gaussian{}, n, 7, 256);
  sampling::ImportanceAccumulator expected;
  for (Index r = 0; r < world().size(); ++r) {
    std::mt19937_64 gen(stream_seed(7, std::uint64_t(r)));
    expected.merge(sampling::importance_sample(
        flow, Gaussian{}, train::batch_slice(n, r, world().size()).count, gen, 256));
  }
  CHECK(acc.count() == n);
  CHECK(std::abs(acc.log_z() - expected.log_z()) < 1e-12);
  CHECK(std::abs(acc.ess() - expected.ess()) < 1e-9 * expected.ess());
  CHECK(std::abs(acc.pareto_k() - expected.pareto_k()) < 1e-9);

  auto target = train::make_target(
      Gaussian{}, [](const Eigen::MatrixXd& x) { return Eigen::MatrixXd(-(x.array() - 1.0)); });
  const Index global = 64;
  Eigen::VectorXd grad = Eigen::VectorXd::Zero(flow.parameter_count());
  std::mt19937_64 gen = mpi::rank_generator(world(), 11);
  train::ReverseKlWorkspace<TestFlow> ws;
  const double loss = mpi::reverse_kl(world(), flow, target, global, gen, grad, ws);
  Eigen::VectorXd mean_grad = Eigen::VectorXd::Zero(flow.parameter_count());
  double mean_loss = 0;
  for (Index r = 0; r < world().size(); ++r) {
    std::mt19937_64 g(stream_seed(11, std::uint64_t(r)));
    Eigen::VectorXd gr = Eigen::VectorXd::Zero(flow.parameter_count());
    mean_loss +=
        train::reverse_kl(flow, target, global / world().size(), g, gr) / double(world().size());
    mean_grad += gr / double(world().size());
  }
  CHECK(std::abs(loss - mean_loss) < 1e-12 * std::abs(mean_loss));
  CHECK(relative_difference(mean_grad, grad) < 1e-12);
  if (world().size() > 1) {
    CHECK_THROWS_WITH(mpi::reverse_kl(world(), flow, target, 2 * world().size() + 1, gen, grad, ws),
                      Catch::Contains("multiple of the number of ranks"));
  }
}

TEST_CASE("sampling into per-rank shards is reproducible", "[mpi]") {
  const TestFlow flow = make_flow();
  const std::filesystem::path dir = shared_directory("shards");
  const Index n = 101;
  const mpi::ShardIndex index = mpi::sample_shards(world(), flow, n, 5, dir / "a", 16);
  mpi::sample_shards(world(), flow, n, 5, dir / "b", 50);  // other batches: the same draws
  world().barrier();
  Eigen::RowVectorXd lp;
  const Eigen::MatrixXd a = mpi::read_shards<double>(index.index, &lp);
  const Eigen::MatrixXd b = mpi::read_shards<double>(dir / "b" / "index.json");
  CHECK(a.cols() == n);
  CHECK(a == b);
  CHECK((lp - flow.log_prob(a)).cwiseAbs().maxCoeff() < 1e-10);
  // Shard r holds stream r's draws; the streams differ.
  for (Index r = 0; r < world().size(); ++r) {
    std::mt19937_64 gen(stream_seed(5, std::uint64_t(r)));
    const auto& s = index.shards[std::size_t(r)];
    CHECK(a.middleCols(s.first, s.count) == flow.sample(s.count, gen));
  }
  if (world().size() > 1) CHECK(a.col(0) != a.col(index.shards[1].first));
  world().barrier();
  if (world().rank() == 0) std::filesystem::remove_all(dir);
}

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int result = Catch::Session().run(argc, argv);
  // Every rank's verdict: the job fails if any rank's checks failed.
  int any = result != 0 ? 1 : 0;
  MPI_Allreduce(MPI_IN_PLACE, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return any;
}
