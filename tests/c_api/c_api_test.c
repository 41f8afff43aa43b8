/* Tests of the C ABI (include/nflow/c/nflow.h), in plain C11: every entry point in both layouts
 * and both scalar types, values against independent truths (the density identity through the
 * C API's own forward, round trips, finite differences, save and reopen), and every error
 * status. Usage: c_api_test <scratch directory>. */
#include "c_api_test.h"

#define REAL double
#define F(name) name##_d
#define TOL 1e-10
#define QUANTILE_TOL 1e-9
#define FD_STEP 1e-5
#define FD_TOL 1e-6
#define FD_MAX_SKIPPED 0.25
#include "c_api_typed.h"
#undef REAL
#undef F
#undef TOL
#undef QUANTILE_TOL
#undef FD_STEP
#undef FD_TOL
#undef FD_MAX_SKIPPED

#define REAL float
#define F(name) name##_f
#define TOL 2e-4
#define QUANTILE_TOL 1e-4
#define FD_STEP 1e-2
#define FD_TOL 2e-2
#define FD_MAX_SKIPPED 0.5
#include "c_api_typed.h"
#undef REAL
#undef F

static char scratch[4096];
static const char* scratch_path(const char* name) {
  static char path[8192];
  snprintf(path, sizeof path, "%s/%s", scratch, name);
  return path;
}

/* n points of a skewed 3-D density (or, with a context, of a 2-D one whose location and scale
 * the context sets): data to fit so that the models are not the identity. */
static void make_data(size_t n, size_t d, size_t cd, double* x, double* c) {
  for (size_t j = 0; j < n; ++j) {
    const double a = test_normal();
    if (cd == 0) {
      x[j * d + 0] = a;
      x[j * d + 1] = 0.5 * a * a + 0.3 * test_normal();
      x[j * d + 2] = 0.2 * a + 0.5 * test_normal();
    } else {
      c[j * cd + 0] = test_normal();
      c[j * cd + 1] = test_uniform();
      x[j * d + 0] = c[j * cd + 0] + (0.5 + c[j * cd + 1]) * a;
      x[j * d + 1] = 0.3 * a * a - c[j * cd + 0] + 0.2 * test_normal();
    }
  }
}

static void to_float(size_t k, const double* in, float* out) {
  for (size_t i = 0; i < k; ++i) out[i] = (float)in[i];
}

static void check_versions(void) {
  CHECK(nflow_abi_version() == NFLOW_ABI_VERSION);
  int major = -1, minor = -1, patch = -1;
  CHECK(sscanf(nflow_version(), "%d.%d.%d", &major, &minor, &patch) == 3 && major >= 0);
  CHECK(nflow_schema_version() >= 1);
  CHECK(strcmp(nflow_status_name(NFLOW_ERROR_SIZE), "NFLOW_ERROR_SIZE") == 0);
  CHECK(strcmp(nflow_status_name(NFLOW_OK), "NFLOW_OK") == 0);
  CHECK(strcmp(nflow_status_name((nflow_status)99), "NFLOW_STATUS_UNKNOWN") == 0);
  nflow_close(NULL); /* allowed */
}

static void check_preset_errors(void) {
  nflow_model* m = (nflow_model*)0x1;
  CHECK_STATUS(nflow_create_preset("no_such_flow", 2, NULL, NFLOW_FLOAT64, &m),
               NFLOW_ERROR_ARGUMENT);
  CHECK_STATUS(nflow_create_preset(NULL, 2, NULL, NFLOW_FLOAT64, &m), NFLOW_ERROR_NULL_POINTER);
  CHECK_STATUS(nflow_create_preset("real_nvp", 2, NULL, NFLOW_FLOAT64, NULL),
               NFLOW_ERROR_NULL_POINTER);
  CHECK_STATUS(nflow_create_preset("real_nvp", 0, NULL, NFLOW_FLOAT64, &m), NFLOW_ERROR_SIZE);
  CHECK_STATUS(nflow_create_preset("real_nvp", 2, "{", NFLOW_FLOAT64, &m), NFLOW_ERROR_ARGUMENT);
  CHECK_STATUS(nflow_create_preset("real_nvp", 2, "[1]", NFLOW_FLOAT64, &m), NFLOW_ERROR_ARGUMENT);
  CHECK_STATUS(nflow_create_preset("real_nvp", 2, "{\"layers\": 3}", NFLOW_FLOAT64, &m),
               NFLOW_ERROR_ARGUMENT);
  CHECK(strstr(nflow_last_error(), "layers") != NULL);
  CHECK_STATUS(nflow_create_preset("real_nvp", 2, "{\"transforms\": -1}", NFLOW_FLOAT64, &m),
               NFLOW_ERROR_ARGUMENT);
  CHECK_STATUS(nflow_create_preset("real_nvp", 2, "{\"transforms\": \"3\"}", NFLOW_FLOAT64, &m),
               NFLOW_ERROR_ARGUMENT);
  CHECK_STATUS(nflow_create_preset("real_nvp", 2, "{\"transforms\": 2.5}", NFLOW_FLOAT64, &m),
               NFLOW_ERROR_ARGUMENT);
  CHECK_STATUS(nflow_create_preset("real_nvp", 2, NULL, NFLOW_SCALAR_FILE, &m),
               NFLOW_ERROR_ARGUMENT);
  CHECK_STATUS(nflow_create_preset("real_nvp", 2, NULL, (nflow_scalar)5, &m), NFLOW_ERROR_ARGUMENT);
  CHECK(m == (nflow_model*)0x1); /* *out is set only on success */
}

static void check_queries(const nflow_model* h, size_t d, size_t cd, nflow_scalar scalar) {
  size_t v = 0;
  CHECK_OK(nflow_dim(h, &v));
  CHECK(v == d);
  CHECK_OK(nflow_context_dim(h, &v));
  CHECK(v == cd);
  CHECK_OK(nflow_parameter_count(h, &v));
  CHECK(v > 0);
  nflow_scalar s = NFLOW_SCALAR_FILE;
  CHECK_OK(nflow_scalar_type(h, &s));
  CHECK(s == scalar);
  int schema = -1;
  CHECK_OK(nflow_model_schema_version(h, &schema));
  CHECK(schema == nflow_schema_version());
  const char* json = NULL;
  CHECK_OK(nflow_describe(h, &json));
  CHECK(json != NULL && json[0] == '{');
  CHECK_STATUS(nflow_dim(NULL, &v), NFLOW_ERROR_NULL_POINTER);
  CHECK_STATUS(nflow_dim(h, NULL), NFLOW_ERROR_NULL_POINTER);
  CHECK_STATUS(nflow_describe(h, NULL), NFLOW_ERROR_NULL_POINTER);
}

/* Fits a double model and checks final_nll against the mean of log_prob, and that it fell. */
static void fit_double(nflow_model* h, size_t n, size_t d, size_t cd, const double* x,
                       const double* c) {
  double* lp = (double*)malloc(n * sizeof(double));
  CHECK_OK(nflow_log_prob_d(h, n, NFLOW_POINTS_CONTIGUOUS, x, d, c, cd, lp));
  double before = 0;
  for (size_t j = 0; j < n; ++j) before -= lp[j] / (double)n;
  double nll = NAN;
  CHECK_OK(nflow_fit_d(h, n, NFLOW_POINTS_CONTIGUOUS, x, d, c, cd,
                       "{\"epochs\": 30, \"batch_size\": 64, \"learning_rate\": 0.01, \"seed\": 3}",
                       &nll));
  CHECK_OK(nflow_log_prob_d(h, n, NFLOW_POINTS_CONTIGUOUS, x, d, c, cd, lp));
  double after = 0;
  for (size_t j = 0; j < n; ++j) after -= lp[j] / (double)n;
  CHECK(fabs(after - nll) < 1e-9 * (1 + fabs(nll)));
  CHECK(nll < before - 0.1);
  free(lp);
}

static void check_fit_errors(nflow_model* h, size_t d, const double* x) {
  double nll = -3;
  CHECK_STATUS(nflow_fit_d(h, 4, NFLOW_POINTS_CONTIGUOUS, x, d, NULL, 0, "{\"epoch\": 1}", &nll),
               NFLOW_ERROR_ARGUMENT);
  CHECK_STATUS(
      nflow_fit_d(h, 4, NFLOW_POINTS_CONTIGUOUS, x, d, NULL, 0, "{\"batch_size\": 0}", &nll),
      NFLOW_ERROR_ARGUMENT);
  CHECK_STATUS(
      nflow_fit_d(h, 4, NFLOW_POINTS_CONTIGUOUS, x, d, NULL, 0, "{\"learning_rate\": -1}", &nll),
      NFLOW_ERROR_ARGUMENT);
  CHECK_OK(nflow_fit_d(h, 0, NFLOW_POINTS_CONTIGUOUS, NULL, 0, NULL, 0, NULL, &nll));
  CHECK_STATUS(nflow_fit_d(NULL, 4, NFLOW_POINTS_CONTIGUOUS, x, d, NULL, 0, NULL, &nll),
               NFLOW_ERROR_NULL_POINTER);
  float xf[64];
  CHECK_STATUS(nflow_fit_f(h, 4, NFLOW_POINTS_CONTIGUOUS, xf, d, NULL, 0, NULL, NULL),
               NFLOW_ERROR_SCALAR_TYPE);
  CHECK(nll == -3);
}

/* Save, reopen (in the file's scalar and in float), and compare. */
static void check_save_and_reopen(const nflow_model* h, size_t n, size_t d, size_t cd,
                                  const double* x, const double* c, const char* file) {
  const char* path = scratch_path(file);
  CHECK_OK(nflow_save(h, path));
  nflow_model* r = NULL;
  CHECK_OK(nflow_open(path, NFLOW_SCALAR_FILE, &r));
  if (!r) return;
  check_queries(r, d, cd, NFLOW_FLOAT64);
  const char *j1 = NULL, *j2 = NULL;
  nflow_describe(h, &j1);
  nflow_describe(r, &j2);
  CHECK(j1 && j2 && strcmp(j1, j2) == 0);
  double* a = (double*)malloc(n * sizeof(double));
  double* b = (double*)malloc(n * sizeof(double));
  CHECK_OK(nflow_log_prob_d(h, n, NFLOW_POINTS_CONTIGUOUS, x, d, c, cd, a));
  CHECK_OK(nflow_log_prob_d(r, n, NFLOW_POINTS_CONTIGUOUS, x, d, c, cd, b));
  CHECK(memcmp(a, b, n * sizeof(double)) == 0);
  /* the same bytes from memory */
  size_t size = 0;
  unsigned char* bytes = test_read_file(path, &size);
  nflow_model* m = NULL;
  CHECK_OK(nflow_open_memory(bytes, size, NFLOW_FLOAT64, &m));
  CHECK_OK(nflow_log_prob_d(m, n, NFLOW_POINTS_CONTIGUOUS, x, d, c, cd, b));
  CHECK(memcmp(a, b, n * sizeof(double)) == 0);
  nflow_close(m);
  /* opened as float: the same density to float rounding; _d calls are refused */
  nflow_model* f = NULL;
  CHECK_OK(nflow_open_memory(bytes, size, NFLOW_FLOAT32, &f));
  nflow_scalar s = NFLOW_SCALAR_FILE;
  CHECK_OK(nflow_scalar_type(f, &s));
  CHECK(s == NFLOW_FLOAT32);
  float* xf = (float*)malloc(n * d * sizeof(float));
  float* cf = cd ? (float*)malloc(n * cd * sizeof(float)) : NULL;
  float* lf = (float*)malloc(n * sizeof(float));
  to_float(n * d, x, xf);
  if (cd) to_float(n * cd, c, cf);
  CHECK_OK(nflow_log_prob_f(f, n, NFLOW_POINTS_CONTIGUOUS, xf, d, cf, cd, lf));
  for (size_t j = 0; j < n; ++j) CHECK(fabs((double)lf[j] - a[j]) < 1e-3 * (1 + fabs(a[j])));
  CHECK_STATUS(nflow_log_prob_d(f, n, NFLOW_POINTS_CONTIGUOUS, x, d, c, cd, b),
               NFLOW_ERROR_SCALAR_TYPE);
  CHECK_STATUS(nflow_log_prob_f(h, n, NFLOW_POINTS_CONTIGUOUS, xf, d, cf, cd, lf),
               NFLOW_ERROR_SCALAR_TYPE);
  /* a float file opens as float with NFLOW_SCALAR_FILE */
  CHECK_OK(nflow_save(f, scratch_path("float.safetensors")));
  nflow_model* f2 = NULL;
  CHECK_OK(nflow_open(scratch_path("float.safetensors"), NFLOW_SCALAR_FILE, &f2));
  CHECK_OK(nflow_scalar_type(f2, &s));
  CHECK(s == NFLOW_FLOAT32);
  nflow_close(f2);
  nflow_close(f);
  nflow_close(r);
  free(bytes), free(a), free(b), free(xf), free(cf), free(lf);
}

/* Files that are not models, truncated, or of a newer schema. */
static void check_open_errors(const char* good_file) {
  nflow_model* m = (nflow_model*)0x1;
  CHECK_STATUS(nflow_open(scratch_path("does_not_exist.safetensors"), NFLOW_SCALAR_FILE, &m),
               NFLOW_ERROR_IO);
  CHECK_STATUS(nflow_open(NULL, NFLOW_SCALAR_FILE, &m), NFLOW_ERROR_NULL_POINTER);
  CHECK_STATUS(nflow_open(scratch_path(good_file), NFLOW_SCALAR_FILE, NULL),
               NFLOW_ERROR_NULL_POINTER);
  CHECK_STATUS(nflow_open(scratch_path(good_file), (nflow_scalar)9, &m), NFLOW_ERROR_ARGUMENT);
  CHECK_STATUS(nflow_open_memory(NULL, 10, NFLOW_SCALAR_FILE, &m), NFLOW_ERROR_NULL_POINTER);
  CHECK_STATUS(nflow_open_memory("hello", 5, NFLOW_SCALAR_FILE, &m), NFLOW_ERROR_FORMAT);
  CHECK_STATUS(nflow_open_memory("", 0, NFLOW_SCALAR_FILE, &m), NFLOW_ERROR_FORMAT);
  size_t size = 0;
  unsigned char* bytes = test_read_file(scratch_path(good_file), &size);
  CHECK(bytes != NULL && size > 100);
  if (!bytes) return;
  for (size_t cut = 1; cut < size; cut += size / 7 + 1) {
    CHECK_STATUS(nflow_open_memory(bytes, cut, NFLOW_SCALAR_FILE, &m), NFLOW_ERROR_FORMAT);
  }
  CHECK_STATUS(nflow_open_memory(bytes, size - 1, NFLOW_SCALAR_FILE, &m), NFLOW_ERROR_FORMAT);
  /* a newer schema: the same file with "nflow.schema" one digit larger */
  const char* key = "\"nflow.schema\":\"";
  unsigned char* copy = (unsigned char*)malloc(size);
  memcpy(copy, bytes, size);
  char* at = NULL;
  for (size_t k = 8; k + strlen(key) < size && !at; ++k) {
    if (memcmp(copy + k, key, strlen(key)) == 0) at = (char*)copy + k + strlen(key);
  }
  CHECK(at != NULL);
  if (at) {
    *at = '9';
    CHECK_STATUS(nflow_open_memory(copy, size, NFLOW_SCALAR_FILE, &m), NFLOW_ERROR_VERSION);
    CHECK(strstr(nflow_last_error(), "9") != NULL);
    /* without the schema key (renamed): an nflow file that does not describe its model */
    memcpy(copy, bytes, size);
    at[-3] = 'X';
    CHECK_STATUS(nflow_open_memory(copy, size, NFLOW_SCALAR_FILE, &m), NFLOW_ERROR_FORMAT);
  }
  CHECK(m == (nflow_model*)0x1);
  free(copy);
  free(bytes);
}

int main(int argc, char** argv) {
  snprintf(scratch, sizeof scratch, "%s", argc > 1 ? argv[1] : ".");
  check_versions();
  check_preset_errors();

  /* An unconditional 3-D Real NVP, fitted so that it is not the identity. */
  const size_t n = 256, d = 3;
  double* x = (double*)malloc(n * d * sizeof(double));
  make_data(n, d, 0, x, NULL);
  nflow_model* h = NULL;
  CHECK_OK(nflow_create_preset("real_nvp", d,
                               "{\"transforms\": 3, \"hidden_features\": 16, \"seed\": 7}",
                               NFLOW_FLOAT64, &h));
  if (!h) return test_report("c_api_test");
  check_queries(h, d, 0, NFLOW_FLOAT64);
  fit_double(h, n, d, 0, x, NULL);
  check_fit_errors(h, d, x);
  check_density_identity_d(h, d, 9, x, NULL, 0);
  check_layouts_and_round_trip_d(h, d, 0, 9, x, NULL);
  check_score_d(h, d, 9, x, NULL, 0);
  check_sampling_d(h, d, 9, NULL, 0);
  check_errors_d(h, d, 0, x, NULL);
  check_save_and_reopen(h, 9, d, 0, x, NULL, "real_nvp.safetensors");
  check_open_errors("real_nvp.safetensors");

  /* The same model in float (opened from the double file), through the _f calls. */
  nflow_model* hf = NULL;
  CHECK_OK(nflow_open(scratch_path("real_nvp.safetensors"), NFLOW_FLOAT32, &hf));
  if (hf) {
    float* xf = (float*)malloc(n * d * sizeof(float));
    to_float(n * d, x, xf);
    check_queries(hf, d, 0, NFLOW_FLOAT32);
    check_density_identity_f(hf, d, 9, xf, NULL, 0);
    check_layouts_and_round_trip_f(hf, d, 0, 9, xf, NULL);
    check_score_f(hf, d, 9, xf, NULL, 0);
    check_sampling_f(hf, d, 9, NULL, 0);
    check_errors_f(hf, d, 0, xf, NULL);
    /* float score against the double one */
    double gd[27];
    float gf[27];
    CHECK_OK(nflow_score_d(h, 9, NFLOW_POINTS_CONTIGUOUS, x, d, NULL, 0, gd, d));
    CHECK_OK(nflow_score_f(hf, 9, NFLOW_POINTS_CONTIGUOUS, xf, d, NULL, 0, gf, d));
    for (size_t k = 0; k < 27; ++k) CHECK(fabs((double)gf[k] - gd[k]) < 1e-3 * (1 + fabs(gd[k])));
    nflow_close(hf);
    free(xf);
  }
  nflow_close(h);

  /* A conditional Real NVP (2-D, context 2), in double and float presets. */
  {
    const size_t cd = 2, d2 = 2;
    double* x2 = (double*)malloc(n * d2 * sizeof(double));
    double* c2 = (double*)malloc(n * cd * sizeof(double));
    make_data(n, d2, cd, x2, c2);
    nflow_model* hc = NULL;
    CHECK_OK(nflow_create_preset(
        "real_nvp", d2, "{\"transforms\": 2, \"hidden_features\": 16, \"context\": 2, \"seed\": 5}",
        NFLOW_FLOAT64, &hc));
    if (hc) {
      check_queries(hc, d2, cd, NFLOW_FLOAT64);
      fit_double(hc, n, d2, cd, x2, c2);
      check_density_identity_d(hc, d2, 9, x2, c2, cd);
      check_layouts_and_round_trip_d(hc, d2, cd, 9, x2, c2);
      check_score_d(hc, d2, 9, x2, c2, cd);
      check_score_d(hc, d2, 9, x2, c2, 0);
      check_context_gradient_d(hc, d2, cd, 9, x2, c2);
      check_sampling_d(hc, d2, 9, c2, cd);
      check_sampling_d(hc, d2, 9, c2, 0);
      check_errors_d(hc, d2, cd, x2, c2);
      check_save_and_reopen(hc, 9, d2, cd, x2, c2, "conditional.safetensors");
      nflow_close(hc);
    }
    nflow_model* hcf = NULL;
    CHECK_OK(nflow_create_preset("real_nvp", d2, "{\"transforms\": 2, \"context\": 2, \"seed\": 5}",
                                 NFLOW_FLOAT32, &hcf));
    if (hcf) {
      float* xf = (float*)malloc(n * d2 * sizeof(float));
      float* cf = (float*)malloc(n * cd * sizeof(float));
      to_float(n * d2, x2, xf);
      to_float(n * cd, c2, cf);
      float nll = NAN;
      CHECK_OK(nflow_fit_f(hcf, n, NFLOW_POINTS_CONTIGUOUS, xf, d2, cf, cd,
                           "{\"epochs\": 5, \"learning_rate\": 0.01}", &nll));
      CHECK(isfinite(nll));
      check_density_identity_f(hcf, d2, 9, xf, cf, cd);
      check_layouts_and_round_trip_f(hcf, d2, cd, 9, xf, cf);
      check_score_f(hcf, d2, 9, xf, cf, 0);
      check_context_gradient_f(hcf, d2, cd, 9, xf, cf);
      check_sampling_f(hcf, d2, 9, cf, cd);
      check_errors_f(hcf, d2, cd, xf, cf);
      nflow_close(hcf);
      free(xf), free(cf);
    }
    free(x2), free(c2);
  }

  /* An IAF has no fast density gradient: its score is UNSUPPORTED; its density works. */
  {
    nflow_model* iaf = NULL;
    CHECK_OK(nflow_create_preset("iaf", d, "{\"transforms\": 2, \"hidden_features\": 8}",
                                 NFLOW_FLOAT64, &iaf));
    if (iaf) {
      double g[9], lp[3];
      CHECK_OK(nflow_log_prob_d(iaf, 3, NFLOW_POINTS_CONTIGUOUS, x, d, NULL, 0, lp));
      CHECK_STATUS(nflow_score_d(iaf, 3, NFLOW_POINTS_CONTIGUOUS, x, d, NULL, 0, g, d),
                   NFLOW_ERROR_UNSUPPORTED);
      nflow_close(iaf);
    }
  }
  free(x);
  return test_report("c_api_test");
}
