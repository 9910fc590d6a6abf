// Memory checks before large allocations. Linux overcommits: a malloc far beyond RAM can succeed
// and the process is killed later, when the pages are touched. So every large buffer asks first
// whether the machine can hold it and fails with the size it needed while nothing is allocated.
#pragma once

#include <cstdint>

namespace jg {

// Bytes this process can still allocate: MemAvailable + SwapFree from /proc/meminfo, capped by the
// cgroup's memory.max - memory.current; JUSTGRPO_MEMORY_LIMIT (bytes) caps it further (tests).
// -1 when nothing is known (then no check is made).
int64_t available_memory_bytes();

// Throws OutOfMemoryError naming `what`, the bytes it needs and the bytes available when `bytes`
// is negative (an overflowed size) or above what is available.
void check_fits(int64_t bytes, const char* what);

// a * b, or -1 when the product of non-negative a and b does not fit in int64 (sizes from strangers).
int64_t checked_mul(int64_t a, int64_t b);

}  // namespace jg
