#pragma once
/// @file
/// @brief nflow's MPI module (CMake target nflow::mpi; not in <nflow/nflow.hpp>, which never
/// needs MPI): data-parallel training (train::fit with FitOptions::collective = &communicator),
/// checkpoints, distributed evaluation and sampling. docs/distributed.md.

#include "nflow/mpi/checkpoint.hpp"
#include "nflow/mpi/communicator.hpp"
#include "nflow/mpi/evaluate.hpp"
#include "nflow/mpi/train.hpp"
