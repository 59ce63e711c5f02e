// Compiled-in failpoints for crash tests of the checkpoint commit protocol.
//
// failpoint("after_rename") makes the process `_exit(77)` right there when the environment
// variable SYNCBN_FAILPOINT names that point, as if it had been killed (no destructors, no
// buffered output, nothing flushed). Tests run the store in a child process with the variable
// set, then reopen the store in the parent and check that it recovered.
//
// failpoint_error("fsync_error") returns true when SYNCBN_FAILPOINT names it: the caller then
// behaves as if the system call had failed (used to test that a failed fsync abandons the
// checkpoint).
//
// The points of CheckpointStore: after_temp_write, after_fsync, after_rename, after_dir_fsync,
// after_manifest, mid_prune, and the error point fsync_error.
#pragma once

#include <string_view>

namespace syncbn::coordinator {

inline constexpr int kFailpointExitCode = 77;

void failpoint(std::string_view name);
bool failpoint_error(std::string_view name);

}  // namespace syncbn::coordinator
