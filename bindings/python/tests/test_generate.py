"""generate(): the same text as the CLI for the same seed, a batch of 32 prompts run together, and the output
fields (token ids, finish reasons, usage, timings, logprobs, n choices, stop strings)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from sluice import LLM, SamplingParams

from conftest import REPO, STORIES, make_llm


def _cli() -> str:
    build = os.environ.get("SLUICE_BUILD_DIR")
    exe = Path(build) / "sluice" if build else REPO / "build" / "sluice"
    if not exe.is_file():
        pytest.skip("no sluice executable at %s (set SLUICE_BUILD_DIR)" % exe)
    return str(exe)


@pytest.mark.parametrize("prompt,seed", [("Once upon a time", 42), ("The little dog", 7), ("Tom and Sue", 123456789)])
def test_same_text_as_cli_for_same_seed(llm: LLM, prompt: str, seed: int) -> None:
    # The CLI prints the generated text then a newline on stdout, a speed line on stderr.
    r = subprocess.run([_cli(), "generate", "-m", STORIES, "-t", "1", "--seed", str(seed), "--temp", "0.8", "-n", "20",
                        "-p", prompt], capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    cli_text = r.stdout.decode()
    assert cli_text.endswith("\n")
    cli_text = cli_text[:-1]
    out = llm.generate(prompt, SamplingParams(temperature=0.8, seed=seed, max_tokens=20))
    assert out[0].outputs[0].text == cli_text
    assert len(out[0].outputs[0].token_ids) == 20 or out[0].outputs[0].finish_reason == "stop"


def test_seed_reproducible_and_different_seeds_differ(llm: LLM) -> None:
    p = SamplingParams(temperature=1.0, seed=5, max_tokens=30, ignore_eos=True)
    a = llm.generate("Once upon a time", p)[0].outputs[0]
    b = llm.generate("Once upon a time", p)[0].outputs[0]
    c = llm.generate("Once upon a time", SamplingParams(temperature=1.0, seed=6, max_tokens=30, ignore_eos=True))
    assert a.token_ids == b.token_ids and a.text == b.text
    assert c[0].outputs[0].token_ids != a.token_ids


def test_batch_of_32_prompts_runs_together_and_matches_one_by_one(llm: LLM) -> None:
    names = ["Lily", "Tom", "Sue", "Ben", "Max", "Amy", "Sam", "Tim"]
    things = ["a ball", "a cat", "the park", "a big tree"]
    prompts = ["%s saw %s" % (n, t) for n in names for t in things]
    assert len(prompts) == 32
    params = SamplingParams(temperature=0, max_tokens=24)
    before = llm.stats()
    outs = llm.generate(prompts, params)
    after = llm.stats()
    assert [o.prompt for o in outs] == prompts
    for o in outs:
        c = o.outputs[0]
        assert c.finish_reason in ("stop", "length")
        assert c.text and c.token_ids
        assert o.usage.prompt_tokens == len(o.prompt_token_ids)
        assert o.usage.completion_tokens == len(c.token_ids)
        assert o.prompt_token_ids == llm.tokenize(o.prompt, add_special=True)
        # (the whole sequence: SentencePiece drops a leading space when decoding tokens on their own)
        assert llm.detokenize(o.prompt_token_ids + c.token_ids, skip_special_tokens=True) == o.prompt + c.text
    # Submitted at once, so the engine ran them side by side: far fewer steps than tokens, and steps of many
    # tokens (a timing-free check: how fast Python submits does not matter).
    steps = after["steps_total"] - before["steps_total"]
    tokens = sum(o.usage.completion_tokens + o.usage.prompt_tokens for o in outs)
    assert steps * 4 < tokens, (steps, tokens)
    big = sum(a - b for a, b in zip(after["steps_by_tokens"][4:], before["steps_by_tokens"][4:]))  # > 16 tokens
    assert big > 0
    # Batching does not change greedy results: the same text as run alone.
    for i in (0, 13, 31):
        assert llm.generate(prompts[i], params)[0].outputs[0].text == outs[i].outputs[0].text


def test_one_params_per_prompt(llm: LLM) -> None:
    outs = llm.generate(["Once upon a time", "Once upon a time"],
                        [SamplingParams(temperature=0, max_tokens=3), SamplingParams(temperature=0, max_tokens=9)])
    assert len(outs[0].outputs[0].token_ids) == 3
    assert len(outs[1].outputs[0].token_ids) == 9
    assert outs[1].outputs[0].text.startswith(outs[0].outputs[0].text)


def test_usage_timings_and_finish_length(llm: LLM) -> None:
    o = llm.generate("Once upon a time", SamplingParams(temperature=0, max_tokens=12, ignore_eos=True))[0]
    c = o.outputs[0]
    assert c.finish_reason == "length" and len(c.token_ids) == 12
    assert o.usage.prompt_tokens == 5 and o.usage.completion_tokens == 12 and o.usage.total_tokens == 17
    t = o.timings
    assert 0 < t.submitted_us <= t.first_scheduled_us <= t.first_token_us <= t.finished_us
    assert t.e2e_s >= t.time_to_first_token_s >= 0


def test_stop_string_is_cut(llm: LLM) -> None:
    full = llm.generate("Once upon a time", SamplingParams(temperature=0, max_tokens=30))[0].outputs[0].text
    word = " named"
    assert word in full, full
    c = llm.generate("Once upon a time", SamplingParams(temperature=0, max_tokens=30, stop=[word]))[0].outputs[0]
    assert c.finish_reason == "stop" and c.stop_reason == word
    assert c.text == full[: full.index(word)]


def test_n_choices_and_logprobs(llm: LLM) -> None:
    o = llm.generate("Once upon a time", SamplingParams(temperature=1.0, seed=3, n=3, max_tokens=8, logprobs=2,
                                                        ignore_eos=True))[0]
    assert [c.index for c in o.outputs] == [0, 1, 2]
    assert len({tuple(c.token_ids) for c in o.outputs}) > 1  # choices are seeded apart
    for c in o.outputs:
        assert c.logprobs is not None and len(c.logprobs) == len(c.token_ids) == 8
        for tok, lp in zip(c.token_ids, c.logprobs):
            assert tok in lp and lp[tok] <= 0.0
            assert 1 <= len(lp) <= 3
    assert o.usage.completion_tokens == 24


def test_token_id_prompt(llm: LLM) -> None:
    ids = llm.tokenize("Once upon a time", add_special=True)
    a = llm.generate([ids], SamplingParams(temperature=0, max_tokens=10))[0]
    b = llm.generate("Once upon a time", SamplingParams(temperature=0, max_tokens=10))[0]
    assert a.prompt is None and a.prompt_token_ids == ids
    assert a.outputs[0].text == b.outputs[0].text


def test_tokenize_roundtrip(llm: LLM) -> None:
    text = "Lily and Tom went to the park."
    ids = llm.tokenize(text)
    assert ids and llm.detokenize(ids) == text
    info = llm.model_info
    assert llm.tokenize(text, add_special=True) == [info.bos_id] + ids
    assert info.architecture == "llama" and info.n_vocab == 512 and info.n_layer == 5


def test_embed(llm: LLM) -> None:
    a, b, a2 = llm.embed(["Lily likes cats.", "The sun is hot.", "Lily likes cats."])
    assert len(a) == llm.model_info.n_embd
    assert abs(sum(x * x for x in a) - 1.0) < 1e-4  # L2-normalized
    assert a == a2 and a != b
    assert llm.embed("Lily likes cats.")[0] == pytest.approx(a, abs=1e-5)


def test_stop_token_ids(llm: LLM) -> None:
    full = llm.generate("Once upon a time", SamplingParams(temperature=0, max_tokens=12))[0].outputs[0]
    tok = full.token_ids[4]
    c = llm.generate("Once upon a time", SamplingParams(temperature=0, max_tokens=12, stop_token_ids=[tok]))
    c0 = c[0].outputs[0]
    assert c0.finish_reason == "stop" and c0.stop_reason == tok
    assert c0.token_ids[: full.token_ids.index(tok)] == full.token_ids[: full.token_ids.index(tok)]
    assert len(c0.token_ids) <= full.token_ids.index(tok) + 1


def test_kv_cache_type_follows_the_precision(llm: LLM) -> None:
    assert llm.model_info.kv_dtype == "f16" and llm.model_info.kv_cache_tokens > 0  # kv_dtype auto, fast
    with make_llm(precision="exact", max_model_len=64, max_num_seqs=2) as exact:
        info = exact.model_info
        assert info.kv_dtype == "f32" and info.kv_cache_tokens == 2 * 64
        # K and V per layer, KV head and dimension, 4 bytes each
        assert info.kv_cache_bytes == info.kv_cache_tokens * info.n_layer * 2 * info.n_head_kv * (
            info.n_embd // info.n_head) * 4
    with make_llm(kv_dtype="f32") as f32:
        assert f32.model_info.kv_dtype == "f32"


def test_profile_ops_prints_where_the_time_went() -> None:
    """SLUICE_PROFILE_OPS=1: the CLI's process prints the per-operation table at exit; unset, nothing."""
    args = [_cli(), "generate", "-m", STORIES, "-t", "1", "--temp", "0", "-n", "5", "-p", "Lily"]
    on = subprocess.run(args, capture_output=True, timeout=120, env={**os.environ, "SLUICE_PROFILE_OPS": "1"})
    assert on.returncode == 0, on.stderr.decode()
    err = on.stderr.decode()
    assert "backend operations (SLUICE_PROFILE_OPS)" in err
    rows = {line.split()[0]: line.split() for line in err.splitlines() if line.startswith("  ") and "%" in line}
    assert {"attention", "rms_norm", "matmul"} <= set(rows) and int(rows["attention"][1]) >= 5 * 5  # 5 layers
    env = {k: v for k, v in os.environ.items() if k != "SLUICE_PROFILE_OPS"}
    off = subprocess.run(args, capture_output=True, timeout=120, env=env)
    assert off.returncode == 0 and "SLUICE_PROFILE_OPS" not in off.stderr.decode()
