// The swiftkit playground: plain JavaScript over the server's own OpenAI API (no build step).
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORAGE = "swiftkit.apiKey";
let models = [];
let history = [];
let busy = false;

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("key").value.trim();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

function showError(message) {
  $("error").textContent = message || "";
}

async function errorText(response) {
  try {
    const body = await response.json();
    return `${response.status}: ${body.error ? body.error.message : JSON.stringify(body)}`;
  } catch (_) {
    return `${response.status} ${response.statusText}`;
  }
}

async function loadModels() {
  showError("");
  const response = await fetch("/v1/models", { headers: headers() });
  if (!response.ok) {
    showError(`cannot list models: ${await errorText(response)}`);
    return;
  }
  models = (await response.json()).data;
  const select = $("model");
  const previous = select.value;
  select.innerHTML = "";
  for (const m of models) {
    const option = document.createElement("option");
    option.value = m.id;
    option.textContent = m.parent ? `${m.id} (adapter of ${m.parent})` : m.id;
    select.appendChild(option);
  }
  if (models.some((m) => m.id === previous)) select.value = previous;
  describeModel();
}

function describeModel() {
  const m = models.find((x) => x.id === $("model").value);
  $("model-info").textContent = m ? `context ${m.max_model_len} tokens${m.parent ? ", adapter of " + m.parent : ""}` : "";
}

function addMessage(role, text) {
  const div = document.createElement("div");
  div.className = `msg ${role}`;
  div.dataset.role = role;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = role === "assistant" ? $("model").value : role;
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  div.append(who, body);
  $("messages").appendChild(div);
  $("messages").scrollTop = $("messages").scrollHeight;
  return body;
}

async function send(event) {
  event.preventDefault();
  const text = $("prompt").value.trim();
  if (!text || busy) return;
  showError("");
  busy = true;
  $("send").disabled = true;
  $("prompt").value = "";
  history.push({ role: "user", content: text });
  addMessage("user", text);
  const out = addMessage("assistant", "");
  const messages = $("system").value.trim() ? [{ role: "system", content: $("system").value.trim() }, ...history] : history;
  let extra = {};
  try {
    extra = $("extra").value.trim() ? JSON.parse($("extra").value) : {};
  } catch (err) {
    history.pop();
    out.parentElement.remove();
    busy = false;
    $("send").disabled = false;
    showError(`extra request fields: ${err.message}`);
    return;
  }
  const started = performance.now();
  let firstToken = null;
  let usage = null;
  let reply = "";
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(),
      body: JSON.stringify({
        model: $("model").value, messages, stream: true, stream_options: { include_usage: true },
        temperature: Number($("temperature").value), max_tokens: Number($("max-tokens").value), ...extra,
      }),
    });
    if (!response.ok) throw new Error(await errorText(response));
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
          const chunk = JSON.parse(line.slice(6));
          if (chunk.error) throw new Error(chunk.error.message);
          if (chunk.usage) usage = chunk.usage;
          const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
          if (delta && delta.content) {
            if (firstToken === null) firstToken = performance.now();
            reply += delta.content;
            out.textContent = reply;
            $("messages").scrollTop = $("messages").scrollHeight;
          }
        }
      }
    }
    history.push({ role: "assistant", content: reply });
    const total = performance.now() - started;
    const parts = [`latency ${total.toFixed(0)} ms`];
    if (firstToken !== null) parts.push(`first token ${(firstToken - started).toFixed(0)} ms`);
    if (usage) parts.push(`tokens: ${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion = ${usage.total_tokens}`);
    $("stats").textContent = parts.join(" · ");
  } catch (err) {
    history.pop();
    out.parentElement.remove();
    showError(String(err.message || err));
  } finally {
    busy = false;
    $("send").disabled = false;
  }
}

async function showUsage() {
  const panel = $("usage-panel");
  panel.hidden = !panel.hidden;
  $("chat-panel").hidden = !panel.hidden;
  if (panel.hidden) return;
  $("usage-error").textContent = "";
  const body = $("usage").querySelector("tbody");
  body.innerHTML = "";
  const response = await fetch("/v1/admin/usage", { headers: headers() });
  if (!response.ok) {
    $("usage-error").textContent = response.status === 404
      ? "this server has no usage log (start it with --database)"
      : await errorText(response);
    return;
  }
  for (const r of (await response.json()).data) {
    const tr = document.createElement("tr");
    for (const k of ["day", "tenant", "model", "requests", "errors", "prompt_tokens", "completion_tokens", "mean_latency_s"]) {
      const td = document.createElement("td");
      td.textContent = r[k] === null || r[k] === undefined ? "" : String(r[k]);
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
}

$("key").value = localStorage.getItem(KEY_STORAGE) || "";
$("key").addEventListener("change", () => {
  localStorage.setItem(KEY_STORAGE, $("key").value.trim());
  loadModels();
});
$("reload").addEventListener("click", loadModels);
$("model").addEventListener("change", describeModel);
$("composer").addEventListener("submit", send);
$("prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) send(e);
});
$("clear").addEventListener("click", () => {
  history = [];
  $("messages").innerHTML = "";
  $("stats").textContent = "";
});
$("usage-toggle").addEventListener("click", showUsage);
loadModels();
