// Host-buffer wrappers around single kernel paths, for the tests that compare
// them with the CPU reference (tests/test_cuda.cpp).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <vector>

#include "backend/cuda/gpu_kv_cache.cuh"

namespace longkv {
using namespace cuda;

namespace {

DeviceBuffer to_device(const void* p, size_t bytes) {
  DeviceBuffer b(bytes);
  LONGKV_CUDA_CHECK(cudaMemcpy(b.as(), p, bytes, cudaMemcpyHostToDevice));
  return b;
}

// Poisons outputs so an unwritten element cannot pass as a result.
DeviceBuffer poisoned(size_t bytes) {
  DeviceBuffer b(bytes);
  LONGKV_CUDA_CHECK(cudaMemset(b.as(), 0xFF, bytes));  // NaN for f32
  return b;
}

void sync_check() {
  LONGKV_CUDA_CHECK(cudaGetLastError());
  LONGKV_CUDA_CHECK(cudaDeviceSynchronize());
}

// A check GEMV's activation: RMSNorm(x) * norm made in its load.
GemvAct rmsnorm_act(const float* x, const float* norm, float eps, float* scratch) {
  GemvAct a;
  a.kind = GemvAct::rmsnorm;
  a.x = x;
  a.norm = norm;
  a.eps = eps;
  a.scratch = scratch;
  return a;
}

// RoPE in a check GEMV's store: the first rope_heads heads rotated to pos,
// which the kernel reads from device memory as in a decode step (fb, pb hold
// the frequencies and the position).
void set_rope(GemvAct& a, const RopeTable& rope, int rope_heads, int64_t pos, DeviceBuffer& fb, DeviceBuffer& pb) {
  const int p32 = static_cast<int>(pos);
  fb = to_device(rope.inv_freq, sizeof(float) * (rope.rope_dim / 2));
  pb = to_device(&p32, sizeof p32);
  a.rope = {fb.as<float>(), pb.as<int>(), 0, rope_heads, rope.head_dim, rope.rope_dim, rope.style == RopeStyle::neox};
}

}  // namespace

void cuda_check_matmul(const WeightView& w, const float* x, int n_tok, float* y, CudaGemm g) {
  DeviceBuffer wb;
  const GpuWeight gw = upload_weight(w, wb, nullptr);
  DeviceBuffer xb = to_device(x, sizeof(float) * n_tok * w.cols);
  DeviceBuffer yb = poisoned(sizeof(float) * n_tok * w.rows);
  if (n_tok == 1) {
    gemv(gw, xb.as<float>(), yb.as<float>(), false, nullptr);
  } else {
    cublasHandle_t h;
    LONGKV_CUBLAS_CHECK(cublasCreate(&h));
    DeviceBuffer scratch;
    gemm(h, gw, xb.as<float>(), n_tok, yb.as<float>(), false, g, scratch, nullptr);
    sync_check();
    cublasDestroy(h);
  }
  sync_check();
  LONGKV_CUDA_CHECK(cudaMemcpy(y, yb.as(), yb.bytes(), cudaMemcpyDeviceToHost));
}

void cuda_check_gemv_batch(const WeightView& w, const float* x, int n_tok, float* y) {
  DeviceBuffer wb;
  const GpuWeight gw = upload_weight(w, wb, nullptr);
  DeviceBuffer xb = to_device(x, sizeof(float) * n_tok * w.cols);
  DeviceBuffer yb = poisoned(sizeof(float) * n_tok * w.rows), scratch;
  gemv_batch(gw, BatchAct::of(xb.as<float>()), n_tok, yb.as<float>(), false, scratch, nullptr);
  sync_check();
  LONGKV_CUDA_CHECK(cudaMemcpy(y, yb.as(), yb.bytes(), cudaMemcpyDeviceToHost));
}

void cuda_check_gemv_batch_act(const WeightView& w, int act, const float* x, const float* norm, float eps,
                               int n_tok, float* y_fused, float* y_separate) {
  LONGKV_CHECK(act >= 1 && act <= 3, "cuda_check_gemv_batch_act: act %d (1..3)", act);
  DeviceBuffer wb;
  const GpuWeight gw = upload_weight(w, wb, nullptr);
  const size_t cols = static_cast<size_t>(w.cols), in = static_cast<size_t>(n_tok) * cols * (act == 1 ? 1 : 2);
  DeviceBuffer xb = to_device(x, sizeof(float) * in);
  DeviceBuffer nb = act == 1 ? to_device(norm, sizeof(float) * cols) : DeviceBuffer();
  DeviceBuffer h(sizeof(float) * n_tok * cols * 2), scratch;
  BatchAct a;
  a.kind = act == 1 ? BatchAct::rmsnorm : BatchAct::swiglu;
  a.x = xb.as<float>();
  a.norm = nb.as<float>();
  a.eps = eps;
  a.pairs = act == 2;
  DeviceBuffer yf = poisoned(sizeof(float) * n_tok * w.rows), ys = poisoned(yf.bytes());
  gemv_batch(gw, a, n_tok, yf.as<float>(), false, scratch, nullptr);
  // The separate ops: rmsnorm_kernel, or the gate and up rows gathered on
  // the host into [n][cols] each and swiglu_kernel in place on the gate.
  float* hx = h.as<float>();
  if (act == 1) {
    rmsnorm(xb.as<float>(), nb.as<float>(), n_tok, static_cast<int>(cols), eps, hx, nullptr);
  } else {
    std::vector<float> g(n_tok * cols), u(g.size());
    for (int t = 0; t < n_tok; ++t)
      for (size_t c = 0; c < cols; ++c) {
        const float* row = x + static_cast<size_t>(t) * 2 * cols;
        g[t * cols + c] = act == 2 ? row[2 * c] : row[c];
        u[t * cols + c] = act == 2 ? row[2 * c + 1] : row[cols + c];
      }
    LONGKV_CUDA_CHECK(cudaMemcpy(hx, g.data(), sizeof(float) * g.size(), cudaMemcpyHostToDevice));
    LONGKV_CUDA_CHECK(cudaMemcpy(hx + g.size(), u.data(), sizeof(float) * u.size(), cudaMemcpyHostToDevice));
    swiglu(hx, hx + g.size(), g.size(), nullptr);
  }
  gemv_batch(gw, BatchAct::of(hx), n_tok, ys.as<float>(), false, scratch, nullptr);
  sync_check();
  LONGKV_CUDA_CHECK(cudaMemcpy(y_fused, yf.as(), yf.bytes(), cudaMemcpyDeviceToHost));
  LONGKV_CUDA_CHECK(cudaMemcpy(y_separate, ys.as(), ys.bytes(), cudaMemcpyDeviceToHost));
}

void cuda_check_ffn_glu(const WeightView& gate, const WeightView& up, const WeightView& down, const float* x,
                        const float* norm, float eps, float* y_glu, float* y_plain) {
  LONGKV_CHECK(gemv_glu_supported(gate.type, gate.cols), "cuda_check_ffn_glu: %s rows of %lld take no SwiGLU store",
               weight_traits(gate.type).name, static_cast<long long>(gate.cols));
  const int64_t ffn = gate.rows;
  DeviceBuffer ib, sb, db;
  GpuWeight parts[2];
  const GpuWeight inter = upload_interleaved(gate, up, ib, parts, nullptr);
  const GpuWeight stacked = upload_stacked({&gate, &up}, sb, parts, nullptr);
  const GpuWeight wd = upload_weight(down, db, nullptr);
  DeviceBuffer xb = to_device(x, sizeof(float) * gate.cols), nb = to_device(norm, sizeof(float) * gate.cols);
  DeviceBuffer scratch(sizeof(float) * gate.cols), h = poisoned(sizeof(float) * 2 * ffn);
  GemvAct a = rmsnorm_act(xb.as<float>(), nb.as<float>(), eps, scratch.as<float>());
  for (int glu = 0; glu < 2; ++glu) {
    DeviceBuffer y(sizeof(float) * down.rows);
    LONGKV_CUDA_CHECK(cudaMemset(y.as(), 0, y.bytes()));  // w_down accumulates, as into the residual
    a.glu = glu;
    gemv_act(glu ? inter : stacked, a, h.as<float>(), false, nullptr);
    if (glu) {
      gemv(wd, h.as<float>(), y.as<float>(), true, nullptr);
    } else {
      GemvAct sw;
      sw.kind = GemvAct::swiglu;
      sw.x = sw.scratch = h.as<float>();
      sw.up = h.as<float>() + ffn;
      gemv_act(wd, sw, y.as<float>(), true, nullptr);
    }
    sync_check();
    LONGKV_CUDA_CHECK(cudaMemcpy(glu ? y_glu : y_plain, y.as(), y.bytes(), cudaMemcpyDeviceToHost));
  }
}

void cuda_check_interleaved_gemm(const WeightView& gate, const WeightView& up, const float* x, int n_tok,
                                 float* y_parts, float* y_plain) {
  DeviceBuffer ib, gb, ub;
  GpuWeight parts[2];
  upload_interleaved(gate, up, ib, parts, nullptr);
  const GpuWeight plain[2] = {upload_weight(gate, gb, nullptr), upload_weight(up, ub, nullptr)};
  DeviceBuffer xb = to_device(x, sizeof(float) * n_tok * gate.cols);
  cublasHandle_t h;
  LONGKV_CUBLAS_CHECK(cublasCreate(&h));
  DeviceBuffer scratch;
  const size_t n = static_cast<size_t>(n_tok) * gate.rows;
  for (int i = 0; i < 2; ++i) {
    DeviceBuffer y1 = poisoned(sizeof(float) * n), y2 = poisoned(sizeof(float) * n);
    gemm(h, parts[i], xb.as<float>(), n_tok, y1.as<float>(), false, CudaGemm::f16, scratch, nullptr);
    gemm(h, plain[i], xb.as<float>(), n_tok, y2.as<float>(), false, CudaGemm::f16, scratch, nullptr);
    sync_check();
    LONGKV_CUDA_CHECK(cudaMemcpy(y_parts + i * n, y1.as(), y1.bytes(), cudaMemcpyDeviceToHost));
    LONGKV_CUDA_CHECK(cudaMemcpy(y_plain + i * n, y2.as(), y2.bytes(), cudaMemcpyDeviceToHost));
  }
  cublasDestroy(h);
}

void cuda_check_gemv_act(const WeightView& w, int act, const float* x, const float* norm, float eps, const float* up,
                         float* y, const RopeTable* rope, int rope_heads, int64_t pos) {
  LONGKV_CHECK(act >= 0 && act <= 2, "cuda_check_gemv_act: act must be 0, 1 or 2 (got %d)", act);
  DeviceBuffer wb;
  const GpuWeight gw = upload_weight(w, wb, nullptr);
  const size_t xbytes = sizeof(float) * w.cols;
  DeviceBuffer xb = to_device(x, xbytes), scratch(xbytes), nb, ub;
  GemvAct a;
  a.kind = static_cast<GemvAct::Kind>(act);
  a.x = xb.as<float>();
  a.eps = eps;
  a.scratch = scratch.as<float>();
  if (act == 1) {
    nb = to_device(norm, xbytes);
    a.norm = nb.as<float>();
  } else if (act == 2) {
    ub = to_device(up, xbytes);
    a.up = ub.as<float>();
    a.scratch = xb.as<float>();
  }
  DeviceBuffer fb, pb;
  if (rope) set_rope(a, *rope, rope_heads, pos, fb, pb);
  DeviceBuffer yb = poisoned(sizeof(float) * w.rows);
  gemv_act(gw, a, yb.as<float>(), false, nullptr);
  sync_check();
  LONGKV_CUDA_CHECK(cudaMemcpy(y, yb.as(), yb.bytes(), cudaMemcpyDeviceToHost));
}

void cuda_check_gemv_x8_chain(const WeightView& writer, const WeightView& reader, const float* o, const float* y0,
                              const float* norm, float eps, bool x8, float* y_w, float* y_r, const RopeTable* rope,
                              int rope_heads, int64_t pos) {
  const int dim = static_cast<int>(writer.rows);
  LONGKV_CHECK(reader.cols == writer.rows && dim % 16 == 0, "cuda_check_gemv_x8_chain: the reader reads the writer's "
               "%d rows (a multiple of 16; reader cols %lld)", dim, static_cast<long long>(reader.cols));
  DeviceBuffer wb, rb;
  const GpuWeight gw = upload_weight(writer, wb, nullptr), gr = upload_weight(reader, rb, nullptr);
  const size_t dbytes = sizeof(float) * dim;
  DeviceBuffer ob = to_device(o, sizeof(float) * writer.cols), yw = to_device(y0, dbytes), nb = to_device(norm, dbytes),
               scratch(dbytes), fb, pb;
  // The int8 form as the model lays it out: codes, then scales and sums of squares per 16.
  const size_t off = (static_cast<size_t>(dim) + 255) / 256 * 256, n16 = static_cast<size_t>(dim / 16);
  DeviceBuffer xq = poisoned(off + 2 * sizeof(float) * n16);
  float* f = reinterpret_cast<float*>(xq.as<uint8_t>() + off);
  const GemvAct::X8 form{xq.as<int8_t>(), f, f + n16, nullptr};
  GemvAct p;
  p.x = ob.as<float>();
  if (x8) {
    p.x8_out = form;
    p.x8_out.norm = nb.as<float>();
  }
  gemv_act(gw, p, yw.as<float>(), true, nullptr);
  GemvAct a = rmsnorm_act(yw.as<float>(), nb.as<float>(), eps, scratch.as<float>());
  if (x8) a.x8_in = form;
  if (rope) set_rope(a, *rope, rope_heads, pos, fb, pb);
  DeviceBuffer yr = poisoned(sizeof(float) * reader.rows);
  gemv_act(gr, a, yr.as<float>(), false, nullptr);
  sync_check();
  LONGKV_CUDA_CHECK(cudaMemcpy(y_w, yw.as(), dbytes, cudaMemcpyDeviceToHost));
  LONGKV_CUDA_CHECK(cudaMemcpy(y_r, yr.as(), yr.bytes(), cudaMemcpyDeviceToHost));
}

int32_t cuda_check_argmax(const float* x, int n, int rounds) {
  LONGKV_CHECK(rounds >= 1 && rounds <= 4, "cuda_check_argmax: 1..4 rounds");
  DeviceBuffer xb = to_device(x, sizeof(float) * n), st(sizeof(GreedyState)), ids = poisoned(sizeof(int32_t)),
               pos(sizeof(int)), ring = poisoned(4 * sizeof(int32_t));
  LONGKV_CUDA_CHECK(cudaMemset(st.as(), 0, st.bytes()));
  LONGKV_CUDA_CHECK(cudaMemset(pos.as(), 0, pos.bytes()));
  for (int r = 0; r < rounds; ++r)
    greedy_next(xb.as<float>(), n, st.as<GreedyState>(), ids.as<int32_t>(), pos.as<int>(), ring.as<int32_t>(), 3,
                nullptr);
  sync_check();
  GreedyState h;
  int32_t id = -1, p = -1, r[4];
  LONGKV_CUDA_CHECK(cudaMemcpy(&h, st.as(), sizeof h, cudaMemcpyDeviceToHost));
  LONGKV_CUDA_CHECK(cudaMemcpy(&id, ids.as(), sizeof id, cudaMemcpyDeviceToHost));
  LONGKV_CUDA_CHECK(cudaMemcpy(&p, pos.as(), sizeof p, cudaMemcpyDeviceToHost));
  LONGKV_CUDA_CHECK(cudaMemcpy(r, ring.as(), sizeof r, cudaMemcpyDeviceToHost));
  // Each round leaves the state ready for the next and says the same.
  LONGKV_CHECK(h.best == 0 && h.done == 0 && h.count == static_cast<unsigned>(rounds) && p == rounds,
               "greedy_next left state best %llu done %u count %u, position %d after %d rounds", h.best, h.done,
               h.count, p, rounds);
  for (int i = 0; i < rounds; ++i)
    LONGKV_CHECK(r[i] == id, "greedy_next round %d appended %d, the id is %d", i, r[i], id);
  return id;
}

std::vector<std::pair<float, int32_t>> cuda_check_top_k(const float* x, int n, int k) {
  DeviceBuffer xb = to_device(x, sizeof(float) * n), out = poisoned(sizeof(unsigned long long) * k);
  DeviceBuffer part = poisoned(sizeof(unsigned long long) * top_k_scratch_keys(n, k));
  top_k_keys(xb.as<float>(), n, k, part.as<unsigned long long>(), out.as<unsigned long long>(), nullptr);
  sync_check();
  std::vector<unsigned long long> keys(k);
  LONGKV_CUDA_CHECK(cudaMemcpy(keys.data(), out.as(), sizeof(unsigned long long) * k, cudaMemcpyDeviceToHost));
  std::vector<std::pair<float, int32_t>> top(k);
  for (int j = 0; j < k; ++j) logit_key_decode(keys[j], &top[j].first, &top[j].second);
  return top;
}

void cuda_check_rmsnorm(const float* x, const float* weight, int n_rows, int dim, float eps, float* y) {
  DeviceBuffer xb = to_device(x, sizeof(float) * n_rows * dim), wb = to_device(weight, sizeof(float) * dim);
  DeviceBuffer yb = poisoned(sizeof(float) * n_rows * dim);
  rmsnorm(xb.as<float>(), wb.as<float>(), n_rows, dim, eps, yb.as<float>(), nullptr);
  sync_check();
  LONGKV_CUDA_CHECK(cudaMemcpy(y, yb.as(), yb.bytes(), cudaMemcpyDeviceToHost));
}

void cuda_check_rope(const RopeTable& t, float* x, int n_tok, int n_heads, int64_t pos0) {
  const size_t bytes = sizeof(float) * n_tok * n_heads * t.head_dim;
  DeviceBuffer xb = to_device(x, bytes), fb = to_device(t.inv_freq, sizeof(float) * (t.rope_dim / 2));
  rope(fb.as<float>(), t.head_dim, t.rope_dim, t.style == RopeStyle::neox, xb.as<float>(), n_tok, n_heads, pos0,
       nullptr);
  sync_check();
  LONGKV_CUDA_CHECK(cudaMemcpy(x, xb.as(), bytes, cudaMemcpyDeviceToHost));
}

void cuda_check_attention(const KvShape& s, const std::string& kv_mode, const float* k, const float* v, int n_ctx,
                          int append_chunk, const float* q, int n_q, float* out, CudaGemm g, CudaKvDump* dump) {
  auto cache = make_gpu_kv_cache(kv_mode, s);
  const size_t row = static_cast<size_t>(s.kv_dim());
  DeviceBuffer kb = to_device(k, sizeof(float) * n_ctx * row), vb = to_device(v, sizeof(float) * n_ctx * row);
  for (int p = 0; p < n_ctx; p += append_chunk) {
    const int n = std::min(append_chunk, n_ctx - p);
    cache->append(kb.as<float>() + p * row, vb.as<float>() + p * row, n, nullptr);
  }
  GpuAttnWorkspace ws;
  ws.gemm = g;
  LONGKV_CUBLAS_CHECK(cublasCreate(&ws.cublas));
  const size_t qbytes = sizeof(float) * n_q * s.q_dim();
  DeviceBuffer qb = to_device(q, qbytes), ob = poisoned(qbytes);
  cache->attend(qb.as<float>(), n_q, ob.as<float>(), ws, nullptr);
  sync_check();
  cublasDestroy(ws.cublas);
  LONGKV_CUDA_CHECK(cudaMemcpy(out, ob.as(), qbytes, cudaMemcpyDeviceToHost));
  if (dump) cache->dump_codes(dump);
}

void cuda_check_chunked_attention(const KvShape& s, const std::string& kv_mode, const float* k, const float* v,
                                  const float* q, const std::vector<int>& chunks, float* out, CudaKvDump* dump) {
  auto cache = make_gpu_kv_cache(kv_mode, s);
  int total = 0;
  for (int c : chunks) total += c;
  const size_t row = static_cast<size_t>(s.kv_dim()), qrow = static_cast<size_t>(s.q_dim());
  DeviceBuffer kb = to_device(k, sizeof(float) * total * row), vb = to_device(v, sizeof(float) * total * row);
  DeviceBuffer qb = to_device(q, sizeof(float) * total * qrow), ob = poisoned(sizeof(float) * total * qrow);
  GpuAttnWorkspace ws;
  ws.gemm = CudaGemm::f32;
  LONGKV_CUBLAS_CHECK(cublasCreate(&ws.cublas));
  int p = 0;
  for (int n : chunks) {
    cache->append(kb.as<float>() + p * row, vb.as<float>() + p * row, n, nullptr);
    cache->attend(qb.as<float>() + p * qrow, n, ob.as<float>() + p * qrow, ws, nullptr);
    sync_check();
    p += n;
  }
  cublasDestroy(ws.cublas);
  LONGKV_CUDA_CHECK(cudaMemcpy(out, ob.as(), ob.bytes(), cudaMemcpyDeviceToHost));
  if (dump) cache->dump_codes(dump);
}

void cuda_check_decode_steps(const KvShape& s, const std::string& kv_mode, const float* k, const float* v, int n_ctx,
                             int append_chunk, int steps, const float* q, const RopeTable* rope, bool fused,
                             float* out, const float* q2, float* out2) {
  LONGKV_CHECK(steps >= 1 && steps <= n_ctx, "cuda_check_decode_steps: 1 <= steps <= n_ctx");
  auto cache = make_gpu_kv_cache(kv_mode, s);
  const size_t row = static_cast<size_t>(s.kv_dim()), qrow = static_cast<size_t>(s.q_dim());
  DeviceBuffer kb = to_device(k, sizeof(float) * n_ctx * row), vb = to_device(v, sizeof(float) * n_ctx * row);
  const int n0 = n_ctx - steps;
  for (int p = 0; p < n0; p += append_chunk) {
    const int n = std::min(append_chunk, n0 - p);
    cache->append(kb.as<float>() + p * row, vb.as<float>() + p * row, n, nullptr);
  }
  GpuAttnWorkspace ws;
  LONGKV_CUBLAS_CHECK(cublasCreate(&ws.cublas));
  decode_block_reserve(ws, s.n_kv_heads);
  DeviceBuffer qb = to_device(q, sizeof(float) * steps * qrow), ob = poisoned(sizeof(float) * steps * qrow);
  DeviceBuffer fb, posb(sizeof(int));
  DecodeRope dr;
  if (rope) {
    fb = to_device(rope->inv_freq, sizeof(float) * (rope->rope_dim / 2));
    dr = {fb.as<float>(), rope->rope_dim, rope->style == RopeStyle::neox};
  }
  cache->set_step_position(posb.as<int>());
  for (int i = 0; i < steps; ++i) {
    const int pos = n0 + i;
    LONGKV_CUDA_CHECK(cudaMemcpy(posb.as(), &pos, sizeof pos, cudaMemcpyHostToDevice));
    float* qi = qb.as<float>() + i * qrow;
    float* ki = kb.as<float>() + pos * row;
    float* vi = vb.as<float>() + pos * row;
    float* oi = ob.as<float>() + i * qrow;
    if (fused) {
      LONGKV_CHECK(cache->decode_block_ok(dr), "cuda_check_decode_steps: the fused step does not apply");
      cache->decode_block(qi, ki, vi, dr, oi, ws, nullptr);
    } else {
      if (rope) {
        cuda::rope(dr.inv_freq, s.head_dim, dr.rope_dim, dr.neox, qi, 1, s.n_heads, pos, nullptr, posb.as<int>());
        cuda::rope(dr.inv_freq, s.head_dim, dr.rope_dim, dr.neox, ki, 1, s.n_kv_heads, pos, nullptr, posb.as<int>());
      }
      cache->append(ki, vi, 1, nullptr);
      cache->attend(qi, 1, oi, ws, nullptr);
    }
    sync_check();
  }
  LONGKV_CUDA_CHECK(cudaMemcpy(out, ob.as(), ob.bytes(), cudaMemcpyDeviceToHost));
  cache->set_step_position(nullptr);
  DeviceBuffer q2b = to_device(q2, sizeof(float) * qrow), o2b = poisoned(sizeof(float) * qrow);
  cache->attend(q2b.as<float>(), 1, o2b.as<float>(), ws, nullptr);
  sync_check();
  cublasDestroy(ws.cublas);
  LONGKV_CUDA_CHECK(cudaMemcpy(out2, o2b.as(), o2b.bytes(), cudaMemcpyDeviceToHost));
}

CudaAttnSpeed cuda_bench_decode_attention(const KvShape& s, const std::string& kv_mode, int n_ctx) {
  KvShape sh = s;
  sh.max_tokens = n_ctx + 1;
  std::vector<std::unique_ptr<GpuKvCache>> caches;
  caches.push_back(make_gpu_kv_cache(kv_mode, sh));
  caches[0]->fill_random(n_ctx, 1, nullptr);
  const double bytes = static_cast<double>(caches[0]->footprint().gpu_bytes);
  // Rotate over >= 512 MiB of caches so the 50 MB L2 holds none of them.
  const int n_caches = static_cast<int>(std::clamp(std::ceil(536870912.0 / bytes), 1.0, 24.0));
  for (int i = 1; i < n_caches; ++i) {
    caches.push_back(make_gpu_kv_cache(kv_mode, sh));
    caches.back()->fill_random(n_ctx, 1 + i, nullptr);
  }
  const size_t qbytes = sizeof(float) * s.q_dim(), kvbytes = sizeof(float) * s.kv_dim();
  std::vector<float> qh(s.q_dim()), kvh(s.kv_dim());
  for (size_t i = 0; i < qh.size(); ++i) qh[i] = std::sin(0.37f * i);
  for (size_t i = 0; i < kvh.size(); ++i) kvh[i] = std::cos(0.11f * i);
  DeviceBuffer qb = to_device(qh.data(), qbytes), kvb = to_device(kvh.data(), kvbytes), ob(qbytes);
  for (auto& c : caches) c->append(kvb.as<float>(), kvb.as<float>(), 1, nullptr);
  GpuAttnWorkspace ws;
  LONGKV_CUBLAS_CHECK(cublasCreate(&ws.cublas));
  for (auto& c : caches) c->attend(qb.as<float>(), 1, ob.as<float>(), ws, nullptr);  // warm-up, workspace growth
  sync_check();
  cudaEvent_t e0, e1;
  LONGKV_CUDA_CHECK(cudaEventCreate(&e0));
  LONGKV_CUDA_CHECK(cudaEventCreate(&e1));
  const int reps = std::max(20, 2 * n_caches);
  LONGKV_CUDA_CHECK(cudaEventRecord(e0));
  for (int r = 0; r < reps; ++r) caches[r % n_caches]->attend(qb.as<float>(), 1, ob.as<float>(), ws, nullptr);
  LONGKV_CUDA_CHECK(cudaEventRecord(e1));
  LONGKV_CUDA_CHECK(cudaEventSynchronize(e1));
  float ms = 0;
  LONGKV_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cublasDestroy(ws.cublas);
  sync_check();
  CudaAttnSpeed r;
  r.us = 1e3 * ms / reps;
  r.kv_bytes = bytes;
  r.caches = n_caches;
  return r;
}

double cuda_kv_bytes_per_token(const std::string& kv_mode, const KvShape& s) { return gpu_kv_bytes_per_token(kv_mode, s); }

CudaGemvSpeed cuda_bench_gemv(WeightType t, int rows, int cols, int n_tok) {
  const size_t ld = gpu_row_stride(t, cols), one = ld * rows;
  const int copies = static_cast<int>(std::max<size_t>(2, (size_t(512) << 20) / one));
  const int nt = std::max(1, n_tok);
  DeviceBuffer w(one * copies + kWeightPadBytes), x(sizeof(float) * cols * nt), y(sizeof(float) * rows * nt);
  DeviceBuffer scratch;
  auto run = [&](const GpuWeight& g) {
    if (n_tok > 0) gemv_batch(g, BatchAct::of(x.as<float>()), n_tok, y.as<float>(), false, scratch, nullptr);
    else gemv(g, x.as<float>(), y.as<float>(), false, nullptr);
  };
  // Random bytes everywhere (also in the f16 scales: their values do not
  // change the work); never time on zeros.
  fill_random_f16(w.as<__half>(), w.bytes() / 2, 99, nullptr);
  fill_random_f16(reinterpret_cast<__half*>(x.as<float>()), static_cast<size_t>(cols) * 2 * nt, 98, nullptr);
  std::vector<GpuWeight> ws(copies);
  for (int i = 0; i < copies; ++i) ws[i] = GpuWeight{t, rows, cols, ld, w.as<uint8_t>() + one * i};
  cudaEvent_t e0, e1;
  LONGKV_CUDA_CHECK(cudaEventCreate(&e0));
  LONGKV_CUDA_CHECK(cudaEventCreate(&e1));
  for (int i = 0; i < copies; ++i) run(ws[i]);
  const int reps = 4 * copies;
  LONGKV_CUDA_CHECK(cudaEventRecord(e0));
  for (int i = 0; i < reps; ++i) run(ws[i % copies]);
  LONGKV_CUDA_CHECK(cudaEventRecord(e1));
  LONGKV_CUDA_CHECK(cudaEventSynchronize(e1));
  float ms = 0;
  LONGKV_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
  CudaGemvSpeed r;
  r.us_per_call = 1e3 * ms / reps;
  r.gbs = static_cast<double>(row_bytes(t, cols)) * rows / (r.us_per_call * 1e-6) / 1e9;
  // Host cost of a launch: many tiny GEMVs back to back, host clock.
  GpuWeight tiny = ws[0];
  tiny.rows = 2;
  sync_check();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 2000; ++i) run(tiny);
  sync_check();
  r.launch_us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / 2000;
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  return r;
}

}  // namespace longkv
