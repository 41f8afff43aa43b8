// The C ABI's double entry points (the _d calls) and nflow_schema_version: ScalarApi<double> instantiated once.
#include "scalar_api.hpp"

namespace nflow::c_api {
template struct ScalarApi<double>;
template nflow_model* open_model<double>(std::span<const std::byte> bytes);
template nflow_model* create_preset<double>(std::string_view family, std::size_t dim,
                                            const char* options_json);
}  // namespace nflow::c_api

using Api = nflow::c_api::ScalarApi<double>;

extern "C" {
int nflow_schema_version(void) { return nflow::io::schema_version(); }

nflow_status nflow_log_prob_d(const nflow_model* model, size_t n, nflow_layout layout,
                              const double* x, size_t x_stride, const double* context,
                              size_t context_stride, double* log_prob) {
  return Api::log_prob("nflow_log_prob_d", model, n, layout, x, x_stride, context, context_stride,
                       log_prob);
}

nflow_status nflow_forward_d(const nflow_model* model, size_t n, nflow_layout layout,
                             const double* x, size_t x_stride, const double* context,
                             size_t context_stride, double* z, size_t z_stride, double* log_det) {
  return Api::transform<false>("nflow_forward_d", model, n, layout, x, x_stride, context,
                               context_stride, z, z_stride, log_det);
}

nflow_status nflow_inverse_d(const nflow_model* model, size_t n, nflow_layout layout,
                             const double* z, size_t z_stride, const double* context,
                             size_t context_stride, double* x, size_t x_stride, double* log_det) {
  return Api::transform<true>("nflow_inverse_d", model, n, layout, z, z_stride, context,
                              context_stride, x, x_stride, log_det);
}

nflow_status nflow_sample_from_uniforms_d(const nflow_model* model, size_t n, nflow_layout layout,
                                          const double* u, size_t u_stride, const double* context,
                                          size_t context_stride, double* x, size_t x_stride,
                                          double* log_prob) {
  return Api::sample_from_uniforms("nflow_sample_from_uniforms_d", model, n, layout, u, u_stride,
                                   context, context_stride, x, x_stride, log_prob);
}

nflow_status nflow_sample_d(const nflow_model* model, size_t n, uint64_t seed, nflow_layout layout,
                            const double* context, size_t context_stride, double* x,
                            size_t x_stride, double* log_prob) {
  return Api::sample("nflow_sample_d", model, n, seed, layout, context, context_stride, x, x_stride,
                     log_prob);
}

nflow_status nflow_score_d(const nflow_model* model, size_t n, nflow_layout layout, const double* x,
                           size_t x_stride, const double* context, size_t context_stride,
                           double* grad, size_t grad_stride) {
  return Api::score("nflow_score_d", model, n, layout, x, x_stride, context, context_stride, grad,
                    grad_stride);
}

nflow_status nflow_context_gradient_d(const nflow_model* model, size_t n, nflow_layout layout,
                                      const double* x, size_t x_stride, const double* context,
                                      size_t context_stride, double* grad, size_t grad_stride) {
  return Api::context_gradient("nflow_context_gradient_d", model, n, layout, x, x_stride, context,
                               context_stride, grad, grad_stride);
}

nflow_status nflow_fit_d(nflow_model* model, size_t n, nflow_layout layout, const double* x,
                         size_t x_stride, const double* context, size_t context_stride,
                         const char* options_json, double* final_nll) {
  return Api::fit("nflow_fit_d", model, n, layout, x, x_stride, context, context_stride,
                  options_json, final_nll);
}

}  // extern "C"
