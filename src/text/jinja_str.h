// Python str semantics on UTF-8 strings (code points, Python whitespace, case mapping via
// utf8proc) for the Jinja engine's string methods and filters.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "text/jinja_value.h"

namespace moe::jinja {

int64_t str_len(const std::string& s);
// strip/lstrip/rstrip: chars == nullptr strips whitespace.
std::string str_strip(const std::string& s, const std::string* chars, bool left, bool right);
// str.split / str.rsplit: sep == nullptr splits on whitespace runs; maxsplit < 0 is unlimited.
std::vector<std::string> str_split(const std::string& s, const std::string* sep, int64_t maxsplit,
                                   bool from_right);
std::vector<std::string> str_splitlines(const std::string& s);
std::string str_replace(const std::string& s, const std::string& old, const std::string& rep,
                        int64_t count);
std::string str_upper(const std::string& s);
std::string str_lower(const std::string& s);
std::string str_capitalize(const std::string& s);
// str.title(): a cased letter after an uncased character starts a word.
std::string str_title_method(const std::string& s);
// jinja2's |title: words split on whitespace, '-', '(', '{', '[', '<'.
std::string str_title_filter(const std::string& s);
// Code-point index of the first (or last) occurrence, -1 if absent.
int64_t str_find(const std::string& s, const std::string& sub, bool last);
int64_t str_count(const std::string& s, const std::string& sub);
// str.format with {} / {0} / {name} fields and {{ }} escapes, no format specs.
std::string str_format(const std::string& s, const CallArgs& a);
// isdigit, isalpha, isalnum, isspace, isupper, islower, isnumeric, isdecimal.
bool str_is(const std::string& s, const std::string& what);
// HTML escaping as markupsafe.escape.
std::string html_escape(const std::string& s);

}  // namespace moe::jinja
