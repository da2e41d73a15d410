// `moe chat` through a pipe on a small trained model with a ChatML-style template, and the
// cancellation that Ctrl-C uses.
#include <gtest/gtest.h>

#include <atomic>
#include <fstream>

#include "infer/generate.h"
#include "test_util.h"

namespace moe {
namespace {

std::string trained_model() {
  static std::string out;
  if (!out.empty()) return out;
  std::string corpus = moe_test::make_temp_dir("chatcorpus");
  {
    std::ofstream f(corpus + "/a.txt");
    for (int i = 0; i < 400; ++i) f << "hello there, how are you today? i am fine, thank you. ";
  }
  out = moe_test::make_temp_dir("chatmodel");
  auto r = moe_test::run_moe("train --data " + corpus + " --out " + out +
                             " --vocab 300 --layers 1 --d-model 32 --heads 2 --experts 4 --top-k 2"
                             " --expert-ffn 32 --batch 4 --seq 32 --steps 30 --threads 1 --quiet");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::ofstream(out + "/tokenizer_config.json")
      << R"({"eos_token": "<|endoftext|>", "chat_template": "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"})";
  return out;
}

TEST(ChatCli, PipedConversation) {
  std::string dir = moe_test::make_temp_dir("chatin");
  std::ofstream(dir + "/in") << "hello\nhow are you?\n/reset\nagain\n";
  auto r = moe_test::run_moe("chat --model " + trained_model() + " -n 8 --seed 3 --threads 1 < " + dir + "/in");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  size_t prompts = 0;
  for (size_t p = r.out.find("> "); p != std::string::npos; p = r.out.find("> ", p + 2)) ++prompts;
  EXPECT_GE(prompts, 4u) << r.out;
  EXPECT_NE(r.err.find("moe chat:"), std::string::npos);
}

TEST(ChatCli, MissingTemplateIsAClearError) {
  std::string dir = moe_test::make_temp_dir("notmpl");
  auto r = moe_test::run_moe("chat --model " + trained_model() + " --tokenizer-config " + dir + "/nope.json");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("nope.json: not found"), std::string::npos) << r.err;
}

TEST(GenSession, CancelStopsTheReply) {
  Model m;
  model_load(&m, trained_model());
  GenSession s;
  session_init(&s, m, 64, 16, SamplerParams());
  std::atomic<bool> cancel{false};
  GenerateParams p;
  p.max_new = 20;
  p.stop_at_eos = false;
  p.cancel = &cancel;
  int n = 0;
  std::vector<int32_t> out = session_generate(&s, {1, 2, 3}, p, [&](int32_t) {
    if (++n == 5) cancel.store(true);
  });
  EXPECT_EQ(out.size(), 5u);
  // The session stays usable: the next reply continues from the cache.
  cancel.store(false);
  std::vector<int32_t> more = session_generate(&s, {1, 2, 3, 4}, p);
  EXPECT_EQ(more.size(), 20u);
}

}  // namespace
}  // namespace moe
