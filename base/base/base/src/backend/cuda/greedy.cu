// Greedy decoding on the device (milestone 28): the argmax of a step's
// logits becomes the next step's token without a trip through the host.
//
// Every block reduces a strided share of the logits to one 64-bit key and
// folds it into GreedyState::best with atomicMax; the block that finishes
// last (a ticket counter, as in the classic threadfence reduction) decodes
// the winner, writes it where the next step's embedding lookup reads its id,
// moves the step position on by one, appends the id to the host-visible ring
// and resets the state for the next step. So a captured step replays as is:
// nothing in it depends on which step of a generation it is.
//
// The key (logit_key, cuda_common.cuh) orders like the CPU's argmax
// (sampler.cpp): the largest value, and among equal values the lowest
// index; a NaN never wins unless every logit is one (then index 0).
#include <algorithm>

#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/pdl.cuh"

namespace longkv::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void greedy_next_kernel(const float* __restrict__ logits, int n, GreedyState* st, int32_t* ids, int* dpos,
                                   int32_t* ring, int ring_mask) {
  pdl_wait();  // the logits come from the GEMV right before
  unsigned long long best = 0;
  for (int i = blockIdx.x * kThreads + threadIdx.x; i < n; i += gridDim.x * kThreads)
    best = max(best, logit_key(logits[i], i));
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) best = max(best, __shfl_xor_sync(0xffffffffu, best, o));
  __shared__ unsigned long long warp_best[kThreads / 32];
  if (threadIdx.x % 32 == 0) warp_best[threadIdx.x / 32] = best;
  __syncthreads();
  if (threadIdx.x != 0) return;
  for (int w = 1; w < kThreads / 32; ++w) best = max(best, warp_best[w]);
  atomicMax(&st->best, best);
  __threadfence();  // this block's maximum is visible before its ticket
  if (atomicAdd(&st->done, 1u) != gridDim.x - 1) return;  // not the last block
  __threadfence();
  const unsigned long long win = atomicAdd(&st->best, 0ull);
  const unsigned low = static_cast<unsigned>(win & 0xFFFFFFFFull);
  const int32_t id = win == 0 ? 0 : static_cast<int32_t>(0xFFFFFFFFu - low);
  ids[0] = id;
  if (dpos) *dpos += 1;
  ring[st->count & static_cast<unsigned>(ring_mask)] = id;
  st->count += 1;
  st->best = 0;
  st->done = 0;
  __threadfence_system();  // the ring is host memory
}

}  // namespace

void greedy_next(const float* logits, int n, GreedyState* st, int32_t* ids, int* dpos, int32_t* ring, int ring_mask,
                 cudaStream_t s) {
  LONGKV_CHECK(n >= 1, "greedy_next needs at least one logit");
  // Enough blocks for the HBM stream (a row of 128K floats is 0.5 MiB), few
  // enough that the atomics and the ticket stay cheap.
  const int blocks = std::min(132, (n + kThreads * 8 - 1) / (kThreads * 8));
  launch_maybe_pdl(cuda_tuning().pdl, greedy_next_kernel, dim3(blocks), dim3(kThreads), 0, s, logits, n, st, ids, dpos,
                   ring, ring_mask);
}

}  // namespace longkv::cuda
