// CUDA-on-CPU tier: stands in for the CUDA toolkit's <cuda_bf16.h> (see ../cuda_on_cpu.h).
#pragma once
#include "../cuda_on_cpu.h"
