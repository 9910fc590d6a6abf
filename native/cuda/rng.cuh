// The decoders' counter-based generator on the device: the one in native/common/sampling.h
// (written for host and device), so both backends draw the same numbers.
#pragma once

#include "../common/sampling.h"

namespace jg::cuda {

using jg::mix64;
using jg::row_key;
using jg::uniform_open;

}  // namespace jg::cuda
