// --expert-cache and its companions, shared by `moe generate`, `moe logits`, `moe chat` and
// `moe serve` (moe/expert_cache.h), and the cache's statistics for --stats.
#include "commands.h"
#include "moe/expert_cache.h"

namespace moe {

void add_expert_cache_options(CLI::App* app, ExpertCacheOptions* o) {
  app->add_option("--expert-cache", o->gib,
                  "GiB of locked RAM for a hot-expert cache (models larger than RAM; 0 = off)")
      ->capture_default_str();
  app->add_option("--expert-cache-half-life", o->half_life,
                  "tokens after which a routing count weighs half in the cache's LFU policy")
      ->capture_default_str();
  app->add_flag("!--no-expert-prefetch", o->prefetch,
                "do not request the experts predicted for the next layer early");
}

nlohmann::ordered_json expert_cache_json(const ExpertCache& c) {
  const ExpertCacheStats& s = c.stats;
  nlohmann::ordered_json j = {
      {"bytes", c.arena_bytes}, {"slots", c.n_slots}, {"locked", c.locked},
      {"tokens", s.tokens}, {"lookups", s.lookups}, {"hits", s.hits},
      {"hit_rate", s.lookups ? static_cast<double>(s.hits) / s.lookups : 0.0},
      {"admitted", s.admitted}, {"from_map", s.from_map}, {"evictions", s.evictions},
      {"miss_expert_bytes", s.miss_bytes}, {"cache_read_bytes", s.read_bytes},
      {"prefetch_experts", s.prefetch_experts}, {"prefetch_bytes", s.prefetch_bytes},
      {"predicted_tokens", s.pred_tokens}, {"uncacheable_uses", s.uncacheable}};
  j["prediction_accuracy"] = nullptr;  // no prediction scored
  if (s.pred_total) j["prediction_accuracy"] = static_cast<double>(s.pred_hits) / s.pred_total;
  return j;
}

}  // namespace moe
