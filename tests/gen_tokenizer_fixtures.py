#!/usr/bin/env python3
"""Writes tests/data/tok_smollm2.jsonl: strings and the ids an independent tokenizer gives them.

The reference is the `tokenizers` library (Hugging Face's Rust implementation), not llama.cpp and not our C:
a byte-level BPE model built from the default model's own vocabulary and merges (read from its GGUF with the
`gguf` package), with SmolLM2's pre-tokenizer -- Digits(individual_digits=True), then ByteLevel with GPT-2's
regex and no prefix space -- and no added tokens, so the text of special tokens ("<|im_end|>") is ordinary
text, which is what Sluice must do without SL_TOKENIZE_PARSE_SPECIAL. (`transformers` is not used.)

Each line is {"text": ..., "ids": [...], "lossless": true|false}, ASCII-only JSON (non-ASCII as \\u escapes, astral characters as
surrogate pairs) so the C test's reader stays small. The strings are a hand-written list covering digits,
whitespace runs, newlines, tabs, code, accents, CJK, emoji, right-to-left scripts, special-token text, long
words and the empty string, plus the 46 strings of llama.cpp's tokenizer tests, plus random strings drawn
from a fixed seed over a pool of characters of every class the pre-tokenizer distinguishes.

Usage: .venv/bin/python tests/gen_tokenizer_fixtures.py [path/to/SmolLM2-135M-Instruct.Q4_1.gguf]
(default: $SLUICE_MODEL, else ~/.cache/sluice/models/SmolLM2-135M-Instruct.Q4_1.gguf)
"""
import json
import os
import random
import sys

import gguf
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "data", "tok_smollm2.jsonl")
SEP = "__ggml_vocab_test__"


def model_path():
    if len(sys.argv) > 1:
        return sys.argv[1]
    if os.environ.get("SLUICE_MODEL"):
        return os.environ["SLUICE_MODEL"]
    cache = os.environ.get("SLUICE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "sluice")
    return os.path.join(cache, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")


def str_array(reader, key):
    f = reader.fields[key]
    return [bytes(f.parts[i]).decode("utf-8") for i in f.data]


def reference_tokenizer(path):
    r = gguf.GGUFReader(path)
    tokens = str_array(r, "tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in str_array(r, "tokenizer.ggml.merges")]
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    return tok


def llama_cpp_strings():
    with open(os.path.join(HERE, "data", "ggml-vocab-gpt-2.gguf.inp"), encoding="utf-8") as f:
        lines = f.read().split("\n")
    out, cur = [], []
    for line in lines:
        if line == SEP:
            out.append("\n".join(cur))
            cur = []
        else:
            cur.append(line)
    return out


HAND = [
    "",
    " ",
    "a",
    "Hello, world!",
    "Hello world",
    " Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "I'm sure you'll see they've done what we'd do; it's 'quoted' and \"double\".",
    "DON'T SHOUT: I'M HERE, YOU'RE THERE, WE'VE GOT IT, THEY'LL COME, SHE'D KNOW.",
    "rock'n'roll o'clock y'all ma'am",
    # digits and numbers
    "0", "7", "42", "123", "1234", "12345678901234567890",
    "3.14159", "1,000,000", "-273.15", "1e-9", "0x7fff_ffff", "v1.2.3-rc4",
    "In 2024, 3 of 10 people owned 1.5 cars on average.",
    "Call +1 (555) 010-9999 or 555.010.9999",
    "x1y2z3", "abc123def456", " 1 2  3   4", "2+2=4", "10%", "$19.99", "€5", "£100", "¥1000",
    "½ ¾ ² ³ ¹ Ⅻ ⅻ ① ② ⑳",
    "١٢٣ ٤٥٦",  # Arabic-Indic digits
    "٣.١٤",
    "१२३४",  # Devanagari digits
    "零一二三 壹贰叁",
    # whitespace
    "  ", "   ", "    leading four", "trailing four    ", "a  b", "a   b", "a    b",
    "\t", "\t\t", "a\tb", "\ta", "a\t", " \t ", "\t \t",
    "\n", "\n\n", "\n\n\n", "a\nb", "a\n\nb", "\na", "a\n", " \n", "\n ", " \n ",
    "line one\nline two\r\nline three\rline four",
    "\r\n", "\r", "a\r\n\r\nb",
    "\x0b\x0c", "a\x0bb\x0cc",
    "no-break\u00a0space", "em\u2003space", "ideographic\u3000space", "narrow\u202fnbsp",
    "line\u2028separator", "para\u2029separator", "\u0085next line",
    "a \u00a0 b", "\u00a0\u00a0x",
    "mixed \t\n whitespace \n\t run",
    "   \n\n   \t\t   ",
    # code
    "def f(x):\n    return x ** 2  # square\n",
    "int main(void) {\n\tprintf(\"%d\\n\", 42);\n\treturn 0;\n}\n",
    "for (size_t i = 0; i < n; i++) { a[i] += b[i] * c; }",
    "if x != None and y >= 3 or not z: pass",
    "const f = async (a, b) => { await g(a?.b ?? c); };",
    "SELECT id, name FROM users WHERE age > 21 ORDER BY name DESC;",
    "<html><body><p class=\"x\">Hi &amp; bye</p></body></html>",
    "{\"key\": [1, 2.5, true, null], \"nested\": {\"a\": \"b\"}}",
    "git commit -m \"fix: handle CRLF\" && make -j2 test",
    "https://example.com/path?query=1&other=two#frag",
    "user@example.org",
    "    indented\n        more\n    back",
    "a_b_c __init__ __dict__ snake_case camelCase PascalCase kebab-case",
    "/* comment */ // another\n#include <stdio.h>",
    "x<<=2; y>>=3; z^=~w; p->q; r::s",
    "''''''```````\"\"\"\"......!!!!!!??????",
    "...", "!!!", "?!", "--", "---", "===", "->", "=>", "::", ";;", "()", "[]", "{}",
    # accents and Latin
    "Café, naïve, façade, résumé, jalapeño, Ångström, Øresund, smörgåsbord",
    "Füße Straße Ärger Öl Übermut",
    "Łódź Kraków Gdańsk żółć",
    "ça va? Ça va! À bientôt.",
    "e\u0301 (combining acute) vs \u00e9",
    "ﬁnance ﬂow (ligatures)",
    # Greek, Cyrillic
    "Ελληνικά: Καλημέρα κόσμε",
    "Привет, мир! Как дела?",
    "нещо на български",
    # CJK
    "你好，世界！",
    "我想在苹果公司工作1314151天",
    "日本語のテキストです。カタカナとひらがな。",
    "한국어 텍스트입니다.",
    "中文English混合mixed文本",
    # RTL
    "مرحبا بالعالم",
    "السلام عليكم ورحمة الله",
    "שלום עולם",
    "עברית עם ניקוד: שָׁלוֹם",
    "English then عربي then English",
    # Indic and others
    "नमस्ते दुनिया",
    "தமிழ் உரை",
    "ภาษาไทย",
    "ខ្មែរ",
    "ᏣᎳᎩ",
    # emoji
    "🚀",
    "🚀 (normal) 😶‍🌫️ (multiple emojis concatenated) ✅ (only emoji that has its own token)",
    "👍🏽👨‍👩‍👧‍👦🇫🇷🏳️‍🌈",
    "I ❤️ you 😀😃😄",
    "emoji🙂inside",
    # special-token text must be ordinary text
    "<|im_start|>user\nhi<|im_end|>",
    "<|im_end|>",
    "<|endoftext|>",
    "text<|im_start|>more",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>assistant\n",
    "<repo_name>x<file_sep>y<filename>z",
    "< |im_end| >",
    "<s></s><unk>",
    # long words
    "Pneumonoultramicroscopicsilicovolcanoconiosis",
    "supercalifragilisticexpialidocious" * 4,
    "a" * 300,
    "ab" * 200,
    "😀" * 50,
    "1" * 100,
    " " * 100,
    "\n" * 50,
    "x" * 64 + " " + "y" * 64,
    "Donaudampfschifffahrtselektrizitätenhauptbetriebswerkbauunterbeamtengesellschaft",
    # control characters and oddities
    "\x00", "a\x00b", "\x01\x02\x03", "\x1b[31mred\x1b[0m", "\x7f", "\x1c\x1d\x1e\x1f",
    "\ufeffBOM at start", "zero\u200bwidth\u200cjoiner\u200d", "soft\u00adhyphen",
    "\ufffd replacement",
    "tab\there\nnewline",
    "Mixed: 3 apples, 12 pears; total = 15!",
    "The year 1999 & the year 2000: Y2K.",
]

# Every character class the GPT-2 pattern tells apart, and a few characters that sit at its edges.
POOL = (
    list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") * 3
    + list("0123456789") * 3
    + list(" ") * 12
    + list("\t\n\r\x0b\x0c")
    + list(".,;:!?'\"-_()[]{}<>/\\|@#$%^&*+=~`")
    + ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T"]
    + list("éüñçøßÆŒ")
    + list("αβγδЖЯж")
    + list("中文字日本한국")
    + list("مرحבש")
    + list("١٢٣½²Ⅻ①")
    + ["\u00a0", "\u2003", "\u3000", "\u2028", "\u0085", "\u200b"]
    + ["🚀", "😀", "👍🏽", "❤️"]
    + ["\u0301", "\u0308"]  # combining marks: neither letters nor numbers
    + ["<|im_end|>", "<|im_start|>"]
)


def random_strings(n, seed=20240531):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = rng.choice([1, 2, 3, 5, 8, 13, 21, 34, 55])
        out.append("".join(rng.choice(POOL) for _ in range(length)))
    return out


def main():
    path = model_path()
    if not os.path.exists(path):
        sys.exit("model not found: %s (run the setup step that fetches the default model)" % path)
    tok = reference_tokenizer(path)
    strings = HAND + llama_cpp_strings() + random_strings(250)
    seen, rows = set(), []
    for s in strings:
        if s in seen:
            continue
        seen.add(s)
        ids = tok.encode(s, add_special_tokens=False).ids
        # SmolLM2's vocabulary lacks the byte-level characters of a few bytes (0x04, 0x06, 0x13, 0x14, 0x16,
        # 0x1D, 0xF1, 0xF2, and those UTF-8 never uses); text with them cannot come back, and says so.
        lossless = tok.decode(ids, skip_special_tokens=False) == s
        rows.append({"text": s, "ids": ids, "lossless": lossless})
    with open(OUT, "w", encoding="ascii", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=True) + "\n")
    print("wrote %d strings to %s" % (len(rows), OUT))


if __name__ == "__main__":
    main()
