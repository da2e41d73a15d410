// Jinja lexer: splits a template into text and tag tokens, applying whitespace control the way
// jinja2 does with trim_blocks=True and lstrip_blocks=True (Hugging Face's settings): "-" strips
// all whitespace on that side, "+" turns lstrip/trim off for that tag, the newline after a block
// or comment tag is dropped, and indentation before a block or comment tag on its own line is
// dropped. Line endings are normalized to "\n" and one trailing newline is removed
// (keep_trailing_newline=False).
#pragma once

#include <string>
#include <vector>

namespace moe::jinja {

enum class Tok {
  text,         // template data
  var_begin,    // {{
  var_end,      // }}
  block_begin,  // {%
  block_end,    // %}
  name,
  string,  // value already unescaped
  integer,
  floating,
  op,  // punctuation / operator, text holds it
  eof,
};

struct Token {
  Tok kind;
  std::string text;
  int line = 1;
  int col = 1;
};

// Throws MoeError "<name>:<line>:<col>: <message>" on bad input.
std::vector<Token> lex(const std::string& source, const std::string& name);

}  // namespace moe::jinja
