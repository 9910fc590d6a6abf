// The op set. Every backend implements these under the same names (<op>_forward / <op>_backward);
// tests compare backends op by op.
#pragma once

namespace jg {

enum Op {
  OP_EMBEDDING,
  OP_RMSNORM,
  OP_MATMUL,
  OP_ROPE,
  OP_ATTENTION,
  OP_SWIGLU,
  OP_RESIDUAL,
  OP_LOGSOFTMAX,  // log-softmax gathered at the target: the LM head's losses
  OP_ADAMW,
  OP_COUNT,
};

inline constexpr const char* OP_NAMES[] = {
    "embedding", "rmsnorm", "matmul", "rope", "attention", "swiglu", "residual", "logsoftmax", "adamw",
};

static_assert(sizeof(OP_NAMES) / sizeof(OP_NAMES[0]) == OP_COUNT, "OP_NAMES must name every op");

}  // namespace jg
