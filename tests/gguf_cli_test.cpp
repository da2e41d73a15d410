// The CLI on GGUF files alone: --model FILE.gguf for logits, generate --prompt (tokenizer from
// the metadata) and chat (tokenizer.chat_template); missing metadata is a one-line error.
#include <gtest/gtest.h>

#include <fstream>

#include "test_util.h"

namespace {

std::string fixture(const std::string& name) {
  return std::string(MOE_FIXTURE_DIR) + "/gguf/" + name;
}

bool one_line_error(const moe_test::RunResult& r) {
  return r.exit_code != 0 && r.err.rfind("moe: error: ", 0) == 0 &&
         r.err.find('\n') == r.err.size() - 1;
}

}  // namespace

TEST(GgufCli, GenerateFromPromptWithTheFileAlone) {
  auto r = moe_test::run_moe("generate --model " + fixture("qwen3moe.gguf") +
                             " --prompt 'hello world' -n 4 --temperature 0 --threads 1");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  // Greedy ids for the same prompt: "hello world" is 11 byte tokens in this vocabulary.
  auto ids = moe_test::run_moe("generate --model " + fixture("qwen3moe.gguf") +
                               " --ids 104,101,108,108,111,32,119,111,114,108,100 -n 4 "
                               "--temperature 0 --threads 1 --ignore-eos");
  EXPECT_EQ(ids.exit_code, 0) << ids.err;
  EXPECT_NE(ids.out.find("\"ids\": ["), std::string::npos) << ids.out;
}

TEST(GgufCli, ChatWithTheTemplateFromTheFile) {
  const std::string dir = moe_test::make_temp_dir("gguf_chat");
  std::ofstream(dir + "/in") << "hi there\n";
  auto r = moe_test::run_moe("chat --model " + fixture("qwen3moe.gguf") +
                             " -n 4 --seed 3 --threads 1 < " + dir + "/in");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("(qwen3_moe)"), std::string::npos) << r.err;
}

TEST(GgufCli, LogitsAndErrors) {
  auto r = moe_test::run_moe("logits --model " + fixture("llama.gguf") + " --ids 1,2,3");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("{\"logits\": [[", 0), 0u);
  r = moe_test::run_moe("logits --model " + fixture("types.gguf") + " --ids 1");
  EXPECT_TRUE(one_line_error(r)) << r.err;
  EXPECT_NE(r.err.find("key 'general.architecture' is missing"), std::string::npos) << r.err;
  r = moe_test::run_moe("generate --model " + fixture("llama.gguf") + " --prompt hi -n 1");
  EXPECT_TRUE(one_line_error(r)) << r.err;
  EXPECT_NE(r.err.find("key 'tokenizer.ggml.model' is missing"), std::string::npos) << r.err;
  r = moe_test::run_moe("logits --model " + fixture("absent.gguf") + " --ids 1");
  EXPECT_TRUE(one_line_error(r)) << r.err;
}
