"""An Ollama `Modelfile` for an exported GGUF: template in Ollama's Go-template syntax, stops, defaults.

Jinja chat templates cannot be translated in general; the families whose markers are recognised
(ChatML, Llama 3) get Ollama's own template text for them, with the model's default system prompt.
Any other template is left out, and Ollama falls back to matching the template stored in the
GGUF metadata against its built-in list (said in the file, so nobody is surprised).
"""

from __future__ import annotations

from pathlib import Path

from swiftkit.artifacts import ServingInfo

CHATML = """{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}
{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""
LLAMA3 = """{{- if .System }}<|start_header_id|>system<|end_header_id|>

{{ .System }}<|eot_id|>
{{- end }}
{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>

{{ .Content }}<|eot_id|>
{{- end }}<|start_header_id|>assistant<|end_header_id|>

"""
FAMILIES = {"chatml": ("<|im_start|>", CHATML, ["<|im_end|>", "<|im_start|>"]), "llama3": ("<|start_header_id|>", LLAMA3, ["<|eot_id|>"])}


def template_family(chat_template: str | None) -> str | None:
    for name, (marker, _, _) in FAMILIES.items():
        if chat_template and marker in chat_template:
            return name
    return None


def default_system_prompt(tokenizer, family: str | None) -> str | None:
    """The system prompt the template inserts when the user gives none (SmolLM2's "You are a helpful…")."""
    if family is None or not isinstance(tokenizer.chat_template, str):
        return None
    text = tokenizer.apply_chat_template([{"role": "user", "content": "\x00"}], tokenize=False)
    opening = {"chatml": "<|im_start|>system\n", "llama3": "<|start_header_id|>system<|end_header_id|>\n\n"}[family]
    closing = {"chatml": "<|im_end|>", "llama3": "<|eot_id|>"}[family]
    if opening not in text:
        return None
    system = text.split(opening, 1)[1].split(closing, 1)[0].strip()
    return system or None


def modelfile(gguf_name: str, serving: ServingInfo, tokenizer, context_length: int | None, generation: dict) -> str:
    family = template_family(serving.chat_template)
    family_stops = FAMILIES[family][2] if family else []
    stops = list(dict.fromkeys([*family_stops, *([serving.eos_token] if serving.eos_token else []), *serving.stop]))
    lines = [f"# Written by swiftkit export. Run: ollama create NAME -f {Path('Modelfile')}", f"FROM ./{gguf_name}", ""]
    if family:
        lines += [f'TEMPLATE """{FAMILIES[family][1]}"""', ""]
        system = default_system_prompt(tokenizer, family)
        if system:
            lines += [f'SYSTEM """{system}"""', ""]
    else:
        lines += ["# No TEMPLATE: the chat template is not ChatML or Llama 3; Ollama reads tokenizer.chat_template from the GGUF.", ""]
    lines += [f'PARAMETER stop "{s}"' for s in stops]
    lines.append(f"PARAMETER num_ctx {min(context_length or 4096, 4096)}")
    for key, name in (("temperature", "temperature"), ("top_p", "top_p"), ("top_k", "top_k"), ("repetition_penalty", "repeat_penalty")):
        if generation.get(key) is not None:
            lines.append(f"PARAMETER {name} {generation[key]}")
    return "\n".join(lines) + "\n"
