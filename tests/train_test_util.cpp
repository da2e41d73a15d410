#include "train_test_util.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <vector>

#include "io/safetensors.h"
#include "model/config.h"
#include "test_util.h"
#include "text/tokenizer.h"

namespace moe_test {

std::string word_corpus() {
  static std::string dir;
  if (!dir.empty()) return dir;
  dir = make_temp_dir("word_corpus");
  const char* words[] = {"a",     "boat",  "sails", "over", "the",     "grey", "sea", "while",
                         "birds", "cry",   "above", "old",  "sailors", "sing", "of",  "home"};
  for (int d = 0; d < 6; ++d) {
    std::ofstream f(dir + "/doc" + std::to_string(d) + ".txt");
    uint32_t x = 777 + d;
    for (int i = 0; i < 1200; ++i) {
      x = x * 1103515245u + 12345u;
      f << words[(x >> 16) % 16] << ((x >> 8) % 9 == 0 ? ".\n" : " ");
    }
  }
  return dir;
}

std::string corpus_tokenizer() {
  static std::string path;
  if (!path.empty()) return path;
  path = make_temp_dir("word_corpus_tok") + "/tokenizer.json";
  const RunResult r = run_moe("tokenizer train --data " + word_corpus() + " --vocab 300 --out " + path);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return path;
}

nlohmann::json read_json(const std::string& path) { return nlohmann::json::parse(slurp(path)); }

std::string grown_vocab_copy(const std::string& fixture, int vocab, bool with_tokenizer) {
  const std::string src = fixture_path(fixture);
  const std::string dir = make_temp_dir("grown_" + fixture);
  moe::Tokenizer tok;
  moe::tokenizer_load(&tok, corpus_tokenizer());
  const int32_t eos = moe::tokenizer_token_id(tok, "<|endoftext|>");
  EXPECT_GE(eos, 0);
  nlohmann::json cfg = read_json(src + "/config.json");
  const int v0 = cfg["vocab_size"], D = cfg["hidden_size"];
  cfg["vocab_size"] = vocab;
  cfg["eos_token_id"] = eos;
  cfg["bos_token_id"] = eos;
  cfg["pad_token_id"] = eos;
  std::ofstream(dir + "/config.json") << cfg.dump(2);
  std::ofstream(dir + "/generation_config.json")
      << nlohmann::json{{"bos_token_id", eos}, {"eos_token_id", eos}}.dump();
  moe::StArchive ar;
  moe::st_open_file(&ar, src + "/model.safetensors");
  std::vector<moe::StWriteTensor> ts;
  std::vector<std::vector<float>> grown;
  grown.reserve(2);
  for (const auto& [name, t] : ar.tensors) {
    if (name == "model.embed_tokens.weight" || name == "lm_head.weight") {
      EXPECT_EQ(t.dtype, moe::DT_F32) << name;
      std::vector<float> w(static_cast<size_t>(vocab) * D);
      const float* s = reinterpret_cast<const float*>(t.data);
      for (int r = 0; r < vocab; ++r)
        for (int k = 0; k < D; ++k) w[r * D + k] = s[(r % v0) * D + k] * (r < v0 ? 1.0f : 0.5f);
      grown.push_back(std::move(w));
      ts.push_back({name, t.dtype, {vocab, D}, grown.back().data()});
    } else {
      ts.push_back({name, t.dtype, t.shape, t.data});
    }
  }
  moe::st_write(dir + "/model.safetensors", ts);
  if (with_tokenizer) std::filesystem::copy_file(corpus_tokenizer(), dir + "/tokenizer.json");
  return dir;
}

nlohmann::json final_metrics(const std::string& dir) {
  std::ifstream f(dir + "/metrics.jsonl");
  std::string line;
  nlohmann::json fin;
  while (std::getline(f, line)) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("final")) fin = j;
  }
  return fin;
}

std::map<std::string, std::string> tensor_bytes(const std::string& path) {
  moe::StArchive ar;
  moe::st_open_file(&ar, path);
  std::map<std::string, std::string> m;
  for (const auto& [name, t] : ar.tensors)
    m[name] = std::string(reinterpret_cast<const char*>(t.data), t.nbytes);
  return m;
}

bool is_expert_or_router(const std::string& n) {
  for (const char* part : {".mlp.experts.", ".mlp.gate.", ".mlp.router."})
    if (n.find(part) != std::string::npos) return true;
  return false;
}

void load_trainer(moe::TrainModel* tm, const std::string& dir) {
  moe::ModelConfig c;
  moe::config_load(&c, dir);
  moe::train_model_alloc(tm, c);
  moe::StArchive ar;
  moe::st_open_dir(&ar, dir);
  moe::train_model_load_weights(tm, ar);
}

}  // namespace moe_test
