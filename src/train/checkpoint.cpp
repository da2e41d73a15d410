#include "train/checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "dist/placement.h"
#include "io/mapped_file.h"
#include "io/safetensors.h"

namespace fs = std::filesystem;

namespace moe {

namespace {

bool is_root(const ShardRole& r) { return !r.world || r.world->rank() == 0; }

void barrier(const ShardRole& r) {
  if (r.world) r.world->barrier();
}

// The shard that holds tensor i: its expert's rank in the group; 0 for the tensors of no expert.
int shard_of(const TrainModel& tm, size_t i, int n_shards) {
  const int e = tm.expert_of[i];
  return e < 0 ? 0 : ep_rank_of(e, tm.cfg.n_experts, n_shards);
}

// "model.safetensors" for one shard, else "model-00002-of-00004.safetensors" (Hugging Face's).
std::string shard_file(const char* stem, int shard, int n_shards) {
  if (n_shards == 1) return std::string(stem) + ".safetensors";
  return strfmt("%s-%05d-of-%05d.safetensors", stem, shard + 1, n_shards);
}

// stem-NNNNN-of-NNNNN.safetensors
bool is_shard_name(const std::string& n, const char* stem) {
  const std::string s = std::string(stem) + "-";
  return n.rfind(s, 0) == 0 && n.size() == s.size() + 26 &&
         n.compare(s.size() + 5, 4, "-of-") == 0 &&
         n.compare(n.size() - 12, 12, ".safetensors") == 0;
}

int64_t numel(const TensorSpec& s) {
  int64_t n = 1;
  for (int64_t d : s.shape) n *= d;
  return n;
}

// This rank's shard of an arena: the weights (opt null) or, with opt, the moments in `base` of
// the tensors that have them, named prefix + name.
std::vector<StWriteTensor> shard_tensors(const TrainModel& tm, const ShardRole& role,
                                         const float* base, const AdamW* opt,
                                         const std::string& prefix) {
  std::vector<StWriteTensor> ts;
  for (size_t i = 0; i < tm.specs.size(); ++i) {
    if (shard_of(tm, i, role.n_shards) != role.shard) continue;
    if (opt && opt->state_off[i] < 0) continue;  // frozen: no moments
    MOE_CHECK(tm.held[i]);  // the rank writing a shard holds its experts
    const int64_t off = opt ? opt->state_off[i] : tm.offset[i];
    ts.push_back({prefix + tm.specs[i].name, DT_F32, tm.specs[i].shape, base + off});
  }
  return ts;
}

// Every shard's files, as rank 0 names them without asking the others.
struct ShardFiles {
  nlohmann::ordered_json weight_map;   // tensor name -> model shard file
  std::vector<std::string> optimizer;  // the optimizer shard files that hold moments
  std::vector<std::string> model;      // the model shard files that hold tensors
  int64_t total_bytes = 0;
};

ShardFiles shard_files(const TrainModel& tm, int n_shards) {
  ShardFiles f;
  f.weight_map = nlohmann::ordered_json::object();
  std::vector<char> has_w(n_shards, 0), has_o(n_shards, 0);  // (n_shards)
  for (size_t i = 0; i < tm.specs.size(); ++i) {
    const int s = shard_of(tm, i, n_shards);
    f.weight_map[tm.specs[i].name] = shard_file("model", s, n_shards);
    has_w[s] = 1;
    if (tm.trainable[i]) has_o[s] = 1;
    f.total_bytes += numel(tm.specs[i]) * static_cast<int64_t>(sizeof(float));
  }
  for (int s = 0; s < n_shards; ++s) {
    if (has_w[s]) f.model.push_back(shard_file("model", s, n_shards));
    if (has_o[s]) f.optimizer.push_back(shard_file("optimizer", s, n_shards));
  }
  return f;
}

void write_text(const std::string& path, const std::string& s) {
  write_file_atomic(path, s.data(), s.size());
}

void copy_file_atomic(const std::string& from, const std::string& to) {
  const std::string s = read_text_file(from);
  write_text(to, s);
}

// Weight files of an earlier export into dir with another shard count.
void remove_stale_weights(const std::string& dir, const ShardFiles& f, int n_shards) {
  std::error_code ec;
  const bool sharded = n_shards > 1;
  std::vector<fs::path> old;  // removed once the listing is done
  for (const auto& ent : fs::directory_iterator(dir, ec)) {
    const std::string n = ent.path().filename().string();
    const bool stale = (n == "model.safetensors" && sharded) ||
                       (n == "model.safetensors.index.json" && !sharded) ||
                       (is_shard_name(n, "model") &&
                        std::find(f.model.begin(), f.model.end(), n) == f.model.end());
    if (stale) old.push_back(ent.path());
  }
  for (const fs::path& p : old) fs::remove(p, ec);
}

// Rank 0's files of an exported model: configs, tokenizer, the shard index.
void write_model_meta(const TrainModel& tm, const std::string& dir,
                      const std::string& tokenizer_path, const ShardRole& role) {
  ModelConfig c = tm.cfg;
  write_text(dir + "/config.json", config_to_json(&c));
  nlohmann::ordered_json gen;
  if (c.bos_id >= 0) gen["bos_token_id"] = c.bos_id;
  if (!c.eos_ids.empty()) gen["eos_token_id"] = c.eos_ids[0];
  write_text(dir + "/generation_config.json", gen.dump(2) + "\n");
  const ShardFiles f = shard_files(tm, role.n_shards);
  if (role.n_shards > 1) {
    nlohmann::ordered_json idx;
    idx["metadata"] = {{"total_size", f.total_bytes}};
    idx["weight_map"] = f.weight_map;
    write_text(dir + "/model.safetensors.index.json", idx.dump(2) + "\n");
  }
  remove_stale_weights(dir, f, role.n_shards);
  std::error_code ec;
  if (!tokenizer_path.empty() && fs::absolute(tokenizer_path, ec) != fs::absolute(dir + "/tokenizer.json", ec))
    copy_file_atomic(tokenizer_path, dir + "/tokenizer.json");
}

}  // namespace

ShardRole shard_role() {
  ShardRole r;
  if (comm_world().size() == 1) return r;
  r.world = &comm_world();
  r.shard = comm_ep().rank();
  r.n_shards = comm_ep().size();
  r.writes = comm_dp().rank() == 0;
  return r;
}

void export_model(const TrainModel& tm, const std::string& dir, const std::string& tokenizer_path,
                  const ShardRole& role) {
  std::error_code ec;
  if (is_root(role)) {
    fs::create_directories(dir, ec);
    if (ec) fail("%s: cannot create the folder: %s", dir.c_str(), ec.message().c_str());
  }
  barrier(role);
  if (role.writes) {
    const auto ts = shard_tensors(tm, role, tm.params.data(), nullptr, "");
    if (!ts.empty())
      st_write(dir + "/" + shard_file("model", role.shard, role.n_shards), ts, {{"format", "pt"}});
  }
  barrier(role);  // every shard is in place before the index names it
  if (is_root(role)) write_model_meta(tm, dir, tokenizer_path, role);
  barrier(role);
}

void checkpoint_save(const TrainModel& tm, const AdamW& opt, int64_t step, uint64_t seed,
                     const std::string& dir, const std::string& tokenizer_path,
                     const ShardRole& role) {
  int64_t pid = getpid();  // rank 0's names the temporary folder
  if (role.world) role.world->broadcast(&pid, sizeof pid, 0);
  const std::string tmp = dir + ".tmp-" + std::to_string(pid);
  std::error_code ec;
  if (is_root(role)) fs::remove_all(tmp, ec);
  export_model(tm, tmp, tokenizer_path, role);
  if (role.writes) {
    auto ts = shard_tensors(tm, role, opt.m.data(), &opt, "exp_avg.");
    auto vs = shard_tensors(tm, role, opt.v.data(), &opt, "exp_avg_sq.");
    ts.insert(ts.end(), vs.begin(), vs.end());
    if (!ts.empty()) st_write(tmp + "/" + shard_file("optimizer", role.shard, role.n_shards), ts);
  }
  barrier(role);  // every rank's files are written: the folder is complete
  if (is_root(role)) {
    nlohmann::ordered_json st;
    st["format"] = "moe.cpp trainer state";
    st["version"] = 2;
    st["step"] = step;
    st["adam_step"] = opt.step;
    st["seed"] = seed;
    if (std::isfinite(tm.rl_baseline)) st["rl_baseline"] = tm.rl_baseline;  // REINFORCE routing
    // (L * E) AdamW updates of each routed expert; routing is global under expert parallelism,
    // so every rank counts the same.
    st["expert_steps"] = opt.expert_step;
    st["shards"] = role.n_shards;
    st["optimizer_files"] = shard_files(tm, role.n_shards).optimizer;
    write_text(tmp + "/trainer_state.json", st.dump(2) + "\n");
    // Swap the folders: the old checkpoint is removed only once the new one is in place.
    const std::string old = dir + ".old-" + std::to_string(pid);
    if (fs::exists(dir, ec)) fs::rename(dir, old, ec);
    if (ec) fail("%s: cannot move the previous checkpoint aside: %s", dir.c_str(), ec.message().c_str());
    fs::rename(tmp, dir, ec);
    if (ec) fail("%s: cannot move the new checkpoint into place: %s", dir.c_str(), ec.message().c_str());
    fs::remove_all(old, ec);
  }
  barrier(role);
}

namespace {

nlohmann::json read_state(const std::string& sp) {
  nlohmann::json st;
  try {
    st = nlohmann::json::parse(read_text_file(sp));
  } catch (const nlohmann::json::parse_error& e) {
    fail("%s: malformed JSON at byte %zu", sp.c_str(), static_cast<size_t>(e.byte));
  } catch (const nlohmann::json::exception&) {  // out_of_range: a number beyond double
    fail("%s: malformed JSON: a number is out of range", sp.c_str());
  }
  if (!st.is_object()) fail("%s: not a JSON object", sp.c_str());
  for (const char* k : {"step", "adam_step", "seed"})
    if (!st.contains(k) || !st[k].is_number_integer()) fail("%s: field '%s' is missing", sp.c_str(), k);
  if (st.contains("version") &&
      (!st["version"].is_number_integer() || st["version"] < 1 || st["version"] > 2))
    fail("%s: field 'version' must be 1 or 2 (this build reads those)", sp.c_str());
  return st;
}

// The optimizer files a checkpoint lists (version 2), or the one file of version 1.
std::vector<std::string> optimizer_files(const nlohmann::json& st, const std::string& sp) {
  if (!st.contains("optimizer_files")) return {"optimizer.safetensors"};
  const nlohmann::json& f = st["optimizer_files"];
  if (!f.is_array()) fail("%s: field 'optimizer_files' must be an array of file names", sp.c_str());
  std::vector<std::string> out;
  for (const auto& v : f) {
    if (!v.is_string()) fail("%s: field 'optimizer_files' must be an array of file names", sp.c_str());
    const std::string n = v.get<std::string>();
    if (n.empty() || n.find('/') != std::string::npos || n == "." || n == "..")
      fail("%s: field 'optimizer_files': '%s' is not a plain file name", sp.c_str(), n.c_str());
    out.push_back(n);
  }
  return out;
}

}  // namespace

int64_t checkpoint_load(TrainModel* tm, AdamW* opt, const std::string& dir, uint64_t* seed) {
  const std::string sp = dir + "/trainer_state.json";
  const nlohmann::json st = read_state(sp);
  StArchive w;
  st_open_dir(&w, dir);
  train_model_load_weights(tm, w);
  const std::vector<std::string> files = optimizer_files(st, sp);
  std::vector<StArchive> o(files.size());  // [files]
  for (size_t k = 0; k < files.size(); ++k) st_open_file(&o[k], dir + "/" + files[k]);
  // Moments of every tensor that has optimizer state here; extra ones (a group frozen now,
  // another rank's experts) are ignored, missing ones (a group frozen then) are an error.
  for (size_t i = 0; i < tm->specs.size(); ++i) {
    if (opt->state_off[i] < 0) continue;
    for (int which = 0; which < 2; ++which) {
      const std::string name = (which ? "exp_avg_sq." : "exp_avg.") + tm->specs[i].name;
      const StTensor* t = nullptr;
      for (const StArchive& a : o) t = t ? t : a.find(name);
      if (!t)
        fail("%s: optimizer tensor '%s' is missing from %s (was its group frozen in the run "
             "being resumed? resume with the same --freeze)", dir.c_str(), name.c_str(),
             files.size() == 1 ? files[0].c_str() : "every optimizer file");
      if (t->dtype != DT_F32 || t->shape != tm->specs[i].shape)
        fail("%s: tensor '%s' does not match the model", t->file->c_str(), name.c_str());
      std::vector<float>& dst = which ? opt->v : opt->m;
      std::memcpy(dst.data() + opt->state_off[i], t->data, t->nbytes);
    }
  }
  opt->step = st["adam_step"].get<int64_t>();
  // Checkpoints from before idle experts were skipped: every expert had every update.
  std::fill(opt->expert_step.begin(), opt->expert_step.end(), opt->step);
  if (st.contains("expert_steps")) {
    const auto& es = st["expert_steps"];
    if (!es.is_array() || es.size() != opt->expert_step.size())
      fail("%s: field 'expert_steps' must be a list of %zu integers (layers x experts)", sp.c_str(),
           opt->expert_step.size());
    for (size_t i = 0; i < es.size(); ++i) {
      if (!es[i].is_number_integer() || es[i].get<int64_t>() < 0 || es[i].get<int64_t>() > opt->step)
        fail("%s: field 'expert_steps': entry %zu must be an integer in [0, adam_step]", sp.c_str(), i);
      opt->expert_step[i] = es[i].get<int64_t>();
    }
  }
  tm->rl_baseline = NAN;
  if (st.contains("rl_baseline")) {
    if (!st["rl_baseline"].is_number()) fail("%s: field 'rl_baseline' must be a number", sp.c_str());
    tm->rl_baseline = st["rl_baseline"].get<double>();
  }
  *seed = st["seed"].get<uint64_t>();
  return st["step"].get<int64_t>();
}

}  // namespace moe
