// Runtime values of the Jinja engine: a small dynamic type modelled on the Python objects that
// jinja2 sees when transformers renders a chat template (None, bool, int, float, str, list/tuple,
// dict, jinja2's Undefined and namespace, callables). Lists and dicts are immutable once built
// (HF renders in an ImmutableSandboxedEnvironment) and shared by pointer; namespaces are mutable.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace moe::jinja {

struct Value;
using List = std::vector<Value>;
using Dict = std::vector<std::pair<std::string, Value>>;  // insertion-ordered, string keys
struct Callable;
struct Interp;

enum class Kind : uint8_t {
  undefined,
  none,
  boolean,
  integer,
  floating,
  string,
  list,
  dict,
  ns,
  callable
};

struct Value {
  Kind kind = Kind::undefined;
  bool is_tuple = false;  // a list that prints as (a, b)
  bool b = false;
  uint32_t depth = 0;  // nesting depth of lists and dicts, bounded by kMaxDepth
  int64_t i = 0;
  double f = 0;
  std::string s;  // string value; for undefined, the hint used in error messages
  std::shared_ptr<const List> list;
  std::shared_ptr<const Dict> dict;
  std::shared_ptr<Dict> ns;
  std::shared_ptr<const Callable> fn;

  static Value undef(std::string hint = {});
  static Value none();
  static Value boolean(bool v);
  static Value integer(int64_t v);
  static Value floating(double v);
  static Value str(std::string v);
  static Value make_list(List v, bool tuple = false);
  static Value make_dict(Dict v);
  static Value make_ns(Dict v);

  bool is_undefined() const { return kind == Kind::undefined; }
  bool is_none() const { return kind == Kind::none; }
  bool is_string() const { return kind == Kind::string; }
  bool is_number() const {
    return kind == Kind::integer || kind == Kind::floating || kind == Kind::boolean;
  }
  bool is_list() const { return kind == Kind::list; }
  bool is_dict() const { return kind == Kind::dict; }
};

// Arguments of a call: positional then keyword, as written.
struct CallArgs {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;
};

struct Callable {
  std::string name;
  std::function<Value(Interp&, CallArgs&)> call;
};

Value make_callable(std::string name, std::function<Value(Interp&, CallArgs&)> fn);

// Python truthiness.
bool truthy(const Value& v);
// str(v) as jinja2 prints it ("" for undefined, "None", "True", repr of containers).
std::string to_str(const Value& v);
// Python repr(v).
std::string repr(const Value& v);
// Python float repr: shortest round-trip digits, "1.0", "1e+20".
std::string float_repr(double d);
// Name of the Python type, for error messages ("str", "int", "dict", ...).
const char* type_name(const Value& v);

// Python ==, and the ordering used by <, sort, min/max (throws MoeError-free JinjaError on
// incomparable types).
bool equals(const Value& a, const Value& b);
bool less_than(const Value& a, const Value& b);

// Dict lookup; nullptr when absent.
const Value* dict_find(const Dict& d, const std::string& key);

// Conversions between nlohmann JSON and values.
Value from_json(const nlohmann::ordered_json& j, int depth = 0);

struct JsonOptions {
  int indent = -1;         // < 0: no newlines
  std::string indent_str;  // used when indent is a string
  bool ensure_ascii = false;
  std::string item_sep = ", ";
  std::string key_sep = ": ";
  bool sort_keys = false;
};
// json.dumps as HF's tojson filter calls it.
std::string to_json(const Value& v, const JsonOptions& opt);

// Error raised while rendering; the interpreter adds template name and position.
struct JinjaError {
  std::string msg;
};
// raise_exception(msg) from the template.
struct JinjaRaised {
  std::string msg;
};
[[noreturn]] void jfail(std::string msg);

// Size limits that keep runaway templates from exhausting memory.
constexpr size_t kMaxStringBytes = 64u << 20;
constexpr size_t kMaxListItems = 1u << 20;
constexpr uint32_t kMaxDepth = 256;

// UTF-8 helpers (code points, as Python str indexes them).
std::u32string utf8_decode(const std::string& s);
std::string utf8_encode(const std::u32string& s);
void utf8_append(std::string& out, char32_t cp);
bool is_py_space(char32_t c);

}  // namespace moe::jinja
