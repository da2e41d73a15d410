#include "serve/chat_page.h"

namespace moe {

const std::string& chat_page_html() {
  static const std::string html = R"HTML(<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'self'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>moe.cpp chat</title><link rel="icon" href="data:,">
<style>
body{font:15px system-ui,sans-serif;max-width:760px;margin:2em auto;padding:0 1em;color:#222}
#log div{margin:.4em 0;padding:.5em .7em;border-radius:6px;white-space:pre-wrap}
.user{background:#e8f0fe}.assistant{background:#f3f3f3}.error{background:#fde8e8}
form{display:flex;gap:.5em;margin-top:1em}#msg{flex:1;padding:.5em}
#key{width:10em;padding:.5em}small{color:#666}
</style></head><body>
<h1>moe.cpp</h1><small id="model">model: ...</small>
<div id="log"></div>
<form id="f"><input id="msg" autocomplete="off" placeholder="Message"><input id="key" placeholder="API key (optional)" type="password" autocomplete="off"><button id="send">Send</button></form>
<script>
"use strict";
const log = document.getElementById("log"), msg = document.getElementById("msg");
const history = [];
let model = "";
fetch("/v1/models").then(r => r.json()).then(j => {
  if (j.data && j.data.length) { model = j.data[0].id; document.getElementById("model").textContent = "model: " + model; }
}).catch(() => {});
function add(cls, text) {
  const d = document.createElement("div"); d.className = cls; d.textContent = text; log.appendChild(d); return d;
}
async function send(text) {
  history.push({role: "user", content: text});
  add("user", text);
  const out = add("assistant", "");
  out.dataset.state = "streaming";
  const headers = {"Content-Type": "application/json"};
  const key = document.getElementById("key").value;
  if (key) headers["Authorization"] = "Bearer " + key;
  try {
    const r = await fetch("/v1/chat/completions", {method: "POST", headers,
      body: JSON.stringify({messages: history, stream: true, max_tokens: 128})});
    if (!r.ok) { const j = await r.json(); throw new Error(j.error ? j.error.message : r.statusText); }
    const reader = r.body.getReader(), dec = new TextDecoder();
    let buf = "", chunks = 0;
    for (;;) {
      const {done, value} = await reader.read();
      if (done) break;
      buf += dec.decode(value, {stream: true});
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const ev = buf.slice(0, i); buf = buf.slice(i + 2);
        if (!ev.startsWith("data: ")) continue;
        const data = ev.slice(6);
        if (data === "[DONE]") continue;
        const j = JSON.parse(data);
        if (j.error) throw new Error(j.error.message);
        const c = j.choices && j.choices[0];
        if (c && c.delta && c.delta.content) { out.textContent += c.delta.content; chunks++; }
      }
    }
    out.dataset.chunks = chunks;
    out.dataset.state = "done";
    history.push({role: "assistant", content: out.textContent});
  } catch (e) {
    out.className = "error"; out.textContent = String(e.message || e); out.dataset.state = "error";
  }
}
document.getElementById("f").addEventListener("submit", ev => {
  ev.preventDefault();
  const text = msg.value.trim(); if (!text) return;
  msg.value = ""; send(text);
});
const q = new URLSearchParams(location.search).get("q");
if (q) { msg.value = q; document.getElementById("send").click(); }
</script></body></html>
)HTML";
  return html;
}

}  // namespace moe
