// Hugging Face checkpoint (config.json + model.safetensors, or sharded via
// model.safetensors.index.json) -> ModelWeights. F32/F16/BF16 matrices stay
// in the mappings; q/k rows keep HF's half-rotation order, so the model is
// marked RopeStyle::neox.
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/log.h"
#include "formats/safetensors.h"
#include "model/loader_common.h"
#include "model/model_loader.h"

namespace longkv {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

json read_json(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  LONGKV_CHECK(f.good(), "%s: cannot open: %s", path.c_str(), std::strerror(errno));
  std::stringstream ss;
  ss << f.rdbuf();
  json j;
  try {
    j = json::parse(ss.str());
  } catch (const json::exception& e) {
    std::string msg = e.what();
    std::replace(msg.begin(), msg.end(), '\n', ' ');
    fail("%s: not valid JSON: %s", path.c_str(), msg.c_str());
  }
  LONGKV_CHECK(j.is_object(), "%s: top level is not a JSON object", path.c_str());
  return j;
}

class HfConfig {
 public:
  HfConfig(json j, std::string path) : j_(std::move(j)), path_(std::move(path)) {}

  bool has(const char* key) const {
    const auto it = j_.find(key);
    return it != j_.end() && !it->is_null();
  }
  int64_t integer(const char* key) const {
    LONGKV_CHECK(has(key), "%s: missing field '%s'", path_.c_str(), key);
    const json& v = j_.at(key);
    LONGKV_CHECK(v.is_number_integer(), "%s: field '%s' is not an integer", path_.c_str(), key);
    return v.get<int64_t>();
  }
  int integer32(const char* key) const { return checked_int(integer(key), path_, key); }
  int integer32(const char* key, int def) const { return has(key) ? integer32(key) : def; }
  double number(const char* key, double def) const {
    if (!has(key)) return def;
    const json& v = j_.at(key);
    LONGKV_CHECK(v.is_number(), "%s: field '%s' is not a number", path_.c_str(), key);
    return v.get<double>();
  }
  bool boolean(const char* key, bool def) const {
    if (!has(key)) return def;
    const json& v = j_.at(key);
    LONGKV_CHECK(v.is_boolean(), "%s: field '%s' is not a boolean", path_.c_str(), key);
    return v.get<bool>();
  }
  std::string string(const char* key, const std::string& def) const {
    if (!has(key)) return def;
    const json& v = j_.at(key);
    LONGKV_CHECK(v.is_string(), "%s: field '%s' is not a string", path_.c_str(), key);
    return v.get<std::string>();
  }
  const json& raw() const { return j_; }
  const std::string& path() const { return path_; }

 private:
  json j_;
  std::string path_;
};

// config.json's rope_scaling (transformers' names): "default" changes
// nothing; "linear" divides every RoPE frequency by `factor`; "llama3"
// (Llama 3.1 / 3.2) divides each by llama3_rope_factors' smooth divisor.
// "dynamic", "yarn" and "longrope" scale with the sequence length or change
// attention's temperature: not supported, said by name.
void apply_rope_scaling(const HfConfig& rs, ModelConfig& c) {
  LONGKV_CHECK(rs.raw().is_object(), "%s is not an object", rs.path().c_str());
  const std::string type = rs.string("rope_type", rs.string("type", ""));
  LONGKV_CHECK(!type.empty(), "%s: missing field 'rope_type'", rs.path().c_str());
  if (type == "default") return;
  LONGKV_CHECK(type == "linear" || type == "llama3",
               "%s: rope_type '%s' is not supported (default, linear and llama3 are)", rs.path().c_str(),
               type.c_str());
  LONGKV_CHECK(rs.has("factor"), "%s: missing field 'factor'", rs.path().c_str());
  const double factor = rs.number("factor", 0.0);
  LONGKV_CHECK(std::isfinite(factor) && factor > 0, "%s: factor %g must be > 0", rs.path().c_str(), factor);
  if (type == "linear") {
    c.rope_freq_factors.assign(static_cast<size_t>(c.rope_dim / 2), static_cast<float>(factor));
    c.rope_scaling = strprintf("linear x%g", factor);
    return;
  }
  const double low = rs.number("low_freq_factor", 1.0), high = rs.number("high_freq_factor", 4.0);
  const double orig = rs.number("original_max_position_embeddings", 8192.0);
  LONGKV_CHECK(low > 0 && high > low && orig > 0,
               "%s: needs 0 < low_freq_factor < high_freq_factor and original_max_position_embeddings > 0 "
               "(got %g, %g, %g)", rs.path().c_str(), low, high, orig);
  c.rope_freq_factors = llama3_rope_factors(c.rope_dim, c.rope_base, factor, low, high, orig);
  c.rope_scaling = strprintf("llama3 x%g (low %g, high %g, original ctx %g)", factor, low, high, orig);
}

std::string arch_from_config(const HfConfig& cfg, const std::string& path) {
  std::string type = cfg.string("model_type", "");
  if (type.empty() && cfg.has("architectures") && cfg.raw().at("architectures").is_array()) {
    for (const auto& a : cfg.raw().at("architectures")) {
      if (!a.is_string()) continue;
      const std::string s = a.get<std::string>();
      if (s == "LlamaForCausalLM") type = "llama";
      if (s == "MistralForCausalLM") type = "mistral";
      if (s == "Qwen2ForCausalLM") type = "qwen2";
    }
  }
  LONGKV_CHECK(!type.empty(), "%s: missing field 'model_type'", path.c_str());
  LONGKV_CHECK(type == "llama" || type == "mistral" || type == "qwen2",
               "%s: unsupported model_type '%s' (supported: llama, mistral, qwen2)", path.c_str(),
               type.c_str());
  return type;
}

// All tensors of a checkpoint, over one or several shard files.
class TensorSet {
 public:
  void add_file(std::shared_ptr<SafetensorsFile> f) {
    for (const auto& t : f->tensors()) by_name_[t.name] = &t;
    files_.push_back(std::move(f));
  }
  // Shards named by an index: each listed tensor must be in its shard.
  void add_indexed(const std::string& index_path) {
    const json idx = read_json(index_path);
    const auto wm = idx.find("weight_map");
    LONGKV_CHECK(wm != idx.end() && wm->is_object(), "%s: missing object 'weight_map'",
                 index_path.c_str());
    const fs::path dir = fs::path(index_path).parent_path();
    std::map<std::string, std::shared_ptr<SafetensorsFile>> shards;
    for (const auto& [tensor, shard] : wm->items()) {
      LONGKV_CHECK(shard.is_string(), "%s: weight_map entry '%s' is not a file name",
                   index_path.c_str(), tensor.c_str());
      const std::string file = shard.get<std::string>();
      // Shards live beside the index; a path would let an index point anywhere.
      LONGKV_CHECK(!file.empty() && file.find('/') == std::string::npos && file != "..",
                   "%s: weight_map entry '%s' names '%s', not a file beside the index",
                   index_path.c_str(), tensor.c_str(), file.c_str());
      auto& sf = shards[file];
      if (!sf) {
        sf = SafetensorsFile::open((dir / file).string());
        files_.push_back(sf);
      }
      const SafetensorsTensor* t = sf->find(tensor);
      LONGKV_CHECK(t, "%s: weight_map puts tensor '%s' in %s, which does not hold it",
                   index_path.c_str(), tensor.c_str(), file.c_str());
      by_name_[tensor] = t;
    }
  }

  const SafetensorsTensor* find(const std::string& name) const {
    const auto it = by_name_.find(name);
    return it == by_name_.end() ? nullptr : it->second;
  }
  const std::vector<std::shared_ptr<SafetensorsFile>>& files() const { return files_; }
  const std::map<std::string, const SafetensorsTensor*>& all() const { return by_name_; }

 private:
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, const SafetensorsTensor*> by_name_;
};

class HfWeightReader {
 public:
  HfWeightReader(const TensorSet& set, std::string src, ModelWeights& w)
      : set_(set), src_(std::move(src)), w_(w) {}

  const SafetensorsTensor* tensor(const std::string& name, std::vector<uint64_t> shape,
                                  bool required = true) const {
    const SafetensorsTensor* t = set_.find(name);
    if (!t) {
      LONGKV_CHECK(!required, "%s: missing tensor '%s'", src_.c_str(), name.c_str());
      return nullptr;
    }
    LONGKV_CHECK(t->shape == shape, "%s: tensor '%s' has shape %s, expected %s", src_.c_str(),
                 name.c_str(), shape_str(t->shape).c_str(), shape_str(shape).c_str());
    LONGKV_CHECK(t->dtype == SafetensorsDtype::F32 || t->dtype == SafetensorsDtype::F16 ||
                     t->dtype == SafetensorsDtype::BF16,
                 "%s: tensor '%s' has unsupported dtype %s (need F32, F16 or BF16)", src_.c_str(),
                 name.c_str(), safetensors_dtype_name(t->dtype));
    return t;
  }

  WeightView matrix(const std::string& name, int64_t rows, int64_t cols) {
    const SafetensorsTensor* t =
        tensor(name, {static_cast<uint64_t>(rows), static_cast<uint64_t>(cols)});
    WeightView v;
    v.type = weight_type(t->dtype);
    v.rows = rows;
    v.cols = cols;
    v.data = t->data;
    // The byte buffer starts right after the JSON header, whose length the
    // writer chooses; kernels expect element-aligned rows, so copy the rare
    // misaligned tensor.
    const size_t elem = row_bytes(v.type, 1);
    if (reinterpret_cast<uintptr_t>(v.data) % elem != 0) {
      auto copy = std::make_shared<std::vector<uint8_t>>(t->data, t->data + t->nbytes());
      v.data = copy->data();
      w_.storage.push_back(copy);
    }
    return v;
  }

  std::vector<float> vec(const std::string& name, int64_t n, bool required = true) const {
    const SafetensorsTensor* t = tensor(name, {static_cast<uint64_t>(n)}, required);
    if (!t) return {};
    // Through a copy: the source may be misaligned for the element type.
    const WeightType wt = weight_type(t->dtype);
    std::vector<uint8_t> bytes(t->data, t->data + t->nbytes());
    return weight_to_floats(wt, bytes.data(), n);
  }

  void reject(const std::string& name) const {
    LONGKV_CHECK(!set_.find(name), "%s: tensor '%s' is not supported (no such term in the model)",
                 src_.c_str(), name.c_str());
  }

 private:
  static WeightType weight_type(SafetensorsDtype d) {
    switch (d) {
      case SafetensorsDtype::F16: return WeightType::F16;
      case SafetensorsDtype::BF16: return WeightType::BF16;
      default: return WeightType::F32;
    }
  }
  static std::string shape_str(const std::vector<uint64_t>& s) {
    std::string out = "[";
    for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
    return out + "]";
  }

  const TensorSet& set_;
  std::string src_;
  ModelWeights& w_;
};

}  // namespace

LoadedModel load_safetensors_model(const std::string& path) {
  // Resolve the directory, config.json and the weight files.
  std::error_code ec;
  const fs::path given(path);
  const bool as_dir = fs::is_directory(given, ec) || given.filename() == "config.json";
  fs::path dir = fs::is_directory(given, ec) ? given : given.parent_path();
  if (dir.empty()) dir = ".";
  const std::string config_path = (dir / "config.json").string();
  TensorSet set;
  std::string weights_src;
  if (as_dir) {
    const fs::path single = dir / "model.safetensors";
    const fs::path index = dir / "model.safetensors.index.json";
    if (fs::exists(single, ec)) {
      weights_src = single.string();
      set.add_file(SafetensorsFile::open(weights_src));
    } else if (fs::exists(index, ec)) {
      weights_src = index.string();
      set.add_indexed(weights_src);
    } else {
      fail("%s: no model.safetensors or model.safetensors.index.json", dir.string().c_str());
    }
  } else if (given.extension() == ".json") {
    weights_src = path;
    set.add_indexed(path);
  } else {
    weights_src = path;
    set.add_file(SafetensorsFile::open(path));
  }

  const HfConfig hc(read_json(config_path), config_path);
  const char* cp = config_path.c_str();
  ModelConfig c;
  c.arch = arch_from_config(hc, config_path);
  c.name = path_stem(dir.string());
  c.dim = hc.integer32("hidden_size");
  c.ffn_dim = hc.integer32("intermediate_size");
  c.n_layers = hc.integer32("num_hidden_layers");
  c.n_heads = hc.integer32("num_attention_heads");
  c.n_kv_heads = hc.integer32("num_key_value_heads", c.n_heads);
  c.n_vocab = hc.integer32("vocab_size");
  // Defaults are those of transformers' LlamaConfig.
  c.ctx_len = hc.integer32("max_position_embeddings", 2048);
  c.rms_eps = static_cast<float>(hc.number("rms_norm_eps", 1e-6));
  c.rope_base = static_cast<float>(hc.number("rope_theta", 10000.0));
  LONGKV_CHECK(c.n_heads > 0 && (hc.has("head_dim") || c.dim % c.n_heads == 0),
               "%s: num_attention_heads %d does not divide hidden_size %d", cp, c.n_heads, c.dim);
  c.head_dim = hc.integer32("head_dim", c.dim / c.n_heads);
  c.rope_dim = c.head_dim;
  c.rope = RopeStyle::neox;
  if (hc.has("rope_scaling")) {
    apply_rope_scaling(HfConfig(hc.raw().at("rope_scaling"), config_path + ": rope_scaling"), c);
  }
  const std::string act = hc.string("hidden_act", "silu");
  LONGKV_CHECK(act == "silu", "%s: hidden_act '%s' is not supported (need silu)", cp, act.c_str());
  validate_model_config(c, config_path);

  LoadedModel out;
  ModelWeights& w = out.weights;
  w.cfg = c;
  w.source = "safetensors";
  for (const auto& f : set.files()) w.storage.push_back(f);
  HfWeightReader r(set, weights_src, w);

  w.tok_embd = r.matrix("model.embed_tokens.weight", c.n_vocab, c.dim);
  w.output_norm = r.vec("model.norm.weight", c.dim);
  if (!hc.boolean("tie_word_embeddings", false) && set.find("lm_head.weight")) {
    w.output = r.matrix("lm_head.weight", c.n_vocab, c.dim);
  } else {
    w.output = w.tok_embd;
    w.tied_output = true;
  }
  w.layers.resize(static_cast<size_t>(c.n_layers));
  for (int i = 0; i < c.n_layers; ++i) {
    const std::string b = "model.layers." + std::to_string(i) + ".";
    LayerWeights& l = w.layers[static_cast<size_t>(i)];
    l.attn_norm = r.vec(b + "input_layernorm.weight", c.dim);
    l.ffn_norm = r.vec(b + "post_attention_layernorm.weight", c.dim);
    l.wq = r.matrix(b + "self_attn.q_proj.weight", c.q_dim(), c.dim);
    l.wk = r.matrix(b + "self_attn.k_proj.weight", c.kv_dim(), c.dim);
    l.wv = r.matrix(b + "self_attn.v_proj.weight", c.kv_dim(), c.dim);
    l.wo = r.matrix(b + "self_attn.o_proj.weight", c.dim, c.q_dim());
    l.bq = r.vec(b + "self_attn.q_proj.bias", c.q_dim(), false);
    l.bk = r.vec(b + "self_attn.k_proj.bias", c.kv_dim(), false);
    l.bv = r.vec(b + "self_attn.v_proj.bias", c.kv_dim(), false);
    l.w_gate = r.matrix(b + "mlp.gate_proj.weight", c.ffn_dim, c.dim);
    l.w_up = r.matrix(b + "mlp.up_proj.weight", c.ffn_dim, c.dim);
    l.w_down = r.matrix(b + "mlp.down_proj.weight", c.dim, c.ffn_dim);
    for (const char* bias : {"self_attn.o_proj.bias", "mlp.gate_proj.bias", "mlp.up_proj.bias",
                             "mlp.down_proj.bias"}) {
      r.reject(b + bias);
    }
  }
  return out;
}

}  // namespace longkv
