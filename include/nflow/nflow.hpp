#pragma once
/// @file
/// @brief nflow: normalizing flows for C++20 on Eigen. Include this header for the flows, their
/// bijectors, networks, distributions, training and sampling (importance sampling with its
/// diagnostics, flow MCMC). File I/O and the importers are modules of their own, like Eigen's:
/// `#include <nflow/io.hpp>` to save and load (safetensors) and `#include <nflow/interop.hpp>`
/// to import nflows and zuko models, so that a program that does neither does not compile the
/// JSON parser and the importers.
///
/// Conventions (details in docs/conventions.md): `forward` maps data to latent, `Flow<B1, B2>`
/// applies B1 first, batches are Dim × N with one sample per column, and log-dets are the natural
/// log of |det J| of the map applied, one per column.

#include "nflow/bijectors/act_norm.hpp"
#include "nflow/bijectors/continuous.hpp"
#include "nflow/bijectors/conv1x1.hpp"
#include "nflow/bijectors/coupling.hpp"
#include "nflow/bijectors/elementwise_affine.hpp"
#include "nflow/bijectors/logit.hpp"
#include "nflow/bijectors/lu_linear.hpp"
#include "nflow/bijectors/masked_autoregressive.hpp"
#include "nflow/bijectors/permutation.hpp"
#include "nflow/bijectors/reverse.hpp"
#include "nflow/bijectors/sigmoid.hpp"
#include "nflow/bijectors/transformers/affine.hpp"
#include "nflow/bijectors/transformers/rational_quadratic.hpp"
#include "nflow/bijectors/transformers/scale_shift.hpp"
#include "nflow/core/any_bijector.hpp"
#include "nflow/core/bijector_base.hpp"
#include "nflow/core/buffers.hpp"
#include "nflow/core/concepts.hpp"
#include "nflow/core/dynamic_flow.hpp"
#include "nflow/core/errors.hpp"
#include "nflow/core/flow.hpp"
#include "nflow/core/inverted.hpp"
#include "nflow/core/parallel.hpp"
#include "nflow/core/parameters.hpp"
#include "nflow/core/random.hpp"
#include "nflow/core/stack.hpp"
#include "nflow/core/traits.hpp"
#include "nflow/core/types.hpp"
#include "nflow/datasets/toy.hpp"
#include "nflow/distributions/density.hpp"
#include "nflow/distributions/diagonal_normal.hpp"
#include "nflow/distributions/standard_normal.hpp"
#include "nflow/distributions/uniform_box.hpp"
#include "nflow/flows/presets.hpp"
#include "nflow/math/constants.hpp"
#include "nflow/math/functions.hpp"
#include "nflow/nn/activations.hpp"
#include "nflow/nn/conditioner.hpp"
#include "nflow/nn/conv.hpp"
#include "nflow/nn/made.hpp"
#include "nflow/nn/masks.hpp"
#include "nflow/nn/mlp.hpp"
#include "nflow/nn/network.hpp"
#include "nflow/sampling/importance.hpp"
#include "nflow/sampling/mcmc.hpp"
#include "nflow/sampling/proposal.hpp"
#include "nflow/train/adam.hpp"
#include "nflow/train/assignment.hpp"
#include "nflow/train/fit.hpp"
#include "nflow/train/flow_matching.hpp"
#include "nflow/train/objectives.hpp"
#include "nflow/train/reflow.hpp"
