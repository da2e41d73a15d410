// The official openai npm client against `moe serve`: a plain and a streamed chat with stop,
// logprobs and usage, and a completion. Usage: node openai_client_test.mjs PORT MODEL_ID
import OpenAI from "openai";

const [port, model] = process.argv.slice(2);
const client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: "test-key", maxRetries: 0, timeout: 30000 });
function check(cond, msg) { if (!cond) { console.log("FAIL: " + msg); process.exit(1); } }
const messages = [{ role: "system", content: "be brief" }, { role: "user", content: "hello there" }];

const models = await client.models.list();
check(models.data.length === 1 && models.data[0].id === model, "models.list: " + JSON.stringify(models.data));

const base = await client.chat.completions.create({ model, messages, max_tokens: 8, temperature: 0, ignore_eos: true });
const text = base.choices[0].message.content;
check(typeof text === "string" && text.length > 2, "chat content: " + JSON.stringify(base));
check(base.usage.total_tokens === base.usage.prompt_tokens + base.usage.completion_tokens && base.usage.completion_tokens === 8,
      "usage: " + JSON.stringify(base.usage));

const stop = text.slice(1, 3);
const plain = await client.chat.completions.create({ model, messages, max_tokens: 8, temperature: 0, ignore_eos: true,
                                                     stop: [stop], logprobs: true, top_logprobs: 3 });
const want = text.slice(0, text.indexOf(stop));
check(plain.choices[0].message.content === want && plain.choices[0].finish_reason === "stop",
      `stop ${JSON.stringify(stop)}: ${JSON.stringify(plain.choices[0])} want ${JSON.stringify(want)}`);
const lp = plain.choices[0].logprobs.content;
check(lp.length === plain.usage.completion_tokens && lp.every(e => e.top_logprobs.length === 3 && e.logprob <= 0),
      "logprobs: " + JSON.stringify(lp));

const stream = await client.chat.completions.create({ model, messages, max_tokens: 8, temperature: 0, ignore_eos: true,
                                                      stop: [stop], logprobs: true, stream: true,
                                                      stream_options: { include_usage: true } });
let streamed = "", finish = null, usage = null, lpCount = 0;
for await (const chunk of stream) {
  if (chunk.usage) usage = chunk.usage;
  const c = chunk.choices[0];
  if (!c) continue;
  streamed += c.delta.content || "";
  if (c.finish_reason) finish = c.finish_reason;
  if (c.logprobs && c.logprobs.content) lpCount += c.logprobs.content.length;
}
check(streamed === want && finish === "stop", `stream: ${JSON.stringify(streamed)} (${finish}) want ${JSON.stringify(want)}`);
check(usage && usage.completion_tokens === plain.usage.completion_tokens && lpCount === usage.completion_tokens,
      "stream usage / logprobs: " + JSON.stringify(usage) + " " + lpCount);

const comp = await client.completions.create({ model, prompt: "hello", max_tokens: 4, temperature: 0, ignore_eos: true, logprobs: 1 });
check(comp.choices[0].logprobs.tokens.length === 4 && comp.usage.completion_tokens === 4, "completion: " + JSON.stringify(comp));

let status = 0;
try { await client.chat.completions.create({ model: "nope", messages }); } catch (e) { status = e.status; }
check(status === 404, "unknown model: status " + status);
console.log("PASS: openai client");
