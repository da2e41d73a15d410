// Jinja tree-walking interpreter: scopes, statements, expressions. Builtin filters, tests,
// methods and globals live in jinja_builtins.cpp.
#pragma once

#include <ctime>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>

#include "text/jinja_ast.h"
#include "text/jinja_value.h"

namespace moe::jinja {

// Variables of one scope. Lookups walk to the parent; assignments stay in the scope (a for-loop
// iteration, a macro call, a with block), as in jinja2.
struct Frame {
  std::unordered_map<std::string, Value> vars;
  std::shared_ptr<Frame> parent;
};
using FramePtr = std::shared_ptr<Frame>;

struct Interp {
  std::string name;              // template name for error messages
  std::function<std::tm()> now;  // clock of strftime_now
  std::string* out = nullptr;
  const Node* where = nullptr;  // node being evaluated, for error positions
  int call_depth = 0;
  uint64_t steps = 0;  // loop iterations and macro calls, bounded by max_steps
  uint64_t max_steps = 2'000'000;
  uint64_t work = 0;  // statements, expressions and the size of their values, see max_work
  uint64_t max_work = 10'000'000;

  // Evaluates an expression and charges its work (eval_node does the evaluating).
  Value eval(const Node& n, const FramePtr& f);
  Value eval_node(const Node& n, const FramePtr& f);
  enum class Flow { normal, brk, cont };
  Flow exec(const std::vector<NodePtr>& body, const FramePtr& f);
  Flow exec_stmt(const Node& n, const FramePtr& f);
  std::string render_body(const std::vector<NodePtr>& body, const FramePtr& f);

  // Calls a macro or builtin; `node` is the call site for error positions.
  Value call_value(const Value& callee, CallArgs& args);
  void tick();
  void charge(uint64_t units);
  void emit(const std::string& s);

  // Value given to the innermost filter of a {% filter %} / {% set %} block chain.
  const Value* filter_hole = nullptr;
};

Value lookup(const FramePtr& f, const std::string& name);

// Builtins (jinja_builtins.cpp).
// obj.name: Python attribute first (dict/str/list methods), then item.
Value get_attr(Interp& in, const Value& obj, const std::string& name);
// obj[key]: item first, then attribute.
Value get_item(Interp& in, const Value& obj, const Value& key);
Value apply_filter(Interp& in, const std::string& name, const Value& v, CallArgs& args);
bool apply_test(Interp& in, const std::string& name, const Value& v, CallArgs& args);
bool has_filter(const std::string& name);
bool has_test(const std::string& name);
// Globals every template sees: range, namespace, dict, raise_exception, strftime_now.
void add_globals(Frame& f);

// Shared helpers.
int64_t py_len(const Value& v);
std::vector<Value> iterate(const Value& v);  // for loops and filters over sequences
bool contains(const Value& container, const Value& item);
Value arith(const std::string& op, const Value& a, const Value& b);
// Argument helper: positional index or keyword name; nullptr when absent.
const Value* arg(const CallArgs& a, size_t index, const char* name);

}  // namespace moe::jinja
