// Static work partitioning shared by the CPU stages. Every stage splits its work the same way
// for a given thread count, so results are bitwise reproducible for that thread count.
#pragma once

#include <omp.h>

#include <cstdint>

namespace syncbn::norm {

// Below this many elements a stage runs on one thread: fork/join costs more than it saves.
inline constexpr int64_t kParallelGrain = 1 << 15;

inline int thread_count_for(int64_t work) {
  return work < kParallelGrain ? 1 : omp_get_max_threads();
}

// [begin, end) of part `part` of `parts` equal slices of [0, total).
struct Range {
  int64_t begin, end;
};
inline Range slice(int64_t total, int part, int parts) {
  return {total * part / parts, total * (part + 1) / parts};
}

}  // namespace syncbn::norm
