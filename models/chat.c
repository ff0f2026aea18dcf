/*
 * chat.c — chat templates rendered natively, recognised by their content (see chat.h for the contract).
 *
 * Recognition. A model's Jinja source is reduced to a canonical form that keeps exactly what decides the
 * output and drops what does not: whitespace outside string literals (one space kept between two words),
 * quote style and escapes (literals are decoded, then written one way), splitting of constants
 * ('<|im_end|>' + '\n' is '<|im_end|>\n'), attribute vs subscript syntax (message.role is message['role']),
 * the text of raise_exception() messages, comments, and whitespace-control marks once every piece of text
 * between tags has been shown to vanish under HF's settings (trim_blocks, lstrip_blocks, the dashes). A
 * template that prints text outside its tags is refused: we could not vouch for it. The canonical form is then
 * compared with the canonical forms of the public sources in sl__chat_table[] below, the ones this file
 * renders and tests/gen_chat_fixtures.py checks against jinja2. The one hole is ChatML's default system
 * prompt: its text is cut out of the source (that is how SmolLM2's prompt is found at run time) and the rest
 * must match. A source that matches nothing is refused, with the family its markers suggest as a hint.
 *
 * Rendering is two passes over the messages: the first validates and measures, the second writes into one
 * allocation of the exact size.
 */
#include "chat.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "sl_util.h"

typedef enum sl__chat_style {
    SL__CHAT_CHATML = 0,
    SL__CHAT_LLAMA3 = 1,
    SL__CHAT_MISTRAL = 2,
} sl__chat_style;

typedef enum sl__chat_gen {
    SL__GEN_NEVER = 0,     /* the template has no generation header (mistral's answer follows [/INST]) */
    SL__GEN_WHEN_ASKED = 1,
    SL__GEN_ALWAYS = 2,    /* Llama-3's first release appended the header unconditionally */
} sl__chat_gen;

/* One template version this file renders exactly, with the public Jinja source it was checked against. */
typedef struct sl__chat_known {
    const char *name;
    sl__chat_style style;
    sl__chat_gen gen;
    int default_system; /* chatml: a default system prompt when messages[0] is not "system" */
    int trim;           /* llama3: content goes through jinja's trim (Python str.strip()) */
    int mistral_v1;     /* mistral: " [INST] ", " " before answers, leading system folded into turn 1 */
    int eos_space;      /* mistral v0.1: a space after each EOS */
    const char *source;
} sl__chat_known;

/* The sources are the models' tokenizer_config.json chat_template after JSON decoding (a "\n" there is a real
 * newline here; a "\\n" there is Jinja's own escape, written "\\n" here too). tests/gen_chat_fixtures.py holds
 * the same strings. */
static const sl__chat_known sl__chat_table[] = {
    /* teknium/OpenHermes-2.5-Mistral-7B */
    {"chatml", SL__CHAT_CHATML, SL__GEN_WHEN_ASKED, 0, 0, 0, 0,
     "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>'"
     " + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"},
    /* HuggingFaceTB/SmolLM2-135M-Instruct (Qwen2-Instruct has this shape with its own prompt) */
    {"smollm", SL__CHAT_CHATML, SL__GEN_WHEN_ASKED, 1, 0, 0, 0,
     "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
     "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>'"
     " + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt"
     " %}{{ '<|im_start|>assistant\n' }}{% endif %}"},
    /* meta-llama/Meta-Llama-3-8B-Instruct, current revision */
    {"llama3", SL__CHAT_LLAMA3, SL__GEN_WHEN_ASKED, 0, 1, 0, 0,
     "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' +"
     " message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0"
     " %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{"
     " '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"},
    /* meta-llama/Meta-Llama-3-8B-Instruct, first release */
    {"llama3", SL__CHAT_LLAMA3, SL__GEN_ALWAYS, 0, 1, 0, 0,
     "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' +"
     " message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0"
     " %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{{"
     " '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"},
    /* mistralai/Mistral-7B-Instruct-v0.2, original template */
    {"mistral", SL__CHAT_MISTRAL, SL__GEN_NEVER, 0, 0, 0, 0,
     "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{"
     " raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if"
     " message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] =="
     " 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles"
     " are supported!') }}{% endif %}{% endfor %}"},
    /* mistralai/Mistral-7B-Instruct-v0.1, original template */
    {"mistral-v0.1", SL__CHAT_MISTRAL, SL__GEN_NEVER, 0, 0, 0, 1,
     "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{"
     " raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if"
     " message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] =="
     " 'assistant' %}{{ message['content'] + eos_token + ' ' }}{% else %}{{ raise_exception('Only user and"
     " assistant roles are supported!') }}{% endif %}{% endfor %}"},
    /* mistralai/Mistral-7B-Instruct-v0.1 and v0.2, later revision ("v1" tokenizer) */
    {"mistral-v1", SL__CHAT_MISTRAL, SL__GEN_NEVER, 0, 0, 1, 0,
     "{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = messages[0]['content'] %}\n    {%- set"
     " loop_messages = messages[1:] %}\n{%- else %}\n    {%- set loop_messages = messages %}\n{%- endif %}\n\n{{-"
     " bos_token }}\n{%- for message in loop_messages %}\n    {%- if (message['role'] == 'user') != (loop.index0 % 2"
     " == 0) %}\n        {{- raise_exception('After the optional system message, conversation roles must alternate"
     " user/assistant/user/assistant...') }}\n    {%- endif %}\n    {%- if message['role'] == 'user' %}\n        {%-"
     " if loop.first and system_message is defined %}\n            {{- ' [INST] ' + system_message + '\\n\\n' +"
     " message['content'] + ' [/INST]' }}\n        {%- else %}\n            {{- ' [INST] ' + message['content'] + '"
     " [/INST]' }}\n        {%- endif %}\n    {%- elif message['role'] == 'assistant' %}\n        {{- ' ' +"
     " message['content'] + eos_token}}\n    {%- else %}\n        {{- raise_exception('Only user and assistant roles"
     " are supported, with the exception of an initial optional system message!') }}\n    {%- endif %}\n{%- endfor"
     " %}\n"},
};

/* Unique names in table order: the first row of a name is what an override selects. */
static const char *const sl__chat_names[] = {"chatml", "smollm", "llama3", "mistral", "mistral-v0.1", "mistral-v1"};

#define SL__CHAT_NAME_HINT "chatml, smollm, llama3, mistral, mistral-v0.1, mistral-v1"

struct sl_chat_template {
    const sl__chat_known *known; /* the row rendered (static) */
    char *bos;                   /* BOS text, "" when the tokenizer has none; owned */
    char *eos;                   /* EOS text, likewise */
    char *default_system;        /* chatml with default_system: the prompt text; owned, else NULL */
};

const char *const *sl_chat_template_names(size_t *n) {
    if (n) *n = SL_ARRAY_LEN(sl__chat_names);
    return sl__chat_names;
}

const char *sl_chat_template_name(const sl_chat_template *t) { return t->known->name; }

/* ---- canonical form ------------------------------------------------------------------------------------ */

/* A growing string; `failed` latches an allocation failure so callers check once at the end. */
typedef struct sl__sbuf {
    char *p;
    size_t len, cap;
    int failed;
} sl__sbuf;

static void sl__sbuf_put(sl__sbuf *b, const char *s, size_t n) {
    if (b->failed) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256; /* 256: most canonical forms fit in one or two doublings */
        while (cap < b->len + n + 1) cap *= 2;
        char *p = sl__realloc(b->p, cap);
        if (!p) {
            b->failed = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void sl__sbuf_putc(sl__sbuf *b, char c) { sl__sbuf_put(b, &c, 1); }

static int sl__is_word(int c) { return c == '_' || (c >= '0' && c <= '9') || ((c | 32) >= 'a' && (c | 32) <= 'z'); }
static int sl__is_space(int c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

static int sl__hex(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if ((c | 32) >= 'a' && (c | 32) <= 'f') return (c | 32) - 'a' + 10;
    return -1;
}

static void sl__put_utf8(sl__sbuf *b, uint32_t cp) {
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp, n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | (cp >> 6)), u[1] = (char)(0x80 | (cp & 0x3F)), n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12)), u[1] = (char)(0x80 | ((cp >> 6) & 0x3F)), u[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        u[0] = (char)(0xF0 | (cp >> 18)), u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F)), u[3] = (char)(0x80 | (cp & 0x3F)), n = 4;
    }
    sl__sbuf_put(b, u, n);
}

/* Canonical writing of a literal's decoded byte: the quote and backslash are escaped, so literal boundaries
 * stay unambiguous in the canonical form. */
static void sl__put_lit_byte(sl__sbuf *b, char c) {
    if (c == '\'' || c == '\\') sl__sbuf_putc(b, '\\');
    sl__sbuf_putc(b, c);
}

/* Decodes the string literal starting at s[*i] (a quote) the way Jinja does (Python's unicode-escape after
 * newline normalisation) and appends it canonically, without the quotes. Returns 0 if unterminated. */
static int sl__lex_string(const char *s, size_t n, size_t *i, sl__sbuf *b, int keep) {
    char q = s[*i];
    size_t k = *i + 1;
    while (k < n && s[k] != q) {
        char c = s[k];
        if (c == '\r') { /* Jinja normalises \r\n and \r to \n, inside literals too */
            if (keep) sl__sbuf_putc(b, '\n');
            k += (k + 1 < n && s[k + 1] == '\n') ? 2 : 1;
            continue;
        }
        if (c != '\\' || k + 1 >= n) {
            if (keep) sl__put_lit_byte(b, c);
            k++;
            continue;
        }
        char e = s[k + 1];
        int width = e == 'x' ? 2 : e == 'u' ? 4 : e == 'U' ? 8 : 0;
        if (width) {
            uint32_t cp = 0;
            int ok = k + 2 + (size_t)width <= n;
            for (int j = 0; ok && j < width; j++) {
                int h = sl__hex((unsigned char)s[k + 2 + (size_t)j]);
                if (h < 0) ok = 0;
                cp = cp * 16 + (uint32_t)(h < 0 ? 0 : h);
            }
            if (ok && cp <= 0x10FFFF) {
                if (keep) {
                    if (cp == '\'' || cp == '\\') sl__sbuf_putc(b, '\\');
                    sl__put_utf8(b, cp);
                }
                k += 2 + (size_t)width;
                continue;
            }
        }
        const char *simple = NULL;
        switch (e) {
        case 'n': simple = "\n"; break;
        case 't': simple = "\t"; break;
        case 'r': simple = "\r"; break;
        case '\\': simple = "\\"; break;
        case '\'': simple = "'"; break;
        case '"': simple = "\""; break;
        case '\n': simple = ""; break; /* a backslash-newline continues the line */
        default: break;
        }
        if (simple) {
            if (keep && *simple) sl__put_lit_byte(b, *simple);
            k += 2;
        } else { /* unknown escapes stay as written, as in Python */
            if (keep) sl__put_lit_byte(b, '\\');
            k++;
        }
    }
    if (k >= n) return 0;
    *i = k + 1;
    return 1;
}

/* Whether the text src[a, b) between two tags prints nothing under trim_blocks + lstrip_blocks and the
 * tags' marks. prev: the closing of the tag before ('%' block, '}' variable, '#' comment, 0 at the start),
 * prev_mode: '-' or '+' before its closing, or 0. next: the opening of the tag after ('%', '{', '#', 0 at the
 * end), next_mode: '-' or '+' after its opening, or 0. */
static int sl__text_vanishes(const char *src, size_t a, size_t b, char prev, char prev_mode, char next,
                             char next_mode) {
    size_t lo = a, hi = b;
    /* Right side first, on the original text: lstrip_blocks needs to know where the line starts. */
    if (next_mode == '-') {
        while (hi > lo && sl__is_space((unsigned char)src[hi - 1])) hi--;
    } else if (next == '%' || next == '#') {
        if (next_mode != '+') {
            size_t ls = hi;
            while (ls > a && (src[ls - 1] == ' ' || src[ls - 1] == '\t')) ls--;
            if ((ls > a && src[ls - 1] == '\n') || (ls == a && a == 0)) hi = ls;
        }
    }
    if (prev_mode == '-') {
        while (lo < hi && sl__is_space((unsigned char)src[lo])) lo++;
    } else if ((prev == '%' || prev == '#') && prev_mode != '+') {
        /* trim_blocks: the first newline after a block or comment goes */
        if (lo < hi && src[lo] == '\n') lo++;
        else if (lo + 1 < hi && src[lo] == '\r' && src[lo + 1] == '\n') lo += 2;
    }
    return lo >= hi;
}

/* Appends the canonical form of the inside of one {{ }} or {% %} tag, src[a, b). Returns 0 on an
 * unterminated string literal. */
static int sl__canon_tag(const char *src, size_t a, size_t b, sl__sbuf *out) {
    size_t i = a;
    int pending_space = 0;
    size_t lit_close = (size_t)-1; /* position in out just past the last literal's closing quote */
    while (i < b) {
        unsigned char c = (unsigned char)src[i];
        if (sl__is_space(c)) {
            pending_space = 1;
            i++;
            continue;
        }
        if (c == '\'' || c == '"') {
            int in_raise = out->len >= 16 && memcmp(out->p + out->len - 16, "raise_exception(", 16) == 0;
            if (!in_raise && lit_close != (size_t)-1 && out->len == lit_close + 1 && out->p[lit_close] == '+') {
                out->len = lit_close - 1; /* 'a' + 'b' is 'ab': reopen the previous literal */
                out->p[out->len] = 0;
            } else {
                sl__sbuf_putc(out, '\'');
            }
            if (!sl__lex_string(src, b, &i, out, !in_raise)) return 0; /* raise_exception's text is not output */
            sl__sbuf_putc(out, '\'');
            lit_close = out->len;
            pending_space = 0;
            continue;
        }
        if (pending_space && out->len && sl__is_word((unsigned char)out->p[out->len - 1]) && sl__is_word(c))
            sl__sbuf_putc(out, ' ');
        pending_space = 0;
        if (c == '.' && i + 1 < b && sl__is_word((unsigned char)src[i + 1]) &&
            !(src[i + 1] >= '0' && src[i + 1] <= '9') && out->len &&
            (sl__is_word((unsigned char)out->p[out->len - 1]) || out->p[out->len - 1] == ']' ||
             out->p[out->len - 1] == ')')) {
            size_t j = i + 1;
            while (j < b && sl__is_word((unsigned char)src[j])) j++;
            size_t k = j;
            while (k < b && sl__is_space((unsigned char)src[k])) k++;
            if (k < b && src[k] == '(') { /* a method call stays a method call */
                sl__sbuf_put(out, src + i, j - i);
            } else { /* x.name is x['name'] */
                sl__sbuf_put(out, "['", 2);
                sl__sbuf_put(out, src + i + 1, j - i - 1);
                sl__sbuf_put(out, "']", 2);
                lit_close = (size_t)-1;
            }
            i = j;
            continue;
        }
        sl__sbuf_putc(out, (char)c);
        i++;
    }
    return 1;
}

/* The canonical form of a Jinja template source (see the top of the file). Returns SL_OK, SL_UNSUPPORTED with
 * a reason in *why (static text), or SL_OUT_OF_MEMORY. */
static sl_status sl__chat_canon(const char *src, sl__sbuf *out, const char **why) {
    size_t n = strlen(src);
    /* Jinja drops one trailing newline of the source (keep_trailing_newline=False). */
    if (n && src[n - 1] == '\n') n -= (n >= 2 && src[n - 2] == '\r') ? 2 : 1;
    size_t pos = 0;
    char prev = 0, prev_mode = 0;
    for (;;) {
        size_t t = pos;
        while (t + 1 < n && !(src[t] == '{' && (src[t + 1] == '{' || src[t + 1] == '%' || src[t + 1] == '#'))) t++;
        if (t + 1 >= n) t = n;
        char next = t < n ? src[t + 1] : 0;
        char mode = (t + 2 < n && (src[t + 2] == '-' || src[t + 2] == '+')) ? src[t + 2] : 0;
        if (!sl__text_vanishes(src, pos, t, prev, prev_mode, next, mode)) {
            *why = "it prints text outside its tags";
            return SL_UNSUPPORTED;
        }
        if (t >= n) break;
        size_t a = t + 2 + (mode ? 1 : 0);
        const char *close = next == '{' ? "}}" : next == '%' ? "%}" : "#}";
        size_t e = a;
        if (next == '#') {
            while (e + 1 < n && !(src[e] == '#' && src[e + 1] == '}')) e++;
        } else {
            /* Find the closing delimiter outside string literals. */
            while (e + 1 < n && !(src[e] == close[0] && src[e + 1] == close[1])) {
                if (src[e] == '\'' || src[e] == '"') {
                    sl__sbuf scratch = {0};
                    if (!sl__lex_string(src, n, &e, &scratch, 0)) break;
                    continue;
                }
                e++;
            }
        }
        if (e + 1 >= n) {
            *why = "a tag is not closed";
            return SL_UNSUPPORTED;
        }
        int dash = e > a && (src[e - 1] == '-' || src[e - 1] == '+');
        size_t inner_end = dash ? e - 1 : e;
        if (next != '#') {
            size_t k = a;
            while (k < inner_end && sl__is_space((unsigned char)src[k])) k++;
            if (next == '%' && inner_end - k >= 3 && memcmp(src + k, "raw", 3) == 0 &&
                (k + 3 == inner_end || !sl__is_word((unsigned char)src[k + 3]))) {
                *why = "it uses {% raw %}";
                return SL_UNSUPPORTED;
            }
            sl__sbuf_put(out, next == '{' ? "{{" : "{%", 2);
            if (!sl__canon_tag(src, a, inner_end, out)) {
                *why = "a string literal is not closed";
                return SL_UNSUPPORTED;
            }
            sl__sbuf_put(out, close, 2);
        }
        prev = next == '{' ? '}' : next;
        prev_mode = dash ? src[e - 1] : 0;
        pos = e + 2;
    }
    return out->failed ? sl__errorf(SL_OUT_OF_MEMORY, "chat template: out of memory") : SL_OK;
}

/* ChatML's default system prompt is the one free part of a template: cuts the text out of the canonical
 * literal '<|im_start|>system\n...<|im_end|>\n' (replacing it with "\x01") and returns it unescaped in *text
 * (NULL if there is none). */
static sl_status sl__chat_cut_system(sl__sbuf *canon, char **text) {
    static const char open[] = "'<|im_start|>system\n";
    static const char close[] = "<|im_end|>\n'";
    *text = NULL;
    if (!canon->p) return SL_OK;
    char *a = strstr(canon->p, open);
    if (!a) return SL_OK;
    char *body = a + sizeof open - 1;
    char *z = body;
    while (*z && *z != '\'') z += (*z == '\\' && z[1]) ? 2 : 1; /* end of this literal */
    if (*z != '\'' || (size_t)(z - body) < sizeof close - 2 || memcmp(z - (sizeof close - 2), close, sizeof close - 2))
        return SL_OK;
    char *body_end = z - (sizeof close - 2);
    char *t = sl__malloc((size_t)(body_end - body) + 1);
    if (!t) return sl__errorf(SL_OUT_OF_MEMORY, "chat template: out of memory");
    size_t m = 0;
    for (char *p = body; p < body_end; p++) {
        if (*p == '\\' && p + 1 < body_end) p++;
        t[m++] = *p;
    }
    t[m] = 0;
    /* canon becomes ...'<|im_start|>system\n\x01<|im_end|>\n'... */
    sl__sbuf cut = {0};
    sl__sbuf_put(&cut, canon->p, (size_t)(body - canon->p));
    sl__sbuf_putc(&cut, '\x01');
    sl__sbuf_put(&cut, body_end, canon->len - (size_t)(body_end - canon->p));
    if (cut.failed) {
        free(cut.p);
        free(t);
        return sl__errorf(SL_OUT_OF_MEMORY, "chat template: out of memory");
    }
    free(canon->p);
    *canon = cut;
    *text = t;
    return SL_OK;
}

/* Canonical form plus cut-out default system prompt of a source. */
static sl_status sl__chat_reduce(const char *src, sl__sbuf *canon, char **system_text, const char **why) {
    sl_status st = sl__chat_canon(src, canon, why);
    if (st == SL_OK) st = sl__chat_cut_system(canon, system_text);
    return st;
}

/* Which family a source's markers suggest, for the refusal's hint. */
static const char *sl__chat_family_hint(const char *src) {
    if (strstr(src, "<|start_header_id|>")) return "llama3";
    if (strstr(src, "[INST]")) return "mistral";
    if (strstr(src, "<|im_start|>")) return "chatml";
    return NULL;
}

static sl_status sl__chat_recognise(const char *src, const sl__chat_known **known, char **system_text) {
    sl__sbuf canon = {0};
    const char *why = NULL;
    *known = NULL;
    *system_text = NULL;
    sl_status st = sl__chat_reduce(src, &canon, system_text, &why);
    for (size_t i = 0; st == SL_OK && !*known && i < SL_ARRAY_LEN(sl__chat_table); i++) {
        sl__sbuf ref = {0};
        char *ref_system = NULL;
        const char *ref_why = NULL;
        st = sl__chat_reduce(sl__chat_table[i].source, &ref, &ref_system, &ref_why);
        SL_ASSERT(st != SL_UNSUPPORTED); /* our own table must reduce */
        if (st == SL_OK && ref.len == canon.len && memcmp(ref.p, canon.p, canon.len) == 0) *known = &sl__chat_table[i];
        free(ref.p);
        free(ref_system);
    }
    free(canon.p);
    if (st == SL_OK && *known) return SL_OK;
    free(*system_text);
    *system_text = NULL;
    if (st == SL_OUT_OF_MEMORY) return st;
    const char *family = sl__chat_family_hint(src);
    char hint[160];
    if (family)
        snprintf(hint, sizeof hint, " (it looks like %s%s%s, but is not a version Sluice renders exactly)", family,
                 why ? " and " : "", why ? why : "");
    else
        snprintf(hint, sizeof hint, "%s%s%s", why ? " (" : "", why ? why : "", why ? ")" : "");
    return sl__errorf(SL_UNSUPPORTED, "unrecognised chat template%s; pass --chat-template NAME (%s)", hint,
                      SL__CHAT_NAME_HINT);
}

sl_status sl_chat_template_create(const char *jinja_src, const char *override_name, const char *bos_text,
                                  const char *eos_text, sl_chat_template **out) {
    *out = NULL;
    const sl__chat_known *known = NULL;
    char *system_text = NULL;
    sl_status st;
    if (override_name) {
        for (size_t i = 0; i < SL_ARRAY_LEN(sl__chat_table) && !known; i++)
            if (strcasecmp(override_name, sl__chat_table[i].name) == 0) known = &sl__chat_table[i];
        if (!known)
            return sl__errorf(SL_INVALID_ARGUMENT, "unknown chat template '%.64s' (known: %s)", override_name,
                              SL__CHAT_NAME_HINT);
        if (known->default_system && jinja_src) {
            /* The model's own prompt when its source has one, whatever the rest of the source says. */
            sl__sbuf canon = {0};
            const char *why = NULL;
            st = sl__chat_reduce(jinja_src, &canon, &system_text, &why);
            free(canon.p);
            if (st == SL_OUT_OF_MEMORY) return st;
        }
    } else if (!jinja_src || !*jinja_src) {
        return sl__errorf(SL_UNSUPPORTED, "the model has no chat template; pass --chat-template NAME (%s)",
                          SL__CHAT_NAME_HINT);
    } else if ((st = sl__chat_recognise(jinja_src, &known, &system_text)) != SL_OK) {
        return st;
    }
    if (known->default_system && !system_text) {
        /* Override without a usable source: the prompt of the table's own source (SmolLM2's). */
        sl__sbuf canon = {0};
        const char *why = NULL;
        st = sl__chat_reduce(known->source, &canon, &system_text, &why);
        free(canon.p);
        if (st != SL_OK) return st;
        SL_ASSERT(system_text != NULL);
    }
    if (!known->default_system) {
        free(system_text);
        system_text = NULL;
    }
    sl_chat_template *t = sl__calloc(1, sizeof *t);
    if (!t) goto oom;
    t->known = known;
    t->default_system = system_text;
    system_text = NULL;
    t->bos = sl__strdup(bos_text ? bos_text : "");
    t->eos = sl__strdup(eos_text ? eos_text : "");
    if (!t->bos || !t->eos) goto oom;
    *out = t;
    return SL_OK;
oom:
    free(system_text);
    sl_chat_template_free(t);
    return sl__errorf(SL_OUT_OF_MEMORY, "chat template: out of memory");
}

void sl_chat_template_free(sl_chat_template *t) {
    if (!t) return;
    free(t->bos);
    free(t->eos);
    free(t->default_system);
    free(t);
}

/* ---- rendering ----------------------------------------------------------------------------------------- */

/* Output of a rendering pass: counts only when buf is NULL (first pass), writes otherwise. */
typedef struct sl__emit {
    char *buf;
    size_t len;
    int overflow;
} sl__emit;

static void sl__emit_n(sl__emit *o, const char *s, size_t n) {
    if (o->buf) memcpy(o->buf + o->len, s, n);
    if (!sl__add_size(o->len, n, &o->len)) o->overflow = 1;
}

static void sl__emit_s(sl__emit *o, const char *s) { sl__emit_n(o, s, strlen(s)); }

/* Decodes the UTF-8 code point at s[i] (bounded by n); *w receives its width. -1 for a malformed sequence. */
static int32_t sl__utf8_at(const unsigned char *s, size_t n, size_t i, size_t *w) {
    unsigned char c = s[i];
    int len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    *w = 1;
    if (!len || i + (size_t)len > n) return -1;
    int32_t cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
    for (int k = 1; k < len; k++) {
        if ((s[i + (size_t)k] & 0xC0) != 0x80) return -1;
        cp = (cp << 6) | (s[i + (size_t)k] & 0x3F);
    }
    *w = (size_t)len;
    return cp;
}

/* Python's str.isspace(), which jinja's trim filter (str.strip()) uses. */
static int sl__py_space(int32_t cp) {
    return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
           cp == 0x3000;
}

/* The span of s that Python's str.strip() keeps: [*a, *b). */
static void sl__py_strip(const char *s, size_t n, size_t *a, size_t *b) {
    const unsigned char *u = (const unsigned char *)s;
    size_t lo = 0, hi = n, w;
    while (lo < hi) {
        int32_t cp = sl__utf8_at(u, hi, lo, &w);
        if (cp < 0 || !sl__py_space(cp)) break;
        lo += w;
    }
    while (hi > lo) {
        size_t st = hi - 1;
        while (st > lo && hi - st < 4 && (u[st] & 0xC0) == 0x80) st--; /* back to the lead byte (at most 4) */
        int32_t cp = sl__utf8_at(u, hi, st, &w);
        if (cp < 0 || st + w != hi || !sl__py_space(cp)) break;
        hi = st;
    }
    *a = lo;
    *b = hi;
}

static int sl__role_is(const sl_chat_message *m, const char *role) { return strcmp(m->role, role) == 0; }

static const char *sl__content(const sl_chat_message *m) { return m->content ? m->content : ""; }

static sl_status sl__render_chatml(const sl_chat_template *t, const sl_chat_message *msgs, size_t n, int add_gen,
                                   sl__emit *o) {
    for (size_t i = 0; i < n; i++) {
        if (i == 0 && t->default_system && !sl__role_is(&msgs[0], "system")) {
            sl__emit_s(o, "<|im_start|>system\n");
            sl__emit_s(o, t->default_system);
            sl__emit_s(o, "<|im_end|>\n");
        }
        sl__emit_s(o, "<|im_start|>");
        sl__emit_s(o, msgs[i].role);
        sl__emit_s(o, "\n");
        sl__emit_s(o, sl__content(&msgs[i]));
        sl__emit_s(o, "<|im_end|>\n");
    }
    if (add_gen) sl__emit_s(o, "<|im_start|>assistant\n");
    return SL_OK;
}

static sl_status sl__render_llama3(const sl_chat_template *t, const sl_chat_message *msgs, size_t n, int add_gen,
                                   sl__emit *o) {
    for (size_t i = 0; i < n; i++) {
        if (i == 0) sl__emit_s(o, t->bos);
        sl__emit_s(o, "<|start_header_id|>");
        sl__emit_s(o, msgs[i].role);
        sl__emit_s(o, "<|end_header_id|>\n\n");
        const char *c = sl__content(&msgs[i]);
        size_t a = 0, b = strlen(c);
        if (t->known->trim) sl__py_strip(c, b, &a, &b);
        sl__emit_n(o, c + a, b - a);
        sl__emit_s(o, "<|eot_id|>");
    }
    if (t->known->gen == SL__GEN_ALWAYS || (t->known->gen == SL__GEN_WHEN_ASKED && add_gen))
        sl__emit_s(o, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    return SL_OK;
}

static sl_status sl__render_mistral(const sl_chat_template *t, const sl_chat_message *msgs, size_t n, sl__emit *o) {
    const int v1 = t->known->mistral_v1;
    const char *system = NULL;
    size_t first = 0;
    if (v1) {
        if (n == 0) /* the template reads messages[0] unconditionally: jinja2 fails too */
            return sl__errorf(SL_INVALID_ARGUMENT, "the %s chat template needs at least one message", t->known->name);
        if (sl__role_is(&msgs[0], "system")) system = sl__content(&msgs[0]), first = 1;
    }
    sl__emit_s(o, t->bos);
    for (size_t i = first; i < n; i++) {
        size_t turn = i - first;
        int user = sl__role_is(&msgs[i], "user");
        if (sl__role_is(&msgs[i], "system"))
            return sl__errorf(SL_INVALID_ARGUMENT,
                              v1 ? "message %zu: the %s chat template accepts a system message only as the first one"
                                 : "message %zu: the %s chat template has no system role (roles must alternate "
                                   "user/assistant, starting with user)",
                              i, t->known->name);
        if (user != (turn % 2 == 0))
            return sl__errorf(SL_INVALID_ARGUMENT,
                              "message %zu: the %s chat template needs roles to alternate user/assistant/user/... "
                              "starting with user%s, but this one is '%s'",
                              i, t->known->name, v1 ? " (after an optional system message)" : "", msgs[i].role);
        const char *c = sl__content(&msgs[i]);
        if (user) {
            sl__emit_s(o, v1 ? " [INST] " : "[INST] ");
            if (turn == 0 && system) {
                sl__emit_s(o, system);
                sl__emit_s(o, "\n\n");
            }
            sl__emit_s(o, c);
            sl__emit_s(o, " [/INST]");
        } else {
            if (v1) sl__emit_s(o, " ");
            sl__emit_s(o, c);
            sl__emit_s(o, t->eos);
            if (t->known->eos_space) sl__emit_s(o, " ");
        }
    }
    return SL_OK;
}

static sl_status sl__render(const sl_chat_template *t, const sl_chat_message *msgs, size_t n, int add_gen,
                            sl__emit *o) {
    switch (t->known->style) {
    case SL__CHAT_CHATML: return sl__render_chatml(t, msgs, n, add_gen, o);
    case SL__CHAT_LLAMA3: return sl__render_llama3(t, msgs, n, add_gen, o);
    case SL__CHAT_MISTRAL: return sl__render_mistral(t, msgs, n, o);
    }
    SL_ASSERT(!"unknown chat template style");
    return SL_INTERNAL;
}

sl_status sl_chat_render(const sl_chat_template *t, const sl_chat_message *msgs, size_t n,
                         int add_generation_prompt, char **out) {
    *out = NULL;
    if (!t) return sl__errorf(SL_INVALID_ARGUMENT, "no chat template");
    if (n && !msgs) return sl__errorf(SL_INVALID_ARGUMENT, "chat: %zu messages but no array", n);
    for (size_t i = 0; i < n; i++) {
        const char *r = msgs[i].role;
        if (!r) return sl__errorf(SL_INVALID_ARGUMENT, "message %zu has no role", i);
        if (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant"))
            return sl__errorf(SL_INVALID_ARGUMENT,
                              "message %zu: role '%.32s' is not supported (use system, user or assistant)", i, r);
    }
    sl__emit measure = {0};
    sl_status st = sl__render(t, msgs, n, add_generation_prompt, &measure);
    if (st != SL_OK) return st;
    if (measure.overflow || measure.len == SIZE_MAX)
        return sl__errorf(SL_INVALID_ARGUMENT, "chat: the rendered conversation is too large");
    sl__emit write = {sl__malloc(measure.len + 1), 0, 0};
    if (!write.buf) return sl__errorf(SL_OUT_OF_MEMORY, "chat: out of memory for %zu bytes", measure.len + 1);
    st = sl__render(t, msgs, n, add_generation_prompt, &write);
    SL_ASSERT(st == SL_OK && write.len == measure.len);
    write.buf[write.len] = 0;
    *out = write.buf;
    return SL_OK;
}
