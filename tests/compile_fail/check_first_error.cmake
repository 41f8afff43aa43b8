# Builds TARGET in BUILD_DIR, which must fail; the first line of the output that contains
# "error" must match REGEX (nflow's sentence comes first, before anything inside nflow or Eigen),
# and, if ALSO is given, some line must match ALSO (e.g. the step index and sizes of a mismatch).
# Usage: cmake -DBUILD_DIR=... -DTARGET=... -DCONFIG=... -DREGEX=... [-DALSO=...] -P check_first_error.cmake
execute_process(COMMAND ${CMAKE_COMMAND} --build ${BUILD_DIR} --target ${TARGET} --config ${CONFIG}
                RESULT_VARIABLE result OUTPUT_VARIABLE out ERROR_VARIABLE err)
set(all "${err}\n${out}")
if(result EQUAL 0)
  message(FATAL_ERROR "${TARGET} compiled, but it must not")
endif()
string(REGEX MATCH "[^\n]*error[^\n]*" first "${all}")
if(NOT first MATCHES "${REGEX}")
  message(FATAL_ERROR "${TARGET}: the first error line does not match '${REGEX}':\n${first}\n\nFull output:\n${all}")
endif()
if(DEFINED ALSO AND NOT all MATCHES "${ALSO}")
  message(FATAL_ERROR "${TARGET}: no line matches '${ALSO}'. Full output:\n${all}")
endif()
message(STATUS "${TARGET}: first error line: ${first}")
