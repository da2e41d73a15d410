// Fuzz target: tokenizer.json load (models, normalizers, pre-tokenizers and their PCRE2 patterns,
// post-processors, decoders, added tokens), then encode and decode of fuzzed text.
// Input: tokenizer.json, kFuzzSep, text. Decoding runs on the encoded ids and on ids read from the
// text's bytes (unknown ids included), in one call and streamed.
#include "core/error.h"
#include "fuzz_util.h"
#include "text/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace moe;
  std::vector<std::string> parts = fuzz::split_parts(data, size, 2);
  const std::string& text = parts[1];
  try {
    Tokenizer t;
    tokenizer_load_json(&t, parts[0], "fuzz/tokenizer.json");
    std::vector<int32_t> ids = tokenizer_encode(t, text, true);
    std::vector<int32_t> plain = tokenizer_encode(t, text, false);
    tokenizer_decode(t, ids, false);
    tokenizer_decode(t, plain, true);
    const int32_t n = tokenizer_vocab_size(t);
    std::vector<int32_t> raw;  // (text bytes / 2) ids in [-1, n + 1)
    for (size_t i = 0; i + 1 < text.size() && raw.size() < 4096; i += 2) {
      const int32_t v = static_cast<uint8_t>(text[i]) | (static_cast<uint8_t>(text[i + 1]) << 8);
      raw.push_back(n > 0 ? v % (n + 2) - 1 : v);
    }
    tokenizer_decode(t, raw, false);
    DecodeStream ds;
    for (int32_t id : raw) decode_stream_step(t, &ds, id);
    tokenizer_token_id(t, text);
  } catch (const MoeError& e) {
    fuzz::rejected(e);
  }
  return 0;
}
