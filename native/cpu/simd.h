// Inner loops written so the compiler vectorises them without -ffast-math: several independent
// accumulators make the reassociation explicit. Each function is compiled for AVX2+FMA and for
// baseline x86-64, chosen at load time, so one binary runs on every x86-64 machine.
#pragma once

#include <cstdint>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(JG_NO_MULTIVERSION)
#define JG_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define JG_MULTIVERSION
#endif

namespace jg::cpu {

float dot(const float* a, const float* b, int64_t n);
// y (n) += a * x (n)
void axpy(float* y, float a, const float* x, int64_t n);
// sum of squares of x (n), accumulated in double
double sum_squares(const float* x, int64_t n);

}  // namespace jg::cpu
