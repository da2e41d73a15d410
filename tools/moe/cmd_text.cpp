// `moe tokenize` and `moe detokenize`: text <-> token ids with a Hugging Face tokenizer.json.
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include "commands.h"
#include "core/error.h"
#include "text/tokenizer.h"

namespace moe {

namespace {

// --tokenizer accepts the file or a folder holding tokenizer.json.
std::string tokenizer_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return path + "/tokenizer.json";
  return path;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail("--text-file: cannot open '%s'", path.c_str());
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) fail("--text-file: error reading '%s'", path.c_str());
  return ss.str();
}

}  // namespace

CommandRun cmd_tokenize_register(CLI::App* app) {
  struct Opts {
    std::string tokenizer, text, text_file;
    bool add_special = false;
  };
  auto o = std::make_shared<Opts>();
  app->add_option("--tokenizer", o->tokenizer, "tokenizer.json (or a folder holding one)")
      ->required();
  CLI::Option* text = app->add_option("--text", o->text, "the text to tokenize");
  CLI::Option* file = app->add_option("--text-file", o->text_file, "a file whose text to tokenize");
  text->excludes(file);
  app->add_flag("--add-special", o->add_special,
                "add the post-processor's special tokens (e.g. BOS), as add_special_tokens=True");
  return [o, text, file]() {
    if (!*text && !*file) fail("tokenize: give the input with --text or --text-file");
    Tokenizer t;
    tokenizer_load(&t, tokenizer_file(o->tokenizer));
    std::string input = *file ? read_file(o->text_file) : o->text;
    std::vector<int32_t> ids = tokenizer_encode(t, input, o->add_special);
    std::string out = "{\"ids\": [";
    for (size_t i = 0; i < ids.size(); ++i) {
      if (i) out += ", ";
      out += std::to_string(ids[i]);
    }
    out += "]}\n";
    write_stdout(out);
    return 0;
  };
}

CommandRun cmd_detokenize_register(CLI::App* app) {
  struct Opts {
    std::string tokenizer, ids;
    bool skip_special = false;
  };
  auto o = std::make_shared<Opts>();
  app->add_option("--tokenizer", o->tokenizer, "tokenizer.json (or a folder holding one)")
      ->required();
  app->add_option("--ids", o->ids, "comma-separated token ids, e.g. 1,2,3")->required();
  app->add_flag("--skip-special", o->skip_special, "leave out special tokens");
  return [o]() {
    std::vector<int32_t> ids = parse_id_list(o->ids, "--ids");
    Tokenizer t;
    tokenizer_load(&t, tokenizer_file(o->tokenizer));
    write_stdout(tokenizer_decode(t, ids, o->skip_special));
    return 0;
  };
}

}  // namespace moe
