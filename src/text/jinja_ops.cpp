// Jinja operators and Python object protocol: arithmetic, len, iteration, `in`, attribute and
// item access, and the str / dict / list methods templates call (s.strip(), d.items(), ...).
#include <utf8proc.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "text/jinja_interp.h"
#include "text/jinja_str.h"

namespace moe::jinja {

const Value* arg(const CallArgs& a, size_t index, const char* name) {
  if (index < a.pos.size()) return &a.pos[index];
  if (name)
    for (const auto& [k, v] : a.kw)
      if (k == name) return &v;
  return nullptr;
}

int64_t py_len(const Value& v) {
  switch (v.kind) {
    case Kind::string:
      return str_len(v.s);
    case Kind::list:
      return static_cast<int64_t>(v.list->size());
    case Kind::dict:
      return static_cast<int64_t>(v.dict->size());
    case Kind::ns:
      return static_cast<int64_t>(v.ns->size());
    case Kind::undefined:
      return 0;
    default:
      jfail(std::string("object of type '") + type_name(v) + "' has no len()");
  }
}

std::vector<Value> iterate(const Value& v) {
  switch (v.kind) {
    case Kind::undefined:
      return {};
    case Kind::list:
      return *v.list;
    case Kind::dict: {
      std::vector<Value> keys;
      keys.reserve(v.dict->size());
      for (const auto& kv : *v.dict) keys.push_back(Value::str(kv.first));
      return keys;
    }
    case Kind::string: {
      std::vector<Value> chars;
      for (char32_t c : utf8_decode(v.s)) {
        std::string s;
        utf8_append(s, c);
        chars.push_back(Value::str(std::move(s)));
      }
      return chars;
    }
    default:
      jfail(std::string("'") + type_name(v) + "' object is not iterable");
  }
}

bool contains(const Value& c, const Value& item) {
  switch (c.kind) {
    case Kind::string:
      if (item.kind != Kind::string)
        jfail(std::string("'in <string>' requires string as left operand, not ") + type_name(item));
      return c.s.find(item.s) != std::string::npos;
    case Kind::list:
      for (const auto& e : *c.list)
        if (equals(e, item)) return true;
      return false;
    case Kind::dict:
      return item.kind == Kind::string && dict_find(*c.dict, item.s) != nullptr;
    case Kind::ns:
      return item.kind == Kind::string && dict_find(*c.ns, item.s) != nullptr;
    case Kind::undefined:
      return false;
    default:
      jfail(std::string("argument of type '") + type_name(c) + "' is not iterable");
  }
}

namespace {

bool is_int_like(const Value& v) {
  return v.kind == Kind::integer || v.kind == Kind::boolean;
}
int64_t int_of(const Value& v) {
  return v.kind == Kind::boolean ? v.b : v.i;
}
double num_of(const Value& v) {
  return v.kind == Kind::floating ? v.f : static_cast<double>(int_of(v));
}

constexpr size_t kMaxRepeat = 16u << 20;

[[noreturn]] void bad_operands(const std::string& op, const Value& a, const Value& b) {
  if (a.is_undefined()) jfail(a.s.empty() ? "value is undefined" : a.s);
  if (b.is_undefined()) jfail(b.s.empty() ? "value is undefined" : b.s);
  if (op == "+" && a.kind == Kind::string)
    jfail(std::string("can only concatenate str (not \"") + type_name(b) + "\") to str");
  jfail("unsupported operand type(s) for " + op + ": '" + type_name(a) + "' and '" + type_name(b) +
        "'");
}

Value repeat(const Value& seq, int64_t n) {
  if (n <= 0) return seq.kind == Kind::string ? Value::str("") : Value::make_list({}, seq.is_tuple);
  if (seq.kind == Kind::string) {
    uint64_t total;
    if (__builtin_mul_overflow(static_cast<uint64_t>(seq.s.size()), static_cast<uint64_t>(n),
                               &total) ||
        total > kMaxRepeat)
      jfail("repeated string too long");
    std::string r;
    for (int64_t k = 0; k < n; ++k) r += seq.s;
    return Value::str(std::move(r));
  }
  uint64_t total;
  if (__builtin_mul_overflow(static_cast<uint64_t>(seq.list->size()), static_cast<uint64_t>(n),
                             &total) ||
      total > kMaxListItems)
    jfail("repeated list too long");
  List r;
  for (int64_t k = 0; k < n; ++k) r.insert(r.end(), seq.list->begin(), seq.list->end());
  return Value::make_list(std::move(r), seq.is_tuple);
}

}  // namespace

Value arith(const std::string& op, const Value& a, const Value& b) {
  bool nums = a.is_number() && b.is_number();
  bool ints = is_int_like(a) && is_int_like(b);
  if (op == "+") {
    if (ints) {
      int64_t r;
      if (__builtin_add_overflow(int_of(a), int_of(b), &r))
        return Value::floating(num_of(a) + num_of(b));
      return Value::integer(r);
    }
    if (nums) return Value::floating(num_of(a) + num_of(b));
    if (a.kind == Kind::string && b.kind == Kind::string) {
      if (a.s.size() + b.s.size() > kMaxStringBytes) jfail("string too long (over 64 MiB)");
      return Value::str(a.s + b.s);
    }
    if (a.kind == Kind::list && b.kind == Kind::list && a.is_tuple == b.is_tuple) {
      if (a.list->size() + b.list->size() > kMaxListItems) jfail("list too long (over 1M items)");
      List r = *a.list;
      r.insert(r.end(), b.list->begin(), b.list->end());
      return Value::make_list(std::move(r), a.is_tuple);
    }
    bad_operands(op, a, b);
  }
  if (op == "-") {
    if (ints) {
      int64_t r;
      if (__builtin_sub_overflow(int_of(a), int_of(b), &r))
        return Value::floating(num_of(a) - num_of(b));
      return Value::integer(r);
    }
    if (nums) return Value::floating(num_of(a) - num_of(b));
    bad_operands(op, a, b);
  }
  if (op == "*") {
    if (ints) {
      int64_t r;
      if (__builtin_mul_overflow(int_of(a), int_of(b), &r))
        return Value::floating(num_of(a) * num_of(b));
      return Value::integer(r);
    }
    if (nums) return Value::floating(num_of(a) * num_of(b));
    if ((a.kind == Kind::string || a.kind == Kind::list) && is_int_like(b))
      return repeat(a, int_of(b));
    if ((b.kind == Kind::string || b.kind == Kind::list) && is_int_like(a))
      return repeat(b, int_of(a));
    bad_operands(op, a, b);
  }
  if (op == "/") {
    if (!nums) bad_operands(op, a, b);
    if (num_of(b) == 0) jfail("division by zero");
    return Value::floating(num_of(a) / num_of(b));
  }
  if (op == "//" || op == "%") {
    if (!nums) {
      if (op == "%" && a.kind == Kind::string)
        jfail("printf-style '%' formatting is not supported");
      bad_operands(op, a, b);
    }
    if (ints) {
      int64_t x = int_of(a), y = int_of(b);
      if (y == 0)
        jfail(op == "//" ? "integer division or modulo by zero" : "integer modulo by zero");
      if (x == std::numeric_limits<int64_t>::min() && y == -1) {
        if (op == "%") return Value::integer(0);
        return Value::floating(-static_cast<double>(x));
      }
      int64_t q = x / y, r = x % y;
      if (r != 0 && ((r < 0) != (y < 0))) {
        q -= 1;
        r += y;
      }
      return Value::integer(op == "//" ? q : r);
    }
    double x = num_of(a), y = num_of(b);
    if (y == 0) jfail("float division by zero");
    if (op == "//") return Value::floating(std::floor(x / y));
    double r = std::fmod(x, y);
    if (r != 0 && ((r < 0) != (y < 0))) r += y;
    return Value::floating(r);
  }
  if (op == "**") {
    if (!nums) bad_operands(op, a, b);
    if (ints && int_of(b) >= 0) {
      int64_t base = int_of(a), e = int_of(b), r = 1;
      bool overflow = false;
      while (e > 0 && !overflow) {
        if (e & 1) overflow = __builtin_mul_overflow(r, base, &r);
        e >>= 1;
        if (e > 0 && !overflow) overflow = __builtin_mul_overflow(base, base, &base);
      }
      if (!overflow) return Value::integer(r);
    }
    return Value::floating(std::pow(num_of(a), num_of(b)));
  }
  jfail("unknown operator " + op);
}

// ---- attribute and item access
// -------------------------------------------------------------------

namespace {

Value method(const Value& self, const std::string& name,
             Value (*fn)(Interp&, const Value&, CallArgs&, const std::string&)) {
  return make_callable(name,
                       [self, name, fn](Interp& in, CallArgs& a) { return fn(in, self, a, name); });
}

std::string str_arg(const CallArgs& a, size_t i, const char* kw, const std::string& method) {
  const Value* v = arg(a, i, kw);
  if (!v) jfail(method + "() missing a required argument");
  if (v->kind != Kind::string) jfail(method + "() argument must be str, not " + type_name(*v));
  return v->s;
}

// Optional "chars" argument of strip/lstrip/rstrip/split: nullptr for none/absent.
const std::string* opt_str(const CallArgs& a, size_t i, const char* kw) {
  const Value* v = arg(a, i, kw);
  if (!v || v->is_none()) return nullptr;
  if (v->kind != Kind::string) jfail("expected a string argument");
  return &v->s;
}

int64_t opt_int(const CallArgs& a, size_t i, const char* kw, int64_t def) {
  const Value* v = arg(a, i, kw);
  if (!v || v->is_none()) return def;
  if (!is_int_like(*v)) jfail("expected an integer argument");
  return int_of(*v);
}

Value str_method(Interp& in, const Value& self, CallArgs& a, const std::string& m) {
  const std::string& s = self.s;
  if (m == "startswith" || m == "endswith") {
    const Value* p = arg(a, 0, nullptr);
    if (!p) jfail(m + "() takes at least 1 argument");
    std::vector<std::string> pre;
    if (p->kind == Kind::string)
      pre.push_back(p->s);
    else if (p->kind == Kind::list)
      for (const auto& e : *p->list) {
        if (e.kind != Kind::string) jfail(m + "() tuple items must be str");
        pre.push_back(e.s);
      }
    else
      jfail(m + "() first arg must be str or a tuple of str, not " + type_name(*p));
    for (const auto& x : pre) {
      if (x.size() > s.size()) continue;
      if (m == "startswith" ? s.compare(0, x.size(), x) == 0
                            : s.compare(s.size() - x.size(), x.size(), x) == 0)
        return Value::boolean(true);
    }
    return Value::boolean(false);
  }
  if (m == "strip") return Value::str(str_strip(s, opt_str(a, 0, nullptr), true, true));
  if (m == "lstrip") return Value::str(str_strip(s, opt_str(a, 0, nullptr), true, false));
  if (m == "rstrip") return Value::str(str_strip(s, opt_str(a, 0, nullptr), false, true));
  if (m == "split" || m == "rsplit") {
    List parts;
    for (auto& p : str_split(s, opt_str(a, 0, "sep"), opt_int(a, 1, "maxsplit", -1), m == "rsplit"))
      parts.push_back(Value::str(std::move(p)));
    return Value::make_list(std::move(parts));
  }
  if (m == "splitlines") {
    List parts;
    for (auto& p : str_splitlines(s)) parts.push_back(Value::str(std::move(p)));
    return Value::make_list(std::move(parts));
  }
  if (m == "replace")
    return Value::str(str_replace(s, str_arg(a, 0, nullptr, m), str_arg(a, 1, nullptr, m),
                                  opt_int(a, 2, "count", -1)));
  if (m == "upper") return Value::str(str_upper(s));
  if (m == "lower") return Value::str(str_lower(s));
  if (m == "title") return Value::str(str_title_method(s));
  if (m == "capitalize") return Value::str(str_capitalize(s));
  if (m == "find" || m == "rfind" || m == "index" || m == "rindex") {
    int64_t r = str_find(s, str_arg(a, 0, nullptr, m), m[0] == 'r');
    if (r < 0 && (m == "index" || m == "rindex")) jfail("substring not found");
    return Value::integer(r);
  }
  if (m == "count") return Value::integer(str_count(s, str_arg(a, 0, nullptr, m)));
  if (m == "join") {
    const Value* seq = arg(a, 0, nullptr);
    if (!seq) jfail("join() takes exactly one argument");
    std::string r;
    bool first = true;
    for (const auto& e : iterate(*seq)) {
      if (e.kind != Kind::string)
        jfail(std::string("sequence item: expected str instance, ") + type_name(e) + " found");
      if (!first) r += s;
      r += e.s;
      first = false;
    }
    return Value::str(std::move(r));
  }
  if (m == "format") return Value::str(str_format(s, a));
  if (m == "isdigit" || m == "isalpha" || m == "isalnum" || m == "isspace" || m == "isupper" ||
      m == "islower" || m == "isnumeric" || m == "isdecimal")
    return Value::boolean(str_is(s, m));
  (void)in;
  jfail("str has no method '" + m + "'");
}

Value dict_method(Interp&, const Value& self, CallArgs& a, const std::string& m) {
  const Dict& d = self.kind == Kind::dict ? *self.dict : *self.ns;
  if (m == "get") {
    const Value* k = arg(a, 0, nullptr);
    if (!k) jfail("get expected at least 1 argument");
    const Value* def = arg(a, 1, nullptr);
    if (k->kind == Kind::string)
      if (const Value* v = dict_find(d, k->s)) return *v;
    return def ? *def : Value::none();
  }
  if (m == "items") {
    List r;
    for (const auto& [k, v] : d) r.push_back(Value::make_list({Value::str(k), v}, true));
    return Value::make_list(std::move(r));
  }
  if (m == "keys") {
    List r;
    for (const auto& kv : d) r.push_back(Value::str(kv.first));
    return Value::make_list(std::move(r));
  }
  if (m == "values") {
    List r;
    for (const auto& kv : d) r.push_back(kv.second);
    return Value::make_list(std::move(r));
  }
  if (m == "copy") return Value::make_dict(d);
  jfail("access to attribute '" + m + "' of 'dict' object is unsafe");
}

Value list_method(Interp&, const Value& self, CallArgs& a, const std::string& m) {
  const Value* x = arg(a, 0, nullptr);
  if (m == "index" || m == "count") {
    if (!x) jfail(m + "() takes exactly one argument");
    int64_t count = 0;
    for (size_t k = 0; k < self.list->size(); ++k) {
      if (equals((*self.list)[k], *x)) {
        if (m == "index") return Value::integer(static_cast<int64_t>(k));
        ++count;
      }
    }
    if (m == "index") jfail("value is not in list");
    return Value::integer(count);
  }
  jfail(std::string("access to attribute '") + m + "' of '" + type_name(self) +
        "' object is unsafe");
}

bool one_of(const std::string& s, std::initializer_list<const char*> names) {
  for (const char* n : names)
    if (s == n) return true;
  return false;
}

}  // namespace

Value get_attr(Interp& in, const Value& obj, const std::string& name) {
  (void)in;
  switch (obj.kind) {
    case Kind::dict:
      if (one_of(name, {"get", "items", "keys", "values", "copy", "pop", "popitem", "setdefault",
                        "update", "clear", "fromkeys"}))
        return method(obj, name, dict_method);
      if (const Value* v = dict_find(*obj.dict, name)) return *v;
      return Value::undef("'dict object' has no attribute '" + name + "'");
    case Kind::ns:
      if (const Value* v = dict_find(*obj.ns, name)) return *v;
      return Value::undef("'Namespace object' has no attribute '" + name + "'");
    case Kind::string:
      if (one_of(name, {"startswith", "endswith",   "strip",     "lstrip",   "rstrip",  "split",
                        "rsplit",     "splitlines", "replace",   "upper",    "lower",   "title",
                        "capitalize", "find",       "rfind",     "index",    "rindex",  "count",
                        "join",       "format",     "isdigit",   "isalpha",  "isalnum", "isspace",
                        "isupper",    "islower",    "isnumeric", "isdecimal"}))
        return method(obj, name, str_method);
      return Value::undef("'str object' has no attribute '" + name + "'");
    case Kind::list:
      if (one_of(name, {"index", "count", "append", "extend", "insert", "pop", "remove", "reverse",
                        "sort", "clear"}))
        return method(obj, name, list_method);
      return Value::undef(std::string("'") + type_name(obj) + " object' has no attribute '" + name +
                          "'");
    case Kind::undefined:
      jfail(obj.s.empty() ? "value is undefined" : obj.s);
    default:
      return Value::undef(std::string("'") + type_name(obj) + " object' has no attribute '" + name +
                          "'");
  }
}

Value get_item(Interp& in, const Value& obj, const Value& key) {
  switch (obj.kind) {
    case Kind::dict:
    case Kind::ns: {
      const Dict& d = obj.kind == Kind::dict ? *obj.dict : *obj.ns;
      if (key.kind == Kind::string) {
        if (const Value* v = dict_find(d, key.s)) return *v;
        if (obj.kind == Kind::dict) {
          Value m = get_attr(in, obj, key.s);
          if (m.kind == Kind::callable) return m;
        }
      }
      return Value::undef("'dict object' has no attribute " + repr(key));
    }
    case Kind::list:
    case Kind::string: {
      if (key.kind == Kind::string) return get_attr(in, obj, key.s);
      if (!is_int_like(key))
        jfail(std::string(type_name(obj)) + " indices must be integers or slices, not " +
              type_name(key));
      int64_t i = int_of(key);
      if (obj.kind == Kind::list) {
        int64_t n = static_cast<int64_t>(obj.list->size());
        if (i < 0) i += n;
        if (i < 0 || i >= n)
          return Value::undef(std::string("'") + type_name(obj) + " object' has no element " +
                              std::to_string(int_of(key)));
        return (*obj.list)[static_cast<size_t>(i)];
      }
      std::u32string cs = utf8_decode(obj.s);
      int64_t n = static_cast<int64_t>(cs.size());
      if (i < 0) i += n;
      if (i < 0 || i >= n)
        return Value::undef("'str object' has no element " + std::to_string(int_of(key)));
      std::string r;
      utf8_append(r, cs[static_cast<size_t>(i)]);
      return Value::str(std::move(r));
    }
    case Kind::undefined:
      jfail(obj.s.empty() ? "value is undefined" : obj.s);
    default:
      if (key.kind == Kind::string) return get_attr(in, obj, key.s);
      return Value::undef(std::string("'") + type_name(obj) + " object' has no element " +
                          repr(key));
  }
}

}  // namespace moe::jinja
