# Runs PROGRAM MODE and passes when it exits with a non-zero code and prints EXPECTED (a plain
# string, not a regular expression).
execute_process(COMMAND ${PROGRAM} ${MODE} RESULT_VARIABLE code OUTPUT_VARIABLE out
                ERROR_VARIABLE err)
message("exit code: ${code}\nstdout:\n${out}\nstderr:\n${err}")
if(code EQUAL 0)
  message(FATAL_ERROR "${PROGRAM} ${MODE} exited with 0; a failure without status must stop")
endif()
string(FIND "${out}${err}" "${EXPECTED}" found)
if(found EQUAL -1)
  message(FATAL_ERROR "${PROGRAM} ${MODE}: the output does not contain '${EXPECTED}'")
endif()
