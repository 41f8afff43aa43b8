/* nflow C ABI: a trained normalizing flow from C, Fortran (iso_c_binding), Python or any language
 * with a C foreign-function interface. Link nflow::nflow_c (CMake) or -lnflow_c.
 *
 * Shape of the interface (the convention of HEP components embedded in C):
 *   - an opaque handle (nflow_model) opened from a model file that describes itself (see
 *     docs/model_files.md) or built from a preset;
 *   - every call returns an nflow_status; on failure nflow_last_error() gives a sentence, kept per
 *     thread (a call on another thread does not overwrite it);
 *   - batched calls over n points with a stride, in either layout (nflow_layout);
 *   - random numbers come from the caller: latents, uniforms, or a 64-bit seed;
 *   - const calls (every call taking `const nflow_model*`) may run on one handle from many
 *     threads at once; calls taking `nflow_model*` (fit) need the handle to themselves.
 *
 * Scalars: a handle evaluates in the scalar type chosen when it is opened (NFLOW_SCALAR_FILE: the
 * file's own). The _d entry points take double arrays and need a double handle; the _f ones float
 * arrays and a float handle; the other combination returns NFLOW_ERROR_SCALAR_TYPE.
 *
 * Arrays: point j's feature i (0-based) is at
 *     data[j * stride + i]   with NFLOW_POINTS_CONTIGUOUS  (stride >= rows; C row-major n x d,
 *                                                         Fortran/Eigen column-major d x n)
 *     data[i * stride + j]   with NFLOW_FEATURES_CONTIGUOUS (stride >= n;   C row-major d x n,
 *                                                         Fortran column-major n x d)
 * where rows is the matrix's number of features (dim, or context_dim for contexts). One layout per
 * call applies to every matrix of the call, each with its own stride. A context stride of 0 (in
 * either layout) repeats one context for every point. Per-point outputs (log_prob, log_det) are
 * n contiguous values. A null context is allowed only for a model whose context_dim is 0.
 *
 * Inputs are checked: null pointers, n = 0 (allowed: nothing is written), strides too small,
 * NaN or Inf anywhere in an input (NFLOW_ERROR_INPUT), a context given to an unconditional model
 * or missing for a conditional one. Nothing is written to an output when a call fails.
 */
#ifndef NFLOW_C_NFLOW_H
#define NFLOW_C_NFLOW_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32) && !defined(NFLOW_C_STATIC)
#ifdef NFLOW_C_BUILDING
#define NFLOW_C_API __declspec(dllexport)
#else
#define NFLOW_C_API __declspec(dllimport)
#endif
#else
#define NFLOW_C_API __attribute__((visibility("default")))
#endif

/** The ABI version of this header; nflow_abi_version() gives the library's. A program built with
 * one ABI version runs with a library of the same version only. */
#define NFLOW_ABI_VERSION 1

typedef struct nflow_model nflow_model; /* opaque */

typedef enum nflow_status {
  NFLOW_OK = 0,
  NFLOW_ERROR_NULL_POINTER = 1, /* a required pointer argument is null */
  NFLOW_ERROR_SIZE = 2,         /* a stride, count or size does not fit the model */
  NFLOW_ERROR_INPUT = 3,        /* a NaN or Inf in an input, a bad value (e.g. a uniform not in (0, 1)) */
  NFLOW_ERROR_IO = 4,           /* a file that cannot be opened, read or written */
  NFLOW_ERROR_FORMAT = 5,       /* not an nflow model file, corrupt, or truncated */
  NFLOW_ERROR_VERSION = 6,      /* a model file of a newer schema than this library reads */
  NFLOW_ERROR_SCALAR_TYPE = 7,  /* a _d call on a float handle or an _f call on a double one */
  NFLOW_ERROR_UNSUPPORTED = 8,  /* the model cannot do this (e.g. an IAF has no fast density gradient) */
  NFLOW_ERROR_ARGUMENT = 9,     /* a bad option (unknown preset, bad options JSON, ...) */
  NFLOW_ERROR_INTERNAL = 10     /* anything else (out of memory, a bug): the message says what */
} nflow_status;

typedef enum nflow_scalar {
  NFLOW_SCALAR_FILE = 0, /* nflow_open: the file's own scalar type */
  NFLOW_FLOAT32 = 1,
  NFLOW_FLOAT64 = 2
} nflow_scalar;

typedef enum nflow_layout {
  NFLOW_POINTS_CONTIGUOUS = 0,  /* each point's features are adjacent */
  NFLOW_FEATURES_CONTIGUOUS = 1 /* each feature's values over the points are adjacent */
} nflow_layout;

/* ---- versions and errors ------------------------------------------------------------------ */

/** NFLOW_ABI_VERSION of the library. */
NFLOW_C_API int nflow_abi_version(void);
/** nflow's version, "major.minor.patch". */
NFLOW_C_API const char* nflow_version(void);
/** The newest model-file schema version this library reads (and the one it writes). */
NFLOW_C_API int nflow_schema_version(void);
/** The calling thread's message of its last failed call ("" if none). Valid until that thread's
 * next failing call. */
NFLOW_C_API const char* nflow_last_error(void);
/** A constant name for a status, e.g. "NFLOW_ERROR_SIZE". */
NFLOW_C_API const char* nflow_status_name(nflow_status status);

/* ---- opening, building, saving, closing ------------------------------------------------------ */

/** Opens a model file (a self-describing nflow safetensors file, docs/model_files.md). `*out` is
 * set only on success; close it with nflow_close. */
NFLOW_C_API nflow_status nflow_open(const char* path, nflow_scalar scalar, nflow_model** out);
/** The same from `size` bytes in memory (the bytes are not kept). */
NFLOW_C_API nflow_status nflow_open_memory(const void* bytes, size_t size, nflow_scalar scalar,
                                           nflow_model** out);
/** A fresh (untrained) preset: `family` one of "real_nvp", "nice", "glow", "maf", "iaf",
 * "coupling_nsf", "autoregressive_nsf", "cnf"; `options_json` null or a JSON object of the preset's
 * options (docs/presets.md: "transforms", "hidden_features", "hidden_layers", "context",
 * "seed", and for splines "bins" and "bound"). */
NFLOW_C_API nflow_status nflow_create_preset(const char* family, size_t dim,
                                             const char* options_json, nflow_scalar scalar,
                                             nflow_model** out);
/** Writes the model (architecture and parameters) to a self-describing file. */
NFLOW_C_API nflow_status nflow_save(const nflow_model* model, const char* path);
/** Frees the handle; null is allowed. */
NFLOW_C_API void nflow_close(nflow_model* model);

/* ---- queries ------------------------------------------------------------------------------ */

NFLOW_C_API nflow_status nflow_dim(const nflow_model* model, size_t* out);
NFLOW_C_API nflow_status nflow_context_dim(const nflow_model* model, size_t* out);
NFLOW_C_API nflow_status nflow_scalar_type(const nflow_model* model, nflow_scalar* out);
NFLOW_C_API nflow_status nflow_parameter_count(const nflow_model* model, size_t* out);
/** The schema version of the file the model came from (nflow_schema_version() for a preset). */
NFLOW_C_API nflow_status nflow_model_schema_version(const nflow_model* model, int* out);
/** The architecture as JSON (the file's description); valid while the handle lives. */
NFLOW_C_API nflow_status nflow_describe(const nflow_model* model, const char** out);

/* ---- evaluation: double (_d) and float (_f) ----------------------------------------------- */

/** log p(x | context) of n points. */
NFLOW_C_API nflow_status nflow_log_prob_d(const nflow_model* model, size_t n, nflow_layout layout,
                                          const double* x, size_t x_stride, const double* context,
                                          size_t context_stride, double* log_prob);
NFLOW_C_API nflow_status nflow_log_prob_f(const nflow_model* model, size_t n, nflow_layout layout,
                                          const float* x, size_t x_stride, const float* context,
                                          size_t context_stride, float* log_prob);

/** z = f(x) (data to latent) and log|det df/dx| (log_det may be null). */
NFLOW_C_API nflow_status nflow_forward_d(const nflow_model* model, size_t n, nflow_layout layout,
                                         const double* x, size_t x_stride, const double* context,
                                         size_t context_stride, double* z, size_t z_stride,
                                         double* log_det);
NFLOW_C_API nflow_status nflow_forward_f(const nflow_model* model, size_t n, nflow_layout layout,
                                         const float* x, size_t x_stride, const float* context,
                                         size_t context_stride, float* z, size_t z_stride,
                                         float* log_det);

/** x = f^-1(z) (latent to data: sampling from caller-supplied latents) and log|det df^-1/dz|
 * (log_det may be null). */
NFLOW_C_API nflow_status nflow_inverse_d(const nflow_model* model, size_t n, nflow_layout layout,
                                         const double* z, size_t z_stride, const double* context,
                                         size_t context_stride, double* x, size_t x_stride,
                                         double* log_det);
NFLOW_C_API nflow_status nflow_inverse_f(const nflow_model* model, size_t n, nflow_layout layout,
                                         const float* z, size_t z_stride, const float* context,
                                         size_t context_stride, float* x, size_t x_stride,
                                         float* log_det);

/** Samples from caller-supplied uniforms u in (0, 1)^dim: z = the base distribution's quantile
 * of u (coordinate by coordinate), x = f^-1(z); log_prob (may be null) gets log p(x). A u outside
 * (0, 1) is NFLOW_ERROR_INPUT. */
NFLOW_C_API nflow_status nflow_sample_from_uniforms_d(const nflow_model* model, size_t n,
                                                      nflow_layout layout, const double* u,
                                                      size_t u_stride, const double* context,
                                                      size_t context_stride, double* x,
                                                      size_t x_stride, double* log_prob);
NFLOW_C_API nflow_status nflow_sample_from_uniforms_f(const nflow_model* model, size_t n,
                                                      nflow_layout layout, const float* u,
                                                      size_t u_stride, const float* context,
                                                      size_t context_stride, float* x,
                                                      size_t x_stride, float* log_prob);

/** n samples drawn with nflow's reproducible generator seeded by `seed` (the same seed gives the
 * same samples on every platform and thread); log_prob (may be null) gets log p(x). */
NFLOW_C_API nflow_status nflow_sample_d(const nflow_model* model, size_t n, uint64_t seed,
                                        nflow_layout layout, const double* context,
                                        size_t context_stride, double* x, size_t x_stride,
                                        double* log_prob);
NFLOW_C_API nflow_status nflow_sample_f(const nflow_model* model, size_t n, uint64_t seed,
                                        nflow_layout layout, const float* context,
                                        size_t context_stride, float* x, size_t x_stride,
                                        float* log_prob);

/** The score: grad_x log p(x | context), dim values per point. */
NFLOW_C_API nflow_status nflow_score_d(const nflow_model* model, size_t n, nflow_layout layout,
                                       const double* x, size_t x_stride, const double* context,
                                       size_t context_stride, double* grad, size_t grad_stride);
NFLOW_C_API nflow_status nflow_score_f(const nflow_model* model, size_t n, nflow_layout layout,
                                       const float* x, size_t x_stride, const float* context,
                                       size_t context_stride, float* grad, size_t grad_stride);

/** grad_context log p(x | context), context_dim values per point (in the layout of the call;
 * a shared context, stride 0, still gives each point its own gradient). ARGUMENT for an
 * unconditional model, UNSUPPORTED for a model without a fast density gradient (an IAF). */
NFLOW_C_API nflow_status nflow_context_gradient_d(const nflow_model* model, size_t n,
                                                  nflow_layout layout, const double* x,
                                                  size_t x_stride, const double* context,
                                                  size_t context_stride, double* grad,
                                                  size_t grad_stride);
NFLOW_C_API nflow_status nflow_context_gradient_f(const nflow_model* model, size_t n,
                                                  nflow_layout layout, const float* x,
                                                  size_t x_stride, const float* context,
                                                  size_t context_stride, float* grad,
                                                  size_t grad_stride);

/* ---- training ----------------------------------------------------------------------------- */

/** Fits the model to n data points by maximum likelihood (nflow::train::fit); `options_json`
 * null or a JSON object: "epochs", "batch_size", "learning_rate", "seed". Not thread-safe with
 * other calls on the same handle. `final_nll` (may be null) gets the mean negative log-likelihood
 * of the data after training. */
NFLOW_C_API nflow_status nflow_fit_d(nflow_model* model, size_t n, nflow_layout layout,
                                     const double* x, size_t x_stride, const double* context,
                                     size_t context_stride, const char* options_json,
                                     double* final_nll);
NFLOW_C_API nflow_status nflow_fit_f(nflow_model* model, size_t n, nflow_layout layout,
                                     const float* x, size_t x_stride, const float* context,
                                     size_t context_stride, const char* options_json,
                                     float* final_nll);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* NFLOW_C_NFLOW_H */
