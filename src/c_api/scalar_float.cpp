// The C ABI's float entry points (the _f calls): ScalarApi<float> instantiated once.
#include "scalar_api.hpp"

namespace nflow::c_api {
template struct ScalarApi<float>;
template nflow_model* open_model<float>(std::span<const std::byte> bytes);
template nflow_model* create_preset<float>(std::string_view family, std::size_t dim,
                                           const char* options_json);
}  // namespace nflow::c_api

using Api = nflow::c_api::ScalarApi<float>;

extern "C" {

nflow_status nflow_log_prob_f(const nflow_model* model, size_t n, nflow_layout layout,
                              const float* x, size_t x_stride, const float* context,
                              size_t context_stride, float* log_prob) {
  return Api::log_prob("nflow_log_prob_f", model, n, layout, x, x_stride, context, context_stride,
                       log_prob);
}

nflow_status nflow_forward_f(const nflow_model* model, size_t n, nflow_layout layout,
                             const float* x, size_t x_stride, const float* context,
                             size_t context_stride, float* z, size_t z_stride, float* log_det) {
  return Api::transform<false>("nflow_forward_f", model, n, layout, x, x_stride, context,
                               context_stride, z, z_stride, log_det);
}

nflow_status nflow_inverse_f(const nflow_model* model, size_t n, nflow_layout layout,
                             const float* z, size_t z_stride, const float* context,
                             size_t context_stride, float* x, size_t x_stride, float* log_det) {
  return Api::transform<true>("nflow_inverse_f", model, n, layout, z, z_stride, context,
                              context_stride, x, x_stride, log_det);
}

nflow_status nflow_sample_from_uniforms_f(const nflow_model* model, size_t n, nflow_layout layout,
                                          const float* u, size_t u_stride, const float* context,
                                          size_t context_stride, float* x, size_t x_stride,
                                          float* log_prob) {
  return Api::sample_from_uniforms("nflow_sample_from_uniforms_f", model, n, layout, u, u_stride,
                                   context, context_stride, x, x_stride, log_prob);
}

nflow_status nflow_sample_f(const nflow_model* model, size_t n, uint64_t seed, nflow_layout layout,
                            const float* context, size_t context_stride, float* x, size_t x_stride,
                            float* log_prob) {
  return Api::sample("nflow_sample_f", model, n, seed, layout, context, context_stride, x, x_stride,
                     log_prob);
}

nflow_status nflow_score_f(const nflow_model* model, size_t n, nflow_layout layout, const float* x,
                           size_t x_stride, const float* context, size_t context_stride,
                           float* grad, size_t grad_stride) {
  return Api::score("nflow_score_f", model, n, layout, x, x_stride, context, context_stride, grad,
                    grad_stride);
}

nflow_status nflow_context_gradient_f(const nflow_model* model, size_t n, nflow_layout layout,
                                      const float* x, size_t x_stride, const float* context,
                                      size_t context_stride, float* grad, size_t grad_stride) {
  return Api::context_gradient("nflow_context_gradient_f", model, n, layout, x, x_stride, context,
                               context_stride, grad, grad_stride);
}

nflow_status nflow_fit_f(nflow_model* model, size_t n, nflow_layout layout, const float* x,
                         size_t x_stride, const float* context, size_t context_stride,
                         const char* options_json, float* final_nll) {
  return Api::fit("nflow_fit_f", model, n, layout, x, x_stride, context, context_stride,
                  options_json, final_nll);
}

}  // extern "C"
