// The KV mode string: one string selects how a cache stores keys and
// values, and every tool prints it back fully spelled out.
//
// Grammar (fields separated by ':'; order free after the first):
//   f32 | f16                         dense caches
//   k<B>v<B>[:g<G>][:r<R>][:s<S>][:rope=pre|post][:sym][:rot][:o<P>][:a<P>[:anchor=kdev|attn]]
//     B in {8, 4, 3, 2, 1}: key / value bits (asymmetric integer codes)
//     g<G>  group size (default 32): keys per channel over G tokens, values
//           per token over G channels (G divides head_dim; multiple of 8)
//     r<R>  fp16 residual window of the R most recent tokens (default 128)
//     s<S>  fp16 attention-sink tokens at the start (default 4)
//     rope=pre  quantize keys before RoPE, rotate at attention time
//               (KVQuant); default post (KIVI)
//     sym   symmetric codes (scale only, zero fixed at the mid code)
//     rot   store Hadamard-rotated keys and values (see rotated_cache.h)
//     o<P>  keep P percent of each group record's elements (0 < P <= 10,
//           decimals allowed) as fp16 outliers outside the fitted ranges,
//           keys and values (KVQuant's dense-and-sparse; kv_codec.h)
//     a<P>  let about P percent of the tokens (0 < P <= 10, decimals
//           allowed; plus a burst reserve of G tokens with anchor=kdev)
//           become fp16 anchor tokens that keep their whole key and value
//           exact when they leave the window (AnTKV; quant_cache.h). Needs
//           rope=post (an anchored group is not a run of consecutive
//           positions).
//     anchor=kdev  (default) choose the tokens whose key lies farthest from
//           its KV head's mean key, per head (anchor_score.h)
//     anchor=attn  choose the tokens that received the most attention
//           while in the window (summed over heads); needs ':a'
// Examples: "k4v4", "k2v2:g32:r128:s4", "k4v2:rope=pre", "k2v4:r0", "k2v2:rot:o2",
//           "k2v2:rot:o2:a3", "k2v2:a1:anchor=attn".
#pragma once

#include <string>

namespace longkv {

enum class KvKind { f32, f16, quant };

// How anchor tokens (":a<P>") are chosen (anchor_score.h, quant_cache.h).
enum class KvAnchorScore {
  kdev,  // default: the key's distance from its head's mean key, per KV head
  attn,  // "anchor=attn": attention received in the window, summed over heads
};

struct KvMode {
  KvKind kind = KvKind::f16;
  int k_bits = 16, v_bits = 16;
  int group = 32;
  int residual = 128;
  int sinks = 4;
  bool pre_rope = false;
  bool symmetric = false;
  bool rotate = false;
  double outlier_pct = 0;  // o<P>: percent of elements kept as outliers
  double anchor_pct = 0;   // a<P>: percent of the capacity that may become anchors
  KvAnchorScore anchor_score = KvAnchorScore::kdev;  // anchor=kdev|attn
  // fit=minmax|mse: each group's range from its min and max, or refined to
  // the least squared error (kv_codec.h, Numbers). Asymmetric codes only.
  bool fit_mse = false;
  // cut=attend (default; "defer" is its older spelling): groups are cut at
  // the end of attend(), after the attention of the tokens just appended, so
  // a prefill chunk reads its own tokens exactly, as decode reads its window.
  // cut=append (defer = false): groups are cut as tokens arrive, so a chunk's
  // rows read the chunk's older tokens as codes. The codes are the same
  // either way; anchored modes always cut after attention.
  bool defer = true;

  // Canonical, fully spelled-out string ("k4v2:g32:r128:s4:rope=post";
  // then ":sym", ":rot", ":fit=mse", ":cut=append", ":o<P>", ":a<P>" when set, in that
  // order, and ":anchor=attn" after ":a<P>" when that score is chosen).
  std::string to_string() const;
  // Warnings worth printing (e.g. K bits < V bits); empty if none.
  std::string warning() const;
};

// Parses a mode string; throws Error with the reason and the grammar.
KvMode parse_kv_mode(const std::string& s);

// The grammar in one line, for --help texts and error messages.
extern const char* const kKvModeGrammar;

}  // namespace longkv
