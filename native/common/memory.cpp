#include "memory.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "check.h"

namespace jg {

namespace {

int64_t read_int_file(const char* path) {
  FILE* f = std::fopen(path, "r");
  if (!f) return -1;
  char buf[64] = {0};
  size_t n = std::fread(buf, 1, sizeof(buf) - 1, f);
  std::fclose(f);
  buf[n] = 0;
  if (n == 0 || buf[0] < '0' || buf[0] > '9') return -1;  // "max" or empty: no limit
  return std::strtoll(buf, nullptr, 10);
}

// MemAvailable + SwapFree in bytes, or -1.
int64_t meminfo_available() {
  FILE* f = std::fopen("/proc/meminfo", "r");
  if (!f) return -1;
  char line[256];
  int64_t avail = -1, swap = 0;
  while (std::fgets(line, sizeof(line), f)) {
    long long kb = 0;
    if (std::sscanf(line, "MemAvailable: %lld kB", &kb) == 1) avail = kb * 1024;
    else if (std::sscanf(line, "SwapFree: %lld kB", &kb) == 1) swap = kb * 1024;
  }
  std::fclose(f);
  return avail < 0 ? -1 : avail + swap;
}

std::string mib(int64_t bytes) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  return buf;
}

}  // namespace

int64_t checked_mul(int64_t a, int64_t b) {
  if (a < 0 || b < 0) return -1;
  if (a != 0 && b > std::numeric_limits<int64_t>::max() / a) return -1;
  return a * b;
}

int64_t available_memory_bytes() {
  int64_t avail = meminfo_available();
  const int64_t max = read_int_file("/sys/fs/cgroup/memory.max");
  if (max >= 0) {
    const int64_t cur = read_int_file("/sys/fs/cgroup/memory.current");
    const int64_t room = cur >= 0 && cur < max ? max - cur : 0;
    avail = avail < 0 ? room : std::min(avail, room);
  }
  if (const char* env = std::getenv("JUSTGRPO_MEMORY_LIMIT")) {
    const long long lim = std::strtoll(env, nullptr, 10);
    if (lim > 0) avail = avail < 0 ? lim : std::min<int64_t>(avail, lim);
  }
  return avail;
}

void check_fits(int64_t bytes, const char* what) {
  if (bytes < 0)
    throw OutOfMemoryError(str_cat("Out of memory: ", what, " needs more than 2^63 bytes (the size overflows)"));
  // Small requests go straight to the allocator; reading /proc for each would cost more than they do.
  if (bytes < (int64_t(64) << 20)) return;
  const int64_t avail = available_memory_bytes();
  if (avail >= 0 && bytes > avail)
    throw OutOfMemoryError(str_cat("Out of memory: ", what, " needs ", bytes, " bytes (", mib(bytes), ") but only ",
                                   avail, " bytes (", mib(avail), ") are available"));
}

}  // namespace jg
