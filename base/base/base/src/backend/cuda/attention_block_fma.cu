// The decode block kernel's instances (attention_block_kernel.cuh) whose tiles
// come through shared memory and are folded with per-lane FMAs
// (decode_tile.cuh): 2 and 3 stages, the comparison to the tensor-core step
// (CudaTuning::attn_block_mma off). A translation unit of their own, so that
// nvcc compiles them beside the others.
#include "backend/cuda/attention_block_kernel.cuh"

namespace longkv::cuda::attn_block {

template void launch_block_staged<64, 2, false>(const DecodeBlockArgs&, int, cudaStream_t, int*);
template void launch_block_staged<128, 2, false>(const DecodeBlockArgs&, int, cudaStream_t, int*);
template void launch_block_staged<64, 3, false>(const DecodeBlockArgs&, int, cudaStream_t, int*);
template void launch_block_staged<128, 3, false>(const DecodeBlockArgs&, int, cudaStream_t, int*);

}  // namespace longkv::cuda::attn_block
