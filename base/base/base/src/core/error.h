// Errors: one exception type carrying a one-line, user-facing message.
//
// Everything that reads untrusted input (model files, tokenizer files, CLI
// arguments) reports problems by throwing longkv::Error with a message that
// names the file/field and the problem; the CLI prints it as "error: ..." and
// exits non-zero. Internal invariants use LONGKV_ASSERT (aborts: a bug).
#pragma once

#include <cstdarg>
#include <stdexcept>
#include <string>

namespace longkv {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// printf-style formatting into a std::string.
std::string strprintf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string vstrprintf(const char* fmt, va_list ap);

// Throws longkv::Error with a printf-formatted message.
[[noreturn]] void fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

[[noreturn]] void assert_failed(const char* expr, const char* file, int line);

}  // namespace longkv

// Check a condition on input data; on failure throw Error(message).
#define LONGKV_CHECK(cond, ...)                         \
  do {                                                  \
    if (!(cond)) ::longkv::fail(__VA_ARGS__);           \
  } while (0)

// Internal invariant (a bug if false): abort with location.
#define LONGKV_ASSERT(cond)                                              \
  do {                                                                   \
    if (!(cond)) ::longkv::assert_failed(#cond, __FILE__, __LINE__);     \
  } while (0)
