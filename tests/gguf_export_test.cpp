// `moe export --gguf`: each exportable golden fixture (fp32, and quantized to Q4_0; DeepSeek's
// MLA in llama.cpp's split attn_k_b / attn_v_b form; gpt-oss with its biases and sinks) written
// as GGUF and read back gives exactly the logits of the checkpoint it came from; what llama.cpp
// cannot express is refused with a one-line error.
#include <gtest/gtest.h>

#include "core/error.h"
#include "infer/forward.h"
#include "model/checkpoint_write.h"
#include "model/gguf_export.h"
#include "test_util.h"

using namespace moe;

namespace {

std::vector<float> logits_of(const std::string& model) {
  Model m;
  model_load(&m, model);
  const std::vector<int32_t> ids = {1, 5, 9, 200, 3, 77};
  InferState st;
  infer_state_init(&st, m, 6, 6);
  infer_forward(m, &st, ids.data(), 6, true);
  return std::vector<float>(st.logits.begin(), st.logits.begin() + 6 * m.cfg.vocab);
}

class GgufExport : public ::testing::TestWithParam<std::string> {};

}  // namespace

TEST_P(GgufExport, RoundTripGivesTheSameLogits) {
  const std::string src = moe_test::fixture_path(GetParam());
  const std::string dir = moe_test::make_temp_dir("gguf_export");
  for (const char* type : {"f32", "q4_0"}) {
    std::string model = src;
    if (std::string(type) != "f32") {
      model = dir + "/" + type;
      QType t;
      ASSERT_TRUE(qtype_parse(type, &t));
      CkptWriteStats st;
      ckpt_quantize(src, model, t, false, &st);
    }
    const std::string out = dir + "/" + type + ".gguf";
    auto r = moe_test::run_moe("export --model " + model + " --gguf " + out);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(logits_of(out), logits_of(model)) << GetParam() << " " << type;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GgufExport,
                         ::testing::Values("qwen3_moe_qknorm", "qwen2_moe_shared", "olmoe_base",
                                           "mixtral_legacy", "deepseek_v2_lite",
                                           "deepseek_v2_qlora", "deepseek_v3_base",
                                           "gpt_oss_base"));

TEST(GgufExportErrors, UnsupportedFeatureNamed) {
  const std::string dir = moe_test::make_temp_dir("gguf_export_err");
  auto r = moe_test::run_moe("export --model " +
                             moe_test::fixture_path("mixtral_fused_swa_tied_bf16") + " --gguf " +
                             dir + "/x.gguf");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("sliding-window attention cannot be exported to GGUF yet"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << r.err;
  // What deepseek2 and gpt-oss files cannot hold: half-split rope, full attention on layer 0.
  const std::pair<const char*, const char*> refused[] = {
      {"deepseek_v3_flat_bf16", "rope_interleave false cannot be exported to GGUF"},
      {"gpt_oss_mqa_yarn", "this gpt-oss variant (windows, rope, activation or router)"}};
  for (const auto& [fixture, what] : refused) {
    r = moe_test::run_moe("export --model " + moe_test::fixture_path(fixture) + " --gguf " + dir +
                          "/y.gguf");
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.err.find(what), std::string::npos) << r.err;
  }
}
