#include "train/corpus.h"

#include <algorithm>
#include <filesystem>
#include <map>

#include "core/error.h"
#include "io/mapped_file.h"

namespace fs = std::filesystem;

namespace moe {

bool corpus_is_brown(const std::string& dir) {
  return file_exists(dir + "/cats.txt") && file_exists(dir + "/ca01");
}

std::string brown_base_tag(const std::string& tag) {
  std::string t = tag;
  if (t.rfind("fw-", 0) == 0) t = t.substr(3);
  size_t cut = t.find_first_of("-+");
  if (cut != std::string::npos && cut > 0) t = t.substr(0, cut);
  while (t.size() > 1 && t.back() == '*') t.pop_back();
  return t.empty() ? tag : t;
}

namespace {

bool no_space_before(const std::string& w) {
  static const char* kClose[] = {",", ".", ";", ":", "!", "?", ")", "]", "''", "'"};
  for (const char* c : kClose)
    if (w == c) return true;
  return false;
}
bool no_space_after(const std::string& w) { return w == "(" || w == "[" || w == "``"; }

}  // namespace

void corpus_load_brown(Corpus* c, const std::string& dir) {
  *c = Corpus();
  c->labeled = true;
  const std::string cats_path = dir + "/cats.txt";
  std::string cats = read_text_file(cats_path);
  std::map<std::string, std::string> file_genre;
  size_t line_no = 0;
  for (size_t i = 0; i < cats.size();) {
    size_t j = cats.find('\n', i);
    if (j == std::string::npos) j = cats.size();
    std::string line = cats.substr(i, j - i);
    i = j + 1;
    ++line_no;
    if (line.empty() || line == "\r") continue;
    size_t sp = line.find(' ');
    if (sp == std::string::npos) fail("%s: line %zu: expected 'file genre'", cats_path.c_str(), line_no);
    std::string g = line.substr(sp + 1);
    while (!g.empty() && (g.back() == '\r' || g.back() == ' ')) g.pop_back();
    file_genre[line.substr(0, sp)] = g;
  }
  if (file_genre.empty()) fail("%s: no documents listed", cats_path.c_str());
  std::map<std::string, int> genre_id, tag_id;
  for (const auto& [file, genre] : file_genre) {
    if (!genre_id.count(genre)) {
      genre_id[genre] = static_cast<int>(c->genres.size());
      c->genres.push_back(genre);
    }
    const std::string path = dir + "/" + file;
    std::string raw = read_text_file(path);
    Document d;
    d.name = file;
    d.genre = genre_id[genre];
    bool line_has_words = false, glue_next = true;
    size_t i = 0;
    while (i < raw.size()) {
      // one whitespace-separated item
      while (i < raw.size() && (raw[i] == ' ' || raw[i] == '\t' || raw[i] == '\r')) ++i;
      if (i < raw.size() && raw[i] == '\n') {
        if (line_has_words) {
          d.text += '\n';
          d.pos.push_back(255);
          line_has_words = false;
          glue_next = true;
        }
        ++i;
        continue;
      }
      size_t j = i;
      while (j < raw.size() && raw[j] != ' ' && raw[j] != '\t' && raw[j] != '\n' && raw[j] != '\r') ++j;
      if (j == i) break;
      std::string item = raw.substr(i, j - i);
      i = j;
      size_t slash = item.rfind('/');
      if (slash == std::string::npos || slash == 0 || slash + 1 == item.size())
        fail("%s: '%s' is not word/tag", path.c_str(), item.c_str());
      std::string word = item.substr(0, slash), tag = brown_base_tag(item.substr(slash + 1));
      if (!tag_id.count(tag)) {
        if (c->pos_tags.size() >= 255) fail("%s: more than 255 distinct POS tags", path.c_str());
        tag_id[tag] = static_cast<int>(c->pos_tags.size());
        c->pos_tags.push_back(tag);
      }
      if (word == "``" || word == "''") word = "\"";
      const bool glue = glue_next || no_space_before(item.substr(0, slash));
      if (!glue) {
        d.text += ' ';
        d.pos.push_back(255);
      }
      d.text += word;
      d.pos.insert(d.pos.end(), word.size(), static_cast<uint8_t>(tag_id[tag]));
      glue_next = no_space_after(item.substr(0, slash));
      line_has_words = true;
    }
    if (!d.text.empty()) c->docs.push_back(std::move(d));
  }
}

void corpus_load_text(Corpus* c, const std::string& path) {
  *c = Corpus();
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    std::vector<std::string> files;
    for (const auto& e : fs::recursive_directory_iterator(path, ec))
      if (e.is_regular_file() && e.path().extension() == ".txt") files.push_back(e.path().string());
    std::sort(files.begin(), files.end());
    if (files.empty()) fail("%s: no .txt files found (and it is not the Brown Corpus)", path.c_str());
    for (const std::string& f : files) c->docs.push_back({f, read_text_file(f), -1, {}});
  } else {
    c->docs.push_back({path, read_text_file(path), -1, {}});
  }
  for (const Document& d : c->docs)
    if (d.text.empty()) fail("%s: the file is empty", d.name.c_str());
}

void corpus_load(Corpus* c, const std::string& path) {
  if (corpus_is_brown(path)) corpus_load_brown(c, path);
  else corpus_load_text(c, path);
}

}  // namespace moe
