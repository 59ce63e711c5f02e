// The spill directory: durable CRC-named files, oldest first, the newest keep_last kept, damage
// detected on read.
#include "coordinator/spill_dir.h"

#include <fstream>
#include <string>

#include "test_util.h"

namespace syncbn::coordinator {
namespace {

using testing::listing;
using testing::random_bytes;
using testing::ScratchDir;

TEST(SpillDir, KeepsTheNewestKeepLastOldestFirst) {
  ScratchDir dir;
  SpillDir spill(dir.path() + "/spill", 2);
  for (int64_t step : {30, 10, 20}) spill.save(step, random_bytes(1000, step));
  const auto entries = spill.list();
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].step, 20);
  EXPECT_EQ(entries[1].step, 30);
  std::string problem;
  EXPECT_EQ(spill.read(entries[1], &problem), random_bytes(1000, 30)) << problem;
  // No temporary file is left; a rewrite of a step replaces it.
  spill.save(30, "other bytes");
  EXPECT_EQ(listing(dir.path() + "/spill").size(), 2u);
  EXPECT_EQ(spill.read(spill.list()[1], &problem), "other bytes");
}

TEST(SpillDir, ADamagedFileIsNotRead) {
  ScratchDir dir;
  SpillDir spill(dir.path(), 3);
  spill.save(7, random_bytes(4096, 7));
  const SpillDir::Entry entry = spill.list().at(0);
  {
    std::fstream f(entry.path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('\x5a');
  }
  std::string problem;
  EXPECT_FALSE(spill.read(entry, &problem).has_value());
  EXPECT_NE(problem.find("CRC32C"), std::string::npos) << problem;
  // Files of other names are not checkpoints of the spill.
  std::ofstream(dir.path() + "/step-1.safetensors") << "x";
  EXPECT_EQ(spill.list().size(), 1u);
}

}  // namespace
}  // namespace syncbn::coordinator
