"""The web playground at /, in a real browser (Debian's chromium driven by Playwright) against the session
server (the toy, adapters alpha and beta, an API key): the key field, streaming, switching model."""

from __future__ import annotations

import httpx
import pytest

from tests.serve.conftest import API_KEY, start_server, stop_server


def test_page_and_assets_are_open(server):
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and "swiftkit playground" in page.text
    script = httpx.get(server.url + "/ui/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert httpx.get(server.url + "/v1/models").status_code == 401  # the API behind it is not


def test_no_ui_turns_the_page_off(toy_model, tmp_path):
    server = start_server(["--model", str(toy_model), "--no-ui", "--no-engine-process", "--max-model-len", "128"],
                          tmp_path / "server.log")
    try:
        assert httpx.get(server.url + "/").status_code == 404
        assert httpx.get(server.url + "/ui/app.js").status_code == 404
    finally:
        stop_server(server)


def chat(page, text: str) -> str:
    """Send a message; the reply's text once its usage line shows. Records every length the reply had."""
    page.evaluate("""() => {
        window.__lengths = [];
        const seen = new MutationObserver(() => {
            const replies = document.querySelectorAll('.msg.assistant .text');
            if (replies.length) window.__lengths.push(replies[replies.length - 1].textContent.length);
        });
        seen.observe(document.getElementById('messages'), {subtree: true, characterData: true, childList: true});
        document.getElementById('stats').textContent = '';
    }""")
    page.fill("#prompt", text)
    page.click("#send")
    page.wait_for_function("document.getElementById('stats').textContent.includes('tokens:')", timeout=60000)
    return page.locator(".msg.assistant .text").last.text_content()


@pytest.mark.browser
def test_chat_streams_and_switches_model(server, browser):
    page = browser.new_page()
    page.goto(server.url + "/")
    page.fill("#key", API_KEY)
    page.dispatch_event("#key", "change")  # stores the key and lists the models with it
    page.wait_for_function("document.querySelectorAll('#model option').length === 3")
    assert page.locator("#model option").all_text_contents() == ["toy", "alpha (adapter of toy)", "beta (adapter of toy)"]
    page.select_option("#model", "alpha")
    page.fill("#temperature", "0")
    page.fill("#max-tokens", "48")
    page.fill("#system", "You are terse.")
    # The toy (and its random LoRAs) end every chat at once, it never learned to chat: the extra fields ban
    # its eos tokens (0, 2), so the reply is long enough to arrive in many events.
    page.fill("#extra", '{"ignore_eos": true, "logit_bias": {"0": -100, "2": -100}}')
    reply = chat(page, "What is 2 + 3?")
    lengths = [n for n in page.evaluate("window.__lengths") if n]
    assert reply and len(set(lengths)) > 1, lengths  # the reply grew event by event: it streamed
    stats = page.text_content("#stats")
    assert "latency" in stats and "first token" in stats and "completion" in stats
    page.select_option("#model", "beta")
    assert "adapter of toy" in page.text_content("#model-info")
    assert chat(page, "What is 2 + 3?") != reply  # another adapter, another answer
    assert page.locator(".msg.assistant .who").all_text_contents() == ["alpha", "beta"]
    assert page.text_content("#error") == ""
    page.reload()  # the key survives in localStorage
    assert page.input_value("#key") == API_KEY
    page.wait_for_function("document.querySelectorAll('#model option').length === 3")
    page.click("#usage-toggle")  # the session server has no admin key: the view says why it is empty
    page.wait_for_function("document.getElementById('usage-error').textContent.length > 0")
    assert "admin key" in page.text_content("#usage-error")
    page.close()
