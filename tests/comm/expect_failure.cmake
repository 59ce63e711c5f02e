# cmake -DCOMMAND=<'|'-separated command> -DEXPECT=<regex> [-DEXPECT_2=..] ... [-DEXPECT_4=..]
#       -P expect_failure.cmake
# Passes when COMMAND exits non-zero and its output (stdout and stderr) matches every EXPECT*
# regex: the check that the MPI test runner fails a test that fails on one rank, and names that
# rank. The regexes are matched separately because output from different ranks interleaves.
string(REPLACE "|" ";" command "${COMMAND}")
execute_process(COMMAND ${command} RESULT_VARIABLE status OUTPUT_VARIABLE output
                ERROR_VARIABLE output)
message("${output}")
if(status EQUAL 0)
  message(FATAL_ERROR "expected a non-zero exit status from: ${command}")
endif()
foreach(name EXPECT EXPECT_2 EXPECT_3 EXPECT_4)
  if(DEFINED ${name} AND NOT output MATCHES "${${name}}")
    message(FATAL_ERROR "expected the output to match: ${${name}}")
  endif()
endforeach()
message("exit status ${status}, and the output names the failing rank, as expected")
