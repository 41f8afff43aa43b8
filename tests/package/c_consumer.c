/* A downstream C program: links the installed nflow::nflow_c, builds a preset and evaluates its
 * density at two points (a fresh Real NVP only permutes, so log p(x) is the standard normal's). */
#include <math.h>
#include <nflow/c/nflow.h>
#include <stdio.h>

int main(void) {
  nflow_model* model = NULL;
  if (nflow_create_preset("real_nvp", 2, "{\"transforms\": 2}", NFLOW_FLOAT64, &model) !=
      NFLOW_OK) {
    printf("nflow_create_preset: %s\n", nflow_last_error());
    return 1;
  }
  const double x[4] = {0.5, -1.0, 0.0, 0.0};
  double log_prob[2];
  const nflow_status status =
      nflow_log_prob_d(model, 2, NFLOW_POINTS_CONTIGUOUS, x, 2, NULL, 0, log_prob);
  nflow_close(model);
  if (status != NFLOW_OK) {
    printf("nflow_log_prob_d: %s\n", nflow_last_error());
    return 1;
  }
  const double expected = -log(2.0 * 3.14159265358979323846) - 0.5 * (0.25 + 1.0);
  printf("nflow %s: log p = %g (expected %g)\n", nflow_version(), log_prob[0], expected);
  return fabs(log_prob[0] - expected) < 1e-12 ? 0 : 1;
}
