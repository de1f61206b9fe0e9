#include "core/log.h"

#include <cstdarg>
#include <cstdio>

namespace longkv {

static LogLevel g_level = LogLevel::info;

void set_log_level(LogLevel level) { g_level = level; }
LogLevel log_level() { return g_level; }

static void vlog(const char* prefix, const char* fmt, va_list ap) {
  std::fputs(prefix, stderr);
  std::vfprintf(stderr, fmt, ap);
  std::fputc('\n', stderr);
}

void log_info(const char* fmt, ...) {
  if (g_level < LogLevel::info) return;
  va_list ap;
  va_start(ap, fmt);
  vlog("", fmt, ap);
  va_end(ap);
}

void log_debug(const char* fmt, ...) {
  if (g_level < LogLevel::debug) return;
  va_list ap;
  va_start(ap, fmt);
  vlog("debug: ", fmt, ap);
  va_end(ap);
}

void log_warn(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vlog("warning: ", fmt, ap);
  va_end(ap);
}

}  // namespace longkv
