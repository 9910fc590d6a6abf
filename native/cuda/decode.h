// The decoders on the GPU: the CPU backend's loop (native/cpu/decode.cpp), with the forward pass,
// guidance, sampling, the confidence measures and the choice of positions to commit on the device.
// Per step, only the sampled rows' results (a few bytes each) come back to the host, which keeps
// the schedule and the stopping rule; logits never leave the device. Same options, same results
// type and the same random streams as the CPU decoder, so greedy and seeded decoding agree with it.
#pragma once

#include <atomic>
#include <functional>

#include "../cpu/decode.h"
#include "model.h"

namespace jg::cuda {

cpu::DecodeResult decode(Model& model, const cpu::DecodeRequest& req, const cpu::DecodeOptions& opts,
                         const std::atomic<bool>* abort, const std::function<void(const cpu::DecodeProgress&)>& progress);

}  // namespace jg::cuda
