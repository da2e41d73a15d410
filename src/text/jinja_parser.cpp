// Jinja parser, see jinja_parser.h. Precedence, lowest first (as jinja2): conditional
// `a if c else b`, or, and, not, comparisons (== != < > <= >= in, not in; chained), + -, ~,
// * / // %, **, unary - +, then postfix (.attr [index] [a:b:c] (call)) and filters/tests
// (| filter, is test).
#include "text/jinja_parser.h"

#include <cerrno>
#include <cstdlib>
#include <initializer_list>

#include "core/error.h"

namespace moe::jinja {

namespace {

constexpr int kMaxExprDepth = 100;
constexpr int kMaxBlockDepth = 100;

struct Parser {
  const std::vector<Token>& toks;
  const std::string& name;
  size_t p = 0;
  int expr_depth = 0;
  int block_depth = 0;
  int loop_depth = 0;

  const Token& cur() const { return toks[p]; }
  const Token& peek(size_t k = 1) const {
    return toks[p + k < toks.size() ? p + k : toks.size() - 1];
  }
  void advance() {
    if (p + 1 < toks.size()) ++p;
  }

  [[noreturn]] void error_at(const Token& t, const std::string& msg) const {
    fail("%s:%d:%d: %s", name.c_str(), t.line, t.col, msg.c_str());
  }
  [[noreturn]] void error(const std::string& msg) const { error_at(cur(), msg); }

  static std::string describe(const Token& t) {
    switch (t.kind) {
      case Tok::eof:
        return "end of template";
      case Tok::text:
        return "template text";
      case Tok::var_end:
        return "'}}'";
      case Tok::block_end:
        return "'%}'";
      case Tok::var_begin:
        return "'{{'";
      case Tok::block_begin:
        return "'{%'";
      case Tok::string:
        return "string literal";
      default:
        return "'" + t.text + "'";
    }
  }

  bool is_op(const char* s) const { return cur().kind == Tok::op && cur().text == s; }
  bool is_name(const char* s) const { return cur().kind == Tok::name && cur().text == s; }
  void expect_op(const char* s) {
    if (!is_op(s)) error(std::string("expected '") + s + "', got " + describe(cur()));
    advance();
  }
  void expect_block_end() {
    if (cur().kind != Tok::block_end) error("expected '%}', got " + describe(cur()));
    advance();
  }
  std::string expect_name(const char* what) {
    if (cur().kind != Tok::name)
      error(std::string("expected ") + what + ", got " + describe(cur()));
    std::string n = cur().text;
    advance();
    return n;
  }

  NodePtr node(NodeKind k, const Token& at) {
    auto n = std::make_unique<Node>();
    n->kind = k;
    n->line = at.line;
    n->col = at.col;
    return n;
  }

  // ---- expressions ----------------------------------------------------------------------------

  struct DepthGuard {
    Parser& ps;
    explicit DepthGuard(Parser& p) : ps(p) {
      if (++ps.expr_depth > kMaxExprDepth) ps.error("expression nested too deeply");
    }
    ~DepthGuard() { --ps.expr_depth; }
  };

  NodePtr parse_expression(bool with_condexpr = true) {
    DepthGuard g(*this);
    if (!with_condexpr) return parse_or();
    NodePtr e = parse_or();
    while (is_name("if")) {
      const Token& t = cur();
      advance();
      auto c = node(NodeKind::cond, t);
      NodePtr test = parse_or();
      NodePtr other;
      if (is_name("else")) {
        advance();
        other = parse_expression();
      }
      c->kids.push_back(std::move(test));
      c->kids.push_back(std::move(e));
      c->kids.push_back(std::move(other));
      e = std::move(c);
    }
    return e;
  }

  NodePtr binary(const Token& t, std::string op, NodePtr a, NodePtr b) {
    auto n = node(NodeKind::binary, t);
    n->str = std::move(op);
    n->kids.push_back(std::move(a));
    n->kids.push_back(std::move(b));
    return n;
  }

  NodePtr parse_or() {
    NodePtr l = parse_and();
    while (is_name("or")) {
      const Token& t = cur();
      advance();
      l = binary(t, "or", std::move(l), parse_and());
    }
    return l;
  }
  NodePtr parse_and() {
    NodePtr l = parse_not();
    while (is_name("and")) {
      const Token& t = cur();
      advance();
      l = binary(t, "and", std::move(l), parse_not());
    }
    return l;
  }
  NodePtr parse_not() {
    if (is_name("not")) {
      DepthGuard g(*this);
      const Token& t = cur();
      advance();
      auto n = node(NodeKind::unary, t);
      n->str = "not";
      n->kids.push_back(parse_not());
      return n;
    }
    return parse_compare();
  }
  NodePtr parse_compare() {
    const Token& start = cur();
    NodePtr first = parse_math1();
    NodePtr cmp;
    while (true) {
      std::string op;
      if (cur().kind == Tok::op &&
          (cur().text == "==" || cur().text == "!=" || cur().text == "<" || cur().text == ">" ||
           cur().text == "<=" || cur().text == ">=")) {
        op = cur().text;
        advance();
      } else if (is_name("in")) {
        op = "in";
        advance();
      } else if (is_name("not") && peek().kind == Tok::name && peek().text == "in") {
        op = "not in";
        advance();
        advance();
      } else {
        break;
      }
      if (!cmp) {
        cmp = node(NodeKind::binary, start);
        cmp->str = "compare";
        cmp->kids.push_back(std::move(first));
      }
      cmp->names.push_back(op);
      cmp->kids.push_back(parse_math1());
    }
    return cmp ? std::move(cmp) : std::move(first);
  }
  NodePtr parse_math1() {
    NodePtr l = parse_concat();
    while (is_op("+") || is_op("-")) {
      const Token& t = cur();
      advance();
      l = binary(t, t.text, std::move(l), parse_concat());
    }
    return l;
  }
  NodePtr parse_concat() {
    NodePtr l = parse_math2();
    while (is_op("~")) {
      const Token& t = cur();
      advance();
      l = binary(t, "~", std::move(l), parse_math2());
    }
    return l;
  }
  NodePtr parse_math2() {
    NodePtr l = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const Token& t = cur();
      advance();
      l = binary(t, t.text, std::move(l), parse_pow());
    }
    return l;
  }
  NodePtr parse_pow() {
    NodePtr l = parse_unary(true);
    while (is_op("**")) {
      const Token& t = cur();
      advance();
      l = binary(t, "**", std::move(l), parse_unary(true));
    }
    return l;
  }
  NodePtr parse_unary(bool with_filter) {
    NodePtr n;
    if (is_op("-") || is_op("+")) {
      DepthGuard g(*this);
      const Token& t = cur();
      advance();
      n = node(NodeKind::unary, t);
      n->str = t.text;
      n->kids.push_back(parse_unary(false));
    } else {
      n = parse_primary();
    }
    n = parse_postfix(std::move(n));
    if (with_filter) n = parse_filter_expr(std::move(n));
    return n;
  }

  NodePtr parse_primary() {
    const Token& t = cur();
    switch (t.kind) {
      case Tok::name: {
        advance();
        auto n = node(NodeKind::literal, t);
        if (t.text == "true" || t.text == "True")
          n->value = Value::boolean(true);
        else if (t.text == "false" || t.text == "False")
          n->value = Value::boolean(false);
        else if (t.text == "none" || t.text == "None")
          n->value = Value::none();
        else {
          n->kind = NodeKind::name;
          n->str = t.text;
        }
        return n;
      }
      case Tok::string: {
        std::string s;
        while (cur().kind == Tok::string) {
          s += cur().text;
          advance();
        }
        auto n = node(NodeKind::literal, t);
        n->value = Value::str(std::move(s));
        return n;
      }
      case Tok::integer: {
        advance();
        auto n = node(NodeKind::literal, t);
        errno = 0;
        char* end = nullptr;
        long long v = std::strtoll(t.text.c_str(), &end, 10);
        if (errno == ERANGE)
          n->value = Value::floating(std::strtod(t.text.c_str(), nullptr));
        else
          n->value = Value::integer(v);
        return n;
      }
      case Tok::floating: {
        advance();
        auto n = node(NodeKind::literal, t);
        n->value = Value::floating(std::strtod(t.text.c_str(), nullptr));
        return n;
      }
      case Tok::op: {
        if (t.text == "(") {
          advance();
          if (is_op(")")) {
            advance();
            auto n = node(NodeKind::list_lit, t);
            n->is_tuple = true;
            return n;
          }
          NodePtr e = parse_expression();
          if (is_op(",")) {
            auto n = node(NodeKind::list_lit, t);
            n->is_tuple = true;
            n->kids.push_back(std::move(e));
            while (is_op(",")) {
              advance();
              if (is_op(")")) break;
              n->kids.push_back(parse_expression());
            }
            e = std::move(n);
          }
          expect_op(")");
          return e;
        }
        if (t.text == "[") {
          advance();
          auto n = node(NodeKind::list_lit, t);
          while (!is_op("]")) {
            if (!n->kids.empty()) {
              expect_op(",");
              if (is_op("]")) break;
            }
            n->kids.push_back(parse_expression());
          }
          advance();
          return n;
        }
        if (t.text == "{") {
          advance();
          auto n = node(NodeKind::dict_lit, t);
          while (!is_op("}")) {
            if (!n->kids.empty()) {
              expect_op(",");
              if (is_op("}")) break;
            }
            n->kids.push_back(parse_expression());
            expect_op(":");
            n->kids.push_back(parse_expression());
          }
          advance();
          return n;
        }
        break;
      }
      default:
        break;
    }
    error("unexpected " + describe(t) + " in expression");
  }

  NodePtr parse_postfix(NodePtr n) {
    while (true) {
      if (is_op(".")) {
        const Token& t = cur();
        advance();
        if (cur().kind == Tok::name) {
          auto g = node(NodeKind::getattr, t);
          g->str = cur().text;
          advance();
          g->kids.push_back(std::move(n));
          n = std::move(g);
        } else if (cur().kind == Tok::integer) {
          auto g = node(NodeKind::getitem, t);
          auto idx = node(NodeKind::literal, cur());
          idx->value = Value::integer(std::strtoll(cur().text.c_str(), nullptr, 10));
          advance();
          g->kids.push_back(std::move(n));
          g->kids.push_back(std::move(idx));
          n = std::move(g);
        } else {
          error("expected attribute name after '.', got " + describe(cur()));
        }
      } else if (is_op("[")) {
        n = parse_subscript(std::move(n));
      } else if (is_op("(")) {
        n = parse_call(std::move(n));
      } else {
        return n;
      }
    }
  }

  NodePtr parse_subscript(NodePtr target) {
    const Token& t = cur();
    advance();  // [
    NodePtr start, stop, step;
    bool is_slice = false;
    if (!is_op(":")) start = parse_expression();
    if (is_op(":")) {
      is_slice = true;
      advance();
      if (!is_op("]") && !is_op(":")) stop = parse_expression();
      if (is_op(":")) {
        advance();
        if (!is_op("]")) step = parse_expression();
      }
    }
    expect_op("]");
    if (!is_slice) {
      auto n = node(NodeKind::getitem, t);
      n->kids.push_back(std::move(target));
      n->kids.push_back(std::move(start));
      return n;
    }
    auto n = node(NodeKind::slice, t);
    n->kids.push_back(std::move(target));
    n->kids.push_back(std::move(start));
    n->kids.push_back(std::move(stop));
    n->kids.push_back(std::move(step));
    return n;
  }

  // Parses "(args)" into n->kids (after any already there) and n->kwargs.
  void parse_args(Node& n) {
    expect_op("(");
    bool first = true;
    while (!is_op(")")) {
      if (!first) {
        expect_op(",");
        if (is_op(")")) break;
      }
      first = false;
      if (is_op("*") || is_op("**")) error("*args and **kwargs in calls are not supported");
      if (cur().kind == Tok::name && peek().kind == Tok::op && peek().text == "=") {
        std::string k = cur().text;
        advance();
        advance();
        n.kwargs.emplace_back(k, parse_expression());
      } else {
        if (!n.kwargs.empty()) error("positional argument after keyword argument");
        n.kids.push_back(parse_expression());
      }
    }
    advance();
  }

  NodePtr parse_call(NodePtr callee) {
    auto n = node(NodeKind::call, cur());
    n->kids.push_back(std::move(callee));
    parse_args(*n);
    return n;
  }

  NodePtr parse_filter_expr(NodePtr n) {
    while (true) {
      if (is_op("|")) {
        n = parse_filter(std::move(n));
      } else if (is_name("is")) {
        n = parse_test(std::move(n));
      } else if (is_op("(")) {
        n = parse_call(std::move(n));
      } else {
        return n;
      }
    }
  }

  NodePtr parse_filter(NodePtr operand) {
    const Token& t = cur();
    advance();  // |
    auto f = node(NodeKind::filter, t);
    f->str = expect_name("filter name");
    f->kids.push_back(std::move(operand));
    if (is_op("(")) parse_args(*f);
    return f;
  }

  NodePtr parse_test(NodePtr operand) {
    const Token& t = cur();
    advance();  // is
    auto n = node(NodeKind::test, t);
    if (is_name("not")) {
      n->negated = true;
      advance();
    }
    n->str = expect_name("test name");
    n->kids.push_back(std::move(operand));
    if (is_op("(")) {
      parse_args(*n);
    } else if ((cur().kind == Tok::name && !is_name("else") && !is_name("or") && !is_name("and") &&
                !is_name("if") && !is_name("is")) ||
               cur().kind == Tok::string || cur().kind == Tok::integer ||
               cur().kind == Tok::floating || is_op("[") || is_op("{")) {
      DepthGuard g(*this);
      n->kids.push_back(parse_postfix(parse_primary()));
    }
    return n;
  }

  // ---- statements -----------------------------------------------------------------------------

  // Parses template content until a "{% name %}" with name in `ends` (left unconsumed: cur() is
  // the name token) or the end of the template (only allowed when ends is empty).
  std::vector<NodePtr> parse_body(std::initializer_list<const char*> ends, const char* opener,
                                  const Token* open_tok) {
    std::vector<NodePtr> out;
    while (true) {
      const Token& t = cur();
      if (t.kind == Tok::eof) {
        if (ends.size() == 0) return out;
        error(std::string("expected '") + *ends.begin() + "' to close the '" + opener + "' at " +
              std::to_string(open_tok->line) + ":" + std::to_string(open_tok->col) +
              ", got end of template");
      }
      if (t.kind == Tok::text) {
        auto n = node(NodeKind::text, t);
        n->str = t.text;
        out.push_back(std::move(n));
        advance();
      } else if (t.kind == Tok::var_begin) {
        advance();
        auto n = node(NodeKind::output, t);
        n->kids.push_back(parse_expression());
        if (cur().kind != Tok::var_end) error("expected '}}', got " + describe(cur()));
        advance();
        out.push_back(std::move(n));
      } else if (t.kind == Tok::block_begin) {
        advance();
        if (cur().kind != Tok::name) error("expected a tag name, got " + describe(cur()));
        for (const char* e : ends)
          if (cur().text == e) return out;
        NodePtr s = parse_statement(ends, opener);
        if (s) out.push_back(std::move(s));
      } else {
        error("unexpected " + describe(t));
      }
    }
  }

  NodePtr parse_statement(std::initializer_list<const char*> ends, const char* opener) {
    const Token& t = toks[p - 1];  // "{%": block nodes are located at their tag's start
    const Token& name_tok = cur();
    const std::string& tag = name_tok.text;
    if (++block_depth > kMaxBlockDepth) error("blocks nested too deeply");
    struct Dec {
      int& d;
      ~Dec() { --d; }
    } dec{block_depth};
    advance();
    if (tag == "if") return parse_if(t);
    if (tag == "for") return parse_for(t);
    if (tag == "set") return parse_set(t);
    if (tag == "macro") return parse_macro(t);
    if (tag == "call") return parse_call_block(t);
    if (tag == "filter") return parse_filter_block(t);
    if (tag == "with") return parse_with(t);
    if (tag == "generation") {
      // transformers' AssistantTracker: renders its body unchanged.
      expect_block_end();
      auto n = node(NodeKind::program, t);
      n->body = parse_body({"endgeneration"}, "generation", &t);
      advance();
      expect_block_end();
      return n;
    }
    if (tag == "break" || tag == "continue") {
      if (loop_depth == 0) error_at(name_tok, "'" + tag + "' outside of a loop");
      expect_block_end();
      return node(tag == "break" ? NodeKind::break_ : NodeKind::continue_, t);
    }
    static const char* known_ends[] = {"endif",   "elif",          "else",    "endfor",
                                       "endset",  "endmacro",      "endcall", "endfilter",
                                       "endwith", "endgeneration", "endraw"};
    for (const char* e : known_ends) {
      if (tag == e) {
        if (ends.size() == 0) error_at(name_tok, "unexpected '" + tag + "' outside of any block");
        error_at(name_tok, std::string("expected '") + *ends.begin() + "' to close '" + opener +
                               "', got '" + tag + "'");
      }
    }
    error_at(name_tok, "unknown tag '" + tag + "'");
  }

  NodePtr parse_if(const Token& t) {
    auto n = node(NodeKind::if_, t);
    n->kids.push_back(parse_expression());
    expect_block_end();
    n->body = parse_body({"endif", "elif", "else"}, "if", &t);
    const Token& e = cur();
    advance();
    if (e.text == "elif") {
      n->else_body.push_back(parse_if(e));
      return n;  // the nested if consumed endif
    }
    if (e.text == "else") {
      expect_block_end();
      n->else_body = parse_body({"endif"}, "if", &t);
      advance();
    }
    expect_block_end();
    return n;
  }

  static bool mentions(const Node* n, const char* var) {
    if (!n) return false;
    if (n->kind == NodeKind::name && n->str == var) return true;
    for (const auto& k : n->kids)
      if (mentions(k.get(), var)) return true;
    for (const auto& kv : n->kwargs)
      if (mentions(kv.second.get(), var)) return true;
    for (const auto& k : n->body)
      if (mentions(k.get(), var)) return true;
    for (const auto& k : n->else_body)
      if (mentions(k.get(), var)) return true;
    return false;
  }

  NodePtr parse_for(const Token& t) {
    auto n = node(NodeKind::for_, t);
    bool paren = is_op("(");
    if (paren) advance();
    n->names.push_back(expect_name("loop variable"));
    while (is_op(",")) {
      advance();
      n->names.push_back(expect_name("loop variable"));
    }
    if (paren) expect_op(")");
    if (!is_name("in")) error("expected 'in' in for loop, got " + describe(cur()));
    advance();
    n->kids.push_back(parse_expression(false));
    if (is_name("if")) {
      advance();
      n->kids.push_back(parse_expression());
    } else {
      n->kids.push_back(nullptr);
    }
    if (is_name("recursive")) error("recursive for loops are not supported");
    expect_block_end();
    ++loop_depth;
    n->body = parse_body({"endfor", "else"}, "for", &t);
    --loop_depth;
    for (const auto& b : n->body) n->uses_loop = n->uses_loop || mentions(b.get(), "loop");
    if (cur().text == "else") {
      advance();
      expect_block_end();
      n->else_body = parse_body({"endfor"}, "for", &t);
    }
    advance();
    expect_block_end();
    return n;
  }

  NodePtr parse_set(const Token& t) {
    auto n = node(NodeKind::set, t);
    std::string first = expect_name("variable name");
    if (is_op(".")) {
      advance();
      n->str = first;
      n->attr = expect_name("attribute name");
    } else {
      n->names.push_back(first);
      while (is_op(",")) {
        advance();
        n->names.push_back(expect_name("variable name"));
      }
    }
    if (is_op("=")) {
      advance();
      NodePtr v = parse_expression();
      if (is_op(",")) {
        auto tup = node(NodeKind::list_lit, t);
        tup->is_tuple = true;
        tup->kids.push_back(std::move(v));
        while (is_op(",")) {
          advance();
          tup->kids.push_back(parse_expression());
        }
        v = std::move(tup);
      }
      n->kids.push_back(std::move(v));
      expect_block_end();
      return n;
    }
    if (!n->attr.empty() || n->names.size() != 1) error("expected '=' in set");
    n->kind = NodeKind::set_block;
    NodePtr chain;
    while (is_op("|")) chain = parse_filter(std::move(chain));
    n->kids.push_back(std::move(chain));
    expect_block_end();
    n->body = parse_body({"endset"}, "set", &t);
    advance();
    expect_block_end();
    return n;
  }

  // Parses "(a, b=default, ...)" into names / kwargs (kwargs keyed by name, null = no default).
  void parse_params(Node& n) {
    expect_op("(");
    while (!is_op(")")) {
      if (!n.names.empty()) expect_op(",");
      if (is_op(")")) break;
      std::string p = expect_name("parameter name");
      NodePtr def;
      if (is_op("=")) {
        advance();
        def = parse_expression();
      }
      n.names.push_back(p);
      n.kwargs.emplace_back(p, std::move(def));
    }
    advance();
  }

  NodePtr parse_macro(const Token& t) {
    auto n = node(NodeKind::macro, t);
    n->str = expect_name("macro name");
    parse_params(*n);
    expect_block_end();
    int saved = loop_depth;
    loop_depth = 0;
    n->body = parse_body({"endmacro"}, "macro", &t);
    loop_depth = saved;
    advance();
    if (cur().kind == Tok::name && cur().text == n->str) advance();
    expect_block_end();
    return n;
  }

  NodePtr parse_call_block(const Token& t) {
    auto n = node(NodeKind::call_block, t);
    if (is_op("(")) parse_params(*n);
    NodePtr call = parse_expression();
    if (call->kind != NodeKind::call) error_at(t, "expected a macro call in 'call' block");
    n->kids.push_back(std::move(call));
    expect_block_end();
    int saved = loop_depth;
    loop_depth = 0;
    n->body = parse_body({"endcall"}, "call", &t);
    loop_depth = saved;
    advance();
    expect_block_end();
    return n;
  }

  NodePtr parse_filter_block(const Token& t) {
    auto n = node(NodeKind::filter_block, t);
    auto f = node(NodeKind::filter, cur());
    f->str = expect_name("filter name");
    f->kids.push_back(nullptr);
    if (is_op("(")) parse_args(*f);
    NodePtr chain = std::move(f);
    while (is_op("|")) chain = parse_filter(std::move(chain));
    n->kids.push_back(std::move(chain));
    expect_block_end();
    n->body = parse_body({"endfilter"}, "filter", &t);
    advance();
    expect_block_end();
    return n;
  }

  NodePtr parse_with(const Token& t) {
    auto n = node(NodeKind::with, t);
    while (cur().kind != Tok::block_end) {
      if (!n->names.empty()) expect_op(",");
      std::string v = expect_name("variable name");
      expect_op("=");
      n->names.push_back(v);
      n->kids.push_back(parse_expression());
    }
    expect_block_end();
    n->body = parse_body({"endwith"}, "with", &t);
    advance();
    expect_block_end();
    return n;
  }
};

}  // namespace

NodePtr parse(const std::vector<Token>& tokens, const std::string& name) {
  Parser ps{tokens, name};
  auto root = std::make_unique<Node>();
  root->kind = NodeKind::program;
  root->line = root->col = 1;
  root->body = ps.parse_body({}, "", nullptr);
  return root;
}

}  // namespace moe::jinja
