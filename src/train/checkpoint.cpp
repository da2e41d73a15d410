#include "train/checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <cmath>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/mapped_file.h"
#include "io/safetensors.h"

namespace fs = std::filesystem;

namespace moe {

namespace {

std::vector<StWriteTensor> arena_tensors(const TrainModel& tm, const float* base,
                                         const std::string& prefix) {
  std::vector<StWriteTensor> ts;
  for (size_t i = 0; i < tm.specs.size(); ++i)
    ts.push_back({prefix + tm.specs[i].name, DT_F32, tm.specs[i].shape, base + tm.offset[i]});
  return ts;
}

// The optimizer moments of the tensors that have them (frozen tensors have none).
std::vector<StWriteTensor> state_tensors(const TrainModel& tm, const AdamW& opt, const float* base,
                                         const std::string& prefix) {
  std::vector<StWriteTensor> ts;
  for (size_t i = 0; i < tm.specs.size(); ++i)
    if (opt.state_off[i] >= 0)
      ts.push_back({prefix + tm.specs[i].name, DT_F32, tm.specs[i].shape, base + opt.state_off[i]});
  return ts;
}

void write_text(const std::string& path, const std::string& s) {
  write_file_atomic(path, s.data(), s.size());
}

void copy_file_atomic(const std::string& from, const std::string& to) {
  const std::string s = read_text_file(from);
  write_text(to, s);
}

}  // namespace

void export_model(const TrainModel& tm, const std::string& dir, const std::string& tokenizer_path) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail("%s: cannot create the folder: %s", dir.c_str(), ec.message().c_str());
  ModelConfig c = tm.cfg;
  write_text(dir + "/config.json", config_to_json(&c));
  nlohmann::ordered_json gen;
  if (c.bos_id >= 0) gen["bos_token_id"] = c.bos_id;
  if (!c.eos_ids.empty()) gen["eos_token_id"] = c.eos_ids[0];
  write_text(dir + "/generation_config.json", gen.dump(2) + "\n");
  st_write(dir + "/model.safetensors", arena_tensors(tm, tm.params.data(), ""), {{"format", "pt"}});
  if (!tokenizer_path.empty() && fs::absolute(tokenizer_path, ec) != fs::absolute(dir + "/tokenizer.json", ec))
    copy_file_atomic(tokenizer_path, dir + "/tokenizer.json");
}

void checkpoint_save(const TrainModel& tm, const AdamW& opt, int64_t step, uint64_t seed,
                     const std::string& dir, const std::string& tokenizer_path) {
  const std::string tmp = dir + ".tmp-" + std::to_string(getpid());
  std::error_code ec;
  fs::remove_all(tmp, ec);
  export_model(tm, tmp, tokenizer_path);
  st_write(tmp + "/optimizer.safetensors", [&] {
    auto ts = state_tensors(tm, opt, opt.m.data(), "exp_avg.");
    auto vs = state_tensors(tm, opt, opt.v.data(), "exp_avg_sq.");
    ts.insert(ts.end(), vs.begin(), vs.end());
    return ts;
  }());
  nlohmann::ordered_json st;
  st["format"] = "moe.cpp trainer state";
  st["version"] = 1;
  st["step"] = step;
  st["adam_step"] = opt.step;
  st["seed"] = seed;
  if (std::isfinite(tm.rl_baseline)) st["rl_baseline"] = tm.rl_baseline;  // REINFORCE routing
  st["expert_steps"] = opt.expert_step;  // (L * E) AdamW updates of each routed expert
  write_text(tmp + "/trainer_state.json", st.dump(2) + "\n");
  // Swap the folders: the old checkpoint is removed only once the new one is in place.
  const std::string old = dir + ".old-" + std::to_string(getpid());
  if (fs::exists(dir, ec)) fs::rename(dir, old, ec);
  if (ec) fail("%s: cannot move the previous checkpoint aside: %s", dir.c_str(), ec.message().c_str());
  fs::rename(tmp, dir, ec);
  if (ec) fail("%s: cannot move the new checkpoint into place: %s", dir.c_str(), ec.message().c_str());
  fs::remove_all(old, ec);
}

int64_t checkpoint_load(TrainModel* tm, AdamW* opt, const std::string& dir, uint64_t* seed) {
  StArchive w, o;
  st_open_file(&w, dir + "/model.safetensors");
  train_model_load_weights(tm, w);
  st_open_file(&o, dir + "/optimizer.safetensors");
  // Moments of every tensor that has optimizer state now; extra ones (a group frozen now) are
  // ignored, missing ones (a group frozen then, trainable now) are an error.
  for (size_t i = 0; i < tm->specs.size(); ++i) {
    if (opt->state_off[i] < 0) continue;
    for (int which = 0; which < 2; ++which) {
      const std::string name = (which ? "exp_avg_sq." : "exp_avg.") + tm->specs[i].name;
      if (!o.find(name))
        fail("%s/optimizer.safetensors: tensor '%s' is missing (was its group frozen in the run "
             "being resumed? resume with the same --freeze)", dir.c_str(), name.c_str());
      const StTensor& t = o.get(name);
      if (t.dtype != DT_F32 || t.shape != tm->specs[i].shape)
        fail("%s/optimizer.safetensors: tensor '%s' does not match the model", dir.c_str(), name.c_str());
      std::vector<float>& dst = which ? opt->v : opt->m;
      std::memcpy(dst.data() + opt->state_off[i], t.data, t.nbytes);
    }
  }
  const std::string sp = dir + "/trainer_state.json";
  nlohmann::json st;
  try {
    st = nlohmann::json::parse(read_text_file(sp));
  } catch (const nlohmann::json::parse_error& e) {
    fail("%s: malformed JSON at byte %zu", sp.c_str(), static_cast<size_t>(e.byte));
  } catch (const nlohmann::json::exception&) {  // out_of_range: a number beyond double
    fail("%s: malformed JSON: a number is out of range", sp.c_str());
  }
  for (const char* k : {"step", "adam_step", "seed"})
    if (!st.contains(k) || !st[k].is_number_integer()) fail("%s: field '%s' is missing", sp.c_str(), k);
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
