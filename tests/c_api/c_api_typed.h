/* The checks of one scalar type, included twice by c_api_test.c: with REAL double and F(name)
 * name##_d, then with REAL float and F(name) name##_f. Every value is checked against an
 * independent truth computed through other calls (or finite differences), never against a
 * stored output. */

/* Point j's feature i of a points-contiguous matrix with stride s. */
#define AT(m, s, j, i) ((m)[(size_t)(j) * (s) + (i)])

/* log p(x) = log N(forward(x); 0, I) + log|det|, for a model with a standard normal base. */
static void F(check_density_identity)(const nflow_model* h, size_t d, size_t n, const REAL* x,
                                      const REAL* c, size_t cs) {
  REAL* z = (REAL*)malloc(n * d * sizeof(REAL));
  REAL* ld = (REAL*)malloc(n * sizeof(REAL));
  REAL* lp = (REAL*)malloc(n * sizeof(REAL));
  CHECK_OK(F(nflow_forward)(h, n, NFLOW_POINTS_CONTIGUOUS, x, d, c, cs, z, d, ld));
  CHECK_OK(F(nflow_log_prob)(h, n, NFLOW_POINTS_CONTIGUOUS, x, d, c, cs, lp));
  for (size_t j = 0; j < n; ++j) {
    double base = -0.5 * (double)d * log(2.0 * 3.14159265358979323846);
    for (size_t i = 0; i < d; ++i) base -= 0.5 * (double)AT(z, d, j, i) * (double)AT(z, d, j, i);
    CHECK(fabs(base + (double)ld[j] - (double)lp[j]) < TOL * (1 + fabs((double)lp[j])));
  }
  free(z);
  free(ld);
  free(lp);
}

/* The same numbers in both layouts with padded strides; padding is never read (it holds NaN)
 * nor written (it keeps a sentinel); inverse(forward(x)) = x and the log-dets cancel. */
static void F(check_layouts_and_round_trip)(const nflow_model* h, size_t d, size_t cd, size_t n,
                                            const REAL* x, const REAL* c) {
  const size_t ps = d + 2, fs = n + 3, cps = cd + 1, cfs = n + 1;
  REAL* xp = (REAL*)malloc(n * ps * sizeof(REAL));
  REAL* xf = (REAL*)malloc(d * fs * sizeof(REAL));
  REAL* cp = cd ? (REAL*)malloc(n * cps * sizeof(REAL)) : NULL;
  REAL* cf = cd ? (REAL*)malloc(cd * cfs * sizeof(REAL)) : NULL;
  for (size_t k = 0; k < n * ps; ++k) xp[k] = (REAL)NAN;
  for (size_t k = 0; k < d * fs; ++k) xf[k] = (REAL)NAN;
  for (size_t k = 0; cp && k < n * cps; ++k) cp[k] = (REAL)NAN;
  for (size_t k = 0; cf && k < cd * cfs; ++k) cf[k] = (REAL)NAN;
  for (size_t j = 0; j < n; ++j) {
    for (size_t i = 0; i < d; ++i) xp[j * ps + i] = xf[i * fs + j] = AT(x, d, j, i);
    for (size_t i = 0; i < cd; ++i) cp[j * cps + i] = cf[i * cfs + j] = AT(c, cd, j, i);
  }
  REAL *lp1 = (REAL*)malloc((n + 1) * sizeof(REAL)), *lp2 = (REAL*)malloc((n + 1) * sizeof(REAL));
  lp1[n] = lp2[n] = (REAL)-7;
  CHECK_OK(F(nflow_log_prob)(h, n, NFLOW_POINTS_CONTIGUOUS, xp, ps, cp, cps, lp1));
  CHECK_OK(F(nflow_log_prob)(h, n, NFLOW_FEATURES_CONTIGUOUS, xf, fs, cf, cfs, lp2));
  CHECK(lp1[n] == (REAL)-7 && lp2[n] == (REAL)-7);
  for (size_t j = 0; j < n; ++j) CHECK(lp1[j] == lp2[j] && isfinite(lp1[j]));

  REAL* zp = (REAL*)malloc(n * ps * sizeof(REAL));
  REAL* zf = (REAL*)malloc(d * fs * sizeof(REAL));
  REAL* back = (REAL*)malloc(d * fs * sizeof(REAL));
  for (size_t k = 0; k < n * ps; ++k) zp[k] = (REAL)-9;
  for (size_t k = 0; k < d * fs; ++k) zf[k] = back[k] = (REAL)-9;
  REAL *ldf = (REAL*)malloc(n * sizeof(REAL)), *ldf2 = (REAL*)malloc(n * sizeof(REAL)),
       *ldi = (REAL*)malloc(n * sizeof(REAL));
  CHECK_OK(F(nflow_forward)(h, n, NFLOW_POINTS_CONTIGUOUS, xp, ps, cp, cps, zp, ps, ldf));
  CHECK_OK(F(nflow_forward)(h, n, NFLOW_FEATURES_CONTIGUOUS, xf, fs, cf, cfs, zf, fs, ldf2));
  CHECK_OK(F(nflow_inverse)(h, n, NFLOW_FEATURES_CONTIGUOUS, zf, fs, cf, cfs, back, fs, ldi));
  int padding_kept = 1, same = 1, round_trip = 1;
  for (size_t j = 0; j < n; ++j) {
    for (size_t i = d; i < ps; ++i) padding_kept &= zp[j * ps + i] == (REAL)-9;
    for (size_t i = 0; i < d; ++i) {
      same &= zp[j * ps + i] == zf[i * fs + j];
      round_trip &= fabs((double)back[i * fs + j] - (double)AT(x, d, j, i)) <
                    TOL * (1 + fabs((double)AT(x, d, j, i)));
    }
    same &= ldf[j] == ldf2[j];
    CHECK(fabs((double)ldf[j] + (double)ldi[j]) < TOL * (1 + fabs((double)ldf[j])));
  }
  for (size_t i = 0; i < d; ++i)
    for (size_t j = n; j < fs; ++j)
      padding_kept &= zf[i * fs + j] == (REAL)-9 && back[i * fs + j] == (REAL)-9;
  CHECK(padding_kept);
  CHECK(same);
  CHECK(round_trip);

  /* A context stride of 0 repeats one context: the same as every point given context 0. */
  if (cd) {
    for (size_t j = 0; j < n; ++j)
      for (size_t i = 0; i < cd; ++i) cp[j * cps + i] = AT(c, cd, 0, i);
    CHECK_OK(F(nflow_log_prob)(h, n, NFLOW_POINTS_CONTIGUOUS, xp, ps, cp, cps, lp1));
    CHECK_OK(F(nflow_log_prob)(h, n, NFLOW_FEATURES_CONTIGUOUS, xf, fs, c, 0, lp2));
    for (size_t j = 0; j < n; ++j) CHECK(lp1[j] == lp2[j]);
  }
  /* log_det may be null. */
  CHECK_OK(F(nflow_forward)(h, n, NFLOW_POINTS_CONTIGUOUS, xp, ps, cp, cps, zp, ps, NULL));
  CHECK_OK(F(nflow_inverse)(h, n, NFLOW_POINTS_CONTIGUOUS, zp, ps, cp, cps, xp, ps, NULL));
  free(xp), free(xf), free(cp), free(cf), free(lp1), free(lp2), free(zp), free(zf), free(back);
  free(ldf), free(ldf2), free(ldi);
}

/* Central differences of log p(x | c) at step `step` for each of the n points, in feature i of
 * x (wrt = 0; stride d) or of c (wrt = 1; stride cs), into fd (the step actually taken, in REAL,
 * is the divisor). buf holds the perturbed copy, up and down the two log-densities. */
static void F(central_differences)(const nflow_model* h, size_t d, size_t n, const REAL* x,
                                   const REAL* c, size_t cs, int wrt, size_t i, double step,
                                   REAL* buf, REAL* up, REAL* down, double* fd) {
  const REAL* v = wrt ? c : x;
  const size_t s = wrt ? cs : d;
  memcpy(buf, v, n * s * sizeof(REAL));
  for (size_t j = 0; j < n; ++j) AT(buf, s, j, i) = (REAL)(AT(v, s, j, i) + step);
  CHECK_OK(
      F(nflow_log_prob)(h, n, NFLOW_POINTS_CONTIGUOUS, wrt ? x : buf, d, wrt ? buf : c, cs, up));
  for (size_t j = 0; j < n; ++j) AT(buf, s, j, i) = (REAL)(AT(v, s, j, i) - step);
  CHECK_OK(
      F(nflow_log_prob)(h, n, NFLOW_POINTS_CONTIGUOUS, wrt ? x : buf, d, wrt ? buf : c, cs, down));
  for (size_t j = 0; j < n; ++j) {
    const double taken =
        (double)(REAL)(AT(v, s, j, i) + step) - (double)(REAL)(AT(v, s, j, i) - step);
    fd[j] = ((double)up[j] - (double)down[j]) / taken;
  }
}

/* The gradient g (stride gs) of log p in every feature of x (wrt = 0) or c (wrt = 1) against
 * central differences, robust to the kinks of the presets' ReLU conditioners: the differences at
 * FD_STEP and FD_STEP / 2 must agree to a tenth of FD_TOL (else a kink, or in float a curvature
 * the coarse step cannot resolve, lies within the stencils, and the point is left out of that
 * coordinate's check; at most a fraction FD_MAX_SKIPPED may be), and g must match the finer one to FD_TOL. A
 * wrong gradient still fails: both stencils then agree with each other, not with g. (The float
 * score is also checked against the double one, in c_api_test.c.) */
static void F(check_against_differences)(const nflow_model* h, size_t d, size_t n, const REAL* x,
                                         const REAL* c, size_t cs, int wrt, const REAL* g,
                                         size_t gs) {
  const size_t features = wrt ? cs : d, s = wrt ? cs : d;
  REAL* buf = (REAL*)malloc(n * s * sizeof(REAL));
  REAL *up = (REAL*)malloc(n * sizeof(REAL)), *down = (REAL*)malloc(n * sizeof(REAL));
  double *coarse = (double*)malloc(n * sizeof(double)), *fine = (double*)malloc(n * sizeof(double));
  size_t kinks = 0;
  for (size_t i = 0; i < features; ++i) {
    F(central_differences)(h, d, n, x, c, cs, wrt, i, FD_STEP, buf, up, down, coarse);
    F(central_differences)(h, d, n, x, c, cs, wrt, i, FD_STEP / 2, buf, up, down, fine);
    for (size_t j = 0; j < n; ++j) {
      if (!(fabs(coarse[j] - fine[j]) < 0.1 * FD_TOL * (1 + fabs(fine[j])))) {
        ++kinks;
        continue;
      }
      CHECK(fabs(fine[j] - (double)AT(g, gs, j, i)) < FD_TOL * (1 + fabs(fine[j])));
    }
  }
  CHECK((double)kinks <= FD_MAX_SKIPPED * (double)(n * features));
  free(buf), free(up), free(down), free(coarse), free(fine);
}

/* The score against central differences of log_prob (in double; in float a coarser step). */
static void F(check_score)(const nflow_model* h, size_t d, size_t n, const REAL* x, const REAL* c,
                           size_t cs) {
  REAL* g = (REAL*)malloc(n * d * sizeof(REAL));
  REAL* gf = (REAL*)malloc(n * d * sizeof(REAL));
  REAL* xs = (REAL*)malloc(n * d * sizeof(REAL));
  CHECK_OK(F(nflow_score)(h, n, NFLOW_POINTS_CONTIGUOUS, x, d, c, cs, g, d));
  /* the other layout (x transposed; a shared context reads the same in both) */
  if (!c || cs == 0) {
    for (size_t j = 0; j < n; ++j)
      for (size_t i = 0; i < d; ++i) xs[i * n + j] = AT(x, d, j, i);
    CHECK_OK(F(nflow_score)(h, n, NFLOW_FEATURES_CONTIGUOUS, xs, n, c, cs, gf, n));
    int same = 1;
    for (size_t j = 0; j < n; ++j)
      for (size_t i = 0; i < d; ++i) same &= gf[i * n + j] == AT(g, d, j, i);
    CHECK(same);
  }
  F(check_against_differences)(h, d, n, x, c, cs, 0, g, d);
  free(g), free(gf), free(xs);
}

/* The context gradient against central differences of log_prob in the context; the same numbers
 * in the features layout with padded strides (padding neither read nor written) and with a
 * shared context (stride 0); n = 0 writes nothing. */
static void F(check_context_gradient)(const nflow_model* h, size_t d, size_t cd, size_t n,
                                      const REAL* x, const REAL* c) {
  const size_t fs = n + 1, cfs = n + 2, gfs = n + 3;
  REAL* g = (REAL*)malloc(n * cd * sizeof(REAL));
  REAL* gf = (REAL*)malloc(cd * gfs * sizeof(REAL));
  REAL* gs = (REAL*)malloc(n * cd * sizeof(REAL));
  REAL* xf = (REAL*)malloc(d * fs * sizeof(REAL));
  REAL* cf = (REAL*)malloc(cd * cfs * sizeof(REAL));
  REAL* cs = (REAL*)malloc(n * cd * sizeof(REAL));
  CHECK_OK(F(nflow_context_gradient)(h, n, NFLOW_POINTS_CONTIGUOUS, x, d, c, cd, g, cd));
  for (size_t k = 0; k < d * fs; ++k) xf[k] = (REAL)NAN;
  for (size_t k = 0; k < cd * cfs; ++k) cf[k] = (REAL)NAN;
  for (size_t k = 0; k < cd * gfs; ++k) gf[k] = (REAL)-9;
  for (size_t j = 0; j < n; ++j) {
    for (size_t i = 0; i < d; ++i) xf[i * fs + j] = AT(x, d, j, i);
    for (size_t i = 0; i < cd; ++i) cf[i * cfs + j] = AT(c, cd, j, i);
  }
  CHECK_OK(F(nflow_context_gradient)(h, n, NFLOW_FEATURES_CONTIGUOUS, xf, fs, cf, cfs, gf, gfs));
  int same = 1, padding_kept = 1, nonzero = 0;
  for (size_t i = 0; i < cd; ++i) {
    for (size_t j = 0; j < n; ++j) {
      same &= gf[i * gfs + j] == AT(g, cd, j, i);
      nonzero |= fabs((double)AT(g, cd, j, i)) > 1e-3;
    }
    for (size_t j = n; j < gfs; ++j) padding_kept &= gf[i * gfs + j] == (REAL)-9;
  }
  CHECK(same);
  CHECK(padding_kept);
  CHECK(nonzero); /* the model depends on its context */
  /* a shared context (stride 0) is every point given context 0 */
  CHECK_OK(F(nflow_context_gradient)(h, n, NFLOW_POINTS_CONTIGUOUS, x, d, c, 0, gs, cd));
  for (size_t j = 0; j < n; ++j)
    for (size_t i = 0; i < cd; ++i) AT(cs, cd, j, i) = AT(c, cd, 0, i);
  CHECK_OK(F(nflow_context_gradient)(h, n, NFLOW_POINTS_CONTIGUOUS, x, d, cs, cd, g, cd));
  CHECK(memcmp(g, gs, n * cd * sizeof(REAL)) == 0);
  CHECK_OK(F(nflow_context_gradient)(h, n, NFLOW_POINTS_CONTIGUOUS, x, d, c, cd, g, cd));
  /* central differences of log p(x | c) in each context feature */
  F(check_against_differences)(h, d, n, x, c, cd, 1, g, cd);
  /* n = 0: nothing to do, nothing written, even with null arrays */
  gs[0] = (REAL)-5;
  CHECK_OK(F(nflow_context_gradient)(h, 0, NFLOW_POINTS_CONTIGUOUS, NULL, 0, NULL, 0, gs, 0));
  CHECK(gs[0] == (REAL)-5);
  free(g), free(gf), free(gs), free(xf), free(cf), free(cs);
}

/* Sampling: the same seed gives the same samples, another seed others; log_prob comes with
 * them; uniforms u = Phi(z) give inverse(z), and u = 0.5 gives inverse(0). */
static void F(check_sampling)(const nflow_model* h, size_t d, size_t n, const REAL* c, size_t cs) {
  /* the context in the features layout (stride n), or the shared one (stride 0) as it is */
  REAL* ct = (REAL*)malloc((n * cs + 1) * sizeof(REAL));
  for (size_t j = 0; j < n; ++j)
    for (size_t i = 0; i < cs; ++i) ct[i * n + j] = AT(c, cs, j, i);
  const REAL* cf = cs ? ct : c;
  const size_t cfs = cs ? n : 0;
  REAL *x1 = (REAL*)malloc(n * d * sizeof(REAL)), *x2 = (REAL*)malloc(n * d * sizeof(REAL));
  REAL *x3 = (REAL*)malloc(n * d * sizeof(REAL)), *z = (REAL*)malloc(n * d * sizeof(REAL));
  REAL *u = (REAL*)malloc(n * d * sizeof(REAL)), *lp1 = (REAL*)malloc(n * sizeof(REAL));
  REAL *lp2 = (REAL*)malloc(n * sizeof(REAL)), *ld = (REAL*)malloc(n * sizeof(REAL));
  CHECK_OK(F(nflow_sample)(h, n, 42, NFLOW_POINTS_CONTIGUOUS, c, cs, x1, d, lp1));
  CHECK_OK(F(nflow_sample)(h, n, 42, NFLOW_POINTS_CONTIGUOUS, c, cs, x2, d, NULL));
  CHECK(memcmp(x1, x2, n * d * sizeof(REAL)) == 0);
  CHECK_OK(F(nflow_sample)(h, n, 43, NFLOW_POINTS_CONTIGUOUS, c, cs, x3, d, NULL));
  int differ = 0;
  for (size_t k = 0; k < n * d; ++k) differ |= x1[k] != x3[k];
  CHECK(differ);
  /* the features layout gives the same samples, transposed */
  CHECK_OK(F(nflow_sample)(h, n, 42, NFLOW_FEATURES_CONTIGUOUS, cf, cfs, x3, n, NULL));
  int same = 1;
  for (size_t j = 0; j < n; ++j)
    for (size_t i = 0; i < d; ++i) same &= x3[i * n + j] == AT(x1, d, j, i);
  CHECK(same);
  CHECK_OK(F(nflow_log_prob)(h, n, NFLOW_POINTS_CONTIGUOUS, x1, d, c, cs, lp2));
  for (size_t j = 0; j < n; ++j)
    CHECK(fabs((double)lp1[j] - (double)lp2[j]) < 10 * TOL * (1 + fabs((double)lp2[j])));

  /* uniforms: u = Phi(z) for latents z; the sample is inverse(z) */
  for (size_t k = 0; k < n * d; ++k) {
    z[k] = (REAL)(1.5 * test_normal());
    u[k] = (REAL)(0.5 * erfc(-(double)z[k] / sqrt(2.0)));
    z[k] = (REAL)test_normal_quantile((double)u[k]);
  }
  CHECK_OK(F(nflow_sample_from_uniforms)(h, n, NFLOW_POINTS_CONTIGUOUS, u, d, c, cs, x1, d, lp1));
  CHECK_OK(F(nflow_inverse)(h, n, NFLOW_POINTS_CONTIGUOUS, z, d, c, cs, x2, d, ld));
  for (size_t k = 0; k < n * d; ++k)
    CHECK(fabs((double)x1[k] - (double)x2[k]) < QUANTILE_TOL * (1 + fabs((double)x2[k])));
  CHECK_OK(F(nflow_log_prob)(h, n, NFLOW_POINTS_CONTIGUOUS, x1, d, c, cs, lp2));
  for (size_t j = 0; j < n; ++j)
    CHECK(fabs((double)lp1[j] - (double)lp2[j]) < 10 * TOL * (1 + fabs((double)lp2[j])));
  for (size_t k = 0; k < n * d; ++k) u[k] = (REAL)0.5, z[k] = 0;
  CHECK_OK(
      F(nflow_sample_from_uniforms)(h, n, NFLOW_FEATURES_CONTIGUOUS, u, n, cf, cfs, x1, n, NULL));
  CHECK_OK(F(nflow_inverse)(h, n, NFLOW_FEATURES_CONTIGUOUS, z, n, cf, cfs, x2, n, NULL));
  CHECK(memcmp(x1, x2, n * d * sizeof(REAL)) == 0);
  free(x1), free(x2), free(x3), free(z), free(u), free(lp1), free(lp2), free(ld), free(ct);
}

/* Every bad argument of the evaluation calls gets its status, and nothing is written. */
static void F(check_errors)(const nflow_model* h, size_t d, size_t cd, const REAL* x,
                            const REAL* c) {
  const size_t n = 3;
  REAL out[64], g[64], bad[64];
  for (size_t k = 0; k < 64; ++k) out[k] = g[k] = (REAL)-5;
  const REAL* ctx = cd ? c : NULL;
  const size_t cs = cd;
  CHECK_STATUS(F(nflow_log_prob)(NULL, n, NFLOW_POINTS_CONTIGUOUS, x, d, ctx, cs, out),
               NFLOW_ERROR_NULL_POINTER);
  CHECK_STATUS(F(nflow_log_prob)(h, n, NFLOW_POINTS_CONTIGUOUS, NULL, d, ctx, cs, out),
               NFLOW_ERROR_NULL_POINTER);
  CHECK_STATUS(F(nflow_log_prob)(h, n, NFLOW_POINTS_CONTIGUOUS, x, d, ctx, cs, NULL),
               NFLOW_ERROR_NULL_POINTER);
  CHECK_STATUS(F(nflow_log_prob)(h, n, NFLOW_POINTS_CONTIGUOUS, x, d - 1, ctx, cs, out),
               NFLOW_ERROR_SIZE);
  CHECK_STATUS(F(nflow_log_prob)(h, n, NFLOW_FEATURES_CONTIGUOUS, x, n - 1, ctx, cs, out),
               NFLOW_ERROR_SIZE);
  CHECK_STATUS(F(nflow_log_prob)(h, n, (nflow_layout)7, x, d, ctx, cs, out), NFLOW_ERROR_ARGUMENT);
  CHECK_STATUS(F(nflow_log_prob)(h, (size_t)-1, NFLOW_POINTS_CONTIGUOUS, x, d, ctx, cs, out),
               NFLOW_ERROR_SIZE);
  CHECK_STATUS(F(nflow_log_prob)(h, 3, NFLOW_POINTS_CONTIGUOUS, x, (size_t)-1 / 4, ctx, cs, out),
               NFLOW_ERROR_SIZE);
  memcpy(bad, x, n * d * sizeof(REAL));
  bad[d + 1] = (REAL)NAN;
  CHECK_STATUS(F(nflow_log_prob)(h, n, NFLOW_POINTS_CONTIGUOUS, bad, d, ctx, cs, out),
               NFLOW_ERROR_INPUT);
  CHECK(strstr(nflow_last_error(), "point 1") != NULL);
  bad[d + 1] = (REAL)INFINITY;
  CHECK_STATUS(F(nflow_forward)(h, n, NFLOW_POINTS_CONTIGUOUS, bad, d, ctx, cs, g, d, out),
               NFLOW_ERROR_INPUT);
  CHECK_STATUS(F(nflow_inverse)(h, n, NFLOW_POINTS_CONTIGUOUS, bad, d, ctx, cs, g, d, out),
               NFLOW_ERROR_INPUT);
  CHECK_STATUS(F(nflow_score)(h, n, NFLOW_POINTS_CONTIGUOUS, bad, d, ctx, cs, g, d),
               NFLOW_ERROR_INPUT);
  CHECK_STATUS(F(nflow_forward)(h, n, NFLOW_POINTS_CONTIGUOUS, x, d, ctx, cs, g, d - 1, out),
               NFLOW_ERROR_SIZE);
  CHECK_STATUS(F(nflow_forward)(h, n, NFLOW_POINTS_CONTIGUOUS, x, d, ctx, cs, NULL, d, out),
               NFLOW_ERROR_NULL_POINTER);
  CHECK_STATUS(F(nflow_sample)(h, n, 1, NFLOW_POINTS_CONTIGUOUS, ctx, cs, NULL, d, out),
               NFLOW_ERROR_NULL_POINTER);
  CHECK_STATUS(F(nflow_sample)(h, n, 1, NFLOW_FEATURES_CONTIGUOUS, ctx, cs, g, n - 1, out),
               NFLOW_ERROR_SIZE);
  /* uniforms outside (0, 1) */
  for (size_t k = 0; k < n * d; ++k) bad[k] = (REAL)0.25;
  bad[2] = 0;
  CHECK_STATUS(
      F(nflow_sample_from_uniforms)(h, n, NFLOW_POINTS_CONTIGUOUS, bad, d, ctx, cs, g, d, out),
      NFLOW_ERROR_INPUT);
  bad[2] = 1;
  CHECK_STATUS(
      F(nflow_sample_from_uniforms)(h, n, NFLOW_POINTS_CONTIGUOUS, bad, d, ctx, cs, g, d, out),
      NFLOW_ERROR_INPUT);
  bad[2] = (REAL)-0.5;
  CHECK_STATUS(
      F(nflow_sample_from_uniforms)(h, n, NFLOW_POINTS_CONTIGUOUS, bad, d, ctx, cs, g, d, out),
      NFLOW_ERROR_INPUT);
  /* contexts: missing for a conditional model, given to an unconditional one, a NaN, a short
   * stride */
  if (cd) {
    CHECK_STATUS(F(nflow_log_prob)(h, n, NFLOW_POINTS_CONTIGUOUS, x, d, NULL, 0, out),
                 NFLOW_ERROR_NULL_POINTER);
    CHECK_STATUS(F(nflow_sample)(h, n, 1, NFLOW_POINTS_CONTIGUOUS, NULL, 0, g, d, NULL),
                 NFLOW_ERROR_NULL_POINTER);
    CHECK_STATUS(
        F(nflow_log_prob)(h, n, NFLOW_POINTS_CONTIGUOUS, x, d, c, cd - 1 ? cd - 1 : 0, out),
        cd > 1 ? NFLOW_ERROR_SIZE : NFLOW_OK);
    memcpy(bad, c, n * cd * sizeof(REAL));
    bad[0] = (REAL)NAN;
    CHECK_STATUS(F(nflow_log_prob)(h, n, NFLOW_POINTS_CONTIGUOUS, x, d, bad, cd, out),
                 NFLOW_ERROR_INPUT);
    CHECK_STATUS(F(nflow_context_gradient)(h, n, NFLOW_POINTS_CONTIGUOUS, x, d, c, cd, NULL, cd),
                 NFLOW_ERROR_NULL_POINTER);
    CHECK_STATUS(F(nflow_context_gradient)(h, n, NFLOW_POINTS_CONTIGUOUS, x, d, NULL, 0, g, cd),
                 NFLOW_ERROR_NULL_POINTER);
    CHECK_STATUS(F(nflow_context_gradient)(h, n, NFLOW_FEATURES_CONTIGUOUS, x, n, c, n, g, n - 1),
                 NFLOW_ERROR_SIZE);
    CHECK_STATUS(F(nflow_context_gradient)(h, n, NFLOW_POINTS_CONTIGUOUS, x, d, bad, cd, g, cd),
                 NFLOW_ERROR_INPUT);
  } else {
    CHECK_STATUS(F(nflow_log_prob)(h, n, NFLOW_POINTS_CONTIGUOUS, x, d, x, d, out),
                 NFLOW_ERROR_ARGUMENT);
    CHECK_STATUS(F(nflow_context_gradient)(h, n, NFLOW_POINTS_CONTIGUOUS, x, d, NULL, 0, g, 1),
                 NFLOW_ERROR_ARGUMENT);
  }
  int untouched = 1;
  for (size_t k = 0; k < 64; ++k) untouched &= out[k] == (REAL)-5 && g[k] == (REAL)-5;
  CHECK(untouched || cd == 1); /* cd == 1: the stride-0 call above succeeded and wrote */
  /* n = 0: nothing to do, nothing written, even with null arrays */
  for (size_t k = 0; k < 64; ++k) out[k] = (REAL)-5;
  CHECK_OK(F(nflow_log_prob)(h, 0, NFLOW_POINTS_CONTIGUOUS, NULL, 0, NULL, 0, out));
  CHECK_OK(F(nflow_sample)(h, 0, 1, NFLOW_FEATURES_CONTIGUOUS, NULL, 0, out, 0, NULL));
  CHECK(out[0] == (REAL)-5);
}

#undef AT
