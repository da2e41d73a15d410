// `moe generate --speculative mtp`: greedy decoding drafted by the model's own MTP modules
// (infer/speculative.h), with its acceptance rate and speed on stderr.
#include <chrono>
#include <cstdio>

#include "commands.h"
#include "core/error.h"
#include "infer/speculative.h"

namespace moe {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

std::vector<int32_t> generate_cli(const Model& m, const std::vector<int32_t>& prompt,
                                  const GenerateParams& p, const SpecOptions& spec,
                                  const std::function<void(int32_t)>& on_token) {
  if (spec.method.empty()) {
    if (spec.compare_plain) fail("--compare-plain needs --speculative");
    return generate(m, prompt, p, on_token);
  }
  if (spec.method != "mtp") fail("--speculative '%s': the method is mtp", spec.method.c_str());
  SpecStats st;
  auto t0 = std::chrono::steady_clock::now();
  std::vector<int32_t> out = generate_mtp(m, prompt, p, spec.draft, &st, on_token);
  const double s_spec = seconds_since(t0);
  std::fprintf(stderr,
               "speculative mtp: %zu tokens in %.3f s (%.1f tokens/s, prefill included), %lld "
               "main forwards after the prompt; %lld of %lld drafted tokens accepted (%.1f%%), "
               "%.2f tokens per forward\n",
               out.size(), s_spec, out.size() / s_spec, static_cast<long long>(st.verify_forwards),
               static_cast<long long>(st.accepted), static_cast<long long>(st.drafted),
               100.0 * st.acceptance(),
               st.verify_forwards ? (out.size() - 1.0) / st.verify_forwards : 0.0);
  if (!spec.compare_plain) return out;
  t0 = std::chrono::steady_clock::now();
  const std::vector<int32_t> plain = generate(m, prompt, p);
  const double s_plain = seconds_since(t0);
  std::fprintf(stderr, "plain greedy: %zu tokens in %.3f s (%.1f tokens/s); speed-up %.2fx; "
               "outputs %s\n", plain.size(), s_plain, plain.size() / s_plain, s_plain / s_spec,
               plain == out ? "identical" : "DIFFER");
  if (plain != out) fail("--compare-plain: the speculative output differs from plain greedy decoding");
  return out;
}

}  // namespace moe
