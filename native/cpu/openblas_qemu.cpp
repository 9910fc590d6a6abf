// OpenBLAS built with DYNAMIC_ARCH picks its kernels from CPUID when it loads. QEMU's default CPU
// model (`qemu64`) reports an AMD K8 (family 15) without 3DNow!, which no real K8 lacks; OpenBLAS
// 0.3.21 (Debian 12, linked into the prebuilt binary) then picks its Opteron kernels, which use
// 3DNow! (femms) and die with an illegal instruction. Newer OpenBLAS recognises this model. Here the
// prebuilt binary steers 0.3.21 to its Prescott (SSE3) kernels before OpenBLAS's own constructor
// runs. That order holds only when OpenBLAS is linked statically (priority 101 runs before unprioritised
// constructors in the same library); a shared libopenblas initialises before this library loads,
// and there OPENBLAS_CORETYPE=Prescott in the environment does the same.
#if defined(__x86_64__) && defined(__GNUC__)

#include <cpuid.h>

#include <cstdlib>

namespace {

__attribute__((constructor(101))) void steer_openblas_on_qemu64() {
  if (std::getenv("OPENBLAS_CORETYPE")) return;
  unsigned a, b, c, d;
  if (!__get_cpuid(0, &a, &b, &c, &d)) return;
  const bool amd = b == 0x68747541 && d == 0x69746e65 && c == 0x444d4163;  // "AuthenticAMD"
  if (!amd || !__get_cpuid(1, &a, &b, &c, &d)) return;
  const unsigned family = (a >> 8) & 0xf, exfamily = (a >> 20) & 0xff;
  const bool sse3 = c & 1;
  // The branch of OpenBLAS's detection that returns the Opteron kernels.
  if (family != 0xf || (exfamily != 0 && exfamily != 2) || !sse3) return;
  if (!__get_cpuid(0x80000001, &a, &b, &c, &d)) return;
  const bool has_3dnow = d & (1u << 31);
  if (!has_3dnow) setenv("OPENBLAS_CORETYPE", "Prescott", 0);
}

}  // namespace

#endif
