"""Independent numpy reference of the llama architecture, read straight from a GGUF file.

Why this exists: the C forward pass (models/) is checked against numbers that share none of its code. This
file is written for reading, not speed: float64 throughout, one function per step of the architecture, no
fusion, no tricks. It uses the PyPI `gguf` package (GGUFReader, gguf.quants.dequantize) to get the weights,
so even the GGUF parsing and the dequantization are independent of Sluice's.

The architecture (as llama.cpp's converter writes it into GGUF):
    x = token_embd[token]
    per layer:  h = x + attn_output @ attention(rope(attn_q @ rms(x)), rope(attn_k @ rms(x)), attn_v @ rms(x))
                x = h + ffn_down @ (silu(ffn_gate @ rms(h)) * (ffn_up @ rms(h)))
    logits = output @ rms(x)          (output = token_embd when output.weight is absent: tied embeddings)
rms(v) = v / sqrt(mean(v^2) + eps) * weight, eps = llama.attention.layer_norm_rms_epsilon.
RoPE is the "normal" GGUF layout: within each head, adjacent pairs (2i, 2i+1) rotate by the angle
pos * freq_base^(-2i/n_rot) (the converter permuted the Q/K rows of the HF checkpoint so this holds);
dimensions at or past n_rot (llama.rope.dimension_count, default head_dim) are not rotated.
Attention is grouped-query (query head h reads KV head h // (n_head / n_head_kv)), causal, scaled by
1/sqrt(head_dim).

Dimension order: GGUF lists a tensor's dims fastest-first (ne = [n_in, n_out] for a weight), and the reader
hands back a C-order numpy array, so a weight arrives as shape (n_out, n_in) and y = W @ x is the projection.

Use as a library (LlamaReference(path).forward(tokens) / .generate_greedy(...)) or run it:
    .venv/bin/python tests/reference_llama.py tests/data/stories260K.gguf [n_tokens]
prints a greedy story from BOS for a SentencePiece vocabulary.
"""

import math
import sys

import numpy as np
import gguf


def _field(reader, key, default=None):
    """One scalar / string / array value of the GGUF metadata, or `default` when the key is absent."""
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.contents()


class LlamaReference:
    """A llama model with float64 weights and a per-sequence KV cache (one sequence at a time)."""

    def __init__(self, path):
        r = gguf.GGUFReader(path)
        arch = _field(r, "general.architecture")
        if arch != "llama":
            raise ValueError(f"{path}: architecture {arch!r}, this reference only knows 'llama'")
        p = "llama."
        self.n_layer = int(_field(r, p + "block_count"))
        self.dim = int(_field(r, p + "embedding_length"))
        self.n_ff = int(_field(r, p + "feed_forward_length"))
        self.n_head = int(_field(r, p + "attention.head_count"))
        self.n_head_kv = int(_field(r, p + "attention.head_count_kv", self.n_head))
        self.head_dim = self.dim // self.n_head
        self.n_rot = int(_field(r, p + "rope.dimension_count", self.head_dim))
        self.freq_base = float(_field(r, p + "rope.freq_base", 10000.0))
        self.eps = float(_field(r, p + "attention.layer_norm_rms_epsilon", 1e-5))
        self.tokens = list(_field(r, "tokenizer.ggml.tokens", []))
        self.bos_id = _field(r, "tokenizer.ggml.bos_token_id")
        self.eos_id = _field(r, "tokenizer.ggml.eos_token_id")
        self.reader = r

        # All weights dequantized once to float64: ~8 bytes per parameter (about 1.1 GB for a 135M model).
        tensors = {t.name: t for t in r.tensors}

        def load(name):
            t = tensors[name]
            w = gguf.quants.dequantize(t.data, t.tensor_type)  # (n_out, n_in) for weights, see top
            return np.asarray(w, dtype=np.float64)

        self.tok_embd = load("token_embd.weight")                        # (n_vocab, dim)
        self.n_vocab = self.tok_embd.shape[0]
        self.output = load("output.weight") if "output.weight" in tensors else self.tok_embd  # (n_vocab, dim)
        self.output_norm = load("output_norm.weight")                   # (dim,)
        self.layers = []
        for i in range(self.n_layer):
            b = f"blk.{i}."
            self.layers.append({
                "attn_norm": load(b + "attn_norm.weight"),               # (dim,)
                "wq": load(b + "attn_q.weight"),                         # (n_head*head_dim, dim)
                "wk": load(b + "attn_k.weight"),                         # (n_head_kv*head_dim, dim)
                "wv": load(b + "attn_v.weight"),                         # (n_head_kv*head_dim, dim)
                "wo": load(b + "attn_output.weight"),                    # (dim, n_head*head_dim)
                "ffn_norm": load(b + "ffn_norm.weight"),                 # (dim,)
                "w_gate": load(b + "ffn_gate.weight"),                   # (n_ff, dim)
                "w_up": load(b + "ffn_up.weight"),                       # (n_ff, dim)
                "w_down": load(b + "ffn_down.weight"),                   # (dim, n_ff)
            })
        self.reset()

    # ---- state -----------------------------------------------------------------------------------------------

    def reset(self):
        """Forget the cached sequence. KV cache per layer: k, v of shape (n_pos_so_far, n_head_kv, head_dim)."""
        self.k_cache = [np.zeros((0, self.n_head_kv, self.head_dim)) for _ in range(self.n_layer)]
        self.v_cache = [np.zeros((0, self.n_head_kv, self.head_dim)) for _ in range(self.n_layer)]

    @property
    def n_past(self):
        return self.k_cache[0].shape[0]

    # ---- the steps -------------------------------------------------------------------------------------------

    def rms_norm(self, x, w):
        """x: (n, dim); w: (dim,). Normalize each row by its root mean square, then scale elementwise."""
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    def rope(self, x, pos):
        """x: (n, heads, head_dim); pos: (n,) absolute positions. Rotates pairs (2i, 2i+1), i < n_rot/2."""
        half = self.n_rot // 2
        inv_freq = self.freq_base ** (-2.0 * np.arange(half) / self.n_rot)   # (half,)
        ang = pos[:, None].astype(np.float64) * inv_freq[None, :]             # (n, half)
        cos = np.cos(ang)[:, None, :]                                         # (n, 1, half)
        sin = np.sin(ang)[:, None, :]
        out = x.copy()
        x0 = x[:, :, 0:self.n_rot:2]
        x1 = x[:, :, 1:self.n_rot:2]
        out[:, :, 0:self.n_rot:2] = x0 * cos - x1 * sin
        out[:, :, 1:self.n_rot:2] = x0 * sin + x1 * cos
        return out

    def attention(self, q, k, v, q_pos):
        """q: (n, n_head, hd) at positions q_pos; k, v: (n_kv_pos, n_head_kv, hd) for positions 0..n_kv_pos-1.
        Returns (n, n_head*hd). Causal: query at position p sees keys 0..p."""
        n = q.shape[0]
        group = self.n_head // self.n_head_kv
        out = np.zeros((n, self.n_head, self.head_dim))
        key_pos = np.arange(k.shape[0])
        mask = key_pos[None, :] > q_pos[:, None]                              # (n, n_kv_pos): True = future
        scale = 1.0 / math.sqrt(self.head_dim)
        for h in range(self.n_head):
            kh = k[:, h // group, :]                                          # (n_kv_pos, hd)
            vh = v[:, h // group, :]
            s = (q[:, h, :] @ kh.T) * scale                                   # (n, n_kv_pos)
            s = np.where(mask, -np.inf, s)
            s = s - s.max(axis=-1, keepdims=True)
            p = np.exp(s)
            p /= p.sum(axis=-1, keepdims=True)
            out[:, h, :] = p @ vh
        return out.reshape(n, self.n_head * self.head_dim)

    def forward(self, token_ids):
        """Append token_ids (list of ints) to the cached sequence; return their logits, (n, n_vocab) float64."""
        ids = np.asarray(token_ids, dtype=np.int64)
        n = len(ids)
        pos = np.arange(self.n_past, self.n_past + n)
        x = self.tok_embd[ids].copy()                                          # (n, dim)
        for li, L in enumerate(self.layers):
            xn = self.rms_norm(x, L["attn_norm"])
            q = (xn @ L["wq"].T).reshape(n, self.n_head, self.head_dim)
            k = (xn @ L["wk"].T).reshape(n, self.n_head_kv, self.head_dim)
            v = (xn @ L["wv"].T).reshape(n, self.n_head_kv, self.head_dim)
            q = self.rope(q, pos)
            k = self.rope(k, pos)
            self.k_cache[li] = np.concatenate([self.k_cache[li], k], axis=0)
            self.v_cache[li] = np.concatenate([self.v_cache[li], v], axis=0)
            a = self.attention(q, self.k_cache[li], self.v_cache[li], pos)
            x = x + a @ L["wo"].T
            hn = self.rms_norm(x, L["ffn_norm"])
            g = hn @ L["w_gate"].T                                             # (n, n_ff)
            u = hn @ L["w_up"].T
            silu = g / (1.0 + np.exp(-g))
            x = x + (silu * u) @ L["w_down"].T
        x = self.rms_norm(x, self.output_norm)
        return x @ self.output.T                                               # (n, n_vocab)

    def generate_greedy(self, prompt_ids, n_total):
        """Extend prompt_ids greedily (argmax, ties to the lowest id) until the sequence has n_total tokens.
        Starts from an empty cache. Returns the full list of n_total ids."""
        self.reset()
        seq = list(prompt_ids)
        logits = self.forward(seq)
        while len(seq) < n_total:
            nxt = int(np.argmax(logits[-1]))
            seq.append(nxt)
            if len(seq) < n_total:
                logits = self.forward([nxt])
        return seq


def sentencepiece_decode(pieces, ids):
    """Text of ids for a SentencePiece vocabulary stored as GGUF pieces: '\u2581' is a space, '<0xXX>' a raw
    byte, and control pieces such as '<s>' / '</s>' / '<unk>' give no text. The leading space of the first
    piece is stripped, as SentencePiece does when decoding."""
    out = bytearray()
    for i in ids:
        p = pieces[i]
        if len(p) == 6 and p.startswith("<0x") and p.endswith(">"):
            out.append(int(p[3:5], 16))
        elif p in ("<s>", "</s>", "<unk>"):
            continue
        else:
            out += p.replace("\u2581", " ").encode("utf-8")
    text = out.decode("utf-8", errors="replace")
    return text[1:] if text.startswith(" ") else text


def main(argv):
    path = argv[1] if len(argv) > 1 else "tests/data/stories260K.gguf"
    n = int(argv[2]) if len(argv) > 2 else 200
    m = LlamaReference(path)
    seq = m.generate_greedy([m.bos_id], n + 1)
    print(" ".join(str(t) for t in seq[1:]))
    print(sentencepiece_decode(m.tokens, seq[1:]))


if __name__ == "__main__":
    main(sys.argv)
