# Runs a libFuzzer target for SECONDS seconds from a fixed seed, starting from a corpus that holds
# one valid file written by the target itself (NFLOW_FUZZ_WRITE_SEED). Fails on any finding.
# Usage: cmake -DFUZZER=<exe> -DCORPUS=<dir> -DSECONDS=<n> -P run_fuzzer.cmake
file(MAKE_DIRECTORY "${CORPUS}")
execute_process(COMMAND ${CMAKE_COMMAND} -E env "NFLOW_FUZZ_WRITE_SEED=${CORPUS}/seed"
                        "${FUZZER}" -runs=0 "${CORPUS}"
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "writing the seed input failed (${rc})")
endif()
execute_process(COMMAND "${FUZZER}" -seed=1 -max_total_time=${SECONDS} -max_len=4096
                        -rss_limit_mb=4096 "${CORPUS}"
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the fuzzer found a problem (exit ${rc}); the input is in the working directory")
endif()
