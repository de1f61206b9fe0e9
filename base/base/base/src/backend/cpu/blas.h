// OpenBLAS configuration shared by every caller of sgemm.
#pragma once

namespace longkv {

// Our ThreadPool already splits work across cores; OpenBLAS threads on top
// would oversubscribe them, so every sgemm we issue runs single-threaded.
// Idempotent and cheap; call before the first sgemm.
void blas_use_single_thread();

}  // namespace longkv
