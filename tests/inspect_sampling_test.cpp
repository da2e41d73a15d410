// `moe inspect --data` on a prepared folder: the routed windows spread over the whole validation
// shard, stratified by genre, not just its first tokens (which in Brown's file order cover 3 of
// its 15 genres).
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <string>

#include "analysis/inspect_routing.h"
#include "test_util.h"
#include "train/dataset.h"

namespace moe {
namespace {

// A Brown-format corpus of three genres (files ca*, cb*, cc* of 20 documents each, in that
// order); the validation split takes documents 10, 30 and 50, one of each genre.
std::string three_genre_corpus() {
  const std::string dir = moe_test::make_temp_dir("genres");
  const char* genre[] = {"news", "editorial", "religion"};
  const char* vocab[3][4] = {{"vote/nn", "city/nn", "said/vbd", "jury/nn"},
                             {"we/ppss", "must/md", "act/vb", "now/rb"},
                             {"god/np", "faith/nn", "pray/vb", "holy/jj"}};
  std::ofstream cats(dir + "/cats.txt");
  for (int g = 0; g < 3; ++g)
    for (int d = 0; d < 20; ++d) {
      const std::string name = std::string("c") + static_cast<char>('a' + g) +
                               (d < 10 ? "0" : "") + std::to_string(d);
      cats << name << " " << genre[g] << "\n";
      std::ofstream f(dir + "/" + name);
      for (int s = 0; s < 60; ++s) {
        f << "\n\n\t";
        for (int w = 0; w < 8; ++w) f << vocab[g][(s * 7 + w * 3 + d) % 4] << " ";
        f << "./.\n";
      }
    }
  return dir;
}

TEST(InspectSampling, WindowsSpreadOverTheShardStratifiedByGenre) {
  const std::string dir = three_genre_corpus();
  PrepareParams p;
  p.vocab_size = 300;
  dataset_prepare(dir, dir + "/data", p);
  Dataset ds;
  dataset_open(&ds, dir + "/data");
  ASSERT_EQ(ds.genres.size(), 3u);
  const int W = 40, windows = 9;
  ASSERT_GT(ds.val.n, 3 * windows * W);
  Tokenizer tok;
  InspectData first, spread;
  inspect_data_load(&first, dir + "/data", tok, windows * W);  // the first tokens only
  inspect_data_load(&spread, dir + "/data", tok, windows * W, W);
  ASSERT_EQ(spread.ids.size(), static_cast<size_t>(windows * W));
  ASSERT_EQ(spread.genre.size(), spread.ids.size());
  std::map<int, int> n_first, n_spread;
  for (int g : first.genre) ++n_first[g];
  for (int g : spread.genre) ++n_spread[g];
  EXPECT_EQ(n_first.size(), 1u);  // the old behaviour: one genre
  EXPECT_EQ(n_spread, (std::map<int, int>{{0, 3 * W}, {1, 3 * W}, {2, 3 * W}}));
  // Each window is a run of W consecutive shard tokens of one genre, in shard order.
  int64_t prev = -1;
  for (int w = 0; w < windows; ++w) {
    int64_t at = -1;
    for (int64_t s = prev + 1; s + W <= ds.val.n && at < 0; ++s) {
      bool same = true;
      for (int i = 0; i < W && same; ++i) same = ds.val.token(s + i) == spread.ids[w * W + i];
      if (same) at = s;
    }
    ASSERT_GE(at, 0) << "window " << w;
    for (int i = 1; i < W; ++i) EXPECT_EQ(spread.genre[w * W + i], spread.genre[w * W]);
    prev = at;
  }
  EXPECT_NE(spread.source.find("stratified by genre"), std::string::npos) << spread.source;
}

}  // namespace
}  // namespace moe
