// The benchmark configs in bench/configs parse, and their tensor lists add up to the parameter
// counts the model cards publish.
#include <gtest/gtest.h>

#include "io/mapped_file.h"
#include "model/weights.h"

namespace moe {
namespace {

struct BenchModel {
  const char* file;
  Arch arch;
  double total_b;  // published total parameters, billions (rounded as published)
  int layers, experts, top_k;
};

const BenchModel kModels[] = {
    {"olmoe-1b-7b.json", ARCH_OLMOE, 6.92, 16, 64, 8},
    {"qwen3-30b-a3b.json", ARCH_QWEN3_MOE, 30.5, 48, 128, 8},
    {"mixtral-8x7b-v0.1.json", ARCH_MIXTRAL, 46.7, 32, 8, 2},
    {"deepseek-v2-lite.json", ARCH_DEEPSEEK_V2, 15.7, 27, 64, 6},
    {"gpt-oss-20b.json", ARCH_GPT_OSS, 20.9, 24, 32, 4},
};

TEST(BenchConfigs, ParseAndMatchPublishedSizes) {
  const std::string dir = std::string(MOE_FIXTURE_DIR) + "/../../bench/configs/";
  for (const BenchModel& b : kModels) {
    SCOPED_TRACE(b.file);
    ModelConfig c;
    config_parse(&c, read_text_file(dir + b.file), dir + b.file);
    EXPECT_EQ(c.arch, b.arch);
    EXPECT_EQ(c.n_layers, b.layers);
    EXPECT_EQ(c.n_experts, b.top_k > 0 ? b.experts : 0);
    EXPECT_EQ(c.top_k, b.top_k);
    for (bool fused : {false, true}) {
      double total = 0.0;
      for (const TensorSpec& s : model_tensor_specs(c, fused)) {
        double n = 1.0;
        for (int64_t d : s.shape) n *= static_cast<double>(d);
        total += n;
      }
      EXPECT_NEAR(total / 1e9, b.total_b, 0.05) << "fused " << fused;
    }
  }
}

}  // namespace
}  // namespace moe
