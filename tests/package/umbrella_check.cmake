# Checks which nflow headers an umbrella pulls in: compiles `#include <HEADER>` with -M (list the
# included files, no code) and fails if any included path matches FORBIDDEN (a regex), naming it.
# Used as: cmake -DCXX=<compiler> -DINCLUDE_DIRS=<dir;dir> -DHEADER=nflow/nflow.hpp
#                -DFORBIDDEN=<regex> -P umbrella_check.cmake
set(include_flags "")
foreach(dir IN LISTS INCLUDE_DIRS)
  list(APPEND include_flags "-I${dir}")
endforeach()
file(WRITE "${CMAKE_CURRENT_BINARY_DIR}/umbrella_check.cpp" "#include <${HEADER}>\n")
execute_process(
  COMMAND ${CXX} -std=c++20 -M ${include_flags} "${CMAKE_CURRENT_BINARY_DIR}/umbrella_check.cpp"
  OUTPUT_VARIABLE deps ERROR_VARIABLE errors RESULT_VARIABLE result)
if(NOT result EQUAL 0)
  message(FATAL_ERROR "umbrella_check: ${HEADER} does not preprocess:\n${errors}")
endif()
string(REGEX MATCH "[^ \\\n]*(${FORBIDDEN})[^ \\\n]*" hit "${deps}")
if(hit)
  message(FATAL_ERROR "umbrella_check: ${HEADER} includes ${hit}, which it must not (${FORBIDDEN})")
endif()
message(STATUS "umbrella_check: ${HEADER} includes nothing matching ${FORBIDDEN}")
