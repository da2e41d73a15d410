// Jinja builtin filters, tests and globals, with jinja2's signatures and results (tojson is
// transformers' override: json.dumps(x, ensure_ascii=False, indent=None, separators=None,
// sort_keys=False)).
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>

#include "text/jinja_interp.h"
#include "text/jinja_str.h"

namespace moe::jinja {

namespace {

using FilterFn = Value (*)(Interp&, const Value&, CallArgs&);
using TestFn = bool (*)(Interp&, const Value&, CallArgs&);

constexpr int64_t kMaxRange = 100'000;

bool flag(const CallArgs& a, size_t i, const char* kw, bool def) {
  const Value* v = arg(a, i, kw);
  return v ? truthy(*v) : def;
}

const Value& need(const CallArgs& a, size_t i, const char* kw, const char* what) {
  const Value* v = arg(a, i, kw);
  if (!v) jfail(std::string(what) + " missing required argument '" + (kw ? kw : "value") + "'");
  return *v;
}

std::string need_str(const CallArgs& a, size_t i, const char* kw, const char* what) {
  const Value& v = need(a, i, kw, what);
  if (v.kind != Kind::string) jfail(std::string(what) + ": expected a string argument");
  return v.s;
}

// jinja2's make_attrgetter: "a.b.0" looked up item-first on each step.
Value attr_path(Interp& in, const Value& v, const std::string& path) {
  Value cur = v;
  size_t start = 0;
  while (true) {
    size_t dot = path.find('.', start);
    std::string part =
        path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (cur.is_undefined()) return cur;
    bool digits = !part.empty() && part.find_first_not_of("0123456789") == std::string::npos;
    cur = digits ? get_item(in, cur, Value::integer(std::atoll(part.c_str())))
                 : get_item(in, cur, Value::str(part));
    if (dot == std::string::npos) return cur;
    start = dot + 1;
  }
}

Value fold_case(const Value& v, bool case_sensitive) {
  if (!case_sensitive && v.kind == Kind::string) return Value::str(str_lower(v.s));
  return v;
}

Value key_of(Interp& in, const Value& v, const Value* attribute, bool case_sensitive) {
  Value k = attribute ? attr_path(in, v, to_str(*attribute)) : v;
  return fold_case(k, case_sensitive);
}

// ---- filters
// -------------------------------------------------------------------------------------

Value f_abs(Interp&, const Value& v, CallArgs&) {
  if (v.kind == Kind::integer) return Value::integer(v.i < 0 ? -v.i : v.i);
  if (v.kind == Kind::boolean) return Value::integer(v.b);
  if (v.kind == Kind::floating) return Value::floating(std::fabs(v.f));
  jfail(std::string("bad operand type for abs(): '") + type_name(v) + "'");
}

// |attr is Python getattr only: a dict's methods, never its keys.
Value f_attr(Interp& in, const Value& v, CallArgs& a) {
  std::string name = need_str(a, 0, "name", "attr");
  if (v.is_undefined()) return Value::undef(v.s);
  if (v.kind == Kind::ns) return get_attr(in, v, name);
  Value r = get_attr(in, v, name);
  if (v.kind == Kind::dict && r.kind != Kind::callable)
    return Value::undef("'dict object' has no attribute '" + name + "'");
  return r;
}

Value f_capitalize(Interp&, const Value& v, CallArgs&) {
  return Value::str(str_capitalize(to_str(v)));
}

Value f_default(Interp&, const Value& v, CallArgs& a) {
  const Value* d = arg(a, 0, "default_value");
  bool boolean = flag(a, 1, "boolean", false);
  if (v.is_undefined() || (boolean && !truthy(v))) return d ? *d : Value::str("");
  return v;
}

Value f_dictsort(Interp&, const Value& v, CallArgs& a) {
  if (v.kind != Kind::dict) jfail("dictsort: expected a mapping");
  bool cs = flag(a, 0, "case_sensitive", false);
  const Value* by = arg(a, 1, "by");
  bool by_value = by && to_str(*by) == "value";
  if (by && !by_value && to_str(*by) != "key")
    jfail("You can only sort by either \"key\" or \"value\"");
  bool rev = flag(a, 2, "reverse", false);
  List items;
  for (const auto& [k, x] : *v.dict) items.push_back(Value::make_list({Value::str(k), x}, true));
  std::stable_sort(items.begin(), items.end(), [&](const Value& p, const Value& q) {
    Value kp = fold_case((*p.list)[by_value ? 1 : 0], cs);
    Value kq = fold_case((*q.list)[by_value ? 1 : 0], cs);
    return rev ? less_than(kq, kp) : less_than(kp, kq);
  });
  return Value::make_list(std::move(items));
}

Value f_escape(Interp&, const Value& v, CallArgs&) {
  return Value::str(html_escape(to_str(v)));
}

Value f_first(Interp&, const Value& v, CallArgs&) {
  std::vector<Value> items = iterate(v);
  if (items.empty()) return Value::undef("No first item, sequence was empty.");
  return items.front();
}

Value f_last(Interp&, const Value& v, CallArgs&) {
  std::vector<Value> items = iterate(v);
  if (items.empty()) return Value::undef("No last item, sequence was empty.");
  return items.back();
}

bool parse_float(const std::string& s, double& out) {
  std::string t = str_strip(s, nullptr, true, true);
  if (t.empty()) return false;
  std::string clean;
  for (char c : t)
    if (c != '_') clean.push_back(c);
  char* end = nullptr;
  errno = 0;
  out = std::strtod(clean.c_str(), &end);
  return end && *end == '\0' && clean.find_first_of("xX") == std::string::npos;
}

Value f_float(Interp&, const Value& v, CallArgs& a) {
  const Value* d = arg(a, 0, "default");
  Value def = d ? *d : Value::floating(0.0);
  switch (v.kind) {
    case Kind::floating:
      return v;
    case Kind::integer:
      return Value::floating(static_cast<double>(v.i));
    case Kind::boolean:
      return Value::floating(v.b ? 1 : 0);
    case Kind::string: {
      double x;
      return parse_float(v.s, x) ? Value::floating(x) : def;
    }
    default:
      return def;
  }
}

Value f_int(Interp&, const Value& v, CallArgs& a) {
  const Value* d = arg(a, 0, "default");
  Value def = d ? *d : Value::integer(0);
  const Value* b = arg(a, 1, "base");
  int base = b && b->kind == Kind::integer ? static_cast<int>(b->i) : 10;
  switch (v.kind) {
    case Kind::integer:
      return v;
    case Kind::boolean:
      return Value::integer(v.b);
    case Kind::floating:
      if (!std::isfinite(v.f) || std::fabs(v.f) > 9.2e18) return def;
      return Value::integer(static_cast<int64_t>(v.f));
    case Kind::string: {
      std::string t = str_strip(v.s, nullptr, true, true);
      std::string clean;
      for (char c : t)
        if (c != '_') clean.push_back(c);
      if (base == 16 && (clean.rfind("0x", 0) == 0 || clean.rfind("0X", 0) == 0))
        clean = clean.substr(2);
      if (!clean.empty() && base >= 2 && base <= 36) {
        char* end = nullptr;
        errno = 0;
        long long x = std::strtoll(clean.c_str(), &end, base);
        if (end && *end == '\0' && errno == 0) return Value::integer(x);
      }
      double x;
      if (parse_float(v.s, x) && std::isfinite(x) && std::fabs(x) < 9.2e18)
        return Value::integer(static_cast<int64_t>(x));
      return def;
    }
    default:
      return def;
  }
}

Value f_indent(Interp&, const Value& v, CallArgs& a) {
  const Value* w = arg(a, 0, "width");
  std::string ind = !w ? std::string(4, ' ')
                    : w->kind == Kind::string
                        ? w->s
                        : std::string(static_cast<size_t>(std::clamp<int64_t>(w->i, 0, 1000)), ' ');
  bool first = flag(a, 1, "first", false);
  bool blank = flag(a, 2, "blank", false);
  std::vector<std::string> lines = str_splitlines(to_str(v) + "\n");
  std::string rv;
  if (blank) {
    for (size_t k = 0; k < lines.size(); ++k) rv += (k ? "\n" + ind : "") + lines[k];
  } else {
    rv = lines.empty() ? "" : lines[0];
    for (size_t k = 1; k < lines.size(); ++k)
      rv += "\n" + (lines[k].empty() ? lines[k] : ind + lines[k]);
  }
  return Value::str(first ? ind + rv : rv);
}

Value f_items(Interp&, const Value& v, CallArgs&) {
  if (v.is_undefined()) return Value::make_list({});
  if (v.kind != Kind::dict) jfail("items: can only get item pairs from a mapping");
  List r;
  for (const auto& [k, x] : *v.dict) r.push_back(Value::make_list({Value::str(k), x}, true));
  return Value::make_list(std::move(r));
}

Value f_join(Interp& in, const Value& v, CallArgs& a) {
  const Value* d = arg(a, 0, "d");
  const Value* attribute = arg(a, 1, "attribute");
  std::string sep = d ? to_str(*d) : "";
  std::string r;
  bool first = true;
  for (const auto& e : iterate(v)) {
    if (!first) r += sep;
    r += to_str(attribute ? attr_path(in, e, to_str(*attribute)) : e);
    first = false;
  }
  return Value::str(std::move(r));
}

Value f_length(Interp&, const Value& v, CallArgs&) {
  return Value::integer(py_len(v));
}

Value f_list(Interp&, const Value& v, CallArgs&) {
  return Value::make_list(iterate(v));
}

Value f_lower(Interp&, const Value& v, CallArgs&) {
  return Value::str(str_lower(to_str(v)));
}
Value f_upper(Interp&, const Value& v, CallArgs&) {
  return Value::str(str_upper(to_str(v)));
}
Value f_title(Interp&, const Value& v, CallArgs&) {
  return Value::str(str_title_filter(to_str(v)));
}

Value f_map(Interp& in, const Value& v, CallArgs& a) {
  List r;
  const Value* attribute = nullptr;
  const Value* def = nullptr;
  for (const auto& [k, x] : a.kw) {
    if (k == "attribute")
      attribute = &x;
    else if (k == "default")
      def = &x;
  }
  if (attribute) {
    for (const auto& e : iterate(v)) {
      Value x = attr_path(in, e, to_str(*attribute));
      r.push_back(x.is_undefined() && def ? *def : x);
    }
    return Value::make_list(std::move(r));
  }
  if (a.pos.empty()) jfail("map requires a filter name or attribute=");
  std::string name = to_str(a.pos[0]);
  CallArgs rest;
  rest.pos.assign(a.pos.begin() + 1, a.pos.end());
  rest.kw = a.kw;
  for (const auto& e : iterate(v)) {
    CallArgs copy = rest;
    r.push_back(apply_filter(in, name, e, copy));
  }
  return Value::make_list(std::move(r));
}

Value select_impl(Interp& in, const Value& v, CallArgs& a, bool by_attr, bool keep) {
  size_t first_test = by_attr ? 1 : 0;
  std::string attribute = by_attr ? need_str(a, 0, nullptr, "selectattr") : "";
  List r;
  for (const auto& e : iterate(v)) {
    Value x = by_attr ? attr_path(in, e, attribute) : e;
    bool ok;
    if (a.pos.size() > first_test) {
      CallArgs t;
      t.pos.assign(a.pos.begin() + static_cast<long>(first_test) + 1, a.pos.end());
      t.kw = a.kw;
      ok = apply_test(in, to_str(a.pos[first_test]), x, t);
    } else {
      ok = truthy(x);
    }
    if (ok == keep) r.push_back(e);
  }
  return Value::make_list(std::move(r));
}
Value f_select(Interp& in, const Value& v, CallArgs& a) {
  return select_impl(in, v, a, false, true);
}
Value f_reject(Interp& in, const Value& v, CallArgs& a) {
  return select_impl(in, v, a, false, false);
}
Value f_selectattr(Interp& in, const Value& v, CallArgs& a) {
  return select_impl(in, v, a, true, true);
}
Value f_rejectattr(Interp& in, const Value& v, CallArgs& a) {
  return select_impl(in, v, a, true, false);
}

Value minmax(Interp& in, const Value& v, CallArgs& a, bool want_max) {
  bool cs = flag(a, 0, "case_sensitive", false);
  const Value* attribute = arg(a, 1, "attribute");
  std::vector<Value> items = iterate(v);
  if (items.empty())
    return Value::undef("No aggregated item, sequence was empty.");
  size_t best = 0;
  Value best_key = key_of(in, items[0], attribute, cs);
  for (size_t k = 1; k < items.size(); ++k) {
    Value key = key_of(in, items[k], attribute, cs);
    if (want_max ? less_than(best_key, key) : less_than(key, best_key)) {
      best = k;
      best_key = key;
    }
  }
  return items[best];
}
Value f_max(Interp& in, const Value& v, CallArgs& a) {
  return minmax(in, v, a, true);
}
Value f_min(Interp& in, const Value& v, CallArgs& a) {
  return minmax(in, v, a, false);
}

Value f_replace(Interp&, const Value& v, CallArgs& a) {
  const Value* count = arg(a, 2, "count");
  return Value::str(str_replace(to_str(v), to_str(need(a, 0, "old", "replace")),
                                to_str(need(a, 1, "new", "replace")),
                                count && count->kind == Kind::integer ? count->i : -1));
}

Value f_reverse(Interp&, const Value& v, CallArgs&) {
  if (v.kind == Kind::string) {
    std::u32string u = utf8_decode(v.s);
    std::reverse(u.begin(), u.end());
    return Value::str(utf8_encode(u));
  }
  std::vector<Value> items = iterate(v);
  std::reverse(items.begin(), items.end());
  return Value::make_list(std::move(items));
}

Value f_round(Interp&, const Value& v, CallArgs& a) {
  if (!v.is_number()) jfail("round: expected a number");
  double x =
      v.kind == Kind::floating ? v.f : static_cast<double>(v.kind == Kind::integer ? v.i : v.b);
  const Value* p = arg(a, 0, "precision");
  int64_t prec = p && p->kind == Kind::integer ? p->i : 0;
  std::string method = arg(a, 1, "method") ? to_str(*arg(a, 1, "method")) : "common";
  if (method != "common" && method != "ceil" && method != "floor")
    jfail("method must be common, ceil or floor");
  if (!std::isfinite(x)) return Value::floating(x);
  prec = std::clamp<int64_t>(prec, -300, 300);
  if (method == "common" && v.kind != Kind::floating) {
    // Python round(int, n) stays an int: half-even to a multiple of 10**-n.
    int64_t iv = v.kind == Kind::integer ? v.i : v.b;
    if (prec >= 0 || prec < -18) return Value::integer(prec < -18 ? 0 : iv);
    int64_t m = 1;
    for (int64_t k = 0; k < -prec; ++k) m *= 10;
    int64_t q = iv / m, r = iv % m;
    if (r < 0) {
      q -= 1;
      r += m;
    }
    if (2 * r > m || (2 * r == m && (q & 1))) q += 1;
    return Value::integer(q * m);
  }
  if (method == "common") {
    if (prec == 0) return Value::floating(std::nearbyint(x));
    if (prec > 0) {
      char buf[512];
      std::snprintf(buf, sizeof(buf), "%.*f", static_cast<int>(prec), x);
      return Value::floating(std::strtod(buf, nullptr));
    }
    double m = std::pow(10.0, static_cast<double>(-prec));
    return Value::floating(std::nearbyint(x / m) * m);
  }
  double m = std::pow(10.0, static_cast<double>(prec));
  double r = method == "ceil" ? std::ceil(x * m) / m : std::floor(x * m) / m;
  return Value::floating(r);
}

Value f_safe(Interp&, const Value& v, CallArgs&) {
  return v;
}

Value f_sort(Interp& in, const Value& v, CallArgs& a) {
  bool rev = flag(a, 0, "reverse", false);
  bool cs = flag(a, 1, "case_sensitive", false);
  const Value* attribute = arg(a, 2, "attribute");
  std::vector<Value> items = iterate(v);
  std::vector<std::pair<Value, Value>> keyed;
  for (auto& e : items) keyed.emplace_back(key_of(in, e, attribute, cs), e);
  std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& p, const auto& q) {
    return rev ? less_than(q.first, p.first) : less_than(p.first, q.first);
  });
  List r;
  for (auto& kv : keyed) r.push_back(std::move(kv.second));
  return Value::make_list(std::move(r));
}

Value f_string(Interp&, const Value& v, CallArgs&) {
  return Value::str(to_str(v));
}

Value f_sum(Interp& in, const Value& v, CallArgs& a) {
  const Value* attribute = arg(a, 0, "attribute");
  const Value* start = arg(a, 1, "start");
  Value total = start ? *start : Value::integer(0);
  for (const auto& e : iterate(v))
    total = arith("+", total, attribute ? attr_path(in, e, to_str(*attribute)) : e);
  return total;
}

Value f_tojson(Interp&, const Value& v, CallArgs& a) {
  JsonOptions o;
  o.ensure_ascii = flag(a, 0, "ensure_ascii", false);
  const Value* indent = arg(a, 1, "indent");
  if (indent && !indent->is_none()) {
    if (indent->kind == Kind::string) {
      o.indent_str = indent->s;
      if (o.indent_str.empty()) o.indent = 0;
    } else if (indent->kind == Kind::integer) {
      o.indent = static_cast<int>(std::clamp<int64_t>(indent->i, 0, 100));
    } else {
      jfail("tojson: indent must be an integer or a string");
    }
    o.item_sep = ",";
  }
  const Value* seps = arg(a, 2, "separators");
  if (seps && !seps->is_none()) {
    if (seps->kind != Kind::list || seps->list->size() != 2 ||
        (*seps->list)[0].kind != Kind::string || (*seps->list)[1].kind != Kind::string)
      jfail("tojson: separators must be a pair of strings");
    o.item_sep = (*seps->list)[0].s;
    o.key_sep = (*seps->list)[1].s;
  }
  o.sort_keys = flag(a, 3, "sort_keys", false);
  return Value::str(to_json(v, o));
}

Value f_trim(Interp&, const Value& v, CallArgs& a) {
  const Value* chars = arg(a, 0, "chars");
  std::string c = chars && !chars->is_none() ? to_str(*chars) : "";
  return Value::str(str_strip(to_str(v), chars && !chars->is_none() ? &c : nullptr, true, true));
}

Value f_unique(Interp& in, const Value& v, CallArgs& a) {
  bool cs = flag(a, 0, "case_sensitive", false);
  const Value* attribute = arg(a, 1, "attribute");
  List r;
  std::vector<Value> seen;
  for (const auto& e : iterate(v)) {
    Value k = key_of(in, e, attribute, cs);
    bool dup = false;
    for (const auto& s : seen) dup = dup || equals(s, k);
    if (!dup) {
      seen.push_back(k);
      r.push_back(e);
    }
  }
  return Value::make_list(std::move(r));
}

Value f_wordcount(Interp&, const Value& v, CallArgs&) {
  return Value::integer(static_cast<int64_t>(str_split(to_str(v), nullptr, -1, false).size()));
}

Value f_batch(Interp&, const Value& v, CallArgs& a) {
  const Value& n = need(a, 0, "linecount", "batch");
  if (n.kind != Kind::integer || n.i <= 0) jfail("batch: linecount must be a positive integer");
  const Value* fill = arg(a, 1, "fill_with");
  List r, cur;
  for (const auto& e : iterate(v)) {
    cur.push_back(e);
    if (static_cast<int64_t>(cur.size()) == n.i) {
      r.push_back(Value::make_list(std::move(cur)));
      cur.clear();
    }
  }
  if (!cur.empty()) {
    if (fill)
      while (static_cast<int64_t>(cur.size()) < n.i) cur.push_back(*fill);
    r.push_back(Value::make_list(std::move(cur)));
  }
  return Value::make_list(std::move(r));
}

const std::map<std::string, FilterFn>& filters() {
  static const std::map<std::string, FilterFn> m = {
      {"abs", f_abs},
      {"attr", f_attr},
      {"batch", f_batch},
      {"capitalize", f_capitalize},
      {"count", f_length},
      {"d", f_default},
      {"default", f_default},
      {"dictsort", f_dictsort},
      {"e", f_escape},
      {"escape", f_escape},
      {"first", f_first},
      {"float", f_float},
      {"forceescape", f_escape},
      {"indent", f_indent},
      {"int", f_int},
      {"items", f_items},
      {"join", f_join},
      {"last", f_last},
      {"length", f_length},
      {"list", f_list},
      {"lower", f_lower},
      {"map", f_map},
      {"max", f_max},
      {"min", f_min},
      {"reject", f_reject},
      {"rejectattr", f_rejectattr},
      {"replace", f_replace},
      {"reverse", f_reverse},
      {"round", f_round},
      {"safe", f_safe},
      {"select", f_select},
      {"selectattr", f_selectattr},
      {"sort", f_sort},
      {"string", f_string},
      {"sum", f_sum},
      {"title", f_title},
      {"tojson", f_tojson},
      {"trim", f_trim},
      {"unique", f_unique},
      {"upper", f_upper},
      {"wordcount", f_wordcount},
  };
  return m;
}

// ---- tests
// ---------------------------------------------------------------------------------------

bool t_defined(Interp&, const Value& v, CallArgs&) {
  return !v.is_undefined();
}
bool t_undefined(Interp&, const Value& v, CallArgs&) {
  return v.is_undefined();
}
bool t_none(Interp&, const Value& v, CallArgs&) {
  return v.is_none();
}
bool t_boolean(Interp&, const Value& v, CallArgs&) {
  return v.kind == Kind::boolean;
}
bool t_true(Interp&, const Value& v, CallArgs&) {
  return v.kind == Kind::boolean && v.b;
}
bool t_false(Interp&, const Value& v, CallArgs&) {
  return v.kind == Kind::boolean && !v.b;
}
bool t_number(Interp&, const Value& v, CallArgs&) {
  return v.is_number();
}
bool t_integer(Interp&, const Value& v, CallArgs&) {
  return v.kind == Kind::integer;
}
bool t_float(Interp&, const Value& v, CallArgs&) {
  return v.kind == Kind::floating;
}
bool t_string(Interp&, const Value& v, CallArgs&) {
  return v.kind == Kind::string;
}
bool t_mapping(Interp&, const Value& v, CallArgs&) {
  return v.kind == Kind::dict;
}
bool t_iterable(Interp&, const Value& v, CallArgs&) {
  return v.kind == Kind::string || v.kind == Kind::list || v.kind == Kind::dict ||
         v.kind == Kind::undefined;
}
bool t_sequence(Interp&, const Value& v, CallArgs&) {
  return v.kind == Kind::string || v.kind == Kind::list || v.kind == Kind::dict ||
         v.kind == Kind::undefined;
}
bool t_callable(Interp&, const Value& v, CallArgs&) {
  return v.kind == Kind::callable;
}
int64_t int_value(const Value& v) {
  if (v.kind == Kind::integer) return v.i;
  if (v.kind == Kind::boolean) return v.b;
  if (v.kind == Kind::floating) return static_cast<int64_t>(std::fmod(v.f, 2.0) == 0 ? 0 : 1);
  jfail(std::string("unsupported operand type(s) for %: '") + type_name(v) + "' and 'int'");
}
bool t_odd(Interp&, const Value& v, CallArgs&) {
  return int_value(v) % 2 != 0;
}
bool t_even(Interp&, const Value& v, CallArgs&) {
  return int_value(v) % 2 == 0;
}
bool t_divisibleby(Interp&, const Value& v, CallArgs& a) {
  Value r = arith("%", v, need(a, 0, "num", "divisibleby"));
  return !truthy(r);
}
bool t_eq(Interp&, const Value& v, CallArgs& a) {
  return equals(v, need(a, 0, "other", "eq"));
}
bool t_ne(Interp&, const Value& v, CallArgs& a) {
  return !equals(v, need(a, 0, "other", "ne"));
}
bool t_lt(Interp&, const Value& v, CallArgs& a) {
  return less_than(v, need(a, 0, "other", "lt"));
}
bool t_gt(Interp&, const Value& v, CallArgs& a) {
  return less_than(need(a, 0, "other", "gt"), v);
}
bool t_le(Interp&, const Value& v, CallArgs& a) {
  return !less_than(need(a, 0, "other", "le"), v);
}
bool t_ge(Interp&, const Value& v, CallArgs& a) {
  return !less_than(v, need(a, 0, "other", "ge"));
}
bool t_in(Interp&, const Value& v, CallArgs& a) {
  return contains(need(a, 0, "seq", "in"), v);
}
bool t_lower(Interp&, const Value& v, CallArgs&) {
  return str_is(to_str(v), "islower");
}
bool t_upper(Interp&, const Value& v, CallArgs&) {
  return str_is(to_str(v), "isupper");
}
bool t_sameas(Interp&, const Value& v, CallArgs& a) {
  const Value& o = need(a, 0, "other", "sameas");
  if (v.kind != o.kind) return false;
  switch (v.kind) {
    case Kind::list:
      return v.list == o.list;
    case Kind::dict:
      return v.dict == o.dict;
    case Kind::ns:
      return v.ns == o.ns;
    case Kind::callable:
      return v.fn == o.fn;
    default:
      return equals(v, o);
  }
}
bool t_escaped(Interp&, const Value&, CallArgs&) {
  return false;
}
bool t_filter(Interp&, const Value& v, CallArgs&) {
  return has_filter(to_str(v));
}
bool t_test(Interp&, const Value& v, CallArgs&) {
  return has_test(to_str(v));
}

const std::map<std::string, TestFn>& tests() {
  static const std::map<std::string, TestFn> m = {
      {"boolean", t_boolean},
      {"callable", t_callable},
      {"defined", t_defined},
      {"divisibleby", t_divisibleby},
      {"eq", t_eq},
      {"equalto", t_eq},
      {"==", t_eq},
      {"escaped", t_escaped},
      {"even", t_even},
      {"false", t_false},
      {"filter", t_filter},
      {"float", t_float},
      {"ge", t_ge},
      {">=", t_ge},
      {"gt", t_gt},
      {"greaterthan", t_gt},
      {">", t_gt},
      {"in", t_in},
      {"integer", t_integer},
      {"iterable", t_iterable},
      {"le", t_le},
      {"<=", t_le},
      {"lower", t_lower},
      {"lt", t_lt},
      {"lessthan", t_lt},
      {"<", t_lt},
      {"mapping", t_mapping},
      {"ne", t_ne},
      {"!=", t_ne},
      {"none", t_none},
      {"number", t_number},
      {"odd", t_odd},
      {"sameas", t_sameas},
      {"sequence", t_sequence},
      {"string", t_string},
      {"test", t_test},
      {"true", t_true},
      {"undefined", t_undefined},
      {"upper", t_upper},
  };
  return m;
}

// ---- globals
// -------------------------------------------------------------------------------------

Value g_range(Interp&, CallArgs& a) {
  std::vector<int64_t> n;
  for (const auto& v : a.pos) {
    if (v.kind != Kind::integer && v.kind != Kind::boolean)
      jfail(std::string("'") + type_name(v) + "' object cannot be interpreted as an integer");
    n.push_back(v.kind == Kind::integer ? v.i : v.b);
  }
  if (n.empty() || n.size() > 3) jfail("range expected 1 to 3 arguments");
  int64_t start = n.size() == 1 ? 0 : n[0];
  int64_t stop = n.size() == 1 ? n[0] : n[1];
  int64_t step = n.size() == 3 ? n[2] : 1;
  if (step == 0) jfail("range() arg 3 must not be zero");
  // Python's length of the range, in 128 bits: start + k * step never overflows for k < n, but
  // stepping past stop would.
  using i128 = __int128;
  i128 len = 0;
  if (step > 0 && stop > start) len = (i128(stop) - start + step - 1) / step;
  if (step < 0 && stop < start) len = (i128(start) - stop - step - 1) / -i128(step);
  if (len > kMaxRange) jfail("range too big, the limit is " + std::to_string(kMaxRange) + " items");
  List r;
  r.reserve(static_cast<size_t>(len));
  for (int64_t k = 0; k < static_cast<int64_t>(len); ++k)
    r.push_back(Value::integer(static_cast<int64_t>(start + i128(k) * step)));
  return Value::make_list(std::move(r));
}

Value g_namespace(Interp&, CallArgs& a) {
  Dict d;
  auto put = [&](const std::string& k, const Value& v) {
    for (auto& kv : d)
      if (kv.first == k) {
        kv.second = v;
        return;
      }
    d.emplace_back(k, v);
  };
  for (const auto& p : a.pos) {
    if (p.kind != Kind::dict) jfail("namespace() positional argument must be a mapping");
    for (const auto& [k, v] : *p.dict) put(k, v);
  }
  for (const auto& [k, v] : a.kw) put(k, v);
  return Value::make_ns(std::move(d));
}

Value g_dict(Interp&, CallArgs& a) {
  Dict d;
  for (const auto& p : a.pos) {
    if (p.kind != Kind::dict) jfail("dict() positional argument must be a mapping");
    for (const auto& kv : *p.dict) d.push_back(kv);
  }
  for (const auto& [k, v] : a.kw) d.emplace_back(k, v);
  return Value::make_dict(std::move(d));
}

Value g_raise_exception(Interp&, CallArgs& a) {
  throw JinjaRaised{a.pos.empty() ? std::string() : to_str(a.pos[0])};
}

Value g_strftime_now(Interp& in, CallArgs& a) {
  if (a.pos.empty() || a.pos[0].kind != Kind::string)
    jfail("strftime_now() expects a format string");
  std::tm tm{};
  if (in.now) {
    tm = in.now();
  } else {
    std::time_t t = std::time(nullptr);
    localtime_r(&t, &tm);
  }
  const std::string& fmt = a.pos[0].s;
  if (fmt.empty()) return Value::str("");
  std::vector<char> buf(256 + fmt.size() * 16);
  size_t n = std::strftime(buf.data(), buf.size(), fmt.c_str(), &tm);
  return Value::str(std::string(buf.data(), n));
}

}  // namespace

bool has_filter(const std::string& name) {
  return filters().count(name) != 0;
}
bool has_test(const std::string& name) {
  return tests().count(name) != 0;
}

Value apply_filter(Interp& in, const std::string& name, const Value& v, CallArgs& args) {
  auto it = filters().find(name);
  if (it == filters().end()) jfail("No filter named '" + name + "'.");
  return it->second(in, v, args);
}

bool apply_test(Interp& in, const std::string& name, const Value& v, CallArgs& args) {
  auto it = tests().find(name);
  if (it == tests().end()) jfail("No test named '" + name + "'.");
  return it->second(in, v, args);
}

void add_globals(Frame& f) {
  f.vars["range"] = make_callable("range", g_range);
  f.vars["namespace"] = make_callable("namespace", g_namespace);
  f.vars["dict"] = make_callable("dict", g_dict);
  f.vars["raise_exception"] = make_callable("raise_exception", g_raise_exception);
  f.vars["strftime_now"] = make_callable("strftime_now", g_strftime_now);
}

}  // namespace moe::jinja
