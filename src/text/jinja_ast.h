// Jinja syntax tree: one small node struct for expressions and statements alike.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "text/jinja_value.h"

namespace moe::jinja {

enum class NodeKind {
  // expressions
  literal,   // value
  name,      // str
  list_lit,  // kids; tuple when is_tuple
  dict_lit,  // kids: key0, value0, key1, value1, ...
  getattr,   // kids[0].str
  getitem,   // kids[0][kids[1]]
  slice,     // kids[0][kids[1]:kids[2]:kids[3]] (null kids for omitted parts)
  call,      // kids[0](kids[1..], kwargs)
  filter,    // kids[0] | str(kids[1..], kwargs)
  test,      // kids[0] is [not] str(kids[1..], kwargs)
  unary,     // str in {"-", "+", "not"} kids[0]
  binary,    // kids[0] str kids[1]; str includes "and", "or", "in", "not in", "~", ...
  cond,      // kids[1] if kids[0] else kids[2] (kids[2] may be null)
  // statements
  text,          // str
  output,        // {{ kids[0] }}
  if_,           // if kids[0]: body else: else_body
  for_,          // for names in kids[0] [if kids[1]]: body else: else_body
  set,           // names = kids[0]; or str.attr = kids[0] when attr is set
  set_block,     // names = rendered body (kids[0] optional filter applied)
  macro,         // str(names with defaults in kwargs): body
  call_block,    // {% call(names) kids[0] %} body
  filter_block,  // kids[0] is a filter chain whose innermost operand is null
  with,          // names = kids (kwargs pairs): body
  break_,
  continue_,
  program,  // body
};

struct Node;
using NodePtr = std::unique_ptr<Node>;

struct Node {
  NodeKind kind;
  int line = 0;
  int col = 0;
  std::string str;
  std::string attr;
  Value value;
  bool negated = false;
  bool is_tuple = false;
  bool uses_loop = false;  // for_: the body mentions `loop`, so it needs the loop object
  std::vector<NodePtr> kids;
  std::vector<std::pair<std::string, NodePtr>> kwargs;
  std::vector<std::string> names;
  std::vector<NodePtr> body;
  std::vector<NodePtr> else_body;
};

}  // namespace moe::jinja
