// Jinja runtime values: construction, Python-style printing, comparison, JSON in and out.
#include "text/jinja_value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>

namespace moe::jinja {

Value Value::undef(std::string hint) {
  Value v;
  v.kind = Kind::undefined;
  v.s = std::move(hint);
  return v;
}
Value Value::none() {
  Value v;
  v.kind = Kind::none;
  return v;
}
Value Value::boolean(bool x) {
  Value v;
  v.kind = Kind::boolean;
  v.b = x;
  return v;
}
Value Value::integer(int64_t x) {
  Value v;
  v.kind = Kind::integer;
  v.i = x;
  return v;
}
Value Value::floating(double x) {
  Value v;
  v.kind = Kind::floating;
  v.f = x;
  return v;
}
Value Value::str(std::string x) {
  Value v;
  v.kind = Kind::string;
  v.s = std::move(x);
  return v;
}
// Deeply nested values would overflow the stack when printed, compared or destroyed.
static uint32_t depth_of(uint32_t child_max) {
  if (child_max + 1 > kMaxDepth) jfail("value nested too deeply (over 256 levels)");
  return child_max + 1;
}

Value Value::make_list(List x, bool tuple) {
  uint32_t d = 0;
  for (const auto& e : x) d = std::max(d, e.depth);
  Value v;
  v.depth = depth_of(d);
  v.kind = Kind::list;
  v.is_tuple = tuple;
  v.list = std::make_shared<const List>(std::move(x));
  return v;
}
Value Value::make_dict(Dict x) {
  uint32_t d = 0;
  for (const auto& kv : x) d = std::max(d, kv.second.depth);
  Value v;
  v.depth = depth_of(d);
  v.kind = Kind::dict;
  v.dict = std::make_shared<const Dict>(std::move(x));
  return v;
}
Value Value::make_ns(Dict x) {
  Value v;
  v.kind = Kind::ns;
  v.ns = std::make_shared<Dict>(std::move(x));
  return v;
}

Value make_callable(std::string name, std::function<Value(Interp&, CallArgs&)> fn) {
  Value v;
  v.kind = Kind::callable;
  auto c = std::make_shared<Callable>();
  c->name = std::move(name);
  c->call = std::move(fn);
  v.fn = std::move(c);
  return v;
}

void jfail(std::string msg) {
  throw JinjaError{std::move(msg)};
}

// ---- UTF-8
// ---------------------------------------------------------------------------------------

std::u32string utf8_decode(const std::string& s) {
  std::u32string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    char32_t cp;
    int n;
    if (c < 0x80) {
      cp = c;
      n = 1;
    } else if ((c >> 5) == 6) {
      cp = c & 0x1f;
      n = 2;
    } else if ((c >> 4) == 14) {
      cp = c & 0x0f;
      n = 3;
    } else if ((c >> 3) == 30) {
      cp = c & 0x07;
      n = 4;
    } else {
      out.push_back(0xFFFD);
      ++i;
      continue;
    }
    if (i + n > s.size()) {
      out.push_back(0xFFFD);
      break;
    }
    bool ok = true;
    for (int k = 1; k < n; ++k) {
      unsigned char cc = static_cast<unsigned char>(s[i + k]);
      if ((cc >> 6) != 2) {
        ok = false;
        break;
      }
      cp = (cp << 6) | (cc & 0x3f);
    }
    if (!ok) {
      out.push_back(0xFFFD);
      ++i;
      continue;
    }
    out.push_back(cp);
    i += n;
  }
  return out;
}

void utf8_append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  }
}

std::string utf8_encode(const std::u32string& s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) utf8_append(out, c);
  return out;
}

bool is_py_space(char32_t c) {
  return (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f ||
         c == 0x3000;
}

// ---- printing
// ------------------------------------------------------------------------------------

bool truthy(const Value& v) {
  switch (v.kind) {
    case Kind::undefined:
    case Kind::none:
      return false;
    case Kind::boolean:
      return v.b;
    case Kind::integer:
      return v.i != 0;
    case Kind::floating:
      return v.f != 0;
    case Kind::string:
      return !v.s.empty();
    case Kind::list:
      return !v.list->empty();
    case Kind::dict:
      return !v.dict->empty();
    case Kind::ns:
    case Kind::callable:
      return true;
  }
  return false;
}

std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::scientific);
  std::string sci(buf, res.ptr);  // "-d.ddde+XX"
  bool neg = sci[0] == '-';
  if (neg) sci.erase(0, 1);
  size_t epos = sci.find('e');
  std::string mant = sci.substr(0, epos);
  int exp = std::atoi(sci.c_str() + epos + 1);
  std::string digits;
  for (char c : mant)
    if (c != '.') digits.push_back(c);
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  std::string out = neg ? "-" : "";
  if (exp >= -4 && exp < 16) {
    int point = exp + 1;  // digits before the decimal point
    if (point <= 0) {
      out += "0." + std::string(static_cast<size_t>(-point), '0') + digits;
    } else if (static_cast<size_t>(point) >= digits.size()) {
      out += digits + std::string(static_cast<size_t>(point) - digits.size(), '0') + ".0";
    } else {
      out += digits.substr(0, static_cast<size_t>(point)) + "." +
             digits.substr(static_cast<size_t>(point));
    }
  } else {
    out += digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char eb[16];
    std::snprintf(eb, sizeof(eb), "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    out += eb;
  }
  return out;
}

static void repr_string(std::string& out, const std::string& s) {
  bool has_single = s.find('\'') != std::string::npos;
  bool has_double = s.find('"') != std::string::npos;
  char q = (has_single && !has_double) ? '"' : '\'';
  out.push_back(q);
  for (char32_t c : utf8_decode(s)) {
    if (c == static_cast<char32_t>(q) || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || (c >= 0x7f && c < 0xa0)) {
      char b[8];
      std::snprintf(b, sizeof(b), "\\x%02x", static_cast<unsigned>(c));
      out += b;
    } else {
      utf8_append(out, c);
    }
  }
  out.push_back(q);
}

static void repr_into(std::string& out, const Value& v, int depth) {
  if (depth > 300) jfail("value nested too deeply to print");
  switch (v.kind) {
    case Kind::string:
      repr_string(out, v.s);
      return;
    case Kind::list: {
      out.push_back(v.is_tuple ? '(' : '[');
      for (size_t k = 0; k < v.list->size(); ++k) {
        if (k) out += ", ";
        repr_into(out, (*v.list)[k], depth + 1);
      }
      if (v.is_tuple && v.list->size() == 1) out.push_back(',');
      out.push_back(v.is_tuple ? ')' : ']');
      return;
    }
    case Kind::dict:
    case Kind::ns: {
      const Dict& d = v.kind == Kind::dict ? *v.dict : *v.ns;
      if (v.kind == Kind::ns) out += "<Namespace ";
      out.push_back('{');
      for (size_t k = 0; k < d.size(); ++k) {
        if (k) out += ", ";
        repr_string(out, d[k].first);
        out += ": ";
        repr_into(out, d[k].second, depth + 1);
      }
      out.push_back('}');
      if (v.kind == Kind::ns) out.push_back('>');
      return;
    }
    default:
      out += to_str(v);
      return;
  }
}

std::string repr(const Value& v) {
  if (v.kind == Kind::undefined) return "Undefined";
  std::string out;
  repr_into(out, v, 0);
  return out;
}

std::string to_str(const Value& v) {
  switch (v.kind) {
    case Kind::undefined:
      return "";
    case Kind::none:
      return "None";
    case Kind::boolean:
      return v.b ? "True" : "False";
    case Kind::integer:
      return std::to_string(v.i);
    case Kind::floating:
      return float_repr(v.f);
    case Kind::string:
      return v.s;
    case Kind::callable:
      return "<function " + v.fn->name + ">";
    default:
      return repr(v);
  }
}

const char* type_name(const Value& v) {
  switch (v.kind) {
    case Kind::undefined:
      return "Undefined";
    case Kind::none:
      return "NoneType";
    case Kind::boolean:
      return "bool";
    case Kind::integer:
      return "int";
    case Kind::floating:
      return "float";
    case Kind::string:
      return "str";
    case Kind::list:
      return v.is_tuple ? "tuple" : "list";
    case Kind::dict:
      return "dict";
    case Kind::ns:
      return "Namespace";
    case Kind::callable:
      return "function";
  }
  return "object";
}

// ---- comparison
// ----------------------------------------------------------------------------------

static double num_of(const Value& v) {
  if (v.kind == Kind::integer) return static_cast<double>(v.i);
  if (v.kind == Kind::boolean) return v.b ? 1 : 0;
  return v.f;
}

const Value* dict_find(const Dict& d, const std::string& key) {
  for (const auto& kv : d)
    if (kv.first == key) return &kv.second;
  return nullptr;
}

bool equals(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.kind != Kind::floating && b.kind != Kind::floating) {
      int64_t x = a.kind == Kind::boolean ? a.b : a.i;
      int64_t y = b.kind == Kind::boolean ? b.b : b.i;
      return x == y;
    }
    return num_of(a) == num_of(b);
  }
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Kind::undefined:
    case Kind::none:
      return true;
    case Kind::string:
      return a.s == b.s;
    case Kind::list: {
      if (a.list->size() != b.list->size()) return false;
      for (size_t k = 0; k < a.list->size(); ++k)
        if (!equals((*a.list)[k], (*b.list)[k])) return false;
      return true;
    }
    case Kind::dict: {
      if (a.dict->size() != b.dict->size()) return false;
      for (const auto& kv : *a.dict) {
        const Value* o = dict_find(*b.dict, kv.first);
        if (!o || !equals(kv.second, *o)) return false;
      }
      return true;
    }
    case Kind::ns:
      return a.ns == b.ns;
    case Kind::callable:
      return a.fn == b.fn;
    default:
      return false;
  }
}

bool less_than(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.kind == Kind::integer && b.kind == Kind::integer) return a.i < b.i;
    return num_of(a) < num_of(b);
  }
  if (a.kind == Kind::string && b.kind == Kind::string) return a.s < b.s;  // code point order
  if (a.kind == Kind::list && b.kind == Kind::list) {
    const List& x = *a.list;
    const List& y = *b.list;
    for (size_t k = 0; k < x.size() && k < y.size(); ++k) {
      if (equals(x[k], y[k])) continue;
      return less_than(x[k], y[k]);
    }
    return x.size() < y.size();
  }
  jfail(std::string("'<' not supported between instances of '") + type_name(a) + "' and '" +
        type_name(b) + "'");
}

// ---- JSON
// ----------------------------------------------------------------------------------------

Value from_json(const nlohmann::ordered_json& j, int depth) {
  if (depth > static_cast<int>(kMaxDepth)) jfail("value nested too deeply (over 256 levels)");
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null:
      return Value::none();
    case nlohmann::ordered_json::value_t::boolean:
      return Value::boolean(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer:
      return Value::integer(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: {
      uint64_t u = j.get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX)) return Value::floating(static_cast<double>(u));
      return Value::integer(static_cast<int64_t>(u));
    }
    case nlohmann::ordered_json::value_t::number_float:
      return Value::floating(j.get<double>());
    case nlohmann::ordered_json::value_t::string:
      return Value::str(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      List l;
      l.reserve(j.size());
      for (const auto& e : j) l.push_back(from_json(e, depth + 1));
      return Value::make_list(std::move(l));
    }
    case nlohmann::ordered_json::value_t::object: {
      Dict d;
      d.reserve(j.size());
      for (const auto& [k, e] : j.items()) d.emplace_back(k, from_json(e, depth + 1));
      return Value::make_dict(std::move(d));
    }
    default:
      return Value::none();
  }
}

static void json_string(std::string& out, const std::string& s, bool ensure_ascii) {
  out.push_back('"');
  auto hex4 = [&](unsigned c) {
    char b[8];
    std::snprintf(b, sizeof(b), "\\u%04x", c);
    out += b;
  };
  for (char32_t c : utf8_decode(s)) {
    switch (c) {
      case '"':
        out += "\\\"";
        continue;
      case '\\':
        out += "\\\\";
        continue;
      case '\n':
        out += "\\n";
        continue;
      case '\r':
        out += "\\r";
        continue;
      case '\t':
        out += "\\t";
        continue;
      case '\b':
        out += "\\b";
        continue;
      case '\f':
        out += "\\f";
        continue;
      default:
        break;
    }
    if (c < 0x20) {
      hex4(c);
    } else if (ensure_ascii && c > 0x7e) {
      if (c >= 0x10000) {
        char32_t v = c - 0x10000;
        hex4(0xD800 + (v >> 10));
        hex4(0xDC00 + (v & 0x3ff));
      } else {
        hex4(c);
      }
    } else {
      utf8_append(out, c);
    }
  }
  out.push_back('"');
}

static void json_into(std::string& out, const Value& v, const JsonOptions& o, int depth) {
  if (depth > 300) jfail("value nested too deeply for tojson");
  bool pretty = o.indent >= 0 || !o.indent_str.empty();
  auto newline = [&](int level) {
    out.push_back('\n');
    for (int k = 0; k < level; ++k) {
      if (!o.indent_str.empty())
        out += o.indent_str;
      else
        out.append(static_cast<size_t>(o.indent), ' ');
    }
  };
  switch (v.kind) {
    case Kind::none:
      out += "null";
      return;
    case Kind::boolean:
      out += v.b ? "true" : "false";
      return;
    case Kind::integer:
      out += std::to_string(v.i);
      return;
    case Kind::floating:
      if (std::isnan(v.f))
        out += "NaN";
      else if (std::isinf(v.f))
        out += v.f < 0 ? "-Infinity" : "Infinity";
      else
        out += float_repr(v.f);
      return;
    case Kind::string:
      json_string(out, v.s, o.ensure_ascii);
      return;
    case Kind::list: {
      if (v.list->empty()) {
        out += "[]";
        return;
      }
      out.push_back('[');
      for (size_t k = 0; k < v.list->size(); ++k) {
        if (k) out += o.item_sep;
        if (pretty) newline(depth + 1);
        json_into(out, (*v.list)[k], o, depth + 1);
      }
      if (pretty) newline(depth);
      out.push_back(']');
      return;
    }
    case Kind::dict: {
      const Dict& d = *v.dict;
      if (d.empty()) {
        out += "{}";
        return;
      }
      std::vector<const std::pair<std::string, Value>*> items;
      for (const auto& kv : d) items.push_back(&kv);
      if (o.sort_keys)
        std::stable_sort(items.begin(), items.end(),
                         [](auto* a, auto* b) { return a->first < b->first; });
      out.push_back('{');
      for (size_t k = 0; k < items.size(); ++k) {
        if (k) out += o.item_sep;
        if (pretty) newline(depth + 1);
        json_string(out, items[k]->first, o.ensure_ascii);
        out += o.key_sep;
        json_into(out, items[k]->second, o, depth + 1);
      }
      if (pretty) newline(depth);
      out.push_back('}');
      return;
    }
    default:
      jfail(std::string("Object of type ") + type_name(v) + " is not JSON serializable");
  }
}

std::string to_json(const Value& v, const JsonOptions& opt) {
  std::string out;
  json_into(out, v, opt, 0);
  return out;
}

}  // namespace moe::jinja
