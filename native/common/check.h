// Errors and checks shared by every backend. Engine code throws EngineError with a kind; the addon
// turns it into a JavaScript Error whose `code` is the kind (lib/native/binding.ts maps codes to
// the TypeScript error classes) and whose `where` is the file and line that threw (for debugging;
// it is not part of the message a user reads).
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace jg {

// What went wrong, as far as a caller can act on it.
enum class ErrorKind {
  INPUT,          // an argument, option or shape the engine refuses
  OUT_OF_MEMORY,  // a request that does not fit; the message says how much it needed
  CHECKPOINT,     // a weights or optimizer file that cannot be read as claimed
  STORAGE,        // a file that cannot be written (disk full, permissions)
  ABORTED,        // a long call stopped by cancel()
  DISPOSED,       // a call on a disposed model or trainer
  BUSY,           // another call holds the engine
  UNSUPPORTED,    // the backend does not have this operation
  INTERNAL,       // a library or device failure (BLAS, CUDA)
  KIND_COUNT,
};

// The JavaScript `code` of each kind: ERR_JG_<kind>.
inline constexpr const char* ERROR_CODES[] = {
    "ERR_JG_INPUT",   "ERR_JG_OUT_OF_MEMORY", "ERR_JG_CHECKPOINT",  "ERR_JG_STORAGE",  "ERR_JG_ABORTED",
    "ERR_JG_DISPOSED", "ERR_JG_BUSY",         "ERR_JG_UNSUPPORTED", "ERR_JG_INTERNAL",
};
static_assert(sizeof(ERROR_CODES) / sizeof(ERROR_CODES[0]) == static_cast<int>(ErrorKind::KIND_COUNT),
              "ERROR_CODES must name every ErrorKind");

inline const char* error_code(ErrorKind k) { return ERROR_CODES[static_cast<int>(k)]; }

struct EngineError : std::runtime_error {
  explicit EngineError(const std::string& message, ErrorKind kind = ErrorKind::INPUT, std::string where = "")
      : std::runtime_error(message), kind(kind), where(std::move(where)) {}
  ErrorKind kind;
  std::string where;  // "native/cpu/model.cpp:123", or empty
};

// A request whose memory does not fit; the message says how much it needed.
struct OutOfMemoryError : EngineError {
  explicit OutOfMemoryError(const std::string& message, std::string where = "")
      : EngineError(message, ErrorKind::OUT_OF_MEMORY, std::move(where)) {}
};

template <typename... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

// An INPUT error in the one message shape lib/errors.ts `expected` writes too:
// "Expected <what> for `<name>` but received <what came>".
[[noreturn]] inline void expected(const std::string& what, const std::string& name, const std::string& received) {
  throw EngineError(str_cat("Expected ", what, " for `", name, "` but received ", received));
}

}  // namespace jg

#define JG_WHERE ::jg::str_cat(__FILE__, ":", __LINE__)

// Checks an invariant and throws an EngineError of `kind` with the message (and where it was
// thrown, apart from the message).
#define JG_CHECK_AS(kind, cond, ...)                                                     \
  do {                                                                                   \
    if (!(cond)) throw ::jg::EngineError(::jg::str_cat(__VA_ARGS__), (kind), JG_WHERE); \
  } while (0)

// The common case: a bad argument or shape at the native boundary.
#define JG_CHECK(cond, ...) JG_CHECK_AS(::jg::ErrorKind::INPUT, cond, __VA_ARGS__)

// Throws unconditionally.
#define JG_FAIL(kind, ...) throw ::jg::EngineError(::jg::str_cat(__VA_ARGS__), (kind), JG_WHERE)
