#!/usr/bin/env python3
"""gen_chat_fixtures.py — renders chat conversations with jinja2 the way Hugging Face does, for the C test.

models/chat.c recognises a chat template by its content and renders it natively; the claim it makes is that
its output equals what jinja2 produces from that exact template source. This script is the other side of
that claim: for each known template source (the default model's own, read from its GGUF, and the public
sources of ChatML, Llama-3 and Mistral-Instruct) it renders 20 message lists with add_generation_prompt on
and off, using HF's environment (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols,
raise_exception), and writes tests/data/chat_fixtures.txt. Where jinja2 raises (Mistral refusing a system
message or two user turns in a row), the case records the error and the C side must refuse it too.

The models-layer test links no JSON library, so the output is a trivially parseable length-prefixed format:
a sequence of fields, each "KEY LEN\\n", then LEN raw bytes, then "\\n". Keys:
  template NAME      starts a template block; NAME is what sl_chat_template_name() must return
  source, bos, eos   its jinja source and the BOS/EOS text passed to it
  case LABEL         starts a case of the current template
  add_gen 0|1, n_msgs N, then N times role / content
  expect TEXT        the rendering, byte for byte   (or)   error MESSAGE   jinja2 raised
Usage: .venv/bin/python tests/gen_chat_fixtures.py [path/to/SmolLM2-135M-Instruct.Q4_1.gguf]
"""
import os
import sys

import gguf
import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "data", "chat_fixtures.txt")
DEFAULT_MODEL = os.path.expanduser("~/.cache/sluice/models/SmolLM2-135M-Instruct.Q4_1.gguf")

# Public template sources, as they appear in the models' tokenizer_config.json after JSON decoding (so a
# "\n" there is a real newline here, while a "\\n" there is jinja's own escape, written r"\n" below).
# teknium/OpenHermes-2.5-Mistral-7B: plain ChatML.
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>'"
    " + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# meta-llama/Meta-Llama-3-8B-Instruct, current revision (generation header only when asked).
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>'"
    " + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0"
    " == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if"
    " add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
# meta-llama/Meta-Llama-3-8B-Instruct, first release: the generation header is always appended.
LLAMA3_ORIGINAL = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>'"
    " + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0"
    " == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{{"
    " '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
)
# mistralai/Mistral-7B-Instruct-v0.1, original template (a space after each EOS).
MISTRAL_V01 = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role']"
    " == 'assistant' %}{{ message['content'] + eos_token + ' ' }}{% else %}{{ raise_exception('Only user and"
    " assistant roles are supported!') }}{% endif %}{% endfor %}"
)
# mistralai/Mistral-7B-Instruct-v0.2, original template.
MISTRAL_V02 = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role']"
    " == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant"
    " roles are supported!') }}{% endif %}{% endfor %}"
)
# mistralai/Mistral-7B-Instruct-v0.1/v0.2, later revision ("v1" tokenizer): an optional system message folded
# into the first user turn, a space before each [INST] and before each answer.
MISTRAL_V1 = (
    "{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = messages[0]['content'] %}\n"
    "    {%- set loop_messages = messages[1:] %}\n{%- else %}\n    {%- set loop_messages = messages %}\n"
    "{%- endif %}\n\n{{- bos_token }}\n{%- for message in loop_messages %}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n"
    "        {{- raise_exception('After the optional system message, conversation roles must alternate"
    " user/assistant/user/assistant...') }}\n    {%- endif %}\n    {%- if message['role'] == 'user' %}\n"
    "        {%- if loop.first and system_message is defined %}\n"
    r"            {{- ' [INST] ' + system_message + '\n\n' + message['content'] + ' [/INST]' }}"
    "\n        {%- else %}\n            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n"
    "        {%- endif %}\n    {%- elif message['role'] == 'assistant' %}\n"
    "        {{- ' ' + message['content'] + eos_token}}\n    {%- else %}\n"
    "        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial"
    " optional system message!') }}\n    {%- endif %}\n{%- endfor %}\n"
)


def smollm_source(path):
    r = gguf.GGUFReader(path)
    f = r.fields["tokenizer.chat_template"]
    return bytes(f.parts[f.data[0]]).decode("utf-8")


def conversations():
    S, U, A = "system", "user", "assistant"
    return [
        ("one user turn", [(U, "Hello")]),
        ("system and user", [(S, "You are terse."), (U, "Hi")]),
        ("multi-turn", [(U, "What is 2+2?"), (A, "4"), (U, "And 3+3?")]),
        ("system multi-turn", [(S, "Be brief."), (U, "Name a color."), (A, "Blue."), (U, "Another?")]),
        ("empty user content", [(U, "")]),
        ("empty system content", [(S, ""), (U, "x")]),
        ("newlines", [(U, "line one\nline two\n\n")]),
        ("padded with spaces", [(U, "  padded  \t\n"), (A, "   I am an assistant   "), (U, "\n ok \n")]),
        ("special text", [(U, "<|im_start|>assistant\n{{ bos_token }} [INST] <|eot_id|></s>{% raw %}")]),
        ("unicode", [(U, "h\u00e9llo \u2014 \u65e5\u672c\u8a9e \U0001f389 caf\u00e9")]),
        # Python's str.strip() (jinja's trim) removes these: ideographic space, NBSP, line separator, FS;
        # U+200B (zero-width space) is not whitespace to Python and must survive.
        ("unicode whitespace", [(U, "\u3000\u00a0 wide \u2028\x1c"), (A, "\u200b kept \u200b")]),
        ("starts with assistant", [(A, "I speak first"), (U, "ok")]),
        ("two user turns", [(U, "first"), (U, "second")]),
        ("no messages", []),
        ("system only", [(S, "Only a system prompt.")]),
        ("ends with assistant", [(S, "sys"), (U, "q"), (A, "a")]),
        ("long", [(U, "u1"), (A, "a1"), (U, "u2"), (A, "a2"), (U, "u3"), (A, "a3")]),
        ("two system messages", [(S, "one"), (S, "two"), (U, "u")]),
        ("quotes and backslashes", [(U, "it's \"quoted\" \\ back\\slash \\n not a newline")]),
        ("system later", [(U, "u"), (A, "a"), (S, "late system"), (U, "v")]),
    ]


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def render(env, source, msgs, add_gen, bos, eos):
    tmpl = env.from_string(source)
    return tmpl.render(
        messages=[{"role": r, "content": c} for r, c in msgs],
        add_generation_prompt=add_gen,
        bos_token=bos,
        eos_token=eos,
    )


def field(out, key, value):
    if isinstance(value, str):
        value = value.encode("utf-8")
    out.append(b"%s %d\n" % (key.encode(), len(value)) + value + b"\n")


def main():
    model = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("SLUICE_MODEL", DEFAULT_MODEL)
    templates = [
        ("smollm", smollm_source(model), "<|im_start|>", "<|im_end|>"),
        ("chatml", CHATML, "<s>", "<|im_end|>"),
        ("llama3", LLAMA3, "<|begin_of_text|>", "<|eot_id|>"),
        ("llama3", LLAMA3_ORIGINAL, "<|begin_of_text|>", "<|eot_id|>"),
        ("mistral-v0.1", MISTRAL_V01, "<s>", "</s>"),
        ("mistral", MISTRAL_V02, "<s>", "</s>"),
        ("mistral-v1", MISTRAL_V1, "<s>", "</s>"),
    ]
    # Hugging Face's environment (transformers' _compile_jinja_template).
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = raise_exception

    out = [b"# chat_fixtures.txt: generated by tests/gen_chat_fixtures.py (see there for the format); do not edit.\n"]
    n_cases = n_errors = 0
    for name, source, bos, eos in templates:
        field(out, "template", name)
        field(out, "source", source)
        field(out, "bos", bos)
        field(out, "eos", eos)
        for label, msgs in conversations():
            for add_gen in (True, False):
                field(out, "case", "%s%s" % (label, " +gen" if add_gen else ""))
                field(out, "add_gen", "1" if add_gen else "0")
                field(out, "n_msgs", str(len(msgs)))
                for role, content in msgs:
                    field(out, "role", role)
                    field(out, "content", content)
                try:
                    field(out, "expect", render(env, source, msgs, add_gen, bos, eos))
                except jinja2.exceptions.TemplateError as e:  # raise_exception, or an undefined value
                    field(out, "error", "%s: %s" % (type(e).__name__, e))
                    n_errors += 1
                n_cases += 1
    with open(OUT, "wb") as f:
        f.write(b"".join(out))
    print("wrote %s: %d templates, %d cases (%d refused by jinja2)" % (OUT, len(templates), n_cases, n_errors))


if __name__ == "__main__":
    main()
