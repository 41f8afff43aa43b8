#pragma once
// The training protocol the 2-D examples share (docs/training.md): Adam at 1e-3 decayed by a
// cosine to 5 %, batches of 256, shuffling seed 7, `steps` steps.
#include <nflow/nflow.hpp>

namespace nflow_examples {

inline nflow::train::FitOptions fit_options(long steps) {
  return {.batch_size = 256,
          .max_steps = steps,
          .seed = 7,
          .adam = {.learning_rate = 1e-3},
          .schedule = nflow::train::Schedule::cosine(0.05)};
}

}  // namespace nflow_examples
