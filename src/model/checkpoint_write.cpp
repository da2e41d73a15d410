#include "model/checkpoint_write.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <vector>

#include "core/error.h"
#include "io/mapped_file.h"
#include "quant/ggml_types.h"

namespace moe {

namespace {

namespace fs = std::filesystem;

constexpr size_t kChunkBytes = size_t{8} << 20;  // output bytes per fill call

std::string join(const std::string& dir, const std::string& name) {
  return dir.empty() || dir.back() == '/' ? dir + name : dir + "/" + name;
}

int64_t numel_of(const std::vector<int64_t>& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

std::string shape_csv(const std::vector<int64_t>& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) out += (i ? "," : "") + std::to_string(s[i]);
  return out;
}

// The stored matrix of a tensor in a block type: rows of `cols` weights along its input axis.
struct BlockLayout {
  int64_t rows = 0, cols = 0, row_bytes = 0;
};

BlockLayout block_layout(const TensorSpec& s, QType t) {
  BlockLayout b;
  b.cols = s.in_major ? s.shape[s.shape.size() - 2] : s.shape.back();
  b.rows = numel_of(s.shape) / b.cols;
  b.row_bytes = qtype_row_bytes(t, b.cols);
  return b;
}

// One output tensor: where its rows come from and how they are stored.
struct OutTensor {
  TensorSpec spec;
  QType type = QT_F32;            // QT_F32: as it is
  StStreamTensor st;              // name, dtype, stored shape
  const StTensor* src = nullptr;  // quantize only
};

// Header entry and metadata for spec s stored as type t (QT_F32: src_dtype as it is).
OutTensor plan_tensor(const TensorSpec& s, QType t, DType src_dtype,
                      std::map<std::string, std::string>* meta) {
  OutTensor o;
  o.spec = s;
  o.type = t;
  o.st.name = s.name;
  if (qtype_is_written_block(t)) {
    const BlockLayout b = block_layout(s, t);
    o.st.dtype = DT_U8;
    o.st.shape = {b.rows, b.row_bytes};
    (*meta)["moe.quant." + s.name] =
        std::string(qtype_name(t)) + ":" + shape_csv(s.shape) + (s.in_major ? ":t" : "");
  } else {
    o.st.dtype = t == QT_BF16 ? DT_BF16 : src_dtype;
    o.st.shape = s.shape;
  }
  return o;
}

std::map<std::string, std::string> base_metadata(QType t, bool experts_only) {
  return {{"format", "pt"},
          {"moe.format_version", "1"},
          {"moe.quant_type", qtype_name(t)},
          {"moe.quant_scope", experts_only ? "experts" : "all"}};
}

// Stores n fp32 rows (n, cols) as `t` into dst; false if a value cannot be stored (non-finite, or
// beyond the range of the fp16 block scales).
bool store_rows(QType t, const float* x, int64_t n, int64_t cols, uint8_t* dst) {
  const int64_t rb = qtype_row_bytes(t, cols);
  bool ok = true;
  for (int64_t i = 0; i < n * cols; ++i) ok &= std::isfinite(x[i]) && std::fabs(x[i]) < 5e5f;
  for (int64_t r = 0; r < n; ++r) quantize_row(t, x + r * cols, dst + r * rb, cols);
  return ok;
}

void copy_file(const std::string& from, const std::string& to) {
  const std::string text = read_text_file(from);
  write_file_atomic(to, text.data(), text.size());
}

// --- quantize ------------------------------------------------------------------------------

// Fills rows [r0, r0 + n) of an output tensor from its source tensor.
bool fill_quantized(const OutTensor& o, int64_t r0, int64_t n, uint8_t* dst) {
  const StTensor& src = *o.src;
  const size_t es = dtype_size(src.dtype);
  if (o.type == QT_F32 || (o.type == QT_BF16 && src.dtype == DT_BF16)) {
    const int64_t rb = (src.shape.empty() ? 1 : src.shape.back()) * static_cast<int64_t>(es);
    std::memcpy(dst, src.data + r0 * rb, static_cast<size_t>(n * rb));
    return true;
  }
  bool ok = true;
  if (!qtype_is_written_block(o.type) || !o.spec.in_major) {
    // Stored rows are the source's rows (along the last axis).
    const int64_t cols = o.spec.shape.back();
    const int64_t rb = qtype_row_bytes(o.type, cols);
#pragma omp parallel reduction(&& : ok)
    {
      std::vector<float> row(cols);  // (cols)
#pragma omp for schedule(static)
      for (int64_t r = 0; r < n; ++r) {
        dtype_to_f32(src.dtype, src.data + (r0 + r) * cols * es, row.data(), cols);
        ok = store_rows(o.type, row.data(), 1, cols, dst + r * rb) && ok;
      }
    }
    return ok;
  }
  // Transposed: source (P, R, C), stored row (a, j) = source[a, :, j], R weights long.
  const int64_t R = o.spec.shape[o.spec.shape.size() - 2], C = o.spec.shape.back();
  const int64_t rb = qtype_row_bytes(o.type, R);
  std::vector<float> tile;  // (rows of this group, R)
  for (int64_t r = r0; r < r0 + n;) {
    const int64_t a = r / C, j0 = r % C, j1 = std::min(C, j0 + (r0 + n - r));
    const int64_t w = j1 - j0;
    tile.resize(static_cast<size_t>(w * R));
#pragma omp parallel
    {
      std::vector<float> part(w);  // (w) source row a, k, columns j0..j1
#pragma omp for schedule(static)
      for (int64_t k = 0; k < R; ++k) {
        dtype_to_f32(src.dtype, src.data + ((a * R + k) * C + j0) * es, part.data(), w);
        for (int64_t jj = 0; jj < w; ++jj) tile[jj * R + k] = part[jj];
      }
    }
#pragma omp parallel for schedule(static) reduction(&& : ok)
    for (int64_t jj = 0; jj < w; ++jj)
      ok = store_rows(o.type, tile.data() + jj * R, 1, R, dst + (r - r0 + jj) * rb) && ok;
    r += w;
  }
  return ok;
}

// --- init ----------------------------------------------------------------------------------

uint64_t splitmix64(uint64_t* s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t name_hash(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ULL;
  return h;
}

bool ends_with(const std::string& s, const char* suf) {
  const size_t n = std::strlen(suf);
  return s.size() >= n && s.compare(s.size() - n, n, suf) == 0;
}

enum InitKind { INIT_NORMAL, INIT_ONE, INIT_ZERO };

InitKind init_kind(const std::string& name) {
  if (name.find("norm") != std::string::npos) return INIT_ONE;
  if (ends_with(name, "bias") || ends_with(name, "sinks")) return INIT_ZERO;
  return INIT_NORMAL;
}

// Row `row` of a tensor, `cols` values: N(0, 0.02) (random_normal_row), ones or zeros.
void random_row(uint64_t seed, uint64_t tensor_hash, int64_t row, InitKind kind, float* out,
                int64_t cols) {
  if (kind != INIT_NORMAL) {
    std::fill(out, out + cols, kind == INIT_ONE ? 1.0f : 0.0f);
    return;
  }
  random_normal_row(seed, tensor_hash, row, out, cols);
}

void fill_random(const OutTensor& o, uint64_t seed, int64_t r0, int64_t n, uint8_t* dst) {
  const InitKind kind = init_kind(o.spec.name);
  const uint64_t h = name_hash(o.spec.name);
  const int64_t cols = qtype_is_written_block(o.type) ? block_layout(o.spec, o.type).cols
                                              : (o.spec.shape.empty() ? 1 : o.spec.shape.back());
  const QType t = o.type;  // QT_F32 writes fp32 rows
  const int64_t rb = qtype_row_bytes(t, cols);
#pragma omp parallel
  {
    std::vector<float> row(cols);  // (cols)
#pragma omp for schedule(static)
    for (int64_t r = 0; r < n; ++r) {
      random_row(seed, h, r0 + r, kind, row.data(), cols);
      quantize_row(t, row.data(), dst + r * rb, cols);
    }
  }
}

}  // namespace

void random_normal_row(uint64_t seed, uint64_t key, int64_t row, float* out, int64_t cols) {
  uint64_t s = seed ^ key;
  splitmix64(&s);
  s += static_cast<uint64_t>(row) * 0xd1b54a32d192ed03ULL;
  const float k = 0.02f * std::sqrt(3.0f) / 65536.0f;
  for (int64_t i = 0; i < cols; ++i) {
    const uint64_t v = splitmix64(&s);
    const uint32_t sum = static_cast<uint32_t>((v & 0xffff) + ((v >> 16) & 0xffff) +
                                               ((v >> 32) & 0xffff) + (v >> 48));
    out[i] = (static_cast<float>(sum) - 2.0f * 65535.0f) * k;  // mean 0 (uniforms on 0..65535)
  }
}

QType ckpt_tensor_type(const TensorSpec& s, QType t, bool experts_only) {
  if (t == QT_F32 || s.role == TR_OTHER) return QT_F32;
  if ((s.role == TR_LINEAR || s.role == TR_OUTPUT) && experts_only) return QT_F32;
  if (s.role == TR_OUTPUT && t == QT_Q4_0) t = QT_Q8_0;
  if (s.role == TR_OUTPUT && (t == QT_Q4_K || t == QT_Q5_K)) t = QT_Q6_K;
  if (qtype_is_written_block(t)) {
    if (s.shape.size() < 2) return QT_F32;
    const int64_t in = s.in_major ? s.shape[s.shape.size() - 2] : s.shape.back();
    if (in > 0 && in % qtype_block_size(t) != 0 && in % kQBlock == 0) t = QT_Q8_0;  // K-quants
    if (in <= 0 || in % kQBlock != 0) return QT_F32;
  }
  return t;
}

void write_dir_atomic(const std::string& out_arg,
                      const std::function<void(const std::string&)>& write) {
  std::string out = out_arg;
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  if (out.empty()) fail("the output folder name is empty");
  struct stat st;
  if (::lstat(out.c_str(), &st) == 0)
    fail("%s: already exists; give a new output folder", out.c_str());
  const std::string tmp = out + ".tmp." + std::to_string(::getpid());
  std::error_code ec;
  fs::remove_all(tmp, ec);
  if (::mkdir(tmp.c_str(), 0755) != 0)
    fail("%s: cannot create the output folder: %s", out.c_str(), std::strerror(errno));
  try {
    write(tmp);
    if (::rename(tmp.c_str(), out.c_str()) != 0)
      fail("%s: cannot rename %s into place: %s", out.c_str(), tmp.c_str(), std::strerror(errno));
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
}

void ckpt_quantize(const std::string& in_dir, const std::string& out_dir, QType t,
                   bool experts_only, CkptWriteStats* stats) {
  if (t != QT_BF16 && !qtype_is_written_block(t))
    fail("quantize: type %s is not a storage type to convert to (bf16, q8_0, q4_0, q4_k, q5_k, "
         "q6_k)", qtype_name(t));
  Model m;
  LoadOptions lo;
  lo.no_data = true;
  model_load(&m, in_dir, lo);
  for (const auto& meta : m.archive.file_metadata)
    for (const auto& kv : meta)
      if (kv.first.rfind("moe.quant.", 0) == 0)
        fail(
            "%s: already holds quantized tensors (e.g. '%s'); quantize from the original "
            "checkpoint",
            in_dir.c_str(), kv.first.substr(10).c_str());

  std::map<std::string, std::string> meta = base_metadata(t, experts_only);
  std::vector<OutTensor> outs;
  *stats = CkptWriteStats();
  std::vector<TensorSpec> specs = model_tensor_specs(m.cfg, m.fused_experts);
  if (m.cfg.tie_embeddings && m.archive.find("lm_head.weight"))  // tied, yet stored: keep it
    specs.push_back({"lm_head.weight", {m.cfg.vocab, m.cfg.hidden}, TR_OTHER, false});
  for (const TensorSpec& s : specs) {
    const StTensor* src = m.archive.find(s.name);
    if (!src) continue;  // tied lm_head absent from the checkpoint
    OutTensor o = plan_tensor(s, ckpt_tensor_type(s, t, experts_only), src->dtype, &meta);
    o.src = src;
    stats->bytes_in += static_cast<int64_t>(src->nbytes);
    stats->n_converted += o.type != QT_F32;
    outs.push_back(std::move(o));
  }
  stats->n_tensors = static_cast<int>(outs.size());
  stats->n_dropped = static_cast<int>(m.archive.tensors.size() - outs.size());
  std::vector<StStreamTensor> st;
  for (const OutTensor& o : outs) {
    st.push_back(o.st);
    stats->bytes_out += numel_of(o.st.shape) * static_cast<int64_t>(dtype_size(o.st.dtype));
  }

  write_dir_atomic(out_dir, [&](const std::string& tmp) {
    copy_file(join(in_dir, "config.json"), join(tmp, "config.json"));
    for (const char* f : {"generation_config.json", "tokenizer.json", "tokenizer_config.json",
                          "chat_template.jinja"})
      if (file_exists(join(in_dir, f))) copy_file(join(in_dir, f), join(tmp, f));
    st_write_stream(
        join(tmp, "model.safetensors"), st, meta,
        [&](size_t i, int64_t r0, int64_t n, uint8_t* dst) {
          if (!fill_quantized(outs[i], r0, n, dst))
            fail("%s: tensor '%s' has a value that %s cannot store (non-finite, or |x| >= 5e5)",
                 in_dir.c_str(), outs[i].spec.name.c_str(), qtype_name(outs[i].type));
        },
        kChunkBytes);
  });
}

void ckpt_init_random(const std::string& config_path, const std::string& out_dir,
                      const InitOptions& opt, CkptWriteStats* stats) {
  const std::string text = read_text_file(config_path);
  ModelConfig cfg;
  config_parse(&cfg, text, config_path);
  std::map<std::string, std::string> meta = base_metadata(opt.type, false);
  std::vector<OutTensor> outs;
  *stats = CkptWriteStats();
  for (const TensorSpec& s : model_tensor_specs(cfg, opt.fused)) {
    OutTensor o = plan_tensor(s, ckpt_tensor_type(s, opt.type, false), DT_F32, &meta);
    stats->n_converted += o.type != QT_F32;
    outs.push_back(std::move(o));
  }
  stats->n_tensors = static_cast<int>(outs.size());
  std::vector<StStreamTensor> st;
  for (const OutTensor& o : outs) {
    st.push_back(o.st);
    stats->bytes_out += numel_of(o.st.shape) * static_cast<int64_t>(dtype_size(o.st.dtype));
  }
  const size_t slash = config_path.rfind('/');
  const std::string gen =
      (slash == std::string::npos ? std::string() : config_path.substr(0, slash + 1)) +
      "generation_config.json";

  write_dir_atomic(out_dir, [&](const std::string& tmp) {
    write_file_atomic(join(tmp, "config.json"), text.data(), text.size());
    if (file_exists(gen)) copy_file(gen, join(tmp, "generation_config.json"));
    st_write_stream(
        join(tmp, "model.safetensors"), st, meta,
        [&](size_t i, int64_t r0, int64_t n, uint8_t* dst) {
          fill_random(outs[i], opt.seed, r0, n, dst);
        },
        kChunkBytes);
  });
}

}  // namespace moe
