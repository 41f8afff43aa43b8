/* The five-way cross-language check of issue 19, part 3 (C): opens each model that
 * cross_language_make saved and compares nflow_log_prob_d, in both layouts, with the log-densities
 * the C++ template code gave (files described in make_models.cpp).
 * Usage: cross_language_check_c <directory> <name> [<name> ...] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nflow/c/nflow.h"

static int check_model(const char* dir, const char* name) {
  char path[4096];
  size_t n = 0, d = 0, c = 0;
  int failures = 0;
  snprintf(path, sizeof path, "%s/%s.points.txt", dir, name);
  FILE* f = fopen(path, "r");
  if (!f || fscanf(f, "%zu %zu %zu", &n, &d, &c) != 3 || n == 0 || d == 0) {
    fprintf(stderr, "FAIL %s: cannot read %s\n", name, path);
    if (f) fclose(f);
    return 1;
  }
  double* x = malloc(n * d * sizeof *x);           /* point-major: x[j*d + i] */
  double* xt = malloc(n * d * sizeof *xt);          /* feature-major: xt[i*n + j] */
  double* ctx = c ? malloc(n * c * sizeof *ctx) : NULL;
  double* ctxt = c ? malloc(n * c * sizeof *ctxt) : NULL;
  double* want = malloc(n * sizeof *want);
  double* got = malloc(n * sizeof *got);
  for (size_t j = 0; j < n; ++j) {
    for (size_t i = 0; i < d; ++i) {
      if (fscanf(f, "%lf", &x[j * d + i]) != 1) failures = 1;
      xt[i * n + j] = x[j * d + i];
    }
    for (size_t i = 0; i < c; ++i) {
      if (fscanf(f, "%lf", &ctx[j * c + i]) != 1) failures = 1;
      ctxt[i * n + j] = ctx[j * c + i];
    }
  }
  fclose(f);
  snprintf(path, sizeof path, "%s/%s.log_prob.txt", dir, name);
  f = fopen(path, "r");
  for (size_t j = 0; f && j < n; ++j)
    if (fscanf(f, "%lf", &want[j]) != 1) failures = 1;
  if (f) fclose(f); else failures = 1;
  if (failures) {
    fprintf(stderr, "FAIL %s: malformed points or log_prob file\n", name);
  } else {
    nflow_model* m = NULL;
    snprintf(path, sizeof path, "%s/%s.safetensors", dir, name);
    if (nflow_open(path, NFLOW_FLOAT64, &m) != NFLOW_OK) {
      fprintf(stderr, "FAIL %s: nflow_open: %s\n", name, nflow_last_error());
      failures = 1;
    }
    for (int layout = 0; m && layout < 2; ++layout) {
      const nflow_status s =
          layout == 0 ? nflow_log_prob_d(m, n, NFLOW_POINTS_CONTIGUOUS, x, d, ctx, c, got)
                      : nflow_log_prob_d(m, n, NFLOW_FEATURES_CONTIGUOUS, xt, n, ctxt, n, got);
      double worst = 0;
      for (size_t j = 0; s == NFLOW_OK && j < n; ++j) {
        const double e = fabs(got[j] - want[j]) / fmax(1.0, fabs(want[j]));
        if (!isfinite(got[j])) worst = INFINITY;
        else if (e > worst) worst = e;
      }
      const int ok = s == NFLOW_OK && worst <= 1e-12;
      printf("%s %s (%s): max relative difference %g\n", ok ? "ok  " : "FAIL", name,
             layout == 0 ? "points contiguous" : "features contiguous", worst);
      if (s != NFLOW_OK) fprintf(stderr, "  %s\n", nflow_last_error());
      if (!ok) failures = 1;
    }
    nflow_close(m);
  }
  free(x); free(xt); free(ctx); free(ctxt); free(want); free(got);
  return failures;
}

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: cross_language_check_c <directory> <name>...\n");
    return 2;
  }
  int failures = 0;
  for (int k = 2; k < argc; ++k) failures += check_model(argv[1], argv[k]);
  return failures ? 1 : 0;
}
