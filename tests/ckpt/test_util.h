// Helpers for the checkpoint tests: a scratch directory, raw files, error-message checks.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <string>
#include <vector>

#include "../common/test_util.h"
#include "core/error.h"

namespace syncbn::ckpt::testing {

using syncbn::testing::expect_error;
using syncbn::testing::read_file;
using syncbn::testing::ScratchDir;
using syncbn::testing::write_file;

}  // namespace syncbn::ckpt::testing
