/* The memory a handle holds: for a few models, the bytes of their parameters against the heap
 * that nflow_create_preset and nflow_open keep allocated (glibc's mallinfo2: bytes in use before
 * and after, with every temporary of the call freed). Prints the table of docs/embedding.md and
 * fails if a handle holds more than ten times its parameters plus 64 KiB (a leak or a copy too
 * many). Usage: footprint <scratch directory>. Not under sanitizers (they replace malloc). */
#include <malloc.h>
#include <nflow/c/nflow.h>
#include <stdio.h>
#include <string.h>

static size_t heap_in_use(void) {
  const struct mallinfo2 m = mallinfo2();
  return m.uordblks + m.hblkhd; /* small blocks and mmap-ed large ones */
}

int main(int argc, char** argv) {
  static const struct {
    const char* family;
    size_t dim;
    const char* options;
  } models[] = {
      {"real_nvp", 2, "{\"transforms\": 4, \"hidden_features\": 16}"},
      {"real_nvp", 8, "{}"},
      {"real_nvp", 32, "{\"transforms\": 8, \"hidden_features\": 128}"},
      {"maf", 8, "{}"},
      {"glow", 8, "{}"},
      {"coupling_nsf", 8, "{}"},
      {"autoregressive_nsf", 8, "{\"bins\": 10}"},
      {"real_nvp", 8, "{\"context\": 4}"},
  };
  const char* scratch = argc > 1 ? argv[1] : ".";
  char path[4096];
  snprintf(path, sizeof path, "%s/footprint.safetensors", scratch);
  int failed = 0;
  printf(
      "| model | scalar | parameters | parameter bytes | handle heap (preset) | handle heap "
      "(opened) | heap / parameter bytes |\n");
  printf("|---|---|---:|---:|---:|---:|---:|\n");
  for (size_t k = 0; k < sizeof models / sizeof models[0]; ++k) {
    for (int s = 0; s < 2; ++s) {
      const nflow_scalar scalar = s == 0 ? NFLOW_FLOAT64 : NFLOW_FLOAT32;
      const size_t bytes_per = s == 0 ? 8 : 4;
      nflow_model* m = NULL;
      const size_t before = heap_in_use();
      if (nflow_create_preset(models[k].family, models[k].dim, models[k].options, scalar, &m) !=
          NFLOW_OK) {
        printf("create_preset %s failed: %s\n", models[k].family, nflow_last_error());
        return 1;
      }
      const size_t preset = heap_in_use() - before;
      size_t count = 0;
      nflow_parameter_count(m, &count);
      if (nflow_save(m, path) != NFLOW_OK) {
        printf("save failed: %s\n", nflow_last_error());
        return 1;
      }
      nflow_close(m);
      const size_t before_open = heap_in_use();
      if (nflow_open(path, scalar, &m) != NFLOW_OK) {
        printf("open failed: %s\n", nflow_last_error());
        return 1;
      }
      const size_t opened = heap_in_use() - before_open;
      nflow_close(m);
      const size_t parameter_bytes = count * bytes_per;
      printf("| %s dim %zu %s | %s | %zu | %zu | %zu | %zu | %.1f |\n", models[k].family,
             models[k].dim, models[k].options, s == 0 ? "double" : "float", count, parameter_bytes,
             preset, opened, (double)opened / (double)parameter_bytes);
      if (opened > 10 * parameter_bytes + 65536 || preset > 10 * parameter_bytes + 65536) {
        printf("  ^ more than 10 x the parameters + 64 KiB\n");
        ++failed;
      }
    }
  }
  return failed == 0 ? 0 : 1;
}
