// longkv: long-context LLM inference with a compressed, searchable KV cache.
#include <cstdio>
#include <exception>
#include <new>

#include "common.h"
#include "core/error.h"

int main(int argc, char** argv) {
  using namespace longkv::cli;
  CLI::App app{"longkv: run Llama-family models with a compressed KV cache", "longkv"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "longkv 0.1.0");
  register_run(app);
  register_perplexity(app);
  register_inspect(app);
  register_convert(app);
  register_bench(app);
  register_needle(app);
  register_fidelity(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version leave through CLI11 (exit code 0). A usage error
    // is one "error: " line like every other error, with exit code 2.
    if (e.get_exit_code() == 0) return app.exit(e);
    std::fflush(stdout);
    std::fprintf(stderr, "error: %s (see longkv --help, or longkv SUBCOMMAND --help)\n", e.what());
    return 2;
  } catch (const longkv::Error& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {  // a library's own exception (a bug here, but one line, not an abort)
    std::fflush(stdout);
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return g_exit_code;
}
