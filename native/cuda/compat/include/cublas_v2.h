// CUDA-on-CPU tier: stands in for the CUDA toolkit's <cublas_v2.h> (see ../cublas.h).
#pragma once
#include "../cublas.h"
