// Jinja interpreter: statements and expressions, see jinja_interp.h.
#include "text/jinja_interp.h"

#include <cmath>

namespace moe::jinja {

namespace {

constexpr int kMaxCallDepth = 100;
constexpr size_t kMaxOutput = 64u << 20;

[[noreturn]] void fail_undefined(const Value& v) {
  jfail(v.s.empty() ? std::string("value is undefined") : v.s);
}

void assign(Frame& f, const std::vector<std::string>& names, const Value& v) {
  if (names.size() == 1) {
    f.vars[names[0]] = v;
    return;
  }
  if (v.kind != Kind::list) {
    jfail(std::string("cannot unpack non-iterable ") + type_name(v) + " object");
  }
  if (v.list->size() != names.size()) {
    jfail("cannot unpack " + std::to_string(v.list->size()) + " values into " +
          std::to_string(names.size()) + " variables");
  }
  for (size_t k = 0; k < names.size(); ++k) f.vars[names[k]] = (*v.list)[k];
}

Value slice_value(const Value& v, const Value* start, const Value* stop, const Value* step) {
  auto as_int = [](const Value* x, int64_t def) -> int64_t {
    if (!x || x->is_none() || x->is_undefined()) return def;
    if (x->kind == Kind::integer) return x->i;
    if (x->kind == Kind::boolean) return x->b;
    jfail("slice indices must be integers or None");
  };
  int64_t st = as_int(step, 1);
  if (st == 0) jfail("slice step cannot be zero");
  bool is_str = v.kind == Kind::string;
  std::u32string chars;
  int64_t n;
  if (is_str) {
    chars = utf8_decode(v.s);
    n = static_cast<int64_t>(chars.size());
  } else if (v.kind == Kind::list) {
    n = static_cast<int64_t>(v.list->size());
  } else if (v.kind == Kind::undefined) {
    fail_undefined(v);
  } else {
    jfail(std::string("'") + type_name(v) + "' object is not subscriptable");
  }
  // Python's PySlice_AdjustIndices.
  auto adjust = [&](int64_t i, bool is_start) {
    int64_t lo = st < 0 ? -1 : 0;
    int64_t hi = st < 0 ? n - 1 : n;
    (void)is_start;
    if (i < 0) {
      i += n;
      if (i < lo) i = lo;
    } else if (i > hi) {
      i = hi;
    }
    return i;
  };
  int64_t a = (!start || start->is_none() || start->is_undefined())
                  ? (st < 0 ? n - 1 : 0)
                  : adjust(as_int(start, 0), true);
  int64_t b = (!stop || stop->is_none() || stop->is_undefined()) ? (st < 0 ? -1 : n)
                                                                 : adjust(as_int(stop, 0), false);
  std::vector<int64_t> idx;
  for (int64_t i = a; st > 0 ? i < b : i > b; i += st) idx.push_back(i);
  if (is_str) {
    std::u32string r;
    for (int64_t i : idx) r.push_back(chars[static_cast<size_t>(i)]);
    return Value::str(utf8_encode(r));
  }
  List r;
  for (int64_t i : idx) r.push_back((*v.list)[static_cast<size_t>(i)]);
  return Value::make_list(std::move(r), v.is_tuple);
}

bool compare(const std::string& op, const Value& a, const Value& b) {
  if (op == "==") return equals(a, b);
  if (op == "!=") return !equals(a, b);
  if (op == "in") return contains(b, a);
  if (op == "not in") return !contains(b, a);
  if (a.is_undefined()) fail_undefined(a);
  if (b.is_undefined()) fail_undefined(b);
  if (op == "<") return less_than(a, b);
  if (op == ">") return less_than(b, a);
  if (op == "<=") return !less_than(b, a);
  if (op == ">=") return !less_than(a, b);
  jfail("unknown comparison " + op);
}

}  // namespace

Value lookup(const FramePtr& f, const std::string& name) {
  for (const Frame* p = f.get(); p; p = p->parent.get()) {
    auto it = p->vars.find(name);
    if (it != p->vars.end()) return it->second;
  }
  return Value::undef("'" + name + "' is undefined");
}

void Interp::tick() {
  if (++steps > max_steps)
    jfail("template exceeded the limit of " + std::to_string(max_steps) +
          " loop iterations and calls");
}

void Interp::charge(uint64_t units) {
  work += units;
  if (work > max_work)
    jfail("template exceeded the limit of " + std::to_string(max_work) +
          " units of work (statements, expressions and the sizes of their values)");
}

void Interp::emit(const std::string& s) {
  if (out->size() + s.size() > kMaxOutput) jfail("template output exceeds 64 MiB");
  out->append(s);
}

Value Interp::call_value(const Value& callee, CallArgs& args) {
  if (callee.is_undefined()) fail_undefined(callee);
  if (callee.kind != Kind::callable)
    jfail(std::string("'") + type_name(callee) + "' object is not callable");
  if (++call_depth > kMaxCallDepth) jfail("macro calls nested too deeply");
  struct Dec {
    int& d;
    ~Dec() { --d; }
  } dec{call_depth};
  tick();
  return callee.fn->call(*this, args);
}

std::string Interp::render_body(const std::vector<NodePtr>& body, const FramePtr& f) {
  std::string buf;
  std::string* saved = out;
  out = &buf;
  try {
    exec(body, f);
  } catch (...) {
    out = saved;
    throw;
  }
  out = saved;
  return buf;
}

namespace {

// A macro (or the body of a {% call %} block) as a callable value. The defining frame is held
// weakly: frames own the macros defined in them, so a strong reference would be a cycle.
Value make_macro(const Node* m, const FramePtr& closure, const std::string& name) {
  std::weak_ptr<Frame> weak = closure;
  return make_callable(name, [m, weak, name](Interp& in, CallArgs& a) -> Value {
    FramePtr parent = weak.lock();
    if (!parent) jfail("macro '" + name + "' called outside the scope it was defined in");
    auto f = std::make_shared<Frame>();
    f->parent = parent;
    List varargs;
    for (size_t k = m->names.size(); k < a.pos.size(); ++k) varargs.push_back(a.pos[k]);
    Dict kwargs;
    for (auto& [k, v] : a.kw) {
      bool is_param = false;
      for (const auto& p : m->names) is_param = is_param || p == k;
      if (!is_param && k != "caller") kwargs.emplace_back(k, v);
      if (k == "caller") f->vars["caller"] = v;
    }
    for (size_t k = 0; k < m->names.size(); ++k) {
      const std::string& p = m->names[k];
      const Value* given = k < a.pos.size() ? &a.pos[k] : nullptr;
      if (!given)
        for (auto& [kn, kv] : a.kw)
          if (kn == p) given = &kv;
      if (given)
        f->vars[p] = *given;
      else if (m->kwargs[k].second)
        f->vars[p] = in.eval(*m->kwargs[k].second, f);
      else
        f->vars[p] = Value::undef("'" + p + "' is undefined");
    }
    f->vars["varargs"] = Value::make_list(std::move(varargs), true);
    f->vars["kwargs"] = Value::make_dict(std::move(kwargs));
    return Value::str(in.render_body(m->body, f));
  });
}

Value make_loop(size_t i, size_t n, const std::vector<Value>& items) {
  Dict d;
  d.reserve(12);
  d.emplace_back("index", Value::integer(static_cast<int64_t>(i + 1)));
  d.emplace_back("index0", Value::integer(static_cast<int64_t>(i)));
  d.emplace_back("revindex", Value::integer(static_cast<int64_t>(n - i)));
  d.emplace_back("revindex0", Value::integer(static_cast<int64_t>(n - i - 1)));
  d.emplace_back("first", Value::boolean(i == 0));
  d.emplace_back("last", Value::boolean(i + 1 == n));
  d.emplace_back("length", Value::integer(static_cast<int64_t>(n)));
  d.emplace_back("depth", Value::integer(1));
  d.emplace_back("depth0", Value::integer(0));
  d.emplace_back("previtem", i > 0 ? items[i - 1] : Value::undef("there is no previous item"));
  d.emplace_back("nextitem", i + 1 < n ? items[i + 1] : Value::undef("there is no next item"));
  d.emplace_back("cycle", make_callable("cycle", [i](Interp&, CallArgs& a) -> Value {
                   if (a.pos.empty()) jfail("no items for cycling given");
                   return a.pos[i % a.pos.size()];
                 }));
  return Value::make_dict(std::move(d));
}

}  // namespace

Interp::Flow Interp::exec(const std::vector<NodePtr>& body, const FramePtr& f) {
  for (const auto& s : body) {
    Flow fl = exec_stmt(*s, f);
    if (fl != Flow::normal) return fl;
  }
  return Flow::normal;
}

Interp::Flow Interp::exec_stmt(const Node& n, const FramePtr& f) {
  where = &n;
  charge(1);
  switch (n.kind) {
    case NodeKind::text:
      emit(n.str);
      return Flow::normal;
    case NodeKind::output: {
      Value v = eval(*n.kids[0], f);
      emit(to_str(v));
      return Flow::normal;
    }
    case NodeKind::if_:
      return truthy(eval(*n.kids[0], f)) ? exec(n.body, f) : exec(n.else_body, f);
    case NodeKind::for_: {
      Value seq = eval(*n.kids[0], f);
      where = &n;
      std::vector<Value> items = iterate(seq);
      if (n.kids[1]) {
        std::vector<Value> kept;
        for (auto& it : items) {
          tick();
          auto tmp = std::make_shared<Frame>();
          tmp->parent = f;
          assign(*tmp, n.names, it);
          if (truthy(eval(*n.kids[1], tmp))) kept.push_back(std::move(it));
        }
        items = std::move(kept);
      }
      if (items.empty()) {
        auto ef = std::make_shared<Frame>();
        ef->parent = f;
        exec(n.else_body, ef);
        return Flow::normal;
      }
      for (size_t i = 0; i < items.size(); ++i) {
        tick();
        auto it = std::make_shared<Frame>();
        it->parent = f;
        where = &n;
        assign(*it, n.names, items[i]);
        if (n.uses_loop) it->vars["loop"] = make_loop(i, items.size(), items);
        if (exec(n.body, it) == Flow::brk) break;
      }
      return Flow::normal;
    }
    case NodeKind::set: {
      Value v = eval(*n.kids[0], f);
      where = &n;
      if (!n.attr.empty()) {
        Value target = lookup(f, n.str);
        if (target.kind != Kind::ns)
          jfail("cannot assign attribute on non-namespace object '" + n.str + "'");
        for (auto& kv : *target.ns) {
          if (kv.first == n.attr) {
            kv.second = std::move(v);
            return Flow::normal;
          }
        }
        target.ns->emplace_back(n.attr, std::move(v));
        return Flow::normal;
      }
      assign(*f, n.names, v);
      return Flow::normal;
    }
    case NodeKind::set_block: {
      Value v = Value::str(render_body(n.body, f));
      if (n.kids[0]) {
        const Value* saved = filter_hole;
        filter_hole = &v;
        Value r = eval(*n.kids[0], f);
        filter_hole = saved;
        v = std::move(r);
      }
      f->vars[n.names[0]] = std::move(v);
      return Flow::normal;
    }
    case NodeKind::macro:
      f->vars[n.str] = make_macro(&n, f, n.str);
      return Flow::normal;
    case NodeKind::call_block: {
      const Node& call = *n.kids[0];
      Value callee = eval(*call.kids[0], f);
      CallArgs args;
      for (size_t k = 1; k < call.kids.size(); ++k) args.pos.push_back(eval(*call.kids[k], f));
      for (auto& [k, e] : call.kwargs) args.kw.emplace_back(k, eval(*e, f));
      args.kw.emplace_back("caller", make_macro(&n, f, "caller"));
      where = &n;
      emit(to_str(call_value(callee, args)));
      return Flow::normal;
    }
    case NodeKind::filter_block: {
      Value v = Value::str(render_body(n.body, f));
      const Value* saved = filter_hole;
      filter_hole = &v;
      Value r = eval(*n.kids[0], f);
      filter_hole = saved;
      emit(to_str(r));
      return Flow::normal;
    }
    case NodeKind::with: {
      auto w = std::make_shared<Frame>();
      w->parent = f;
      for (size_t k = 0; k < n.names.size(); ++k) w->vars[n.names[k]] = eval(*n.kids[k], f);
      return exec(n.body, w);
    }
    case NodeKind::program:
      return exec(n.body, f);
    case NodeKind::break_:
      return Flow::brk;
    case NodeKind::continue_:
      return Flow::cont;
    default:
      jfail("internal error: expression used as statement");
  }
}

Value Interp::eval(const Node& n, const FramePtr& f) {
  Value v = eval_node(n, f);
  uint64_t size = 0;
  if (v.kind == Kind::string) size = v.s.size() / 16;
  if (v.kind == Kind::list) size = v.list->size() / 4;
  if (v.kind == Kind::dict) size = v.dict->size() / 4;
  charge(1 + size);
  return v;
}

Value Interp::eval_node(const Node& n, const FramePtr& f) {
  where = &n;
  switch (n.kind) {
    case NodeKind::literal:
      return n.value;
    case NodeKind::name:
      return lookup(f, n.str);
    case NodeKind::list_lit: {
      List l;
      l.reserve(n.kids.size());
      for (const auto& k : n.kids) l.push_back(eval(*k, f));
      return Value::make_list(std::move(l), n.is_tuple);
    }
    case NodeKind::dict_lit: {
      Dict d;
      for (size_t k = 0; k + 1 < n.kids.size(); k += 2) {
        Value key = eval(*n.kids[k], f);
        Value val = eval(*n.kids[k + 1], f);
        where = &n;
        if (key.kind != Kind::string) jfail("only string keys are supported in dict literals");
        bool replaced = false;
        for (auto& kv : d) {
          if (kv.first == key.s) {
            kv.second = val;
            replaced = true;
          }
        }
        if (!replaced) d.emplace_back(key.s, std::move(val));
      }
      return Value::make_dict(std::move(d));
    }
    case NodeKind::getattr: {
      Value obj = eval(*n.kids[0], f);
      where = &n;
      if (obj.is_undefined()) fail_undefined(obj);
      return get_attr(*this, obj, n.str);
    }
    case NodeKind::getitem: {
      Value obj = eval(*n.kids[0], f);
      Value key = eval(*n.kids[1], f);
      where = &n;
      if (obj.is_undefined()) fail_undefined(obj);
      return get_item(*this, obj, key);
    }
    case NodeKind::slice: {
      Value obj = eval(*n.kids[0], f);
      Value parts[3];
      for (int k = 0; k < 3; ++k)
        if (n.kids[1 + k]) parts[k] = eval(*n.kids[1 + k], f);
      where = &n;
      return slice_value(obj, n.kids[1] ? &parts[0] : nullptr, n.kids[2] ? &parts[1] : nullptr,
                         n.kids[3] ? &parts[2] : nullptr);
    }
    case NodeKind::call: {
      Value callee = eval(*n.kids[0], f);
      CallArgs args;
      for (size_t k = 1; k < n.kids.size(); ++k) args.pos.push_back(eval(*n.kids[k], f));
      for (auto& [k, e] : n.kwargs) args.kw.emplace_back(k, eval(*e, f));
      where = &n;
      return call_value(callee, args);
    }
    case NodeKind::filter: {
      Value v;
      if (n.kids[0]) {
        v = eval(*n.kids[0], f);
      } else if (filter_hole) {
        v = *filter_hole;
      }
      CallArgs args;
      for (size_t k = 1; k < n.kids.size(); ++k) args.pos.push_back(eval(*n.kids[k], f));
      for (auto& [k, e] : n.kwargs) args.kw.emplace_back(k, eval(*e, f));
      where = &n;
      return apply_filter(*this, n.str, v, args);
    }
    case NodeKind::test: {
      Value v = eval(*n.kids[0], f);
      CallArgs args;
      for (size_t k = 1; k < n.kids.size(); ++k) args.pos.push_back(eval(*n.kids[k], f));
      for (auto& [k, e] : n.kwargs) args.kw.emplace_back(k, eval(*e, f));
      where = &n;
      return Value::boolean(apply_test(*this, n.str, v, args) != n.negated);
    }
    case NodeKind::unary: {
      Value v = eval(*n.kids[0], f);
      where = &n;
      if (n.str == "not") return Value::boolean(!truthy(v));
      if (v.is_undefined()) fail_undefined(v);
      if (n.str == "-") return arith("-", Value::integer(0), v);
      if (!v.is_number())
        jfail(std::string("bad operand type for unary +: '") + type_name(v) + "'");
      return v.kind == Kind::boolean ? Value::integer(v.b) : v;
    }
    case NodeKind::binary: {
      if (n.str == "and") {
        Value a = eval(*n.kids[0], f);
        return truthy(a) ? eval(*n.kids[1], f) : a;
      }
      if (n.str == "or") {
        Value a = eval(*n.kids[0], f);
        return truthy(a) ? a : eval(*n.kids[1], f);
      }
      if (n.str == "compare") {
        Value left = eval(*n.kids[0], f);
        for (size_t k = 0; k < n.names.size(); ++k) {
          Value right = eval(*n.kids[k + 1], f);
          where = &n;
          if (!compare(n.names[k], left, right)) return Value::boolean(false);
          left = std::move(right);
        }
        return Value::boolean(true);
      }
      Value a = eval(*n.kids[0], f);
      Value b = eval(*n.kids[1], f);
      where = &n;
      if (n.str == "~") {
        std::string l = to_str(a), r = to_str(b);
        if (l.size() + r.size() > kMaxStringBytes) jfail("string too long (over 64 MiB)");
        return Value::str(l + r);
      }
      return arith(n.str, a, b);
    }
    case NodeKind::cond: {
      if (truthy(eval(*n.kids[0], f))) return eval(*n.kids[1], f);
      if (n.kids[2]) return eval(*n.kids[2], f);
      return Value::undef(
          "the inline if-expression evaluated to false and no else section "
          "was defined");
    }
    default:
      jfail("internal error: statement used as expression");
  }
}

}  // namespace moe::jinja
