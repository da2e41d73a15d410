// Jinja engine entry points: compile (lex, parse, check filter and test names) and render.
#include "text/jinja.h"

#include "core/error.h"
#include "text/jinja_interp.h"
#include "text/jinja_lexer.h"
#include "text/jinja_parser.h"

namespace moe {

namespace {

// jinja2 rejects unknown filters and tests when compiling; so do we.
void check_names(const jinja::Node& n, const std::string& name) {
  if (n.kind == jinja::NodeKind::filter && !jinja::has_filter(n.str))
    fail("%s:%d:%d: no filter named '%s'", name.c_str(), n.line, n.col, n.str.c_str());
  if (n.kind == jinja::NodeKind::test && !jinja::has_test(n.str))
    fail("%s:%d:%d: no test named '%s'", name.c_str(), n.line, n.col, n.str.c_str());
  for (const auto& k : n.kids)
    if (k) check_names(*k, name);
  for (const auto& [_, k] : n.kwargs)
    if (k) check_names(*k, name);
  for (const auto& k : n.body) check_names(*k, name);
  for (const auto& k : n.else_body) check_names(*k, name);
}

}  // namespace

JinjaTemplate jinja_compile(const std::string& source, const std::string& name_for_errors) {
  auto tokens = jinja::lex(source, name_for_errors);
  jinja::NodePtr root = jinja::parse(tokens, name_for_errors);
  check_names(*root, name_for_errors);
  JinjaTemplate t;
  t.name = name_for_errors;
  t.root = std::shared_ptr<const jinja::Node>(std::move(root));
  return t;
}

std::string jinja_render(const JinjaTemplate& tmpl, const nlohmann::ordered_json& context,
                         const JinjaRenderOptions& options) {
  if (!tmpl.root) fail("%s: template was not compiled", tmpl.name.c_str());
  if (!context.is_object() && !context.is_null())
    fail("%s: render context must be a JSON object", tmpl.name.c_str());
  auto globals = std::make_shared<jinja::Frame>();
  jinja::add_globals(*globals);
  try {
    if (context.is_object())
      for (const auto& [k, v] : context.items()) globals->vars[k] = jinja::from_json(v);
  } catch (const jinja::JinjaError& e) {
    fail("%s: render context: %s", tmpl.name.c_str(), e.msg.c_str());
  }
  auto frame = std::make_shared<jinja::Frame>();
  frame->parent = globals;
  jinja::Interp in;
  in.name = tmpl.name;
  in.now = options.now;
  in.max_steps = options.max_steps;
  in.max_work = options.max_work;
  std::string out;
  in.out = &out;
  try {
    in.exec(tmpl.root->body, frame);
  } catch (const jinja::JinjaRaised& e) {
    fail("chat template raised: %s", e.msg.c_str());
  } catch (const jinja::JinjaError& e) {
    int line = in.where ? in.where->line : 0;
    int col = in.where ? in.where->col : 0;
    fail("%s:%d:%d: %s", tmpl.name.c_str(), line, col, e.msg.c_str());
  }
  return out;
}

}  // namespace moe
