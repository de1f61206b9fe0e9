// The decode block kernel's instances (attention_block_kernel.cuh) whose tiles
// come through shared memory and are folded on tensor cores
// (decode_tile_mma.cuh): 2, 3 and 4 stages, the default step's among them.
// A translation unit of their own, so that nvcc compiles them beside the
// others.
#include "backend/cuda/attention_block_kernel.cuh"

namespace longkv::cuda::attn_block {

template void launch_block_staged<64, 2, true>(const DecodeBlockArgs&, int, cudaStream_t, int*);
template void launch_block_staged<128, 2, true>(const DecodeBlockArgs&, int, cudaStream_t, int*);
template void launch_block_staged<64, 3, true>(const DecodeBlockArgs&, int, cudaStream_t, int*);
template void launch_block_staged<128, 3, true>(const DecodeBlockArgs&, int, cudaStream_t, int*);
template void launch_block_staged<64, 4, true>(const DecodeBlockArgs&, int, cudaStream_t, int*);
template void launch_block_staged<128, 4, true>(const DecodeBlockArgs&, int, cudaStream_t, int*);

}  // namespace longkv::cuda::attn_block
