"""Generate the reference fixtures that check Sluice's forward pass against an independent implementation.

Run from the repository root (deterministic; about a minute or two on 2 cores):
    .venv/bin/python tests/gen_reference_logits.py [--model PATH] [--out-dir tests/data]

Every number comes from tests/reference_llama.py (float64 numpy, weights dequantized by the PyPI `gguf`
package), which shares no code with the C engine. Two files are written:

1. tests/data/ref_stories260k.txt -- golden greedy decode of tests/data/stories260K.gguf.
   Start from BOS (id 1) and append the argmax token 200 times (ties to the lowest id; no stop on EOS/BOS).
   Line 1: the 200 generated ids (BOS not included), decimal, separated by one space, ended by "\n".
   The rest of the file, byte for byte with NO trailing newline: their text, i.e. the SentencePiece pieces
   joined ('\u2581' -> ' ', '<0xXX>' -> that byte, <s>/</s>/<unk> -> nothing) with the leading space of the
   first piece stripped. It equals llama2.c's documented greedy output for this model
   (`./run stories260K.bin -z tok512.bin -t 0.0 -n 200`), which this script checks.

2. tests/data/ref_logits_smollm2.bin -- logits of the default model (SmolLM2-135M-Instruct Q4_1) on
   N_PROMPTS prompts. Each prompt is tokenized (no BOS: the GGUF says add_bos_token = false) and extended
   greedily by the reference to exactly N_POS tokens; that teacher-forced sequence is then run through the
   reference in one pass from an empty cache, and for each of its N_POS positions p the logits predicting
   token p+1 are summarized. Full logits would be N_POS x 49152 floats per prompt, so we keep a summary.

   Binary layout, little-endian, packed (no padding anywhere; read it with fread/memcpy):

     offset 0   char     magic[8]        "SLREFLG1"
            8   uint64   model_bytes     size in bytes of the GGUF the logits came from (98362432 here);
                                         a reader can skip when its model file differs
           16   uint32   n_prompts       4
           20   uint32   n_pos           64   tokens per prompt = logit rows per prompt
           24   uint32   n_vocab         49152
           28   uint32   n_sample        1024 vocabulary ids whose logits are stored at every position
           32   uint32   n_top           16   best ids stored per position
           36   int32    sample_ids[n_sample]   ascending; = sorted(default_rng(1234).choice(n_vocab,
                                                n_sample, replace=False)), the same for every position
     then n_prompts times, one prompt block:
                uint32   n_prompt_tokens        how many leading tokens[] are the prompt; the rest are the
                                                reference's greedy continuation
                uint32   text_bytes
                uint8    text[text_bytes]       the prompt as UTF-8, no NUL (for people and tokenizer tests;
                                                in the chat prompt the markers appear as the literal text
                                                "<|im_start|>" / "<|im_end|>" but were inserted as the special
                                                ids 1 / 2, never tokenized as text)
                int32    tokens[n_pos]          the teacher-forced sequence to feed, positions 0..n_pos-1
                int32    top1[n_pos]            argmax of the full logits at each position (ties: lowest id);
                                                for p >= n_prompt_tokens-1 and p < n_pos-1, top1[p] == tokens[p+1]
                float32  margin[n_pos]          logit(top1) - logit(second best), over the full vocabulary;
                                                a small margin means a float32 engine may pick either
                float32  l2norm[n_pos]          sqrt(sum over all n_vocab logits of logit^2)
                int32    top_ids[n_pos][n_top]  the n_top best ids, best first (ties: lowest id first)
                float32  top_logits[n_pos][n_top]
                float32  sample_logits[n_pos][n_sample]   logits of sample_ids[], same order
     trailer    char     end[8]          "SLREFEND" (the reader knows it has the whole file)

   Size: 36 + 4*n_sample + sum over prompts of (8 + text_bytes + n_pos*4*(4 + 2*n_top + n_sample)) + 8,
   about 1.08 MB for the values above.

Prompts are tokenized with the PyPI `tokenizers` library built from the GGUF's own vocab and merges (a
byte-level BPE), with the pre-tokenizer of llama.cpp's `smollm` type: each digit alone, then GPT-2's regex.
"""

import argparse
import os
import struct
import sys

import numpy as np
import gguf
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_llama import LlamaReference, sentencepiece_decode  # noqa: E402

DEFAULT_MODEL = "/root/.cache/sluice/models/SmolLM2-135M-Instruct.Q4_1.gguf"
STORIES_MODEL = "stories260K.gguf"
STORIES_N_GEN = 200   # llama2.c's README/test decode length for stories260K, so the text is checkable
N_POS = 64            # tokens per prompt: long enough to reach well past the prompt, short enough to be fast
N_SAMPLE = 1024       # sampled vocabulary ids per position: ~2% of the vocabulary, keeps the file ~1 MB
N_TOP = 16            # best ids per position: covers what top-k / top-p sampling would look at
SAMPLE_SEED = 1234

# llama2.c's expected greedy output for stories260K (its README and test_all.py; MIT). If the reference
# disagrees, something in reference_llama.py is wrong and no fixture is written.
LLAMA2C_STORIES260K = (
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. "
    "One day, she saw a big, red ball. She wanted to play with it, but it was too high.\n"
    "Lily's mom said, \"Lily, let's go to the park.\" Lily was sad and didn't know what to do. "
    "She said, \"I want to play with your ball, but I can't find it.\"\n"
    "Lily was sad and didn't know what to do. She said, \"I'm sorry, Lily. I didn't know what to do.\"\n"
    "Lily didn't want to help her mom, so she"
)

IM_START, IM_END = 1, 2   # SmolLM2's <|im_start|> and <|im_end|> token ids (checked against the vocab below)

# Each prompt is a list of parts: a str is tokenized as text, an int is inserted as that token id.
PROMPTS = [
    # plain English
    ["The old lighthouse keeper climbed the spiral stairs every evening to light the lamp. One stormy night,"],
    # ChatML chat, as the model's chat template renders it with the generation prompt added
    [IM_START, "system\nYou are a helpful assistant.", IM_END, "\n",
     IM_START, "user\nGive me three tips for keeping houseplants alive.", IM_END, "\n",
     IM_START, "assistant\n"],
    # code
    ["def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    if n < 2:\n        return n\n"],
    # numbers and punctuation
    ["Invoice #4521 (2024-03-17): 3 x $12.99 = $38.97; tax 8.25% -> $3.21. Total: $"],
]


def build_bpe_tokenizer(reader):
    """A `tokenizers` byte-level BPE from the GGUF's tokenizer.ggml.tokens / merges, smollm pre-tokenizer."""
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    merges = reader.fields["tokenizer.ggml.merges"].contents()
    vocab = {t: i for i, t in enumerate(tokens)}
    # Byte-level pieces never contain a raw space (it is 'Ġ'), so each merge is exactly "left right".
    pairs = [tuple(m.split(" ")) for m in merges]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=pairs))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    return tok, tokens


def encode_parts(tok, parts):
    """Token ids of a prompt given as parts (str: tokenized as text; int: a special id inserted as is)."""
    ids = []
    for p in parts:
        if isinstance(p, int):
            ids.append(p)
        else:
            ids.extend(tok.encode(p, add_special_tokens=False).ids)
    return ids


def prompt_text(parts, vocab_pieces):
    """The prompt as one string, special ids written as their piece text (e.g. "<|im_start|>")."""
    return "".join(vocab_pieces[p] if isinstance(p, int) else p for p in parts)


def summarize_logits(logits, sample_ids):
    """logits: (n_pos, n_vocab) float64 -> dict of per-position summary arrays (see the format above)."""
    n_pos = logits.shape[0]
    # Stable sort of -logits: descending logits, equal logits in ascending id order.
    order = np.argsort(-logits, axis=1, kind="stable")[:, :N_TOP]          # (n_pos, N_TOP)
    top_logits = np.take_along_axis(logits, order, axis=1)                 # (n_pos, N_TOP)
    return {
        "top1": order[:, 0].astype("<i4"),
        "margin": (top_logits[:, 0] - top_logits[:, 1]).astype("<f4"),
        "l2norm": np.sqrt(np.sum(logits * logits, axis=1)).astype("<f4"),
        "top_ids": order.astype("<i4"),
        "top_logits": top_logits.astype("<f4"),
        "sample_logits": logits[:, sample_ids].astype("<f4"),
        "n_pos": n_pos,
    }


def write_stories(data_dir):
    path = os.path.join(data_dir, STORIES_MODEL)
    m = LlamaReference(path)
    seq = m.generate_greedy([m.bos_id], 1 + STORIES_N_GEN)
    gen = seq[1:]
    text = sentencepiece_decode(m.tokens, gen)
    if text != LLAMA2C_STORIES260K:
        sys.exit(f"stories260K greedy text differs from llama2.c's:\n{text!r}\nrefusing to write the fixture")
    out = os.path.join(data_dir, "ref_stories260k.txt")
    with open(out, "wb") as f:
        f.write((" ".join(str(t) for t in gen) + "\n").encode("ascii"))
        f.write(text.encode("utf-8"))
    print(f"wrote {out} ({os.path.getsize(out)} bytes): {len(gen)} tokens, matches llama2.c's greedy text")
    print(text)
    print()


def write_smollm2(model_path, data_dir):
    reader = gguf.GGUFReader(model_path)
    tok, pieces = build_bpe_tokenizer(reader)
    if pieces[IM_START] != "<|im_start|>" or pieces[IM_END] != "<|im_end|>":
        sys.exit("unexpected ChatML marker ids in this vocabulary")
    del reader
    m = LlamaReference(model_path)
    n_vocab = m.n_vocab
    rng = np.random.default_rng(SAMPLE_SEED)
    sample_ids = np.sort(rng.choice(n_vocab, size=N_SAMPLE, replace=False)).astype("<i4")

    out = os.path.join(data_dir, "ref_logits_smollm2.bin")
    blob = bytearray()
    blob += b"SLREFLG1"
    blob += struct.pack("<QIIIII", os.path.getsize(model_path), len(PROMPTS), N_POS, n_vocab, N_SAMPLE, N_TOP)
    blob += sample_ids.tobytes()
    for pi, parts in enumerate(PROMPTS):
        prompt_ids = encode_parts(tok, parts)
        if not 0 < len(prompt_ids) < N_POS:
            sys.exit(f"prompt {pi}: {len(prompt_ids)} tokens, need 1..{N_POS - 1}")
        seq = m.generate_greedy(prompt_ids, N_POS)
        # Teacher-forced pass over the whole sequence from an empty cache: the logits the C test will compare.
        m.reset()
        logits = m.forward(seq)                                           # (N_POS, n_vocab) float64
        s = summarize_logits(logits, sample_ids)
        n_p = len(prompt_ids)
        # The one-pass logits must pick the same continuation the incremental greedy decode did.
        if not np.array_equal(s["top1"][n_p - 1:N_POS - 1], np.asarray(seq[n_p:], dtype="<i4")):
            sys.exit(f"prompt {pi}: one-pass argmax disagrees with the incremental greedy decode")
        text = prompt_text(parts, pieces).encode("utf-8")
        blob += struct.pack("<II", n_p, len(text))
        blob += text
        blob += np.asarray(seq, dtype="<i4").tobytes()
        for key in ("top1", "margin", "l2norm", "top_ids", "top_logits", "sample_logits"):
            blob += s[key].tobytes()
        cont = tok.decode(seq[n_p:], skip_special_tokens=False)
        print(f"prompt {pi}: {n_p} prompt tokens + {N_POS - n_p} generated; "
              f"min margin {float(s['margin'].min()):.4f} (at position {int(s['margin'].argmin())})")
        print(f"  prompt ids: {prompt_ids}")
        print(f"  top1: {s['top1'].tolist()}")
        print(f"  continuation: {cont!r}")
    blob += b"SLREFEND"
    with open(out, "wb") as f:
        f.write(blob)
    print(f"wrote {out} ({len(blob)} bytes): {len(PROMPTS)} prompts x {N_POS} positions, "
          f"{N_SAMPLE} sampled ids + top {N_TOP} per position")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL, help="the SmolLM2-135M-Instruct Q4_1 GGUF")
    ap.add_argument("--out-dir", default=os.path.join(here, "data"))
    ap.add_argument("--skip-smollm2", action="store_true", help="only write the stories260K fixture")
    args = ap.parse_args()
    write_stories(args.out_dir)
    if not args.skip_smollm2:
        write_smollm2(args.model, args.out_dir)


if __name__ == "__main__":
    main()
