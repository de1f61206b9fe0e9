// The Llama forward pass on one GPU (the twin of model/llama_model.cpp):
// weights resident in their stored formats, f32 activations, one GpuKvCache
// per layer. Single tokens go through the GEMV kernels; chunks through
// dequantized weights and cuBLAS.
//
// wq|wk|wv and w_gate|w_up are uploaded (GpuLayer, gpu_layer.cuh) with their rows stacked in one
// buffer when they share a type and width: one GEMV each for a token (q, k, v
// land contiguous, so one RoPE launch turns q and k), views of the parts for
// the GEMM path. A single-token step can run as a CUDA graph: the step is
// captured (nothing in it synchronizes; the token id comes from pinned
// memory), and replayed as is while the caches' replay keys stay the same:
// RoPE, the append and the split kernels read the position from device
// memory, and split counts come from buckets of the token count (quantized
// caches: fixed while their group count stays). Since milestone 11 a cache
// may take a single-token step whole (GpuKvCache::decode_block: the f16
// cache rotates, appends and attends in one kernel), fed the raw q, k, v.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "backend/cuda/gpu_kv_cache.cuh"
#include "backend/cuda/gpu_layer.cuh"
#include "core/timer.h"

namespace longkv {
namespace cuda {
namespace {

class CudaModelImpl final : public CudaModel {
 public:
  CudaModelImpl(const ModelWeights& w, const CudaModelOptions& o) : cfg_(w.cfg), opt_(o) {
    std::string why;
    LONGKV_CHECK(cuda_available(&why), "%s", why.c_str());
    LONGKV_CHECK(o.max_tokens > 0, "CUDA model needs a positive KV capacity (max_tokens)");
    LONGKV_CHECK(o.max_seqs >= 1 && o.max_seqs <= kMaxBatchSeqs, "CUDA model: max_seqs = %d (1..%d sequences)",
                 o.max_seqs, kMaxBatchSeqs);
    LONGKV_CUDA_CHECK(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking));
    LONGKV_CUDA_CHECK(cudaStreamCreateWithFlags(&cs_, cudaStreamNonBlocking));
    LONGKV_CUBLAS_CHECK(cublasCreate(&ws_.cublas));
    ws_.gemm = o.gemm;
    LONGKV_CUDA_CHECK(cudaEventCreate(&ev_a_));
    LONGKV_CUDA_CHECK(cudaEventCreate(&ev_b_));
    for (StepGraph* g : {&cur_, &ahead_}) {
      LONGKV_CUDA_CHECK(cudaEventCreate(&g->ev_a));
      LONGKV_CUDA_CHECK(cudaEventCreate(&g->ev_b));
    }
    rec_a_ = ev_a_;
    rec_b_ = ev_b_;
    LONGKV_CUDA_CHECK(cudaEventCreate(&ev_g0_));
    LONGKV_CUDA_CHECK(cudaEventCreate(&ev_g1_));

    tok_embd_ = upload_weight(w.tok_embd, tok_buf_, s_);
    if (w.tied_output || w.output.data == w.tok_embd.data) {
      output_ = tok_embd_;
    } else {
      output_ = upload_weight(w.output, out_buf_, s_);
    }
    output_norm_ = upload_floats(w.output_norm, s_);
    layers_.resize(cfg_.n_layers);
    for (int l = 0; l < cfg_.n_layers; ++l) {
      layers_[l].upload(w.layers[l], s_);
      // Host copies may be freed once the uploads have finished.
      LONGKV_CUDA_CHECK(cudaStreamSynchronize(s_));
    }
    RopeTable rt(cfg_.head_dim, cfg_.rope_dim > 0 ? cfg_.rope_dim : cfg_.head_dim, cfg_.rope_base, cfg_.rope,
                 cfg_.rope_freq_factors);
    rope_dim_ = rt.rope_dim;
    inv_freq_.resize(sizeof(float) * (rope_dim_ / 2));
    LONGKV_CUDA_CHECK(cudaMemcpy(inv_freq_.as(), rt.inv_freq, inv_freq_.bytes(), cudaMemcpyHostToDevice));

    KvShape ks;
    ks.n_heads = cfg_.n_heads;
    ks.n_kv_heads = cfg_.n_kv_heads;
    ks.head_dim = cfg_.head_dim;
    ks.max_tokens = o.max_tokens;
    for (int l = 0; l < cfg_.n_layers; ++l) caches_.push_back(make_gpu_kv_cache(o.kv_mode, ks));
    coded_kv_ = parse_kv_mode(o.kv_mode).kind == KvKind::quant;
    seq_caches_.resize(o.max_seqs - 1);
    for (auto& sc : seq_caches_)
      for (int l = 0; l < cfg_.n_layers; ++l) sc.push_back(make_gpu_kv_cache(o.kv_mode, ks));
    // Decode partial states, sized once for the most splits any cache uses
    // (dense and quantized parts each <= one wave of <= 64 warps/SM over the KV heads, plus
    // the fp16 window's), so no allocation happens inside a captured step.
    int sms = 132;
    LONGKV_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    const size_t parts = 2 * (static_cast<size_t>(sms) * 64 / std::max(1, cfg_.n_kv_heads) + 2) + 256;
    ws_.a.reserve(static_cast<size_t>(cfg_.n_heads) * parts * cfg_.head_dim * sizeof(float));
    ws_.b.reserve(static_cast<size_t>(cfg_.n_heads) * parts * 2 * sizeof(float));
    LONGKV_CUDA_CHECK(cudaMallocHost(&ids_host_, sizeof(int32_t)));
    LONGKV_CUDA_CHECK(cudaMallocHost(&pos_host_, sizeof(int) * o.max_seqs));
    LONGKV_CUDA_CHECK(cudaMallocHost(&logits_host_, sizeof(float) * cfg_.n_vocab));
    LONGKV_CUDA_CHECK(cudaMallocHost(&top_keys_host_, sizeof(unsigned long long) * kMaxDeviceTopK));
    dpos_.resize(sizeof(int) * o.max_seqs);  // cell b: sequence b's position (0: every single-token step's)
    greedy_.resize(sizeof(GreedyState));
    LONGKV_CUDA_CHECK(cudaMemset(greedy_.as(), 0, greedy_.bytes()));
    LONGKV_CUDA_CHECK(cudaHostAlloc(&ring_host_, kRing * sizeof(int32_t), cudaHostAllocMapped));
    LONGKV_CUDA_CHECK(cudaHostGetDevicePointer(reinterpret_cast<void**>(&ring_dev_), ring_host_, 0));
    for (cudaEvent_t& e : ev_step_) LONGKV_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    decode_block_reserve(ws_, cfg_.n_kv_heads);
    for (int b = 0; b < o.max_seqs; ++b)
      for (int l = 0; l < cfg_.n_layers; ++l) cache_of(b, l).set_step_position(dpos_.as<int>() + b);
  }

  ~CudaModelImpl() override {
    cudaStreamSynchronize(s_);
    if (cur_.exec) cudaGraphExecDestroy(cur_.exec);
    if (ahead_.exec) cudaGraphExecDestroy(ahead_.exec);
    if (ids_host_) cudaFreeHost(ids_host_);
    if (pos_host_) cudaFreeHost(pos_host_);
    if (logits_host_) cudaFreeHost(logits_host_);
    if (top_keys_host_) cudaFreeHost(top_keys_host_);
    if (batch_logits_host_) cudaFreeHost(batch_logits_host_);
    for (int j = 0; j < kMaxExtraStreams; ++j)
      if (sx_[j]) {
        cudaStreamSynchronize(sx_[j]);
        cudaStreamDestroy(sx_[j]);
        cudaEventDestroy(ev_join_[j]);
      }
    if (ev_fork_) cudaEventDestroy(ev_fork_);
    if (ring_host_) cudaFreeHost(ring_host_);
    for (cudaEvent_t e : ev_step_)
      if (e) cudaEventDestroy(e);
    caches_.clear();
    cublasDestroy(ws_.cublas);
    cudaEventDestroy(ev_a_);
    cudaEventDestroy(ev_b_);
    for (StepGraph* g : {&cur_, &ahead_}) {
      cudaEventDestroy(g->ev_a);
      cudaEventDestroy(g->ev_b);
    }
    cudaEventDestroy(ev_g0_);
    cudaEventDestroy(ev_g1_);
    cudaStreamDestroy(s_);
    cudaStreamDestroy(cs_);
  }

  const ModelConfig& config() const override { return cfg_; }
  std::string kv_mode() const override { return caches_[0]->mode(); }
  CudaGemm gemm() const override { return opt_.gemm; }
  bool graphs() const override { return opt_.graphs; }
  int kv_size() const override { return caches_[0]->size(); }
  void clear() override {
    for (int b = 0; b < opt_.max_seqs; ++b)
      for (int l = 0; l < cfg_.n_layers; ++l) cache_of(b, l).clear();
  }
  int max_seqs() const override { return opt_.max_seqs; }
  int seq_size(int seq) const override {
    LONGKV_CHECK(seq >= 0 && seq < opt_.max_seqs, "sequence %d of a model holding %d", seq, opt_.max_seqs);
    return seq == 0 ? kv_size() : seq_caches_[seq - 1][0]->size();
  }
  void fill_random_kv_seq(int seq, int n, uint64_t seed) override {
    LONGKV_CHECK(seq >= 0 && seq < opt_.max_seqs, "sequence %d of a model holding %d", seq, opt_.max_seqs);
    if (seq == 0) return fill_random_kv(n, seed);
    for (int l = 0; l < cfg_.n_layers; ++l) cache_of(seq, l).fill_random(n, seed * 1000 + l, s_);
    LONGKV_CUDA_CHECK(cudaStreamSynchronize(s_));
  }
  const float* forward_batch(const int32_t* tokens, const int* seqs, int n) override {
    const ModelConfig& c = cfg_;
    LONGKV_CHECK(n >= 1 && n <= opt_.max_seqs, "forward_batch: %d sequences, the model holds %d (max_seqs)", n,
                 opt_.max_seqs);
    std::vector<char> seen(opt_.max_seqs, 0);
    for (int i = 0; i < n; ++i) {
      const int b = seqs[i];
      LONGKV_CHECK(b >= 0 && b < opt_.max_seqs && !seen[b], "forward_batch: sequence %d out of range [0, %d) or "
                   "given twice", b, opt_.max_seqs);
      seen[b] = 1;
      LONGKV_CHECK(tokens[i] >= 0 && tokens[i] < c.n_vocab, "token id %d out of range [0, %d)", tokens[i], c.n_vocab);
      LONGKV_CHECK(seq_size(b) < opt_.max_tokens, "forward_batch: sequence %d is full (%d tokens)", b, seq_size(b));
      pos_host_[b] = seq_size(b);
    }
    const double t0 = now_seconds();
    ensure_scratch(n);
    if (!batch_logits_host_)
      LONGKV_CUDA_CHECK(cudaMallocHost(&batch_logits_host_, sizeof(float) * opt_.max_seqs * c.n_vocab));
    LONGKV_CUDA_CHECK(
        cudaMemcpyAsync(dpos_.as(), pos_host_, sizeof(int) * opt_.max_seqs, cudaMemcpyHostToDevice, s_));
    batch_seqs_ = seqs;
    try {
      enqueue(tokens, n, 0, true, true);
    } catch (...) {
      batch_seqs_ = nullptr;
      cudaStreamSynchronize(s_);
      throw;
    }
    batch_seqs_ = nullptr;
    LONGKV_CUDA_CHECK(cudaMemcpyAsync(batch_logits_host_, logits_.as(), sizeof(float) * n * c.n_vocab,
                                      cudaMemcpyDeviceToHost, s_));
    LONGKV_CUDA_CHECK(cudaStreamSynchronize(s_));
    timings_.total_s += now_seconds() - t0;
    return batch_logits_host_;
  }
  const float* prefill_seq(int seq, const int32_t* tokens, int n) override {
    LONGKV_CHECK(n >= 1, "prefill_seq needs at least one token");
    LONGKV_CHECK(seq_size(seq) + n <= opt_.max_tokens, "prefill_seq: sequence %d holds %d tokens, %d more exceed "
                 "its %d", seq, seq_size(seq), n, opt_.max_tokens);
    if (seq == 0) return forward_view(tokens, n, kv_size());
    if (n == 1) {
      const float* row = forward_batch(tokens, &seq, 1);
      std::copy(row, row + cfg_.n_vocab, logits_host_);
      return logits_host_;
    }
    for (int t = 0; t < n; ++t)
      LONGKV_CHECK(tokens[t] >= 0 && tokens[t] < cfg_.n_vocab, "token id %d out of range [0, %d)", tokens[t],
                   cfg_.n_vocab);
    // The chunk path reads caches_: sequence seq's caches stand in for
    // sequence 0's during the chunk (a chunk reads positions from the host,
    // not from dpos_, and no graph is captured or replayed in between).
    std::swap(caches_, seq_caches_[seq - 1]);
    try {
      ensure_scratch(n);
      enqueue(tokens, n, kv_size(), true, false);
      LONGKV_CUDA_CHECK(cudaMemcpyAsync(logits_host_, logits_.as(), sizeof(float) * cfg_.n_vocab,
                                        cudaMemcpyDeviceToHost, s_));
      LONGKV_CUDA_CHECK(cudaStreamSynchronize(s_));
    } catch (...) {
      cudaStreamSynchronize(s_);
      std::swap(caches_, seq_caches_[seq - 1]);
      throw;
    }
    std::swap(caches_, seq_caches_[seq - 1]);
    return logits_host_;
  }
  void fill_random_kv(int n, uint64_t seed) override {
    for (size_t l = 0; l < caches_.size(); ++l) caches_[l]->fill_random(n, seed * 1000 + l, s_);
    maybe_capture_ahead(kv_size(), true, last_greedy_);  // as after a prompt
    LONGKV_CUDA_CHECK(cudaStreamSynchronize(s_));
  }
  KvFootprint kv_footprint() const override {
    KvFootprint f;
    for (const auto& c : caches_) f.add_layer(c->footprint());
    return f;
  }
  size_t weight_bytes() const override {
    size_t b = tok_embd_.nbytes() + (output_.data == tok_embd_.data ? 0 : output_.nbytes());
    for (const auto& L : layers_) b += L.weight_bytes();
    return b;
  }
  size_t step_weight_bytes() const override {
    const bool tied = output_.data == tok_embd_.data;  // then the output GEMV reads the whole table
    return weight_bytes() - (tied || tok_embd_.rows == 0 ? 0 : tok_embd_.nbytes() - tok_embd_.ld);
  }
  void synchronize() override { LONGKV_CUDA_CHECK(cudaStreamSynchronize(s_)); }
  ForwardTimings& timings() override { return timings_; }

  void forward(const int32_t* tokens, int n, int pos, float* logits, bool all_logits) override {
    run(tokens, n, pos, logits, all_logits);
  }
  float* forward_view(const int32_t* tokens, int n, int pos) override {
    if (cuda_tuning().logits_pageable) {  // the comparison: the copy into pageable memory, as forward makes it
      logits_pageable_.resize(cfg_.n_vocab);
      run(tokens, n, pos, logits_pageable_.data(), false);
      return logits_pageable_.data();
    }
    run(tokens, n, pos, logits_host_, false);
    return logits_host_;
  }
  const std::pair<float, int32_t>* forward_top(const int32_t* tokens, int n, int pos, int k) override {
    LONGKV_CHECK(k >= 1 && k <= kMaxDeviceTopK && k <= cfg_.n_vocab, "forward_top: k = %d (1..%d, <= %d logits)", k,
                 kMaxDeviceTopK, cfg_.n_vocab);
    run(tokens, n, pos, nullptr, false, k);
    top_.resize(k);
    for (int j = 0; j < k; ++j) logit_key_decode(top_keys_host_[j], &top_[j].first, &top_[j].second);
    return top_.data();
  }
  int graph_captures() const override { return captures_; }
  int graph_replays() const override { return replays_; }
  StepTimes& step_times() override { return step_times_; }
  void time_decode_attention(bool on) override { time_decode_attention_ = on; }

 private:
  // forward's work; logits may be logits_host_ (forward_view), whose copy is
  // then one DMA from the device. Into pageable memory the driver stages the
  // copy through a pinned buffer of its own and copies again on the host:
  // ~55 us a step of the GPU idling for 501 KiB of llama3-8b logits on the
  // H200 (docs/cuda-notes.md, milestone 26).
  // top_k > 0 (forward_top, logits null): the last row's top_k keys to
  // top_keys_host_ instead of a row of logits.
  void run(const int32_t* tokens, int n, int pos, float* logits, bool all_logits, int top_k = 0) {
    const ModelConfig& c = cfg_;
    LONGKV_CHECK(n >= 1, "forward needs at least one token");
    LONGKV_CHECK(pos == kv_size(), "forward at position %d but the caches hold %d tokens", pos, kv_size());
    for (int t = 0; t < n; ++t)
      LONGKV_CHECK(tokens[t] >= 0 && tokens[t] < c.n_vocab, "token id %d out of range [0, %d)", tokens[t], c.n_vocab);
    const double t0 = now_seconds();
    ensure_scratch(n);
    const int first = all_logits ? 0 : n - 1, rows = n - first;
    const bool want = logits != nullptr || top_k > 0;
    Launched step{kDirect, false};
    if (n == 1) {
      step = launch_single(tokens, pos, want, false);
    } else {
      step.timed = enqueue(tokens, n, pos, want, all_logits);
    }
    const bool no_copy = n == 1 && (cuda_tuning().step_probe & 32);  // diagnostics only: logits not returned
    if (logits && !no_copy)
      LONGKV_CUDA_CHECK(cudaMemcpyAsync(logits, logits_.as(), sizeof(float) * rows * c.n_vocab, cudaMemcpyDeviceToHost,
                                        s_));
    if (top_k > 0) {  // logits_ holds the last position's row alone (all_logits false)
      top_part_.reserve(sizeof(unsigned long long) * top_k_scratch_keys(c.n_vocab, top_k));
      top_keys_.reserve(sizeof(unsigned long long) * kMaxDeviceTopK);
      top_k_keys(logits_.as<float>(), c.n_vocab, top_k, top_part_.as<unsigned long long>(),
                 top_keys_.as<unsigned long long>(), s_);
      LONGKV_CUDA_CHECK(cudaMemcpyAsync(top_keys_host_, top_keys_.as(), sizeof(unsigned long long) * top_k,
                                        cudaMemcpyDeviceToHost, s_));
    }
    // After a prompt whose logits are wanted (generation follows; a context
    // filled chunk by chunk without logits need not capture after every
    // chunk), the next step is captured while the prompt runs: of the kind
    // the last single-token step was, so a generation's first step replays
    // (forward_view and decode_greedy always want logits).
    if (n == 1) maybe_capture_ahead(pos + 1, want, false);
    else if (want) maybe_capture_ahead(pos + n, true, last_greedy_);
    if (n == 1) last_greedy_ = false;
    LONGKV_CUDA_CHECK(cudaStreamSynchronize(s_));
    if (step.timed) add_attention_time(step.kind);
    const double dt = now_seconds() - t0;
    timings_.total_s += dt;
    if (n == 1) count_step(step.kind, dt);
  }

  // How a single-token step was launched, and whether it records the
  // attention events.
  enum StepKind { kReplayed, kCaptured, kDirect };
  struct Launched {
    StepKind kind;
    bool timed;
  };

  // Queues the single-token step at pos (no synchronization). The first
  // single-token step runs directly: lazy one-time queries (occupancy,
  // attributes) then happen outside any capture. A step whose launches read
  // nothing per-step from the host (replay keys of every cache) replays the
  // executable captured for its key; a new key is captured once and
  // cudaGraphExecUpdate'd into it (re-instantiated if the update is
  // refused). Steps of caches without keys run directly. Since milestone 27
  // the next step is captured ahead (maybe_capture_ahead) while this one
  // runs, so the GPU never waits for a capture. A greedy step (milestone 28)
  // reads its token and position from the device, where the step before it
  // (or decode_greedy) left them, and ends with greedy_next.
  Launched launch_single(const int32_t* token, int pos, bool want, bool greedy) {
    std::vector<uint64_t> key;
    if (opt_.graphs && direct_steps_ > 0 && step_key(want, greedy, &key)) {
      if (!greedy) {  // the sources of the graph's two copies
        *ids_host_ = token[0];
        *pos_host_ = pos;
      }
      if (ahead_.exec && key == ahead_.key && !(cur_.exec && key == cur_.key)) std::swap(cur_, ahead_);
      if (cur_.exec && key == cur_.key) {
        for (auto& cache : caches_) cache->advance(1);
        if (step_times_.time_gpu) LONGKV_CUDA_CHECK(cudaEventRecord(ev_g0_, s_));
        LONGKV_CUDA_CHECK(cudaGraphLaunch(cur_.exec, s_));
        if (step_times_.time_gpu) LONGKV_CUDA_CHECK(cudaEventRecord(ev_g1_, s_));
        ++replays_;
        return {kReplayed, cur_.timed};
      }
      const double tc = now_seconds();
      capture(cur_, key, pos, want, greedy, s_);
      step_times_.capture_s += now_seconds() - tc;
      LONGKV_CUDA_CHECK(cudaGraphLaunch(cur_.exec, s_));
      return {kCaptured, cur_.timed};
    }
    if (!greedy) *pos_host_ = pos;
    const bool timed = enqueue(token, 1, pos, want, false, greedy);
    ++direct_steps_;
    return {kDirect, timed};
  }

  // The attention time of the step just finished (its events recorded).
  // Record nodes (cudaEventRecordExternal in the capture) time like stream
  // records; should a driver refuse, the step is not sampled.
  void add_attention_time(StepKind kind) {
    float ms = 0;
    const cudaEvent_t ea = kind == kDirect ? ev_a_ : cur_.ev_a, eb = kind == kDirect ? ev_b_ : cur_.ev_b;
    if (cudaEventElapsedTime(&ms, ea, eb) == cudaSuccess) timings_.attention_s += 1e-3 * ms * cfg_.n_layers;
    else cudaGetLastError();
  }

  // done: the step has finished (its events can be read).
  void count_step(StepKind kind, double dt, bool done = true) {
    StepTimes& st = step_times_;
    float ms = 0;
    if (kind == kReplayed && st.time_gpu && done) {
      if (cudaEventElapsedTime(&ms, ev_g0_, ev_g1_) == cudaSuccess) st.replayed_gpu_s += 1e-3 * ms;
      else cudaGetLastError();
    }
    if (kind == kReplayed) ++st.replayed, st.replayed_s += dt;
    else if (kind == kCaptured) ++st.captured, st.captured_s += dt;
    else ++st.direct, st.direct_s += dt;
  }

 public:
  int decode_greedy(int32_t token, int pos, int max_new, const std::function<bool(int32_t)>& emit) override {
    const ModelConfig& c = cfg_;
    LONGKV_CHECK(max_new >= 1, "decode_greedy needs at least one token to generate (got %d)", max_new);
    LONGKV_CHECK(pos == kv_size(), "decode_greedy at position %d but the caches hold %d tokens", pos, kv_size());
    LONGKV_CHECK(token >= 0 && token < c.n_vocab, "token id %d out of range [0, %d)", token, c.n_vocab);
    const double t0 = now_seconds();
    ensure_scratch(1);
    last_greedy_ = true;
    // The first step's token and position; every step then leaves the next
    // one's on the device (greedy_next). No other step may be in flight
    // while the host writes these pinned cells: every call ends synchronized.
    *ids_host_ = token;
    *pos_host_ = pos;
    LONGKV_CUDA_CHECK(cudaMemcpyAsync(ids_.as(), ids_host_, sizeof(int32_t), cudaMemcpyHostToDevice, s_));
    LONGKV_CUDA_CHECK(cudaMemcpyAsync(dpos_.as(), pos_host_, sizeof(int), cudaMemcpyHostToDevice, s_));
    LONGKV_CUDA_CHECK(cudaMemsetAsync(greedy_.as(), 0, sizeof(GreedyState), s_));
    // Timed attention needs each step's events read before they are
    // recorded again, so those runs wait step by step.
    const bool pipelined = cuda_tuning().greedy_pipeline && !time_decode_attention_;
    // At most two steps are in flight: step j's slot is j % 2.
    Launched launched[2] = {};
    double started[2] = {};
    int emitted = 0;
    // Waits for step j and hands its token to emit.
    auto finish = [&](int j) {
      LONGKV_CUDA_CHECK(cudaEventSynchronize(ev_step_[j % 2]));
      if (!pipelined) {
        if (launched[j % 2].timed) add_attention_time(launched[j % 2].kind);
        count_step(launched[j % 2].kind, now_seconds() - started[j % 2]);
      }
      ++emitted;
      return emit(static_cast<volatile int32_t*>(ring_host_)[j % kRing]);
    };
    int j = 0;
    bool go = true;
    try {
      for (; j < max_new && go; ++j) {
        started[j % 2] = now_seconds();
        launched[j % 2] = launch_single(nullptr, pos + j, true, true);
        LONGKV_CUDA_CHECK(cudaEventRecord(ev_step_[j % 2], s_));
        if (j + 1 < max_new) maybe_capture_ahead(pos + j + 1, true, true);
        if (pipelined) {
          ++step_times_.pipelined;
          count_step(launched[j % 2].kind, now_seconds() - started[j % 2], false);
          if (j > 0) go = finish(j - 1);
        } else {
          go = finish(j);
        }
      }
      if (pipelined && go) finish(j - 1);  // the last step's token
    } catch (...) {
      cudaStreamSynchronize(s_);
      throw;
    }
    LONGKV_CUDA_CHECK(cudaStreamSynchronize(s_));
    timings_.total_s += now_seconds() - t0;
    return emitted;
  }

 private:
  // After a single-token step was queued: captures the one after it ahead
  // (CudaTuning::graph_ahead), once single-token steps run as graphs.
  void maybe_capture_ahead(int pos, bool want, bool greedy) {
    if (opt_.graphs && direct_steps_ > 0 && cuda_tuning().graph_ahead) capture_ahead(pos, want, greedy);
  }

  // Queues one forward pass on s_ (no synchronization, no host memory but
  // the token ids, which must stay valid until the work ran). Returns
  // whether the attention events were recorded. A greedy step (one token,
  // logits wanted) takes its token id and position from ids_ and dpos_ as
  // the device holds them, and ends with greedy_next, which sets both for
  // the next step.
  bool enqueue(const int32_t* tokens, int n, int pos, bool want_logits, bool all_logits, bool greedy = false) {
    const ModelConfig& c = cfg_;
    const int dim = c.dim, qd = c.q_dim(), kvd = c.kv_dim(), ffn = c.ffn_dim;
    LONGKV_CHECK(!greedy || (n == 1 && want_logits), "a greedy step is one token with logits");
    if (!greedy) LONGKV_CUDA_CHECK(cudaMemcpyAsync(ids_.as(), tokens, sizeof(int32_t) * n, cudaMemcpyHostToDevice, s_));
    // A batched step (forward_batch): token i of sequence batch_seqs_[i], the
    // matrices through matmul's batch path, attention sequence by sequence.
    const bool batch = batch_seqs_ != nullptr;
    const bool one = n == 1 && !batch;  // a single-token step of sequence 0
    // Single-token steps: RoPE and the caches read the position from dpos_.
    const int* dpos = one ? dpos_.as<int>() : nullptr;
    if (dpos && !greedy)
      LONGKV_CUDA_CHECK(cudaMemcpyAsync(dpos_.as(), pos_host_, sizeof(int), cudaMemcpyHostToDevice, s_));
    float* x = x_.as<float>();
    float* xb = xb_.as<float>();
    float* att = att_.as<float>();
    get_rows(tok_embd_, ids_.as<int32_t>(), n, x, s_);
    // Int8 x between the GEMVs (CudaTuning::gemv_x8): x8b_ holds the next
    // RMSNorm GEMV's input once a layer's down GEMV wrote it.
    const int x8 = one && x8_step() ? cuda_tuning().gemv_x8 & 3 : 0;  // its links (CudaTuning::gemv_x8)
    bool x8b_ready = false;
    const bool neox = c.rope == RopeStyle::neox;
    bool timed = false;
    const int skip = one ? cuda_tuning().step_probe : 0;  // diagnostics only (CudaTuning::step_probe)

    for (int l = 0; l < c.n_layers; ++l) {
      GpuLayer& L = layers_[l];
      float *q = q_.as<float>(), *k = k_.as<float>(), *v = v_.as<float>();
      int q_stride = qd, kv_stride = kvd;  // floats between tokens' rows of q and of k, v
      // A single-token step on a cache that takes it whole (milestone 11):
      // RoPE, append and attention in one kernel, fed the raw q, k, v.
      const DecodeRope drope{inv_freq_.as<float>(), rope_dim_, neox};
      const bool block = one && caches_[l]->decode_block_ok(drope);
      // Else RoPE of q and k by the q|k|v GEMV (in its store where it can,
      // else rope() right after it) unless biases come between.
      const bool gemv_roped = one && !block && !L.bq.bytes() && !L.bk.bytes();
      if (one) {
        // q, k, v contiguous in qkv_, from one stacked GEMV, or (llama.cpp's
        // mixes, whose attn_v may take another format than attn_q and attn_k)
        // q|k's and v's, or one each, every one with RMSNorm in its load and
        // q's and k's RoPE in their stores: Q4_K_M's layers with a Q6_K attn_v
        // in two launches where an RMSNorm, three GEMVs and two RoPE kernels
        // were six.
        q = qkv_.as<float>();
        k = q + qd;
        v = k + kvd;
        GemvAct a = norm_act(x, L.attn_norm, xb);
        if (x8b_ready) a.x8_in = x8_view(x8b_, nullptr);
        auto roped = [&](int heads) {
          GemvAct r = a;
          if (gemv_roped) r.rope = {inv_freq_.as<float>(), dpos, pos, heads, c.head_dim, rope_dim_, neox};
          return r;
        };
        if (skip & 1) {
        } else if (L.wqkv.rows > 0) {
          gemv_act(L.wqkv, roped(c.n_heads + c.n_kv_heads), q, false, s_);
        } else if (L.wqk.rows > 0) {
          gemv_act(L.wqk, roped(c.n_heads + c.n_kv_heads), q, false, s_);
          gemv_act(L.wv, a, v, false, s_);
        } else {
          gemv_act(L.wq, roped(c.n_heads), q, false, s_);
          gemv_act(L.wk, roped(c.n_kv_heads), k, false, s_);
          gemv_act(L.wv, a, v, false, s_);
        }
      } else if (batch && L.wqkv.rows > 0 && !L.bq.bytes() && !L.bk.bytes() && !L.bv.bytes()) {
        // A batch: one GEMV over the stacked rows, token i's q|k|v in row i of
        // qkv_; RMSNorm in its converter where it takes one (milestone 58).
        q = qkv_.as<float>();
        k = q + qd;
        v = k + kvd;
        q_stride = kv_stride = qd + 2 * kvd;
        if (batch_act_ok(L.wqkv)) {
          gemv_batch(L.wqkv, batch_norm(x, L.attn_norm), n, q, false, batch_scratch_, s_);
        } else {
          rmsnorm(x, L.attn_norm.as<float>(), n, dim, c.rms_eps, xb, s_);
          matmul(L.wqkv, xb, n, q, false);
        }
      } else {
        rmsnorm(x, L.attn_norm.as<float>(), n, dim, c.rms_eps, xb, s_);
        matmul(L.wq, xb, n, q, false);
        matmul(L.wk, xb, n, k, false);
        matmul(L.wv, xb, n, v, false);
      }
      if (L.bq.bytes()) add_bias(q, L.bq.as<float>(), n, qd, s_);
      if (L.bk.bytes()) add_bias(k, L.bk.as<float>(), n, kvd, s_);
      if (L.bv.bytes()) add_bias(v, L.bv.as<float>(), n, kvd, s_);
      if (block || batch) {
        // the attention kernel rotates q and k itself (a batch: attend_batch)
      } else if (one && !gemv_roped) {
        rope(inv_freq_.as<float>(), c.head_dim, rope_dim_, neox, q, 1, c.n_heads + c.n_kv_heads, pos, s_, dpos);
      } else if (!one) {
        rope(inv_freq_.as<float>(), c.head_dim, rope_dim_, neox, q, n, c.n_heads, pos, s_, dpos);
        rope(inv_freq_.as<float>(), c.head_dim, rope_dim_, neox, k, n, c.n_kv_heads, pos, s_, dpos);
      }
      // Attention time is sampled on one layer per call (events around every
      // layer would serialize the queue) and scaled by the layer count; in a
      // single-token step only when asked (time_decode_attention), since the
      // records cut two PDL edges. Every graph-replayed step of the bench
      // went untimed until milestone 27: see record_attention_event.
      const bool sample = !batch && l == c.n_layers / 2 && (n > 1 || time_decode_attention_);
      if (sample) record_attention_event(rec_a_);
      if (skip & 2) {
        caches_[l]->append(k, v, n, s_);  // the caches' counts still advance
      } else if (block) {
        caches_[l]->decode_block(q, k, v, drope, att, ws_, s_);
      } else if (batch) {
        attend_batch(l, n, q, k, v, q_stride, kv_stride, drope, att);
      } else {
        caches_[l]->append(k, v, n, s_);
        caches_[l]->attend(q, n, att, ws_, s_);
      }
      if (sample) {
        record_attention_event(rec_b_);
        timed = true;
      }
      if (!(skip & 4)) {
        if (x8 & 2) {  // x + wo att, and its int8 form for gate|up
          GemvAct p;
          p.x = att;
          p.x8_out = x8_view(x8a_, &L.ffn_norm);
          if ((cuda_tuning().gemv_x8 & 24) == 24) p.x8_out.ss = nullptr;  // timing only: the writer stores nothing
          gemv_act(L.wo, p, x, true, s_);
        } else {
          matmul(L.wo, att, n, x, true);
        }
      }
      float *gate = gate_.as<float>(), *up = up_.as<float>();
      if (one && L.wgu.rows > 0) {  // RMSNorm inside the gate|up GEMV, SwiGLU in its store (glu) or w_down's load
        gate = qkv_.as<float>();  // [gate | up] of one token
        up = gate + ffn;
        if (L.glu) {  // h = silu(gate) up straight from the gate|up GEMV's store, into gate
          GemvAct a = norm_act(x, L.ffn_norm, xb);
          a.glu = true;
          if ((x8 & 2) && !(cuda_tuning().gemv_x8 & 8)) a.x8_in = x8_view(x8a_, nullptr);
          if (!(skip & 8)) gemv_act(L.wgu, a, gate, false, s_);
          if (x8 & 1) {  // x + down h, and its int8 form for the next RMSNorm GEMV
            GemvAct p;
            p.x = gate;
            p.x8_out = x8_view(x8b_, l + 1 < c.n_layers ? &layers_[l + 1].attn_norm : &output_norm_);
            if (!(skip & 16)) gemv_act(L.w_down, p, x, true, s_);
            x8b_ready = true;
          } else if (!(skip & 16)) {
            gemv(L.w_down, gate, x, true, s_);
          }
          continue;
        }
        if (!(skip & 8)) gemv_act(L.wgu, norm_act(x, L.ffn_norm, xb), gate, false, s_);
        GemvAct sw;
        sw.kind = GemvAct::swiglu;
        sw.x = sw.scratch = gate;
        sw.up = up;
        if (!(skip & 16)) gemv_act(L.w_down, sw, x, true, s_);
        continue;
      }
      if (batch && L.wgu.rows > 0 && L.w_gate.rows == L.w_up.rows && L.w_down.cols == L.w_gate.rows &&
          batch_act_ok(L.wgu) && batch_act_ok(L.w_down)) {
        // A batch (milestone 58): gate|up as one GEMV over the stacked or
        // interleaved rows, RMSNorm in its converter, [n][2 ffn] into qkv_
        // (free once attention has read q, k, v); SwiGLU in down's converter.
        float* gu = qkv_.as<float>();
        gemv_batch(L.wgu, batch_norm(x, L.ffn_norm), n, gu, false, batch_scratch_, s_);
        BatchAct h;
        h.kind = BatchAct::swiglu;
        h.x = gu;
        h.pairs = L.glu;
        gemv_batch(L.w_down, h, n, x, true, batch_scratch_, s_);
        continue;
      }
      rmsnorm(x, L.ffn_norm.as<float>(), n, dim, c.rms_eps, xb, s_);
      matmul(L.w_gate, xb, n, gate, false);
      // A batch: w_gate's converted x, where w_up takes the same form (gemv_batch's form is a rule of the shape).
      const bool same_form = gemv_batch_supported(L.w_gate) && L.w_gate.type == L.w_up.type &&
                             L.w_gate.rows == L.w_up.rows && L.w_gate.cols == L.w_up.cols;
      matmul(L.w_up, xb, n, up, false, same_form);
      swiglu(gate, up, static_cast<size_t>(n) * ffn, s_);
      matmul(L.w_down, gate, n, x, true);
    }

    if (want_logits) {
      const int first = all_logits ? 0 : n - 1;
      const int rows = n - first;
      float* xr = x + static_cast<size_t>(first) * dim;
      if (rows == 1 && !batch) {
        GemvAct a = norm_act(xr, output_norm_, xb);
        if (x8b_ready) a.x8_in = x8_view(x8b_, nullptr);
        gemv_act(output_, a, logits_.as<float>(), false, s_);
      } else if (batch && batch_act_ok(output_)) {
        gemv_batch(output_, batch_norm(xr, output_norm_), rows, logits_.as<float>(), false, batch_scratch_, s_);
      } else {
        rmsnorm(xr, output_norm_.as<float>(), rows, dim, c.rms_eps, xb, s_);
        matmul(output_, xb, rows, logits_.as<float>(), false);
      }
    }
    if (greedy)
      greedy_next(logits_.as<float>(), c.n_vocab, greedy_.as<GreedyState>(), ids_.as<int32_t>(), dpos_.as<int>(),
                  ring_dev_, kRing - 1, s_);
    return timed;
  }

  // In a capture a plain cudaEventRecord only marks a dependency and times
  // nothing: External makes it a record node of the graph. Outside a
  // capture the driver refuses that flag ("cannot be performed in the
  // present state"; milestone 28's first device call), so a direct step or
  // a prompt records plainly.
  void record_attention_event(cudaEvent_t e) {
    cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    LONGKV_CUDA_CHECK(cudaStreamIsCapturing(s_, &cs));
    LONGKV_CUDA_CHECK(
        cudaEventRecordWithFlags(e, s_, cs == cudaStreamCaptureStatusActive ? cudaEventRecordExternal : 0u));
  }

  // The replay key of the next single-token step: every cache's, whether
  // logits are copied, whether it is greedy, and the scratch buffers'
  // identity (a longer prompt reallocates the activations and the attention
  // partials, and a captured step must not replay into freed memory); false
  // if some cache has none.
  bool step_key(bool want_logits, bool greedy, std::vector<uint64_t>* key) const {
    key->assign(1, (want_logits ? 1 : 2) | (time_decode_attention_ ? 4 : 0) | (greedy ? 8 : 0));
    key->push_back(scratch_gen_);
    key->push_back(reinterpret_cast<uint64_t>(ws_.a.as()));
    key->push_back(reinterpret_cast<uint64_t>(ws_.b.as()));
    for (const auto& cache : caches_)
      if (!cache->replay_key(key)) return false;
    return true;
  }

  // A captured single-token step: its executable, the replay key it was
  // captured for, whether it records the attention events, and its own pair
  // of them (a record node names its event; the two executables alternate).
  struct StepGraph {
    cudaGraphExec_t exec = nullptr;
    std::vector<uint64_t> key;
    bool timed = false;
    cudaEvent_t ev_a = nullptr, ev_b = nullptr;
  };

  // Records the single-token step at pos (the caches' host state as it is
  // now) on stream `cs` into g: an in-place update of g's executable when
  // only kernel parameters changed, else a new instantiation.
  void capture(StepGraph& g, const std::vector<uint64_t>& key, int pos, bool want_logits, bool greedy,
               cudaStream_t cs) {
    cudaGraph_t graph = nullptr;
    const cudaStream_t own = s_;
    s_ = cs;  // enqueue launches on s_ and records rec_a_, rec_b_
    rec_a_ = g.ev_a;
    rec_b_ = g.ev_b;
    LONGKV_CUDA_CHECK(cudaStreamBeginCapture(s_, cudaStreamCaptureModeRelaxed));
    try {
      g.timed = enqueue(ids_host_, 1, pos, want_logits, false, greedy);
    } catch (...) {
      cudaStreamEndCapture(s_, &graph);
      s_ = own;
      rec_a_ = ev_a_;
      rec_b_ = ev_b_;
      if (graph) cudaGraphDestroy(graph);
      cudaGetLastError();
      g.key.clear();
      throw;
    }
    const cudaError_t ended = cudaStreamEndCapture(s_, &graph);
    s_ = own;
    rec_a_ = ev_a_;
    rec_b_ = ev_b_;
    LONGKV_CUDA_CHECK(ended);
    bool ok = false;
    if (g.exec) {
      cudaGraphExecUpdateResultInfo info;
      ok = cudaGraphExecUpdate(g.exec, graph, &info) == cudaSuccess;
      if (!ok) {
        cudaGetLastError();  // the refused update is not an error of the step
        cudaGraphExecDestroy(g.exec);
        g.exec = nullptr;
      }
    }
    cudaError_t e = cudaSuccess;
    if (!ok) e = cudaGraphInstantiate(&g.exec, graph, 0);
    cudaGraphDestroy(graph);
    g.key.clear();
    LONGKV_CUDA_CHECK(e);
    g.key = key;
    ++captures_;
  }

  // Called right after a single-token step was launched (the caches' host
  // state is already the next step's): if the next step's key has no
  // executable, capture it now into ahead_, on the capture stream, while the
  // GPU runs this one. Capturing runs the caches' host side of a step, so
  // their state is saved first and put back after. A workspace that had to
  // grow during the capture moved (the key holds its address), so the next
  // step then simply captures again.
  void capture_ahead(int pos, bool want_logits, bool greedy) {
    std::vector<uint64_t> key;
    if (!step_key(want_logits, greedy, &key) || key == cur_.key || key == ahead_.key) return;
    std::vector<std::vector<int64_t>> saved;
    saved.reserve(caches_.size());
    for (const auto& cache : caches_) saved.push_back(cache->host_state());
    const double tc = now_seconds();
    try {
      capture(ahead_, key, pos, want_logits, greedy, cs_);
    } catch (...) {
      for (size_t i = 0; i < caches_.size(); ++i) caches_[i]->set_host_state(saved[i]);
      throw;
    }
    for (size_t i = 0; i < caches_.size(); ++i) caches_[i]->set_host_state(saved[i]);
    step_times_.ahead_s += now_seconds() - tc;
    ++step_times_.ahead;
  }

  // rmsnorm(x) * norm as a GEMV's activation (xb: scratch of the unfused path).
  GemvAct norm_act(const float* x, const DeviceBuffer& norm, float* xb) const {
    GemvAct a;
    a.kind = GemvAct::rmsnorm;
    a.x = x;
    a.norm = norm.as<float>();
    a.eps = cfg_.rms_eps;
    a.scratch = xb;
    return a;
  }

  // A batched step's GEMV that makes its activation in its converter
  // (BatchAct; CudaTuning::batch_fused_act, milestone 58).
  bool batch_act_ok(const GpuWeight& w) const {
    return batch_seqs_ && cuda_tuning().batch_fused_act && gemv_batch_supported(w);
  }
  BatchAct batch_norm(const float* x, const DeviceBuffer& norm) const {
    BatchAct a;
    a.kind = BatchAct::rmsnorm;
    a.x = x;
    a.norm = norm.as<float>();
    a.eps = cfg_.rms_eps;
    return a;
  }

  // same_x: a batched step's previous matmul read the same x into a matrix of the same type and shape
  // (gemv_batch's converted x, int8 or f16 by the shape, is reused).
  void matmul(const GpuWeight& w, const float* xin, int n, float* y, bool accumulate, bool same_x = false) {
    if (batch_seqs_ && gemv_batch_supported(w))
      gemv_batch(w, BatchAct::of(xin), n, y, accumulate, batch_scratch_, s_, same_x);
    else if (n == 1) gemv(w, xin, y, accumulate, s_);
    else cuda::gemm(ws_.cublas, w, xin, n, y, accumulate, opt_.gemm, gemm_scratch_, s_);
  }

  // A batched step's attention of layer l: token i of sequence
  // batch_seqs_[i] (its q, k, v rows of the step's matrices, before RoPE,
  // q_stride and kv_stride floats apart) over that sequence's cache, at the
  // position its cell of dpos_ holds -> att [n][q_dim].
  void attend_batch(int l, int n, float* q, float* k, const float* v, int q_stride, int kv_stride,
                    const DecodeRope& drope, float* att) {
    const ModelConfig& c = cfg_;
    const size_t qd = c.q_dim();
    if (cuda_tuning().batch_one_launch) {  // every sequence's quantized step in two launches (milestone 55)
      GpuKvCache* cs[kMaxBatchSeqs];
      for (int i = 0; i < n; ++i) cs[i] = &cache_of(batch_seqs_[i], l);
      if (batch_ws_.size() < static_cast<size_t>(n)) batch_ws_ = std::vector<GpuAttnWorkspace>(opt_.max_seqs);
      if (decode_block_batch(cs, n, q, k, v, q_stride, kv_stride, drope, att, qd, batch_ws_.data(),
                             cuda_tuning().batch_v3_groups, cuda_tuning().batch_v3_blocks, s_))
        return;
    }
    // Streams the sequences spread over (CudaTuning::batch_streams): sequence
    // i on stream i % ns, stream 0 being s_; the others start where s_ is (q,
    // k, v made) and s_ waits for them after the loop.
    const int ns = std::min(batch_streams_for(coded_kv_), n);
    // ws_ is the single-token step's too: its share goes back to 1 on every way out.
    struct ShareGuard {
      GpuAttnWorkspace& ws;
      ~ShareGuard() { ws.v3_wave_share = 1; }
    } guard{ws_};
    ws_.v3_wave_share = batch_v3_wave_share_for(coded_kv_);
    if (ns > 1) {
      if (!ev_fork_) LONGKV_CUDA_CHECK(cudaEventCreateWithFlags(&ev_fork_, cudaEventDisableTiming));
      LONGKV_CUDA_CHECK(cudaEventRecord(ev_fork_, s_));
      for (int j = 0; j < ns - 1; ++j) {
        if (!sx_[j]) {
          LONGKV_CUDA_CHECK(cudaStreamCreateWithFlags(&sx_[j], cudaStreamNonBlocking));
          LONGKV_CUDA_CHECK(cudaEventCreateWithFlags(&ev_join_[j], cudaEventDisableTiming));
          wsx_[j].a.reserve(ws_.a.bytes());
          wsx_[j].b.reserve(ws_.b.bytes());
          decode_block_reserve(wsx_[j], c.n_kv_heads);
        }
        LONGKV_CUDA_CHECK(cudaStreamWaitEvent(sx_[j], ev_fork_, 0));
        wsx_[j].v3_wave_share = ws_.v3_wave_share;
      }
    }
    for (int i = 0; i < n; ++i) {
      const int b = batch_seqs_[i];
      GpuKvCache& cache = cache_of(b, l);
      const int si = i % ns;
      const cudaStream_t st = si ? sx_[si - 1] : s_;
      GpuAttnWorkspace& ws = si ? wsx_[si - 1] : ws_;
      float *qi = q + static_cast<size_t>(q_stride) * i, *ki = k + static_cast<size_t>(kv_stride) * i;
      const float* vi = v + static_cast<size_t>(kv_stride) * i;
      if (cache.decode_block_ok(drope)) {
        cache.decode_block(qi, ki, vi, drope, att + qd * i, ws, st);
        continue;
      }
      const int* dp = dpos_.as<int>() + b;
      rope(drope.inv_freq, c.head_dim, rope_dim_, drope.neox, qi, 1, c.n_heads, 0, st, dp);
      rope(drope.inv_freq, c.head_dim, rope_dim_, drope.neox, ki, 1, c.n_kv_heads, 0, st, dp);
      cache.append(ki, vi, 1, st);
      cache.attend(qi, 1, att + qd * i, ws, st);
    }
    for (int j = 0; j < ns - 1; ++j) {
      LONGKV_CUDA_CHECK(cudaEventRecord(ev_join_[j], sx_[j]));
      LONGKV_CUDA_CHECK(cudaStreamWaitEvent(s_, ev_join_[j], 0));
    }
  }

  GpuKvCache& cache_of(int seq, int l) { return seq == 0 ? *caches_[l] : *seq_caches_[seq - 1][l]; }

  void ensure_scratch(int n) {
    if (n <= scratch_n_) return;
    // In-flight kernels may still use the old buffers.
    LONGKV_CUDA_CHECK(cudaStreamSynchronize(s_));
    const ModelConfig& c = cfg_;
    const size_t sn = static_cast<size_t>(n), f = sizeof(float);
    ids_.resize(sn * sizeof(int32_t));
    x_.resize(sn * c.dim * f);
    xb_.resize(sn * c.dim * f);
    q_.resize(sn * c.q_dim() * f);
    k_.resize(sn * c.kv_dim() * f);
    v_.resize(sn * c.kv_dim() * f);
    att_.resize(sn * c.q_dim() * f);
    gate_.resize(sn * c.ffn_dim * f);
    up_.resize(sn * c.ffn_dim * f);
    qkv_.resize(sn * std::max<size_t>(c.q_dim() + 2 * c.kv_dim(), 2 * c.ffn_dim) * f);  // n rows: a batch's q|k|v
    for (DeviceBuffer* b : {&x8a_, &x8b_}) b->resize(x8_off(c.dim) + 2 * (c.dim / 16) * f);
    logits_.resize(sn * c.n_vocab * f);
    scratch_n_ = n;
    ++scratch_gen_;
  }

  ModelConfig cfg_;
  CudaModelOptions opt_;
  cudaStream_t s_ = nullptr;
  cudaEvent_t ev_a_ = nullptr, ev_b_ = nullptr;  // a direct step's attention events
  cudaEvent_t rec_a_ = nullptr, rec_b_ = nullptr;  // the ones enqueue records: these, or a StepGraph's
  cudaEvent_t ev_g0_ = nullptr, ev_g1_ = nullptr;  // around a replay (StepTimes::time_gpu)
  GpuAttnWorkspace ws_;
  DeviceBuffer tok_buf_, out_buf_, output_norm_, inv_freq_;
  GpuWeight tok_embd_, output_;
  std::vector<GpuLayer> layers_;
  int rope_dim_ = 0;
  std::vector<std::unique_ptr<GpuKvCache>> caches_;
  // Sequences 1..max_seqs-1 of batched decode (forward_batch), their caches per layer.
  std::vector<std::vector<std::unique_ptr<GpuKvCache>>> seq_caches_;
  const int* batch_seqs_ = nullptr;     // during a batched step: the sequence of each token
  bool coded_kv_ = false;               // quantized caches (a batched step's streams: batch_streams_for)
  std::vector<GpuAttnWorkspace> batch_ws_;  // a batched one-launch step's partials and tickets, one a sequence
  DeviceBuffer batch_scratch_;          // gemv_batch's int8 activations
  float* batch_logits_host_ = nullptr;  // pinned: forward_batch's logits [max_seqs][n_vocab]
  // CudaTuning::batch_streams: the streams beside s_, their workspaces and
  // the events that fork them from s_ and join them back (made on first use).
  static constexpr int kMaxExtraStreams = kMaxBatchStreams - 1;
  cudaStream_t sx_[kMaxExtraStreams] = {};
  GpuAttnWorkspace wsx_[kMaxExtraStreams];
  cudaEvent_t ev_fork_ = nullptr, ev_join_[kMaxExtraStreams] = {};
  ForwardTimings timings_;
  int scratch_n_ = 0;
  uint64_t scratch_gen_ = 0;  // bumped whenever ensure_scratch reallocates
  DeviceBuffer ids_, x_, xb_, q_, k_, v_, att_, gate_, up_, logits_, gemm_scratch_;
  DeviceBuffer qkv_;                  // one token's stacked GEMV outputs (q|k|v, then gate|up)
  // Int8 x between GEMVs (CudaTuning::gemv_x8): x8a_ from wo to gate|up,
  // x8b_ from down to the next q|k|v (or the output GEMV). Two buffers, so a
  // writer never meets a reader of its last contents: each kernel of the
  // step completes after the one before it, through the PDL waits.
  DeviceBuffer x8a_, x8b_;
  static size_t x8_off(int dim) { return (static_cast<size_t>(dim) + 255) / 256 * 256; }
  GemvAct::X8 x8_view(DeviceBuffer& b, const DeviceBuffer* norm) const {
    const size_t n16 = static_cast<size_t>(cfg_.dim / 16);
    float* f = reinterpret_cast<float*>(b.as<uint8_t>() + x8_off(cfg_.dim));
    return {b.as<int8_t>(), f, f + n16, norm ? norm->as<float>() : nullptr};
  }
  // Whether this single-token step passes x between its GEMVs in int8 form.
  bool x8_step() const {
    if ((cuda_tuning().gemv_x8 & 3) == 0 || cfg_.dim % 32 != 0) return false;
    if (!gemv_x8_supported(output_, false)) return false;
    for (const GpuLayer& L : layers_)
      if (L.wqkv.rows == 0 || L.wgu.rows == 0 || !L.glu || !gemv_x8_supported(L.wqkv, false) ||
          !gemv_x8_supported(L.wgu, false) || !gemv_x8_supported(L.wo, true) || !gemv_x8_supported(L.w_down, true))
        return false;
    return true;
  }
  int32_t* ids_host_ = nullptr;       // pinned: the token id a captured step copies
  float* logits_host_ = nullptr;      // pinned: one row of logits (forward_view)
  std::vector<float> logits_pageable_;  // forward_view with CudaTuning::logits_pageable
  int* pos_host_ = nullptr;           // pinned: the position, copied to dpos_ by every single-token step
  DeviceBuffer dpos_;
  // Greedy steps (decode_greedy): greedy_next's state, and the ring it
  // appends each token to, in mapped pinned memory the host reads once the
  // step's event (ev_step_, alternating) has completed.
  static constexpr int kRing = 4;
  DeviceBuffer greedy_;
  // forward_top: the device's per-slice keys and its k keys, the k keys'
  // pinned host copy and the decoded candidates.
  DeviceBuffer top_part_, top_keys_;
  unsigned long long* top_keys_host_ = nullptr;
  std::vector<std::pair<float, int32_t>> top_;
  int32_t* ring_host_ = nullptr;
  int32_t* ring_dev_ = nullptr;
  cudaEvent_t ev_step_[2] = {nullptr, nullptr};
  StepGraph cur_, ahead_;  // the executable replayed now; the next step's, captured ahead
  cudaStream_t cs_ = nullptr;  // the capture-ahead stream (records only, runs nothing)
  int captures_ = 0, replays_ = 0;
  StepTimes step_times_;
  bool time_decode_attention_ = false;  // single-token steps record the attention events
  int direct_steps_ = 0;
  bool last_greedy_ = false;  // the last single-token step was decode_greedy's (what a prompt captures ahead)
};

}  // namespace
}  // namespace cuda

namespace {
// LONGKV_CUDA_GRAPHS: 1 on, 0 off, -1 unset (the options decide).
int graphs_env() {
  const char* e = std::getenv("LONGKV_CUDA_GRAPHS");
  if (!e || !*e) return -1;
  return std::strcmp(e, "0") == 0 ? 0 : 1;
}
}  // namespace

bool cuda_graphs_default() { return graphs_env() != 0; }

std::unique_ptr<CudaModel> CudaModel::create(const ModelWeights& w, const CudaModelOptions& o) {
  CudaModelOptions opt = o;
  if (graphs_env() >= 0) opt.graphs = graphs_env() == 1;
  return std::make_unique<cuda::CudaModelImpl>(w, opt);
}

}  // namespace longkv
