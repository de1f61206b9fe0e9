// Logging to stderr. stdout is reserved for a tool's product (generated text,
// tables), so every diagnostic goes through here.
#pragma once

namespace longkv {

enum class LogLevel { quiet = 0, info = 1, debug = 2 };

void set_log_level(LogLevel level);
LogLevel log_level();

void log_info(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

}  // namespace longkv
