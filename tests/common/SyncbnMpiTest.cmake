# GoogleTest binaries run under mpirun (Open MPI), for tests/comm and any other test directory:
#
#   include(${PROJECT_SOURCE_DIR}/tests/common/SyncbnMpiTest.cmake)
#   syncbn_mpi_gtest(norm_sync_bn_test SOURCES sync_bn_test.cc LIBS syncbn_norm
#                    RANKS 1 2 3 4 LABELS mpi)
#
# registers one CTest test per rank count, <name>.np<R>, running
#   mpirun -np R --oversubscribe [--allow-run-as-root] <binary>
# with a TIMEOUT (default 60 s) as the backstop against a rank left waiting in a collective.
# The binary's main() is syncbn_mpi_gtest_main: a failure on any rank fails every rank's exit
# status and is reported with the rank.
include_guard(DIRECTORY)

set(MPI_CXX_SKIP_MPICXX ON)
find_package(MPI REQUIRED COMPONENTS CXX)

# Open MPI refuses to start as root unless told to. Decided when CMake configures, for the user
# who configures: a build directory belongs to one user.
execute_process(COMMAND id -u OUTPUT_VARIABLE _syncbn_uid OUTPUT_STRIP_TRAILING_WHITESPACE
                ERROR_QUIET)
set(SYNCBN_MPIEXEC_FLAGS --oversubscribe)
if(_syncbn_uid STREQUAL "0")
  list(APPEND SYNCBN_MPIEXEC_FLAGS --allow-run-as-root)
endif()
set(SYNCBN_MPIEXEC_EXTRA_FLAGS "" CACHE STRING
    "Extra mpirun flags for the MPI tests, e.g. '--mca btl self,vader'")
separate_arguments(_syncbn_extra UNIX_COMMAND "${SYNCBN_MPIEXEC_EXTRA_FLAGS}")
list(APPEND SYNCBN_MPIEXEC_FLAGS ${_syncbn_extra})

# syncbn_mpi_command(OUT NP TARGET): the mpirun command line for TARGET on NP ranks.
function(syncbn_mpi_command out np target)
  set(${out} ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${np} ${SYNCBN_MPIEXEC_FLAGS}
             ${MPIEXEC_PREFLAGS} $<TARGET_FILE:${target}> ${MPIEXEC_POSTFLAGS} PARENT_SCOPE)
endfunction()

# syncbn_add_mpi_test(TARGET [RANKS R...] [LABELS L...] [TIMEOUT s] [SKIP_WHEN_ALL_SKIPPED])
# SKIP_WHEN_ALL_SKIPPED: CTest reports the test as skipped when every test case was skipped on
# every rank (e.g. GPU tests on a machine without a GPU).
function(syncbn_add_mpi_test target)
  cmake_parse_arguments(ARG "SKIP_WHEN_ALL_SKIPPED" "TIMEOUT" "RANKS;LABELS" ${ARGN})
  if(NOT ARG_RANKS)
    set(ARG_RANKS 1 2 3 4)
  endif()
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 60)
  endif()
  foreach(np IN LISTS ARG_RANKS)
    syncbn_mpi_command(command ${np} ${target})
    add_test(NAME ${target}.np${np} COMMAND ${command})
    set_tests_properties(${target}.np${np} PROPERTIES
      LABELS "${ARG_LABELS}" TIMEOUT ${ARG_TIMEOUT} PROCESSORS ${np})
    if(ARG_SKIP_WHEN_ALL_SKIPPED)
      set_tests_properties(${target}.np${np} PROPERTIES
        SKIP_REGULAR_EXPRESSION "syncbn-mpi-test: all [0-9]+ tests skipped")
    endif()
  endforeach()
endfunction()

# syncbn_mpi_gtest(NAME SOURCES... [LIBS...] [RANKS...] [LABELS...] [TIMEOUT s]
#                  [SKIP_WHEN_ALL_SKIPPED]): build a test binary and register it under mpirun.
function(syncbn_mpi_gtest name)
  cmake_parse_arguments(ARG "SKIP_WHEN_ALL_SKIPPED" "TIMEOUT" "SOURCES;LIBS;RANKS;LABELS"
                        ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_LIBS} syncbn_mpi_gtest_main syncbn_warnings)
  target_compile_definitions(${name} PRIVATE SYNCBN_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
  set(skip)
  if(ARG_SKIP_WHEN_ALL_SKIPPED)
    set(skip SKIP_WHEN_ALL_SKIPPED)
  endif()
  set(timeout)
  if(ARG_TIMEOUT)
    set(timeout TIMEOUT ${ARG_TIMEOUT})
  endif()
  syncbn_add_mpi_test(${name} RANKS ${ARG_RANKS} LABELS ${ARG_LABELS} ${timeout} ${skip})
endfunction()
