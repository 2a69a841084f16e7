"""Incremental detokenization with stop strings.

Text is produced with the tokenizers library's own `DecodeStream` (handles multi-token UTF-8 and
byte-level merges). Stop strings are searched in the accumulated text; the text a stop string
could still be starting with is held back, so a stop string never reaches a client, not even in
a stream.
"""

from __future__ import annotations

from tokenizers.decoders import DecodeStream

# Special tokens the server keeps in the text even with skip_special_tokens (the parsers need them).
MARKER_TOKENS = ("<tool_call>", "</tool_call>", "<think>", "</think>")


def hidden_token_ids(tokenizer) -> frozenset[int]:
    """Special tokens left out of the text when a request has skip_special_tokens (its default)."""
    vocab = tokenizer.get_vocab()
    markers = {tokenizer.convert_tokens_to_ids(t) for t in MARKER_TOKENS if t in vocab}
    return frozenset(set(tokenizer.all_special_ids) - markers)


class Detokenizer:
    def __init__(self, backend, hidden_ids: frozenset[int], stop: list[str], skip_special_tokens: bool):
        self.backend = backend
        # The server keeps marker tokens such as <tool_call> and <think> (parsers need them) even though
        # they are "special"; every other special token is hidden when skip_special_tokens is set.
        self.hidden = hidden_ids if skip_special_tokens else frozenset()
        self.stream = DecodeStream(skip_special_tokens=False)
        self.stop = [s for s in stop if s]
        self.text = ""
        self.sent = 0
        self.stopped_by: str | None = None

    def add(self, token_id: int) -> None:
        """Append one token's text; sets `stopped_by` (and cuts the text) when a stop string appears."""
        if token_id in self.hidden:
            return
        piece = self.stream.step(self.backend, token_id)
        if not piece:
            return
        before = len(self.text)
        self.text += piece
        if self.stop:
            longest = max(len(s) for s in self.stop)
            window_start = max(0, before - longest + 1)
            hits = [(self.text.find(s, window_start), s) for s in self.stop]
            hits = [(i, s) for i, s in hits if i >= 0]
            if hits:
                index, stop = min(hits)
                self.text = self.text[:index]
                self.stopped_by = stop

    def delta(self, final: bool) -> str:
        """New text safe to send: all of it when final, else all but a possible stop-string prefix."""
        end = len(self.text)
        if not final and self.stop:
            end -= self._held_back()
        end = max(end, self.sent)
        out = self.text[self.sent:end]
        self.sent = end
        return out

    def _held_back(self) -> int:
        for size in range(min(max(len(s) for s in self.stop) - 1, len(self.text)), 0, -1):
            tail = self.text[-size:]
            if any(s.startswith(tail) for s in self.stop):
                return size
        return 0
