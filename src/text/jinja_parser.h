// Jinja parser: tokens to a syntax tree, following jinja2's grammar and operator precedence.
#pragma once

#include <string>
#include <vector>

#include "text/jinja_ast.h"
#include "text/jinja_lexer.h"

namespace moe::jinja {

// Throws MoeError "<name>:<line>:<col>: <message>" on a syntax error.
NodePtr parse(const std::vector<Token>& tokens, const std::string& name);

}  // namespace moe::jinja
