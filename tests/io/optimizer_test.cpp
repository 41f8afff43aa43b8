// Saving and loading an optimiser's state: training resumes bit-identically, and loading is as
// strict as io::load.
#include <catch2/catch.hpp>
#include <nflow/io/optimizer.hpp>
#include <nflow/nflow.hpp>
#include <random>
#include <sstream>

using namespace nflow;

namespace {
using C = AffineCoupling<double, 2, 8>;
using Model = Density<StandardNormal<double, 2>, Flow<C, Reverse<double, 2>, C>>;
Model make_model() {
  return Model(StandardNormal<double, 2>{},
               Flow<C, Reverse<double, 2>, C>(
                   C(CouplingMask::half(2), {.hidden_width = 8, .hidden_layers = 2, .seed = 1}),
                   Reverse<double, 2>{},
                   C(CouplingMask::half(2), {.hidden_width = 8, .hidden_layers = 2, .seed = 2})));
}
/// `steps` Adam steps of maximum likelihood on fixed batches drawn from `gen`.
void train_steps(Model& model, train::Adam<double>& adam, int steps, std::mt19937_64& gen) {
  for (int s = 0; s < steps; ++s) {
    const Eigen::Matrix<double, 2, Eigen::Dynamic> x =
        standard_normal_matrix<double>(2, 64, gen) * 1.5;
    Vector<double> grad = Vector<double>::Zero(model.parameter_count());
    train::nll(model, x, grad);
    adam.step_model(model, grad);
  }
}
}  // namespace

TEST_CASE("training resumed from saved parameters and optimiser state is bit-identical",
          "[io][optimizer]") {
  // The uninterrupted run: 20 steps.
  Model straight = make_model();
  train::Adam<double> adam_straight(straight.parameter_count(),
                                    {.learning_rate = 1e-2, .weight_decay = 1e-3});
  std::mt19937_64 gen_straight(5);
  train_steps(straight, adam_straight, 20, gen_straight);

  // The interrupted run: 10 steps, save both, load into fresh objects, 10 more steps.
  Model first = make_model();
  train::Adam<double> adam_first(first.parameter_count(),
                                 {.learning_rate = 1e-2, .weight_decay = 1e-3});
  std::mt19937_64 gen(5);
  train_steps(first, adam_first, 10, gen);
  std::stringstream model_file, optimizer_file;
  io::save(first, model_file);
  io::save_optimizer(adam_first, optimizer_file, {{"epoch", "1"}});
  const std::string model_bytes = model_file.str();
  const std::mt19937_64 gen_at_save = gen;

  Model resumed = make_model();
  train::Adam<double> adam_resumed(resumed.parameter_count(),
                                   {.learning_rate = 1e-2, .weight_decay = 1e-3});
  io::load(resumed, model_file);
  const auto metadata = io::load_optimizer(adam_resumed, optimizer_file);
  CHECK(metadata.at("epoch") == "1");
  CHECK(adam_resumed.steps() == 10);
  train_steps(resumed, adam_resumed, 10, gen);
  CHECK(get_parameters(resumed) == get_parameters(straight));
  // train::AdamState, what train::fit's checkpoints hold, is saved and loaded under the same
  // names: set into a fresh optimiser it continues identically.
  std::stringstream state_file;
  io::save_optimizer(adam_first.state(), state_file);
  train::Adam<double> adam_from_state(first.parameter_count(),
                                      {.learning_rate = 1e-2, .weight_decay = 1e-3});
  io::load_optimizer(adam_from_state, state_file);
  CHECK(adam_from_state.state().m == adam_first.state().m);
  CHECK(adam_from_state.steps() == 10);
  CHECK_THROWS_AS(adam_from_state.set_state(train::AdamState{}), ParameterError);

  // The same resume with a fresh Adam (same parameters, same batches) ends elsewhere: the
  // optimiser state matters, so the check above can fail.
  Model cold = make_model();
  std::stringstream model_again(model_bytes);
  io::load(cold, model_again);
  train::Adam<double> adam_cold(cold.parameter_count(),
                                {.learning_rate = 1e-2, .weight_decay = 1e-3});
  std::mt19937_64 gen_cold = gen_at_save;
  train_steps(cold, adam_cold, 10, gen_cold);
  CHECK(get_parameters(cold) != get_parameters(straight));
}

TEST_CASE("loading an optimiser's state is strict and leaves it unchanged on error",
          "[io][optimizer]") {
  train::Adam<double> small(3), large(5);
  Vector<double> p = Vector<double>::Zero(5), g = Vector<double>::Constant(5, 0.5);
  large.step(p, g);
  std::stringstream file;
  io::save_optimizer(large, file);
  // A state for 5 parameters does not load into an optimiser of 3.
  CHECK_THROWS_AS(io::load_optimizer(small, file), io::FormatError);
  CHECK(small.steps() == 0);
  // A truncated file fails cleanly too.
  const std::string bytes = file.str();
  std::stringstream truncated(bytes.substr(0, bytes.size() - 3));
  train::Adam<double> other(5);
  CHECK_THROWS_AS(io::load_optimizer(other, truncated), io::FormatError);
  CHECK(other.steps() == 0);
  // A fractional step count is rejected by the optimiser, and the optimiser is unchanged.
  auto tensors = io::to_tensor_file(io::OptimizerState<train::Adam<double>>(large));
  tensors.tensors.at("adam.step") =
      io::make_tensor(Eigen::Matrix<double, 1, 1>::Constant(2.5), io::DType::F64);
  CHECK_THROWS_AS(io::load_optimizer(other, tensors), ParameterError);
  CHECK(other.steps() == 0);
}
