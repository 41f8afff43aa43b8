#!/bin/sh
# A compiler launcher (CMake's <LANG>_COMPILER_LAUNCHER) that compiles with another compiler:
#   with_compiler.sh <compiler> <the configured compiler> <its arguments>...
# runs <compiler> <its arguments>... (NFLOW_LIBRARIES_CXX in CMakeLists.txt: the test command
# compiles the run-time libraries with clang++ inside its g++ tree).
compiler="$1"
shift 2
exec "$compiler" "$@"
