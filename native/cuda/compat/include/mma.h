// CUDA-on-CPU tier: stands in for the CUDA toolkit's <mma.h> (see ../wmma.h).
#pragma once
#include "../wmma.h"
