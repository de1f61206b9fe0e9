#include "backend/cpu/blas.h"

#include <cblas.h>

#include <mutex>

namespace longkv {

void blas_use_single_thread() {
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(1); });
}

}  // namespace longkv
