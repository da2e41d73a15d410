// The chat page served at GET /: one self-contained HTML document (inline CSS and script, no
// external resources) that streams replies from /v1/chat/completions. `?q=TEXT` sends TEXT on
// load (used by the headless-browser test).
#pragma once

#include <string>

namespace moe {

const std::string& chat_page_html();

}  // namespace moe
