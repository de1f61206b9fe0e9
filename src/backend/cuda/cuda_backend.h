// The CUDA backend's seam: what CPU code (tools, tests) may call without
// CUDA headers. Built from src/backend/cuda/*.cu with -DLONGKV_CUDA=ON; with
// the option OFF, cuda_stub.cpp provides the same entry points and they
// report "longkv was built without CUDA (-DLONGKV_CUDA=ON)".
//
// Threading: one CudaModel is used from one host thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/rope.h"
#include "kv/kv_cache.h"
#include "model/llama_model.h"
#include "model/model_weights.h"

namespace longkv {

// True if a CUDA device can be used; otherwise false and *why (if non-null)
// says why in one line ("no CUDA device: ..." or the build-without-CUDA text).
bool cuda_available(std::string* why);

// "NVIDIA H100 80GB HBM3, 132 SMs, 79.1 GiB" (throws if unavailable).
std::string cuda_device_description();

// Device-to-device copy bandwidth in GB/s (1e9 B/s), counting bytes read plus
// bytes written, best of several cudaMemcpy of `bytes` (the decode roofline).
double cuda_copy_bandwidth_gbs(size_t bytes = size_t(1) << 30);

// Free and total device memory in bytes (cudaMemGetInfo).
void cuda_memory_info(size_t* free_bytes, size_t* total_bytes);

// How matrix products of more than one token (prefill) are computed.
//   f16: weights dequantized to f16, activations rounded to f16, tensor-core
//        GEMM with f32 accumulation (fast; ~1e-3 relative error per product);
//   f32: weights dequantized to f32, f32 SGEMM (the CPU engine's arithmetic).
// Single-token products (decode) always use the f32 GEMV kernels.
enum class CudaGemm { f16, f32 };
inline const char* cuda_gemm_name(CudaGemm g) { return g == CudaGemm::f16 ? "f16" : "f32"; }
inline bool parse_cuda_gemm(const std::string& s, CudaGemm* out) {
  if (s != "f16" && s != "f32") return false;
  *out = s == "f16" ? CudaGemm::f16 : CudaGemm::f32;
  return true;
}

struct CudaModelOptions {
  std::string kv_mode = "f16";  // GPU KV modes: "f16" (dense), k<B>v<B> (B = 8, 4, 3, 2, 1; G = 32/64/128; post-RoPE)
  int max_tokens = 0;           // KV capacity per sequence
  CudaGemm gemm = CudaGemm::f16;
  // Single-token steps run as CUDA graphs: a step is captured once per
  // replay key of the caches (f16: the split bucket; quantized: the group
  // count, steps that complete a group run directly) and replayed as is at
  // later positions. Same kernels, same results either way; on by default
  // since milestone 6 (faster with the default kernels, docs/cuda-notes.md).
  // LONGKV_CUDA_GRAPHS=1 / =0 in the environment overrides this field (for
  // speed comparisons).
  bool graphs = true;
  // Sequences with KV caches of their own, max_tokens each (batched decode,
  // CudaModel::forward_batch; milestone 50). Sequence 0 is the one forward,
  // forward_view, forward_top and decode_greedy use. 1..kMaxBatchSeqs.
  int max_seqs = 1;
};
// The most sequences a model holds for batched decode (the batch GEMV's
// limit), and the most streams a batched step's attention spreads over.
constexpr int kMaxBatchSeqs = 32;
constexpr int kMaxBatchStreams = 4;
// A batched step's streams and v3 grid share (CudaTuning::batch_streams and
// batch_v3_wave_share, 0 = by the caches' kind) over quantized or dense caches.
int batch_streams_for(bool quantized);
int batch_v3_wave_share_for(bool quantized);

// Whether decode steps will run as CUDA graphs for a model created with
// default options: LONGKV_CUDA_GRAPHS=0 no, =1 or unset yes. Tools print it.
bool cuda_graphs_default();

// Kernel variants, process-wide, for tests and speed comparisons; the
// defaults are the fast paths. Set before creating models/caches.
struct CudaTuning {
  bool quant_decode_mma = true;  // quantized-KV decode on tensor cores (false: the format-generic FMA kernel)
  // With quant_decode_mma and quant_decode_v3 = false: 0 = milestone 4's tensor-core kernel;
  // 3 / 4 = milestone 7's variant (16-byte code loads, registers capped for
  // 3 / 4 blocks per SM; 4 only with <= 4 query heads per KV head, else 3).
  // Same results; measured 3% / 21% slower on H100 at 131K
  // (docs/cuda-notes.md, milestone 7), kept for comparison.
  int quant_decode_v2 = 0;
  // With quant_decode_mma: milestone 9's kernel (kv_quant_decode_v3.cu:
  // records staged by cp.async, scores kept in registers, value weights
  // rounded once to f16); the default since it measured faster on H100
  // (docs/cuda-notes.md, milestone 9). false: milestone 4's / quant_decode_v2.
  bool quant_decode_v3 = true;
  int quant_decode_stages = 0;  // v3: groups staged per warp, 2 or 3 (0: 3 for k + v <= 8 bits, else 2)
  // Milestone 24 (key "qqs"): v3's per-lane q (2^(10 - pos) q scale) in
  // shared memory once per block, read per group, instead of 16 registers
  // held through the loop (the one-launch step's 3-stage v3 with 4 query
  // heads per KV head only). Same bits; H200, k2v2 at 131K -1.8%
  // (docs/cuda-notes.md, milestone 24). false: in registers.
  bool quant_decode_qsmem = true;
  // Milestone 25 (key "vsub"): v3's key and value code operands as exact
  // f16 subnormals (code_pair_sub), so neither B build has a "1 +" part to
  // take back out. false: milestone 9's 1 + code 2^(pos - 10) operands (a
  // comparison, k2v2 head_dim 128 or 64 one-launch step only; elsewhere v3
  // always takes the subnormals).
  bool quant_code_subnormal = true;
  // Milestone 25 (key "khl"): v3's key B operand as hi/lo f16 halves, so the
  // scores are exact in the codes. false (the default since milestone 26,
  // same scope as vsub; elsewhere v3 always takes hi/lo): one f16 rounding
  // of q s, as in a kernel that rounds q to f16. H200, k2v2 at 131K: v3
  // -2.3..-3.6%, the step -1..-2%; the evaluation model's perplexity through
  // the decode step moved 0.13% (the GPU's hi/lo run is 0.08% from the CPU's,
  // bar 0.5%; docs/cuda-notes.md, milestone 26). Milestone 48: k4v4's
  // one-launch step (head_dim 128 or 64, <= 4 query heads a KV head) too.
  bool quant_key_hilo = false;
  // Milestone 27 (key "qcut"): a decode step's cut of the quantized cache
  // (one group from the fp16 window, the rest of the window moved down) in
  // one launch (cut_group_kernel), bit for bit the records and slots of the
  // four operations it replaces (false: those, as before).
  bool quant_cut_fused = true;
  // Milestone 27 (key "gcut"): the step that cuts a group (cut=attend) is a
  // replay key of its own instead of a direct step (false: direct, as before).
  bool graph_cut = true;
  // Milestone 27 (key "gah"): right after a single-token step is launched,
  // the next step is captured (on a second stream, records only) when its
  // key has no executable yet, so the GPU does not wait for the capture
  // (false: captured when it is due, the GPU idle meanwhile).
  bool graph_ahead = true;
  // v3: preferred shared-memory carveout in percent (-1: the driver's
  // choice; see attn_block_carveout).
  int quant_decode_carveout = -1;
  // Decode attention's fp16-part split kernel and merge launched with
  // programmatic dependent launch (they start while the kernel before them
  // drains and wait on the device). LONGKV_CUDA_TUNING "qdec=0/1" sets this
  // and quant_decode_v3 together (milestone 9's decode attention; both on
  // by default).
  bool decode_pdl = true;
  int dense_decode_steps = 8;    // f16 split kernel: token steps per tile, K+V loads in flight per lane (4 or 8)
  // Off by default: measured slower on H100 (docs/cuda-notes.md, milestone 5).
  bool gemv_rows = false;        // block-format GEMV: warp-per-rows kernel (false: milestone 2's slab kernel)
  // RMSNorm / SwiGLU made in the block-format GEMV's activation load (rows
  // or slab kernel; false: their own kernels before the GEMV).
  bool fuse_activation = true;
  // Milestone 8, the decode step's fixed part (docs/cuda-notes.md):
  // slab GEMV with the first row batch's weights loaded before anything
  // else and the next batch's loads in flight during each batch's reduction
  // (false: milestone 2's order, load -> use -> reduce).
  bool gemv_pipe = true;
  // Milestone 13: the Q4_0 slab GEMV with int8 activations (one scale per
  // 32, __dp4a; ~0.5% error per output on top of the 4-bit weights', the
  // same order as llama.cpp's MMVQ; weight_decode.cuh, quantize_x_i8);
  // milestone 61: Q4_K, Q5_K and Q6_K too, pipelined (dot_sums_i8); Q2_K,
  // Q3_K, Q4_1, Q5_0, Q5_1, IQ4_NL, IQ4_XS (weight_decode_q32.cuh); and
  // since milestone 64 Q8_0.
  // false: exact f32 products of the dequantized weights (the CPU's).
  bool gemv_i8x = true;
  // Programmatic dependent launch for the slab GEMV and RoPE: a kernel starts
  // while its predecessor drains, loading weights until the data it needs is
  // complete (false: plain stream order).
  bool pdl = true;
  // Milestone 8b: interleaved RoPE of q and k made in the q|k|v GEMV's store
  // (false: rope_kernel after the GEMV). Off: not measured faster on H100
  // (within run-to-run spread, docs/cuda-notes.md milestone 8b).
  bool gemv_rope = false;
  // Slab GEMV: most units (a row's 16/32-element pieces) one launch covers;
  // longer rows run as accumulating column slices (<= 512; fewer warps a
  // block, more blocks per SM).
  int slab_slice = 512;
  // Rows per batch of the Q4_0 (Q4_1, IQ4_NL) int8 slab GEMV (LONGKV_CUDA_TUNING "grb=8|16"
  // for every matrix). 0: 16 whenever that still gives every SM a block,
  // else 8 (milestone 17: llama3-8b's wo at 16 rows, H200, depth 0 -3.5%;
  // until then 8 rows unless 8-row batches took more than one pass).
  int gemv_rows_per_batch = 0;
  // Milestone 17 (key "glu"): w_gate / w_up uploaded with their rows
  // interleaved, and the gate|up GEMV of a single-token step writes
  // h = silu(gate) up in its store (the same values), so w_down's GEMV reads
  // h plainly instead of both halves with an exp per element. H200,
  // llama3-8b Q4_0: depth 0 -6%, k2v2 at 131K -2.7%.
  bool gemv_glu = true;
  // Milestone 17 (key "gpre", off): a Q4_0 int8 GEMV over rows of 128 units
  // (4096 columns) that takes one pass of 16-row batches runs as a kernel of
  // 3 blocks an SM with more registers, requesting all 16 rows of its batch
  // before the PDL wait (else 8 before, 8 after making the activation).
  // Measured mixed: depth 0 -2%, k2v2 at 131K +2% (docs/cuda-notes.md).
  bool gemv_prefetch = false;
  // Milestone 21 (key "gxc"): the pipelined Q4_0 int8 GEMV loads a warp's 32
  // units of its activation (and of RMSNorm's weight) coalesced, 512
  // contiguous bytes an instruction, and hands each lane its unit through
  // shared memory, instead of each lane loading its own 128 bytes (every
  // instruction of which touched 32 lines). Same values.
  // bench/cuda_barrier_probe.cu: a 4096 x 4096 link of the PDL chain 5.76 ->
  // 5.29 µs. Q4_1, Q5_0, Q5_1, IQ4_NL and IQ4_XS too (slab_xc).
  bool gemv_x_coalesced = true;
  // Milestone 36 (key "gx8[=N]", off; "gx8" = 3): the residual GEMVs write
  // the next RMSNorm GEMV's x in int8 (GemvAct::X8), in single-token steps
  // of Q4_0 weights. Bits: 1 down writes it for the next q|k|v (or the output
  // GEMV), 2 wo writes it for gate|up, 4 the readers request 8 rows of their
  // first 16-row batch before the PDL wait (as the f32-x kernels), not 16;
  // 8 (timing only) gate|up does not read what wo writes; 16 (timing only,
  // with 8; milestone 37) wo runs the writer kernel but stores no int8 x:
  // the default kernel's work as a kernel of its own; 32 (milestone 38)
  // every plain 16-row int8 GEMV of the step, reading, writing or neither,
  // runs one kernel (gemv_slab_kernel's X8 = 4), not the default kernel
  // beside a reader and a writer of their own: behind v3 a GEMV whose kernel
  // is not the step's usual one loses ~5 us. 64 (with 32): that kernel's
  // readers request their whole first batch before the PDL wait. Default 99
  // (1 | 2 | 32 | 64; milestone 39): 2.6% faster than 0 for k2v2 at 131K and
  // 4% at depth 0, faster in every mode and depth measured (f16, k4v4, k2v2
  // x 0, 32K, 131K); gx8=35 gains about half as much. Key "gx8=0" for the
  // f32-x kernels.
  int gemv_x8 = 99;
  // f16 prefill attention (CudaGemm::f16) through the tiled FlashAttention kernel (flash_prefill.cu);
  // false: milestone 1's cuBLAS path (S materialized in f32). The f32 path always uses cuBLAS.
  bool flash_prefill = true;
  // Milestone 11: a single-token step's attention on the f16 cache as one
  // kernel (RoPE of q and k, the append, split-K decode and the merge;
  // attention_block.cu). false: rope_kernel (or the GEMV's RoPE), the append,
  // split and merge kernels.
  bool attn_block = true;
  // Milestone 13: that kernel's tiles of k and v through shared memory by
  // cp.async, this many stages (S - 1 tiles in flight behind the one being
  // folded; 2 or 3). 0: each tile loaded into registers (milestone 11).
  int attn_block_stages = 2;
  // Milestone 42 (key "astl=T"): from T tokens (the step's split bucket,
  // decode_split_bucket) the f16 decode block takes attn_block_stages_long
  // stages instead (0: never). H200, llama3-8b Q4_0 (head_dim 128), f16
  // with 3 stages against 2: 4K -1.4%, 16K -1.1%, 32K -1.0%, 64K -2.7%,
  // 131K -0.6..-1.0%, but depth 0 +0.6% (and k2v2 at depth 0, the same
  // kernel on a short fp16 part, +0.8%); at head_dim 64 (llama-1b's shape)
  // 4K +0.8%, 16K -1.2%, else level; docs/cuda-notes, milestone 42.
  // "astg=N" sets both counts, so every length takes N.
  int attn_block_stages_long = 3;
  int attn_block_long_tokens = 4096;
  // Milestone 14: with stages, that kernel's tile step on tensor cores
  // (decode_tile_mma.cuh: q.k and p.v as m16n8k16 MMAs, q and p as hi/lo f16
  // pairs). false: per-lane FMAs (decode_tile.cuh).
  bool attn_block_mma = true;
  // That kernel's preferred shared-memory carveout, percent of the SM's
  // unified L1/shared memory, and the blocks per SM it allows
  // (resident_warps_smem; -1: the driver's choice). 70% = 2 blocks of the
  // 2-stage tensor-core kernel: left to the driver, 3 blocks made every SM
  // switch to its largest shared-memory split and back each layer, ~9 us a
  // layer at any depth (H200, docs/cuda-notes.md milestone 14).
  int attn_block_carveout = 70;
  // Milestone 11: a quantized cache's steady single-token append (the fp16
  // window's new slot) launched with PDL, so it starts while RoPE drains.
  // Off: no measurable gain on H200 (k2v2 within run-to-run spread,
  // docs/cuda-notes.md milestone 11).
  bool append_pdl = false;
  // Milestone 11 (on since milestone 14, when it was first run and checked
  // on a GPU): a quantized cache's steady steps before its first group (all
  // tokens in the fp16 part) take the f16 cache's one-kernel step on that
  // part (needs attn_block too). k2v2 at depth 0 on H200: 2.27 -> 2.07 ms.
  bool quant_block = true;
  // Milestone 15: a quantized cache's other steady steps (groups exist) in
  // two launches -- the decode block over the fp16 part (it rotates and
  // appends the new token), then the v3 kernel rotating q itself, combining
  // each block's warps and merging in its last block per KV head -- instead
  // of RoPE, append, v3, the fp16 part's split kernel and the merge (needs
  // attn_block, quant_block and the v3 kernel). H200, k2v2: 32K -4%, 131K
  // unchanged (docs/cuda-notes.md, milestone 15).
  bool quant_fused = true;
  // Milestone 19 (key "rotk"): a ":rot" cache's fused step rotates inside
  // the inner cache's decode block and v3 kernel (DecodeRope::hadamard), no
  // launch of its own. false: milestone 18's rotation kernels before and
  // after the inner step.
  bool rot_in_step = true;
  // Milestone 20 (key "rotq"): with rot_in_step, the v3 kernel rotates its q
  // in registers (hadamard_pairs) instead of through shared memory
  // (hadamard_warp): the same bits; H200, k4v4:rot at 131K -2.4%
  // (docs/cuda-notes.md, milestone 20). false: the shared-memory rotation.
  bool rot_q_regs = true;
  // Milestone 29 (key "qearly"): the v3 kernel of the two-launch step loads
  // its raw q, the RoPE frequencies and the step's position before it asks
  // for its first records, not after; the same bits. Milestone 30 (key
  // "qeg=N"): only when a KV head holds at least N groups of codes (0:
  // always; 1280 groups = 40K tokens, between the depths measured). H200,
  // llama3-8b: the early loads cost 0.9-2.2% a step at 32K tokens (k2v2 and
  // k4v4), were even at 16K and gained from 48K on (k2v2 -0.7% at 48K,
  // -2.8% at 64K, -1.4% at 128K; k4v4 -0.2..-0.5% at 48K-128K); a rule by
  // groups a warp missed k4v4 at 32K (docs/cuda-notes.md, milestone 30).
  // qearly=0: never.
  bool quant_q_early = true;
  int quant_q_early_groups = 1280;
  // Diagnostics of the two-launch step (LONGKV_CUDA_TUNING "qfx=N"; wrong
  // results, timing only): bit 1 leaves q unrotated in v3, 2 skips the merge,
  // 4 skips the block combine and the merge, 8 sizes the v3 grid to a whole
  // wave (no block per KV head left to the decode block).
  int quant_fused_probe = 0;
  // Diagnostics of a single-token step (LONGKV_CUDA_TUNING "sfx=N"; wrong
  // results, timing only): each layer's launches left out -- bit 1 the q|k|v
  // GEMV, 2 the attention, 4 the wo GEMV, 8 the gate|up GEMV, 16 the down
  // GEMV -- so the step's time without them is what they cost in the pipeline;
  // 32 returns no logits (their copy to the host left out).
  int step_probe = 0;
  // Milestone 26 (key "lpage"; a comparison): CudaModel::forward_view copies
  // the logits into pageable memory, as forward into a caller's vector does
  // (the bench's and `longkv run`'s way before forward_view).
  bool logits_pageable = false;
  // Milestone 28 (key "gdev"): greedy generation takes its argmax on the
  // device (CudaModel::decode_greedy: the next token fed back on the GPU,
  // 4 bytes to the host instead of the logits); `longkv run --temp 0` and
  // the bench's decode loop use it. false: both as before, a forward_view a
  // step and the argmax on the host.
  bool greedy_device = true;
  // Milestone 28 (key "gpipe"): decode_greedy launches step j + 1 before it
  // waits for step j's token, so the GPU never waits for the host between
  // steps. false: each step's token is read before the next is launched.
  bool greedy_pipeline = true;
  // Milestone 30 (key "gtop"): `longkv run` with a top-k sampler (and no
  // repetition penalty) takes each step's k candidates from the device
  // (CudaModel::forward_top, Sampler::sample_top: the same tokens). false:
  // the row of logits to the host and the whole sampler there.
  bool sample_top_device = true;
  // Milestone 50 (key "bst=N", 1..kMaxBatchStreams; "bst2" = 2, "bst2=0" =
  // 1): a batched step (CudaModel::forward_batch) attends on N streams, its
  // sequences taking them in turn, each stream with an attention workspace
  // of its own, so that one sequence's attention tail overlaps the next
  // one's start. H200, llama3-8b Q4_0 at 131K, 2 against 1: k2v2 24
  // sequences 49.7 -> 41.5 ms a step, f16 4 sequences 21.1 -> 20.3
  // (docs/cuda-notes.md, milestone 50). 0 (the default since milestone 55):
  // 4 streams over quantized caches, 2 over dense ones (batch_streams_for).
  int batch_streams = 0;
  // Milestone 55 (key "bvw=N", 1..4): in a batched step each sequence's v3
  // grid is 1/N of the wave a single stream's takes (more groups a warp), so
  // that sequences' v3 launches on several streams are resident side by side
  // instead of each filling the card and its tail waiting for the next one's
  // start. 0 (the default): 2 with 4 or more streams, else 1 (the single
  // stream's grid). A rule of the setting, not of the batch, so a
  // sequence's bits stay those it gets alone. H200, llama3-8b Q4_0, k2v2,
  // against milestone 50's 2 streams and whole waves (milestone 55, three
  // calls): 32 sequences at 32K -11 to -12%, 24 at 131K -1.0 to -1.9%, 4
  // sequences +0.6 to +0.9%; bst=4 alone -4.6% and +0.3%, bvw=2 on 2 streams
  // +9.6% and +5.4%. f16 on 4 streams: 0.6-2.1% slower, so dense caches keep 2.
  int batch_v3_wave_share = 0;
  // Milestone 55 (key "b1l"; "bvg=N" the groups a warp): a batched step's
  // quantized attention (every sequence's decode block, then every
  // sequence's v3) in two launches a layer instead of two a sequence on
  // batch_streams streams (decode_block_batch). v3's split in those
  // launches: bvg groups a warp, whatever the batch (the same bits for a
  // sequence in any batch under the setting). Steps whose caches the batched
  // kernels do not take (f16, forms other than the default ones, a sequence
  // without groups yet) go sequence by sequence. Milestone 55 measured it
  // (H200, llama3-8b Q4_0, k2v2) against the default streams: 32 sequences
  // at 32K 17.57 ms with bvg=32 against 18.5-18.8 (-5%), 24 at 131K
  // 34.66-34.71 with bvg=128 against 35.06-35.10 (-1%), but 4 at 131K
  // 9.1-10.4 ms against 9.0 (fewer blocks than a wave), and left it off.
  // On by default since milestone 56, with 12 blocks a KV head (bvb) and
  // the shared carveout (b1lc), in interleaved pairs against b1l=0: 4-32
  // sequences at 32K 3.0-4.4% faster, 4-8 at 131K 1.0-4.5%, 24 at 131K
  // level (+0.1%; docs/cuda-notes.md, milestone 56).
  bool batch_one_launch = true;
  int batch_v3_groups = 16;
  // Milestone 56 (key "bvb=N", 0..255): b1l's v3 split as N blocks a KV
  // head and sequence instead of bvg groups a warp (milestone 55's best
  // split at both depths was ~8 blocks a KV head: bvg=32 at 32K, 128 at
  // 131K). Still a rule of each sequence's length. 0: bvg decides. 12 (the
  // default): at 4-8 sequences of 131K, 8 leaves most of a wave empty
  // (+3-5% against the streams) where 12 gains 1.0-4.5%.
  int batch_v3_blocks = 12;
  // Milestone 56 (key "b1lc"; "b1lc=0" off): b1l's two kernels ask the SMs
  // for the largest shared-memory carveout, so that v3's blocks start on SMs
  // that still run the decode blocks (whose own choice, 64 KiB, kept v3 out
  // of every SM the 192 decode blocks of 24 sequences held: milestone 56's
  // timeline, v3 starting 2.3 us before their end, 17.9 us a layer).
  bool batch_carveout = true;
  // Milestone 51 (key "gbs=N": auto, 0, 1, 2, 3, 4 or 6): N >= 2: the batch
  // GEMV copies its weight chunks with cp.async through a ring of N slots a
  // warp, N - 1 chunks ahead, with blocks that walk row tiles and PDL
  // launches (0: milestone 50's form, one chunk in flight a warp in
  // registers, a block a tile; 1: that form with the weights' loads not
  // allocated in L1). The same bits in every form. -1 ("auto", the default):
  // 2 slots for up to 8 tokens and for more than 24, milestone 50's form
  // between (gemv_batch.cu, batch_form: H200, llama3-8b at 131K, f16 4
  // sequences 20.53 -> 19.87 ms a step, k2v2 4 9.61 -> 8.92).
  int gemv_batch_stages = -1;
  // Milestone 51 (key "gbt=N", 0..4096): row tiles of 16 a block of the ring
  // form walks; 0: as many blocks as the GPU holds at once.
  int gemv_batch_tiles = 0;
  // Milestone 51 (key "gbx"): the ring form copies each chunk's int8
  // activations into its slot beside the weights when the batch has at most
  // 16 tokens, in at most 3 slots (false: the fold loads them through L1).
  bool gemv_batch_x_smem = true;
  // Milestone 53 (key "gbr=N", 0, 2 or 3): for 9-32 tokens and matrices of
  // 8,192-32,768 rows or of 8,192 columns and more (gemv_batch.cu,
  // rowsplit_takes) the batch GEMV's row-split form with N stages (a block's
  // 8 warps own 16 rows each and share each chunk's activations; the columns
  // split over 8 blocks, added by a row tile's last block in milestone 50's
  // order: the same bits). 0: the form gemv_batch_stages picks. Default 2:
  // H200, llama3-8b Q4_0, batched steps at the card's 80 GB batch, two
  // interleaved pairs: f16 18 sequences at 32K -3.6%, k2v2 32 at 32K -3.7%,
  // k2v2 24 at 131K -0.8% (docs/cuda-notes.md, milestone 53).
  int gemv_batch_row_stages = 2;
  // Milestone 57 (key "gbh=S", 0, 2 or 3; "gbh" alone 2): the batch GEMV
  // with f16 activations on m16n8k16 MMAs in row-split blocks of S stages
  // (gemv_batch_h16.cu): the weights dequantized once per unit, f32 sums
  // over the row; another rule than int8's (f16(d (n - 8)) f16(x)). 0: the
  // int8 forms above. Exact products (gemv_i8x off) take precedence.
  // Default 2: H200, llama3-8b Q4_0, batched steps at the card's 80 GB
  // batch, two interleaved pairs against 0: k2v2 32 sequences at 32K -5.6%,
  // 24 at 131K -1.2%, f16 18 at 32K -1.9%, f16 4 at 131K level; but k2v2 8
  // sequences at 32K +2.1% (docs/cuda-notes.md, milestone 57).
  int gemv_batch_h16 = 2;
  // Milestone 57 (key "gbhd=N"): the f16 batch GEMV takes only matrices of
  // at least N rows or columns, the others keep the int8 forms (a rule of
  // the shape, so a token's bits do not depend on the batch). Default 8192:
  // llama3-8b's gate, up, down and output matrices, not q|k|v (6,144 x 4,096)
  // nor wo, where it measured slower (H200, call 2: q|k|v 16.4 -> 21.3 us at
  // 24 tokens). 0: every matrix.
  int gemv_batch_h16_dim = 8192;
  // Milestone 57 (key "gbhb=N"): the blocks the f16 batch GEMV aims at for a
  // matrix of at most 256 row tiles of 128 rows: its column slices are
  // ceil(N / row tiles), at most 8 (gemv_batch_h16.cu, h16_slices).
  int gemv_batch_h16_blocks = 384;
  // Milestone 58 (key "bfa"): a batched step's RMSNorm and SwiGLU made by
  // the batch GEMV's activation converter (BatchAct, batch_act.cuh) instead
  // of kernels of their own, and gate|up as one batch GEMV over the stacked
  // (or interleaved) matrix: four launches fewer a layer. Off: milestone
  // 57's step (rmsnorm, gate, up, swiglu as launches of their own).
  bool batch_fused_act = true;
};
CudaTuning& cuda_tuning();
// The cp.async stages of the f16 decode block for a step over split_n
// tokens (its split bucket): attn_block_stages_long from
// attn_block_long_tokens on, unless the tiles go through registers (0).
// Inline: the rule is host logic, tested in builds without CUDA too.
inline int attn_block_stages_for(int split_n) {
  const CudaTuning& t = cuda_tuning();
  const bool long_cache = t.attn_block_long_tokens > 0 && split_n >= t.attn_block_long_tokens;
  return t.attn_block_stages > 0 && long_cache ? t.attn_block_stages_long : t.attn_block_stages;
}
// One line naming the variants in use ("GEMV rows, RMSNorm/SwiGLU fused ...").
std::string cuda_tuning_description();
// GEMV launches that passed x in int8 form between two GEMVs (either side;
// CudaTuning::gemv_x8), since the process started: the tests' proof that
// the form ran; narrow_only: those that ran the narrow kernel (4-warp
// blocks, every row requested before the PDL wait). 0 without CUDA.
int64_t cuda_gemv_x8_launches(bool narrow_only = false);
// GEMV launches that ran gx8's one kernel (CudaTuning::gemv_x8 bit 32),
// since the process started. 0 without CUDA.
int64_t cuda_gemv_one_kernel_launches();

// The most candidates CudaModel::forward_top selects on the device.
constexpr int kMaxDeviceTopK = 64;

// A Llama-family model resident on the GPU: weights uploaded once in their
// stored formats (row stride padded to 16 bytes), one KV cache per layer in
// device memory, f32 activations.
class CudaModel {
 public:
  // Uploads `w` (which may be freed afterwards). Throws Error when CUDA is
  // unavailable, the KV mode is not supported on the GPU, or memory is short.
  static std::unique_ptr<CudaModel> create(const ModelWeights& w, const CudaModelOptions& o);
  virtual ~CudaModel() = default;

  virtual const ModelConfig& config() const = 0;
  virtual std::string kv_mode() const = 0;
  virtual CudaGemm gemm() const = 0;
  virtual bool graphs() const = 0;  // decode steps replayed as CUDA graphs
  // Single-token steps captured (and instantiated or updated) / replayed
  // without capture so far.
  virtual int graph_captures() const = 0;
  virtual int graph_replays() const = 0;
  // Host wall time of single-token steps by how they ran, since the last
  // reset: a replay launches the captured executable; a capture first
  // records the step and updates (or instantiates) the executable while the
  // GPU waits; a direct step launches kernel by kernel. Each includes the
  // logits' copy and the wait for the step.
  struct StepTimes {
    int replayed = 0, captured = 0, direct = 0;
    double replayed_s = 0, captured_s = 0, direct_s = 0;
    double capture_s = 0;  // of captured_s: recording + update/instantiation alone
    int ahead = 0;         // next steps captured ahead (CudaTuning::graph_ahead), while the GPU ran
    double ahead_s = 0;    // their host time (inside the steps' wall times)
    // With time_gpu set, replays are bracketed by device events: replayed_gpu_s
    // is the GPU's share of replayed_s, the rest the host's between steps.
    bool time_gpu = false;
    double replayed_gpu_s = 0;
    // decode_greedy's steps launched before the previous step's token was
    // read (CudaTuning::greedy_pipeline): they are counted by kind above,
    // but their *_s are only the host's time to launch them.
    int pipelined = 0;
  };
  virtual StepTimes& step_times() = 0;

  // Same contract as LlamaModel::forward with the model's own caches:
  // positions pos..pos+n-1, every cache holds exactly `pos` tokens. logits
  // (host memory) as in LlamaModel; may be null. Returns after the logits
  // are on the host (or, with null logits, after the work is queued).
  virtual void forward(const int32_t* tokens, int n, int pos, float* logits, bool all_logits) = 0;
  // forward with the last position's logits left in the model's own pinned
  // host buffer (n_vocab floats, valid and writable until the next call):
  // one DMA from the device instead of a copy staged through the driver
  // into pageable memory (~55 us a llama3-8b step on the H200).
  virtual float* forward_view(const int32_t* tokens, int n, int pos) = 0;
  // forward with only the last position's k first candidates brought to
  // the host (1 <= k <= kMaxDeviceTopK): k (logit, id), larger logits first
  // and equal logits by the lower id (candidate_before, runtime/sampler.h),
  // selected on the GPU (milestone 30) -- k pairs instead of a row of
  // logits, for a sampler with a top-k cut (Sampler::sample_top). Valid
  // until the next call.
  virtual const std::pair<float, int32_t>* forward_top(const int32_t* tokens, int n, int pos, int k) = 0;
  // Greedy generation on the device: feeds `token` at `pos` (== kv_size()),
  // then each token it generates, taking every argmax on the GPU (ties: the
  // lowest id, as longkv::argmax). emit(t) receives the generated tokens in
  // order; generation ends after max_new of them or when emit returns
  // false. Returns how many were emitted. The last emitted token is not fed,
  // except after an early stop with CudaTuning::greedy_pipeline, whose next
  // step was already launched: kv_size() then counts the stopping token too.
  virtual int decode_greedy(int32_t token, int pos, int max_new, const std::function<bool(int32_t)>& emit) = 0;

  // Batched decode (milestone 50): one token for each of n sequences
  // (seqs[i] distinct, < max_seqs()), token i at position seq_size(seqs[i]).
  // Every matrix is read once for the n tokens (Q4_0 through gemv_batch,
  // other formats through the prefill GEMM); each sequence attends over its
  // own caches, one after the other, through the single-token step's
  // kernels. Returns the logits [n][n_vocab] in the model's pinned buffer,
  // valid until the next forward_batch. Runs kernel by kernel (no graph).
  virtual const float* forward_batch(const int32_t* tokens, const int* seqs, int n) = 0;
  // Appends a prompt chunk (n >= 1 tokens) to sequence `seq` at position
  // seq_size(seq) and returns its last position's logits (n_vocab floats in
  // the model's pinned buffer, valid until the next call): the prefill of the
  // sequences forward_batch then decodes together. Sequence 0 takes
  // forward_view; another sequence its own caches through the chunk path
  // (one token: forward_batch's step), never a captured graph.
  virtual const float* prefill_seq(int seq, const int32_t* tokens, int n) = 0;
  virtual int max_seqs() const = 0;
  virtual int seq_size(int seq) const = 0;  // tokens sequence `seq` holds (kv_size() is sequence 0's)
  // fill_random_kv for sequence `seq`'s caches.
  virtual void fill_random_kv_seq(int seq, int n, uint64_t seed) = 0;

  virtual int kv_size() const = 0;
  virtual void clear() = 0;  // every sequence
  // Appends n random keys/values (normal, unit variance) to every layer's
  // cache (sequence 0) without running the model: synthetic long contexts
  // for bench.
  virtual void fill_random_kv(int n, uint64_t seed) = 0;
  // All layers together, sequence 0.
  virtual KvFootprint kv_footprint() const = 0;
  virtual size_t weight_bytes() const = 0;  // device bytes of the weight matrices
  // The weight bytes a single-token step reads: every matrix, but of the
  // token-embedding table (unless it is also the output matrix) one row.
  // Until this existed the bench counted the whole table as read a step
  // (llama3-8b Q4_0: 282 MiB more than a step reads; docs/cuda-notes.md,
  // milestone 36).
  virtual size_t step_weight_bytes() const = 0;
  virtual void synchronize() = 0;
  // attention_s is measured with device events around one layer's attention
  // (times the layer count): always for prompts, for single-token steps only
  // after time_decode_attention(true) (the records cost the step two PDL
  // edges; a replayed step then runs a graph with record nodes, a key of its
  // own).
  virtual ForwardTimings& timings() = 0;
  virtual void time_decode_attention(bool on) = 0;
};

// ---------------------------------------------------------------------------
// Kernel checks for the tests: host buffers in, host buffers out; each runs
// one GPU kernel path so tests can compare it with the CPU reference.

// Y[i][r] = dot(W.row(r), X[i]) for i < n_tok (X [n_tok][cols], Y
// [n_tok][rows]); n_tok == 1 uses the GEMV kernel, else dequantize + GEMM.
void cuda_check_matmul(const WeightView& w, const float* x, int n_tok, float* y, CudaGemm gemm);
// y = W . act(x) for one token through the decode step's GEMV with the
// activation made inside it: act 0: x; 1: rmsnorm(x) * norm (eps); 2:
// silu(x) * up (x = the gate). Which kernel runs follows cuda_tuning().
// With `rope`, the first rope_heads heads of y are then rotated to position
// pos (read from device memory, as in a decode step) by the GEMV
// (CudaTuning::gemv_rope) or rope_kernel.
void cuda_check_gemv_act(const WeightView& w, int act, const float* x, const float* norm, float eps, const float* up,
                         float* y, const RopeTable* rope = nullptr, int rope_heads = 0, int64_t pos = 0);
// Two GEMVs of a decode step's residual link (milestones 36-37): the writer
// (wo: y_w = y0 + W_w . o, plain) and the reader (q|k|v: y_r = W_r .
// (rmsnorm(y_w) * norm), with `rope` as cuda_check_gemv_act). x8: the writer
// also writes y_w's int8 form over norm (GemvAct::X8) and the reader takes
// x from it (CudaTuning::gemv_x8's link); else each as the step does
// without it. Which kernels run follows cuda_tuning().
void cuda_check_gemv_x8_chain(const WeightView& writer, const WeightView& reader, const float* o, const float* y0,
                              const float* norm, float eps, bool x8, float* y_w, float* y_r,
                              const RopeTable* rope = nullptr, int rope_heads = 0, int64_t pos = 0);
// A feed-forward block for one token both ways: y_glu = down . h with h made
// in the store of the gate|up GEMV over interleaved rows (GemvAct::glu), and
// y_plain = the same through the stacked gate|up GEMV and w_down's SwiGLU
// load (gate, up: [ffn][dim], down: [dim][ffn]; act = rmsnorm(x) * norm).
void cuda_check_ffn_glu(const WeightView& gate, const WeightView& up, const WeightView& down, const float* x,
                        const float* norm, float eps, float* y_glu, float* y_plain);
// The f16 GEMM of n_tok tokens through the views of an interleaved gate/up
// upload (rows twice the stride apart) and through plain uploads: y_parts and
// y_plain [2][n_tok][rows] (gate, then up).
void cuda_check_interleaved_gemm(const WeightView& gate, const WeightView& up, const float* x, int n_tok,
                                 float* y_parts, float* y_plain);
// The device argmax of greedy decoding (greedy_next) over x[n]; run `rounds`
// times on the same state, as consecutive steps do.
int32_t cuda_check_argmax(const float* x, int n, int rounds = 1);
// The device's top-k candidates of x[n] (top_k.cu), as (logit, id) in
// candidate_before order.
std::vector<std::pair<float, int32_t>> cuda_check_top_k(const float* x, int n, int k);
// y = rmsnorm(x) * weight, n_rows rows of dim.
void cuda_check_rmsnorm(const float* x, const float* weight, int n_rows, int dim, float eps, float* y);
// Rotates x [n_tok][n_heads][head_dim] in place, token t at position pos0 + t.
void cuda_check_rope(const RopeTable& t, float* x, int n_tok, int n_heads, int64_t pos0);
// Appends n_ctx keys/values (k, v: [n_ctx][n_kv_heads][head_dim]) to a GPU
// cache of `kv_mode`, in chunks of `append_chunk`, then attends with the
// queries of the last n_q tokens (q [n_q][n_heads][head_dim]) -> out.
// With `dump`, the cache's code records come back too (quantized modes).
struct CudaKvDump {
  std::vector<uint8_t> k_codes, v_codes;  // [n_kv_heads][max_groups][record bytes]
  size_t k_rec = 0, v_rec = 0;            // record bytes (kv_group_layout(...).bytes)
  int n_groups = 0, max_groups = 0;       // groups written / per-head capacity
  int n_sinks = 0, n_window = 0;
};
void cuda_check_attention(const KvShape& s, const std::string& kv_mode, const float* k, const float* v, int n_ctx,
                          int append_chunk, const float* q, int n_q, float* out, CudaGemm gemm,
                          CudaKvDump* dump = nullptr);
// As the model streams a prompt: for each chunk, its keys/values appended
// and its own query rows attended (q, out: [sum of chunks][n_heads][head_dim];
// f32 prefill GEMM), so cut=attend's deferred cuts run as in a model.
void cuda_check_chunked_attention(const KvShape& s, const std::string& kv_mode, const float* k, const float* v,
                                  const float* q, const std::vector<int>& chunks, float* out, CudaKvDump* dump);

// Single-token decode steps of a cache of kv_mode (f16, or a quantized mode
// while all tokens are in its fp16 part) with the position in device
// memory, as a model step runs them: the first n_ctx - steps keys/values (k,
// v: [n_ctx][n_kv_heads][head_dim]) appended in chunks of append_chunk, then
// for each of the last `steps` tokens its raw q (q: [steps][n_heads][head_dim])
// and k, v rotated by `rope` (null: none) to their position, appended and
// attended -> out [steps][n_heads][head_dim]. fused: the one-kernel step
// (GpuKvCache::decode_block, milestone 11); else rope_kernel, the append, the
// split and merge kernels. Afterwards q2 (one row) attends over all n_ctx
// tokens through the split kernel with host counts -> out2, reading the slots
// the steps wrote.
void cuda_check_decode_steps(const KvShape& s, const std::string& kv_mode, const float* k, const float* v, int n_ctx,
                             int append_chunk, int steps, const float* q, const RopeTable* rope, bool fused,
                             float* out, const float* q2, float* out2);

// Decode attention of one layer (one query row, after the append of that
// row's key/value) at n_ctx tokens of random keys/values: microseconds per
// call and the cache's device bytes. Enough caches are rotated to defeat the
// 50 MB L2.
struct CudaAttnSpeed {
  double us = 0;
  double kv_bytes = 0;
  int caches = 0;
};
CudaAttnSpeed cuda_bench_decode_attention(const KvShape& s, const std::string& kv_mode, int n_ctx);

// Device bytes per token of one layer's KV cache in `mode` once long (codes,
// scales and zeros for quantized modes); throws for modes the GPU lacks.
double cuda_kv_bytes_per_token(const std::string& kv_mode, const KvShape& s);

// Y[t][r] = dot(W.row(r), X[t]) for n_tok tokens (1..32) through the
// batched decode's GEMV (gemv_batch; Q4_0), int8 activations or exact f32
// products as CudaTuning::gemv_i8x says.
void cuda_check_gemv_batch(const WeightView& w, const float* x, int n_tok, float* y);
// The batch GEMV's activation made in its converter (BatchAct, milestone 58)
// against the separate kernels of the same op before a plain call: act 1
// RMSNorm (x [n_tok][w.cols], norm [w.cols]), 2 SwiGLU over (gate, up)
// pairs, 3 SwiGLU over [gate | up] halves (x [n_tok][2 w.cols]). y_fused
// from the converter, y_separate from rmsnorm_kernel or swiglu_kernel then
// the plain path; [n_tok][w.rows] each.
void cuda_check_gemv_batch_act(const WeightView& w, int act, const float* x, const float* norm, float eps,
                               int n_tok, float* y_fused, float* y_separate);

// Decode GEMV speed: GB/s of weight bytes streamed by gemv over `rows` x
// `cols` matrices of type t (enough copies to defeat the L2 cache, random
// bytes), and the host-to-GPU cost of one small launch in microseconds.
struct CudaGemvSpeed {
  double gbs = 0;
  double us_per_call = 0;
  double launch_us = 0;
};
// n_tok >= 1: the batched decode's GEMV (gemv_batch, Q4_0) over n_tok
// tokens instead of the single-token GEMV; gbs counts the weight bytes once.
CudaGemvSpeed cuda_bench_gemv(WeightType t, int rows, int cols, int n_tok = 0);

}  // namespace longkv
