"""chat(): the template's rendering is what the model runs on, and the reply is sampled as generate() would.
stories260K has no template of its own, so these pass chat_template='chatml'."""

from __future__ import annotations

from sluice import SamplingParams

from conftest import make_llm

MSGS = [{"role": "system", "content": "You tell stories."}, {"role": "user", "content": "Hello"}]


def test_chat_renders_template_and_generates() -> None:
    with make_llm(chat_template="chatml") as llm:
        text = llm.apply_chat_template(MSGS)
        assert text == ("<|im_start|>system\nYou tell stories.<|im_end|>\n"
                        "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n")
        assert llm.apply_chat_template(MSGS, add_generation_prompt=False).endswith("Hello<|im_end|>\n")
        p = SamplingParams(temperature=0.9, seed=4, max_tokens=12)
        out = llm.chat(MSGS, p)
        assert len(out) == 1
        o = out[0]
        assert o.prompt == text
        assert o.prompt_token_ids == llm.tokenize(text, parse_special=True)
        # The same tokens through generate() give the same reply: chat is the template plus generate.
        assert llm.generate([o.prompt_token_ids], p)[0].outputs[0].text == o.outputs[0].text
        assert o.outputs[0].token_ids and o.usage.prompt_tokens == len(o.prompt_token_ids)


def test_chat_several_conversations() -> None:
    with make_llm(chat_template="chatml") as llm:
        convs = [[{"role": "user", "content": "A dog"}], [{"role": "user", "content": "A cat"}]]
        out = llm.chat(convs, SamplingParams(temperature=0, max_tokens=6))
        assert [o.prompt for o in out] == [llm.apply_chat_template(c) for c in convs]
        assert all(len(o.outputs[0].token_ids) == 6 or o.outputs[0].finish_reason == "stop" for o in out)
