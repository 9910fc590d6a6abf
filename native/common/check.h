// Errors and checks shared by every backend. Engine code throws EngineError; the addon layer turns
// it into a JavaScript Error that names the failing call.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace jg {

struct EngineError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A request whose memory does not fit; the message says how much it needed.
struct OutOfMemoryError : EngineError {
  using EngineError::EngineError;
};

template <typename... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

}  // namespace jg

// Checks an invariant and throws with the message, file and line. Used for every library call
// and for argument validation at the native boundary.
#define JG_CHECK(cond, ...)                                                                       \
  do {                                                                                            \
    if (!(cond)) {                                                                                \
      throw ::jg::EngineError(::jg::str_cat(__VA_ARGS__, " (", __FILE__, ":", __LINE__, ")")); \
    }                                                                                             \
  } while (0)
