/*
 * config.c — the settings table turned into a parser for flags, environment and YAML, --help and
 * --print-config (see config.h for the rules a user sees).
 *
 * The table becomes one array of key descriptors (name, type, range, the field's offset in sl_config); every
 * source goes through the same sl__cfg_set(), which parses the text for the row's type, checks its range and
 * stores it with its origin. So a value means the same thing and fails with the same words whether it came
 * from a flag, a variable or the file, and the defaults themselves go through the parser at init (a bad
 * default in the table is our bug: it asserts).
 *
 * Loading is two passes over argv: the first finds --config/--help/--print-config, collects rest[] and
 * checks each flag has its value; then the file, the environment and finally the flags are applied, so the
 * last writer is the highest-precedence source. The YAML file is read whole (it is small; the 1 MiB bound
 * keeps a mistaken --config model.gguf from being slurped) and fed to libyaml's event parser, which we walk as
 * a tiny state machine that accepts exactly one flat mapping of scalars.
 */
#include "sluice/config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "paths.h"
#include "sl_util.h"

typedef enum sl__cfg_type {
    SL__CFG_STRING,
    SL__CFG_INT,
    SL__CFG_SIZE,
    SL__CFG_FLOAT,
    SL__CFG_BOOL,
    SL__CFG_ENUM,
} sl__cfg_type;

typedef struct sl__cfg_key {
    const char *group;
    const char *name;    /* YAML key and field name: "max_num_seqs" */
    sl__cfg_type type;
    char short_flag;     /* 'm' for -m; 0 if none */
    const char *def;     /* default, as text */
    double lo, hi;       /* inclusive range of INT, SIZE, FLOAT */
    const char *choices; /* '|'-separated ENUM names or allowed INT values; NULL if none */
    const char *help;
    size_t offset;       /* of the field in sl_config */
} sl__cfg_key;

static const sl__cfg_key sl__cfg_keys[SL_CONFIG_N_KEYS] = {
#define SL__CFG_KEY(group, name, type, shrt, def, lo, hi, choices, help)                                      \
    {group, #name, SL__CFG_##type, shrt, def, lo, hi, choices, help, offsetof(sl_config, name)},
    SL_CONFIG_TABLE(SL__CFG_KEY)
#undef SL__CFG_KEY
};

/* A parsed value, before it is stored in its field. */
typedef union sl__cfg_value {
    const char *s;
    int i;
    uint64_t u;
    double f;
} sl__cfg_value;

/* Longest key name we derive flags and variables from: "SLUICE_" + name must fit the buffers below. */
#define SL__CFG_NAME_MAX 64
/* Values quoted in messages are clipped: a binary blob in a variable should not fill the error buffer. */
#define SL__CFG_QUOTE_MAX 80
/* A config file is a screenful of keys; anything this big was not meant as one (see the top comment). */
#define SL__CFG_FILE_MAX (1u << 20)

/* ---- small text helpers ---------------------------------------------------------------------------- */

static int sl__cfg_ieq(const char *a, const char *b) {
    for (; *a && *b; a++, b++)
        if (tolower((unsigned char)*a) != tolower((unsigned char)*b)) return 0;
    return *a == *b;
}

/* "--max-num-seqs" for max_num_seqs. */
static void sl__cfg_flag_name(const sl__cfg_key *k, char *buf, size_t cap) {
    size_t n = 0;
    buf[n++] = '-';
    buf[n++] = '-';
    for (const char *p = k->name; *p && n + 1 < cap; p++) buf[n++] = *p == '_' ? '-' : *p;
    buf[n] = 0;
}

/* "SLUICE_MAX_NUM_SEQS" for max_num_seqs. */
static void sl__cfg_env_name(const sl__cfg_key *k, char *buf, size_t cap) {
    int n = snprintf(buf, cap, "SLUICE_");
    for (const char *p = k->name; *p && (size_t)n + 1 < cap; p++) buf[n++] = (char)toupper((unsigned char)*p);
    buf[n] = 0;
}

/* Does the '|'-separated list contain word (case-insensitively)? Returns its index or -1. */
static int sl__cfg_choice_index(const char *choices, const char *word) {
    int idx = 0;
    for (const char *p = choices; *p; idx++) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (strlen(word) == n) {
            size_t j = 0;
            while (j < n && tolower((unsigned char)word[j]) == tolower((unsigned char)p[j])) j++;
            if (j == n) return idx;
        }
        if (!bar) break;
        p = bar + 1;
    }
    return -1;
}

/* The index-th name of a '|'-separated list, copied into buf. */
static const char *sl__cfg_choice_name(const char *choices, int index, char *buf, size_t cap) {
    const char *p = choices;
    for (int i = 0; i < index && p; i++) {
        p = strchr(p, '|');
        if (p) p++;
    }
    SL_ASSERT(p); /* an index we stored ourselves */
    const char *bar = strchr(p, '|');
    size_t n = bar ? (size_t)(bar - p) : strlen(p);
    if (n >= cap) n = cap - 1;
    memcpy(buf, p, n);
    buf[n] = 0;
    return buf;
}

/* "f32, f16" for "f32|f16", for messages and help. */
static const char *sl__cfg_choices_list(const char *choices, char *buf, size_t cap) {
    size_t n = 0;
    for (const char *p = choices; *p && n + 3 < cap; p++) {
        if (*p == '|') {
            buf[n++] = ',';
            buf[n++] = ' ';
        } else {
            buf[n++] = *p;
        }
    }
    buf[n] = 0;
    return buf;
}

/* Binary units first: a size prints in the largest one that divides it exactly, so it reads back equal. */
static const struct {
    const char *suffix;
    uint64_t mult;
} sl__cfg_units[] = {
    {"", 1},
    {"b", 1},
    {"kib", 1ull << 10},
    {"mib", 1ull << 20},
    {"gib", 1ull << 30},
    {"tib", 1ull << 40},
    {"pib", 1ull << 50},
    {"k", 1ull << 10},
    {"m", 1ull << 20},
    {"g", 1ull << 30},
    {"t", 1ull << 40},
    {"p", 1ull << 50},
    {"kb", 1000ull},
    {"mb", 1000000ull},
    {"gb", 1000000000ull},
    {"tb", 1000000000000ull},
    {"pb", 1000000000000000ull},
};

/* "2GiB" for 2^31, "1000" for 1000: exact, and readable back by the size parser. */
static const char *sl__cfg_size_str(uint64_t v, char *buf, size_t cap) {
    static const char *const names[] = {"KiB", "MiB", "GiB", "TiB", "PiB"};
    int unit = -1;
    for (int u = 0; u < 5; u++)
        if (v && v % (1ull << (10 * (u + 1))) == 0) unit = u;
    if (unit < 0)
        snprintf(buf, cap, "%llu", (unsigned long long)v);
    else
        snprintf(buf, cap, "%llu%s", (unsigned long long)(v >> (10 * (unit + 1))), names[unit]);
    return buf;
}

/* The shortest %g that reads back as the same double. */
static const char *sl__cfg_float_str(double v, char *buf, size_t cap) {
    for (int prec = 6; prec <= 17; prec++) {
        snprintf(buf, cap, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) break;
    }
    return buf;
}

/* ---- parsing one value --------------------------------------------------------------------------------- */

/* Decimal integer with an optional sign and nothing else. 1 ok, 0 not an integer, -1 beyond long long. */
static int sl__cfg_parse_ll(const char *s, long long *out) {
    const char *d = s + (*s == '-' || *s == '+');
    if (!isdigit((unsigned char)*d)) return 0;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (*end) return 0;
    if (errno == ERANGE) return -1;
    *out = v;
    return 1;
}

/* Size in bytes (see config.h). 1 ok; 0 not a size; -1 beyond 64 bits; -2 not a whole number of bytes. */
static int sl__cfg_parse_size(const char *s, uint64_t *out) {
    const char *p = s;
    if (!isdigit((unsigned char)*p) && !(*p == '.' && isdigit((unsigned char)p[1]))) return 0;
    /* 128-bit intermediates: the whole part is kept below 2^64, the fraction below 10^18, and a unit is at
     * most 2^50, so every product below fits. */
    unsigned __int128 whole = 0, frac = 0, frac_div = 1;
    for (; isdigit((unsigned char)*p); p++) {
        whole = whole * 10 + (unsigned)(*p - '0');
        if (whole > UINT64_MAX) return -1;
    }
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p)) return 0;
        for (; isdigit((unsigned char)*p); p++) {
            if (frac_div >= 1000000000000000000ull) return 0; /* 18 fraction digits is already silly */
            frac = frac * 10 + (unsigned)(*p - '0');
            frac_div *= 10;
        }
    }
    while (*p == ' ') p++;
    uint64_t mult = 0;
    for (size_t u = 0; u < SL_ARRAY_LEN(sl__cfg_units); u++)
        if (sl__cfg_ieq(p, sl__cfg_units[u].suffix)) mult = sl__cfg_units[u].mult;
    if (!mult) return 0;
    unsigned __int128 frac_bytes = frac * mult;
    if (frac_bytes % frac_div) return -2;
    unsigned __int128 total = whole * mult + frac_bytes / frac_div;
    if (total > UINT64_MAX) return -1;
    *out = (uint64_t)total;
    return 1;
}

static int sl__cfg_parse_bool(const char *s, int *out) {
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < SL_ARRAY_LEN(yes); i++) {
        if (sl__cfg_ieq(s, yes[i])) return *out = 1, 1;
        if (sl__cfg_ieq(s, no[i])) return *out = 0, 1;
    }
    return 0;
}

/* Parses text for row k into *out. origin names the source in messages: "--port", "SLUICE_PORT",
 * "sluice.yaml:3: port". Strings are not copied (out->s points at text). */
static sl_status sl__cfg_parse(const sl__cfg_key *k, const char *text, const char *origin, sl__cfg_value *out) {
    const int q = SL__CFG_QUOTE_MAX;
    char list[256];
    if (k->type == SL__CFG_STRING) {
        out->s = text;
        return SL_OK;
    }
    if (!*text) return sl__errorf(SL_INVALID_ARGUMENT, "%s: missing value", origin);
    switch (k->type) {
    case SL__CFG_INT: {
        long long v = 0;
        int r = sl__cfg_parse_ll(text, &v);
        if (r == 0) return sl__errorf(SL_INVALID_ARGUMENT, "%s: '%.*s' is not an integer", origin, q, text);
        if (k->choices) {
            char num[32];
            snprintf(num, sizeof num, "%lld", v);
            if (r < 0 || sl__cfg_choice_index(k->choices, num) < 0)
                return sl__errorf(SL_INVALID_ARGUMENT, "%s: %.*s is not one of %s", origin, q, text,
                                  sl__cfg_choices_list(k->choices, list, sizeof list));
        }
        if (r < 0 || (double)v < k->lo || (double)v > k->hi)
            return sl__errorf(SL_INVALID_ARGUMENT, "%s: %.*s is out of range [%.0f, %.0f]", origin, q, text,
                              k->lo, k->hi);
        out->i = (int)v; /* the table's ranges lie within int */
        return SL_OK;
    }
    case SL__CFG_SIZE: {
        uint64_t v = 0;
        int r = sl__cfg_parse_size(text, &v);
        if (r == 0)
            return sl__errorf(SL_INVALID_ARGUMENT,
                              "%s: '%.*s' is not a size (a number of bytes, or with a unit: 512MiB, 2GiB, 1.5GB)",
                              origin, q, text);
        if (r == -2) return sl__errorf(SL_INVALID_ARGUMENT, "%s: %.*s is not a whole number of bytes", origin, q, text);
        if (r < 0 || (double)v < k->lo || (double)v > k->hi) {
            char lo[32], hi[32];
            return sl__errorf(SL_INVALID_ARGUMENT, "%s: %.*s is out of range [%s, %s]", origin, q, text,
                              sl__cfg_size_str((uint64_t)k->lo, lo, sizeof lo),
                              sl__cfg_size_str((uint64_t)k->hi, hi, sizeof hi));
        }
        out->u = v;
        return SL_OK;
    }
    case SL__CFG_FLOAT: {
        char *end;
        errno = 0;
        double v = strtod(text, &end);
        /* strtod also takes leading blanks, hex and "nan"/"inf": only plain decimal numbers are settings. */
        int plain = isdigit((unsigned char)text[0]) || text[0] == '.' ||
                    ((text[0] == '-' || text[0] == '+') && (isdigit((unsigned char)text[1]) || text[1] == '.'));
        if (!plain || *end || strpbrk(text, "xX"))
            return sl__errorf(SL_INVALID_ARGUMENT, "%s: '%.*s' is not a number", origin, q, text);
        if (!isfinite(v) || v < k->lo || v > k->hi) {
            char lo[32], hi[32];
            return sl__errorf(SL_INVALID_ARGUMENT, "%s: %.*s is out of range [%s, %s]", origin, q, text,
                              sl__cfg_float_str(k->lo, lo, sizeof lo), sl__cfg_float_str(k->hi, hi, sizeof hi));
        }
        out->f = v;
        return SL_OK;
    }
    case SL__CFG_BOOL:
        if (!sl__cfg_parse_bool(text, &out->i))
            return sl__errorf(SL_INVALID_ARGUMENT, "%s: '%.*s' is not a boolean (true/false, yes/no, on/off, 1/0)",
                              origin, q, text);
        return SL_OK;
    case SL__CFG_ENUM:
        out->i = sl__cfg_choice_index(k->choices, text);
        if (out->i < 0)
            return sl__errorf(SL_INVALID_ARGUMENT, "%s: '%.*s' is not one of %s", origin, q, text,
                              sl__cfg_choices_list(k->choices, list, sizeof list));
        return SL_OK;
    case SL__CFG_STRING: break;
    }
    SL_ASSERT(0 && "unknown config type");
    return SL_INTERNAL;
}

static void *sl__cfg_field(sl_config *c, const sl__cfg_key *k) { return (char *)c + k->offset; }
static const void *sl__cfg_cfield(const sl_config *c, const sl__cfg_key *k) {
    return (const char *)c + k->offset;
}

/* Stores a parsed value; a string is copied unless it is a default (static text). */
static sl_status sl__cfg_store(sl_config *c, int idx, const sl__cfg_value *v, int copy) {
    const sl__cfg_key *k = &sl__cfg_keys[idx];
    void *field = sl__cfg_field(c, k);
    switch (k->type) {
    case SL__CFG_STRING: {
        const char *s = v->s;
        if (copy) {
            char *dup = sl__strdup(v->s);
            if (!dup) return sl__errorf(SL_OUT_OF_MEMORY, "config: out of memory storing %s", k->name);
            s = dup;
        }
        if (c->owned_[idx]) free((void *)*(const char **)field);
        *(const char **)field = s;
        c->owned_[idx] = (unsigned char)copy;
        break;
    }
    case SL__CFG_INT:
    case SL__CFG_BOOL:
    case SL__CFG_ENUM: *(int *)field = v->i; break;
    case SL__CFG_SIZE: *(uint64_t *)field = v->u; break;
    case SL__CFG_FLOAT: *(double *)field = v->f; break;
    }
    return SL_OK;
}

/* Parses and stores one value from a source. */
static sl_status sl__cfg_set(sl_config *c, int idx, const char *text, sl_config_source src, int line,
                             const char *origin) {
    sl__cfg_value v;
    sl_status st = sl__cfg_parse(&sl__cfg_keys[idx], text, origin, &v);
    if (st == SL_OK) st = sl__cfg_store(c, idx, &v, 1);
    if (st != SL_OK) return st;
    c->source[idx] = (unsigned char)src;
    c->source_line[idx] = line;
    return SL_OK;
}

/* ---- names: lookup and suggestions ------------------------------------------------------------------------- */

/* The row whose name equals s[0..n) with '-' standing for '_' (flags), or -1. */
static int sl__cfg_find(const char *s, size_t n) {
    for (int i = 0; i < SL_CONFIG_N_KEYS; i++) {
        const char *name = sl__cfg_keys[i].name;
        if (strlen(name) != n) continue;
        size_t j = 0;
        while (j < n && (s[j] == name[j] || (s[j] == '-' && name[j] == '_'))) j++;
        if (j == n) return i;
    }
    return -1;
}

/* Edit distance between two short strings (both at most SL__CFG_NAME_MAX). */
static int sl__cfg_distance(const char *a, const char *b) {
    int la = (int)strlen(a), lb = (int)strlen(b);
    int row[SL__CFG_NAME_MAX + 1];
    for (int j = 0; j <= lb; j++) row[j] = j;
    for (int i = 1; i <= la; i++) {
        int diag = row[0];
        row[0] = i;
        for (int j = 1; j <= lb; j++) {
            int up = row[j];
            int best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

SL_API const char *sl_config_suggest(const char *name) {
    while (*name == '-') name++;
    char norm[SL__CFG_NAME_MAX + 1];
    size_t n = strlen(name);
    const char *eq = strchr(name, '=');
    if (eq) n = (size_t)(eq - name);
    if (n == 0 || n > SL__CFG_NAME_MAX) return NULL;
    for (size_t i = 0; i < n; i++) norm[i] = name[i] == '-' ? '_' : (char)tolower((unsigned char)name[i]);
    norm[n] = 0;
    if (strncmp(norm, "sluice_", 7) == 0 && n > 7) memmove(norm, norm + 7, n - 7 + 1);
    const char *best = NULL;
    int best_d = 0;
    for (int i = 0; i < SL_CONFIG_N_KEYS; i++) {
        int d = sl__cfg_distance(norm, sl__cfg_keys[i].name);
        if (!best || d < best_d) best = sl__cfg_keys[i].name, best_d = d;
    }
    /* One edit per four characters, at least two: catches a dropped 's' or a swapped pair without
     * "suggesting" an unrelated short key for every short typo. */
    int allowed = 1 + (int)(n / 4);
    if (allowed < 2) allowed = 2;
    return best && best_d <= allowed ? best : NULL;
}

/* ---- init / free -------------------------------------------------------------------------------------------- */

SL_API void sl_config_init(sl_config *c) {
    memset(c, 0, sizeof *c);
    for (int i = 0; i < SL_CONFIG_N_KEYS; i++) {
        const sl__cfg_key *k = &sl__cfg_keys[i];
        SL_ASSERT(strlen(k->name) <= SL__CFG_NAME_MAX);
        sl__cfg_value v;
        sl_status st = sl__cfg_parse(k, k->def, k->name, &v);
        SL_ASSERT(st == SL_OK); /* the table's own defaults */
        st = sl__cfg_store(c, i, &v, 0);
        SL_ASSERT(st == SL_OK); /* nothing is copied */
        c->source[i] = SL_CONFIG_SRC_DEFAULT;
    }
}

SL_API void sl_config_free(sl_config *c) {
    for (int i = 0; i < SL_CONFIG_N_KEYS; i++)
        if (c->owned_[i]) free((void *)*(const char **)sl__cfg_field(c, &sl__cfg_keys[i]));
    free((void *)c->config_path);
    sl_config_init(c);
}

/* ---- the YAML file ------------------------------------------------------------------------------------------ */

static int sl__cfg_is_null(const yaml_event_t *ev) {
    if (ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return 0;
    const char *s = (const char *)ev->data.scalar.value;
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

/* Line (1-based) of byte offset off in buf[0..n). */
static size_t sl__cfg_line_of(const char *buf, size_t n, size_t off) {
    size_t line = 1;
    for (size_t i = 0; i < off && i < n; i++) line += buf[i] == '\n';
    return line;
}

/* Handles one parser event; *key is the row whose value comes next (-1: a key comes next). */
static sl_status sl__cfg_yaml_event(sl_config *c, const char *path, const yaml_event_t *ev, int *depth, int *key,
                                    int *n_docs, int seen_line[]) {
    size_t line = ev->start_mark.line + 1;
    const int q = SL__CFG_QUOTE_MAX;
    const char *under = *key >= 0 ? sl__cfg_keys[*key].name : NULL;
    switch (ev->type) {
    case YAML_NO_EVENT:
    case YAML_STREAM_START_EVENT:
    case YAML_STREAM_END_EVENT:
    case YAML_DOCUMENT_END_EVENT: return SL_OK;
    case YAML_DOCUMENT_START_EVENT:
        if (++*n_docs > 1)
            return sl__errorf(SL_INVALID_ARGUMENT, "%s:%zu: a second YAML document; a config file is one mapping",
                              path, line);
        return SL_OK;
    case YAML_ALIAS_EVENT:
        return sl__errorf(SL_INVALID_ARGUMENT, "%s:%zu: aliases (*%.*s) are not supported in a config file", path,
                          line, q, (const char *)ev->data.alias.anchor);
    case YAML_SEQUENCE_START_EVENT:
        if (under)
            return sl__errorf(SL_INVALID_ARGUMENT, "%s:%zu: %s: a list is not a value; settings are scalars", path,
                              line, under);
        return sl__errorf(SL_INVALID_ARGUMENT, "%s:%zu: a list where a key was expected; a config file is a flat "
                          "mapping of key: value", path, line);
    case YAML_MAPPING_START_EVENT:
        if (*depth > 0) {
            if (under)
                return sl__errorf(SL_INVALID_ARGUMENT, "%s:%zu: %s: nested mapping; a config file is a flat mapping "
                                  "of key: value", path, line, under);
            return sl__errorf(SL_INVALID_ARGUMENT, "%s:%zu: a mapping used as a key", path, line);
        }
        if (ev->data.mapping_start.anchor)
            return sl__errorf(SL_INVALID_ARGUMENT, "%s:%zu: anchors (&%.*s) are not supported in a config file",
                              path, line, q, (const char *)ev->data.mapping_start.anchor);
        *depth = 1;
        return SL_OK;
    case YAML_MAPPING_END_EVENT:
    case YAML_SEQUENCE_END_EVENT: /* never reached: a sequence start already failed */
        *depth = 0;
        return SL_OK;
    case YAML_SCALAR_EVENT: break;
    }
    const char *text = (const char *)ev->data.scalar.value;
    if (ev->data.scalar.anchor)
        return sl__errorf(SL_INVALID_ARGUMENT, "%s:%zu: anchors (&%.*s) are not supported in a config file", path,
                          line, q, (const char *)ev->data.scalar.anchor);
    if (*depth == 0) {
        if (sl__cfg_is_null(ev)) return SL_OK; /* an empty document: no settings */
        return sl__errorf(SL_INVALID_ARGUMENT, "%s:%zu: '%.*s': a config file is a mapping of key: value", path,
                          line, q, text);
    }
    if (*key < 0) {
        int idx = sl__cfg_find(text, strlen(text));
        /* Flags may spell '_' as '-', but the file has one spelling: the key. */
        if (idx >= 0 && strcmp(text, sl__cfg_keys[idx].name) != 0) idx = -1;
        if (idx < 0) {
            const char *hint = sl_config_suggest(text);
            if (hint)
                return sl__errorf(SL_INVALID_ARGUMENT, "%s:%zu: unknown key '%.*s' (did you mean %s?)", path, line,
                                  q, text, hint);
            return sl__errorf(SL_INVALID_ARGUMENT, "%s:%zu: unknown key '%.*s' (sluice --help lists the settings)",
                              path, line, q, text);
        }
        if (seen_line[idx])
            return sl__errorf(SL_INVALID_ARGUMENT, "%s:%zu: duplicate key '%s' (first at line %d)", path, line,
                              text, seen_line[idx]);
        seen_line[idx] = (int)line;
        *key = idx;
        return SL_OK;
    }
    const sl__cfg_key *k = &sl__cfg_keys[*key];
    char origin[4096 + SL__CFG_NAME_MAX];
    snprintf(origin, sizeof origin, "%s:%zu: %s", path, line, k->name);
    const char *value = k->type == SL__CFG_STRING && sl__cfg_is_null(ev) ? "" : text;
    sl_status st = sl__cfg_set(c, *key, value, SL_CONFIG_SRC_FILE, (int)line, origin);
    *key = -1;
    return st;
}

static sl_status sl__cfg_load_file(sl_config *c, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return sl__errorf(errno == ENOENT ? SL_NOT_FOUND : SL_IO, "config file %s: %s", path, strerror(errno));
    char *buf = sl__malloc(SL__CFG_FILE_MAX + 1);
    if (!buf) {
        fclose(f);
        return sl__errorf(SL_OUT_OF_MEMORY, "config file %s: out of memory", path);
    }
    size_t n = fread(buf, 1, SL__CFG_FILE_MAX + 1, f);
    int read_error = ferror(f) ? errno : 0; /* EISDIR for --config /etc, say */
    fclose(f);
    sl_status st = SL_OK;
    yaml_parser_t parser;
    int parser_ready = 0;
    if (read_error) {
        st = sl__errorf(SL_IO, "config file %s: %s", path, strerror(read_error));
        goto out;
    }
    if (n > SL__CFG_FILE_MAX) {
        st = sl__errorf(SL_INVALID_ARGUMENT, "config file %s: larger than %u bytes; is it really a config file?",
                        path, SL__CFG_FILE_MAX);
        goto out;
    }
    /* libyaml's reader would call a NUL a control character at a byte offset; a line is more useful. */
    const char *nul = memchr(buf, 0, n);
    if (nul) {
        st = sl__errorf(SL_BAD_FORMAT, "%s:%zu: binary data (a NUL byte); a config file is YAML text", path,
                        sl__cfg_line_of(buf, n, (size_t)(nul - buf)));
        goto out;
    }
    if (!yaml_parser_initialize(&parser)) {
        st = sl__errorf(SL_OUT_OF_MEMORY, "config file %s: out of memory", path);
        goto out;
    }
    parser_ready = 1;
    yaml_parser_set_input_string(&parser, (const unsigned char *)buf, n);

    int depth = 0, key = -1, n_docs = 0, done = 0;
    int seen_line[SL_CONFIG_N_KEYS] = {0};
    while (!done && st == SL_OK) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&parser, &ev)) {
            size_t line = parser.error == YAML_READER_ERROR ? sl__cfg_line_of(buf, n, parser.problem_offset)
                                                            : parser.problem_mark.line + 1;
            const char *problem = parser.problem ? parser.problem : "malformed YAML";
            if (parser.context)
                st = sl__errorf(SL_BAD_FORMAT, "%s:%zu: %s (%s)", path, line, problem, parser.context);
            else
                st = sl__errorf(SL_BAD_FORMAT, "%s:%zu: %s", path, line, problem);
            break;
        }
        done = ev.type == YAML_STREAM_END_EVENT;
        st = sl__cfg_yaml_event(c, path, &ev, &depth, &key, &n_docs, seen_line);
        yaml_event_delete(&ev);
    }
out:
    if (parser_ready) yaml_parser_delete(&parser);
    free(buf);
    return st;
}

/* ---- environment and flags --------------------------------------------------------------------------------- */

static sl_status sl__cfg_load_env(sl_config *c) {
    for (int i = 0; i < SL_CONFIG_N_KEYS; i++) {
        char var[8 + SL__CFG_NAME_MAX];
        sl__cfg_env_name(&sl__cfg_keys[i], var, sizeof var);
        const char *v = getenv(var);
        if (!v || !*v) continue; /* `SLUICE_PORT= cmd` unsets, as shells mean it */
        sl_status st = sl__cfg_set(c, i, v, SL_CONFIG_SRC_ENV, 0, var);
        if (st != SL_OK) return st;
    }
    return SL_OK;
}

static sl_status sl__cfg_rest(char *arg, char **rest, int *n_rest) {
    if (!rest) {
        const char *hint = arg[0] == '-' && arg[1] ? sl_config_suggest(arg) : NULL;
        if (hint) {
            char flag[4 + SL__CFG_NAME_MAX];
            sl__cfg_flag_name(&sl__cfg_keys[sl__cfg_find(hint, strlen(hint))], flag, sizeof flag);
            return sl__errorf(SL_INVALID_ARGUMENT, "unknown flag '%.*s' (did you mean %s?)", SL__CFG_QUOTE_MAX, arg,
                              flag);
        }
        return sl__errorf(SL_INVALID_ARGUMENT, "unexpected argument '%.*s'", SL__CFG_QUOTE_MAX, arg);
    }
    rest[(*n_rest)++] = arg;
    return SL_OK;
}

/* One pass over argv. apply == 0: meta flags, rest[], syntax (a value for every flag that needs one).
 * apply == 1: the settings' values, in order, so the last of a repeated flag wins. */
static sl_status sl__cfg_scan_args(sl_config *c, int argc, char **argv, char **rest, int *n_rest, int apply) {
    for (int i = 0; i < argc; i++) {
        char *a = argv[i];
        if (a[0] != '-' || a[1] == 0) { /* positional; "-" alone is one too (stdin, by convention) */
            if (!apply && sl__cfg_rest(a, rest, n_rest) != SL_OK) return SL_INVALID_ARGUMENT;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            for (; !apply && i < argc; i++)
                if (sl__cfg_rest(argv[i], rest, n_rest) != SL_OK) return SL_INVALID_ARGUMENT;
            break;
        }
        int idx = -1, negated = 0;
        const char *inline_value = NULL; /* after '=' (or after a short flag's letter) */
        char origin[4 + SL__CFG_NAME_MAX];
        if (a[1] == '-') {
            const char *name = a + 2;
            const char *eq = strchr(name, '=');
            size_t n = eq ? (size_t)(eq - name) : strlen(name);
            if (eq) inline_value = eq + 1;
            if (n == 4 && !strncmp(name, "help", 4)) {
                c->help = 1;
                continue;
            }
            if (n == 12 && !strncmp(name, "print-config", 12)) {
                c->print_config = 1;
                continue;
            }
            if (n == 6 && !strncmp(name, "config", 6)) {
                const char *path = inline_value;
                if (!path) {
                    if (i + 1 >= argc) return sl__errorf(SL_INVALID_ARGUMENT, "--config: missing file name");
                    path = argv[++i];
                }
                if (!apply) {
                    char *dup = sl__strdup(path);
                    if (!dup) return sl__errorf(SL_OUT_OF_MEMORY, "--config: out of memory");
                    free((void *)c->config_path);
                    c->config_path = dup;
                }
                continue;
            }
            idx = sl__cfg_find(name, n);
            if (idx < 0 && n > 3 && !strncmp(name, "no-", 3)) {
                idx = sl__cfg_find(name + 3, n - 3);
                if (idx >= 0 && sl__cfg_keys[idx].type != SL__CFG_BOOL) idx = -1;
                negated = idx >= 0;
            }
            snprintf(origin, sizeof origin, "--%.*s", (int)SL_MIN(n, (size_t)SL__CFG_NAME_MAX), name);
        } else {
            if (a[1] == 'h' && a[2] == 0) {
                c->help = 1;
                continue;
            }
            for (int k = 0; k < SL_CONFIG_N_KEYS; k++)
                if (sl__cfg_keys[k].short_flag == a[1]) idx = k;
            if (idx >= 0 && a[2]) inline_value = a[2] == '=' ? a + 3 : a + 2;
            snprintf(origin, sizeof origin, "-%c", a[1]);
        }
        if (idx < 0) { /* not ours: the subcommand's parser decides */
            if (!apply && sl__cfg_rest(a, rest, n_rest) != SL_OK) return SL_INVALID_ARGUMENT;
            continue;
        }
        const char *value = inline_value;
        if (sl__cfg_keys[idx].type == SL__CFG_BOOL) {
            if (negated && value) return sl__errorf(SL_INVALID_ARGUMENT, "%s takes no value", origin);
            if (!value) value = negated ? "false" : "true";
        } else if (!value) {
            if (i + 1 >= argc) return sl__errorf(SL_INVALID_ARGUMENT, "%s: missing value", origin);
            value = argv[++i];
        }
        if (apply) {
            sl_status st = sl__cfg_set(c, idx, value, SL_CONFIG_SRC_FLAG, 0, origin);
            if (st != SL_OK) return st;
        }
    }
    return SL_OK;
}

SL_API sl_status sl_config_load(sl_config *c, int argc, char **argv, char **rest, int *n_rest) {
    if (n_rest) *n_rest = 0;
    if (argc < 0 || (argc > 0 && !argv) || (rest && !n_rest))
        return sl__errorf(SL_INVALID_ARGUMENT, "sl_config_load: bad arguments");
    sl_status st = sl__cfg_scan_args(c, argc, argv, rest, n_rest, 0);
    if (st != SL_OK || c->help) return st;
    if (!c->config_path) {
        const char *env = getenv("SLUICE_CONFIG");
        if (env && *env) {
            char *dup = sl__strdup(env);
            if (!dup) return sl__errorf(SL_OUT_OF_MEMORY, "SLUICE_CONFIG: out of memory");
            c->config_path = dup;
        }
    }
    if (c->config_path && c->config_path[0] && (st = sl__cfg_load_file(c, c->config_path)) != SL_OK) return st;
    if ((st = sl__cfg_load_env(c)) != SL_OK) return st;
    return sl__cfg_scan_args(c, argc, argv, rest, n_rest, 1);
}

/* ---- printing ------------------------------------------------------------------------------------------------- */

/* A YAML double-quoted scalar. Control characters are escaped; other bytes pass through (so a value that is
 * not UTF-8 prints as it is; libyaml would refuse it on the way back, which is then the honest outcome). */
static int sl__cfg_print_quoted(FILE *f, const char *s) {
    int n = fprintf(f, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            n += fprintf(f, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            n += fprintf(f, "\\x%02x", *p);
        else
            n += fprintf(f, "%c", *p);
    }
    return n + fprintf(f, "\"");
}

/* Text in a YAML comment: a control character (a newline in a path) would end the comment, so it shows as '?'. */
static void sl__cfg_print_comment(FILE *f, const char *s) {
    for (; *s; s++) fputc((unsigned char)*s < 0x20 ? '?' : *s, f);
}

/* The value of row idx as YAML text; returns the characters written. */
static int sl__cfg_print_value(FILE *f, const sl_config *c, int idx) {
    const sl__cfg_key *k = &sl__cfg_keys[idx];
    const void *field = sl__cfg_cfield(c, k);
    char buf[64];
    switch (k->type) {
    case SL__CFG_STRING: return sl__cfg_print_quoted(f, *(const char *const *)field);
    case SL__CFG_INT: return fprintf(f, "%d", *(const int *)field);
    case SL__CFG_SIZE: return fprintf(f, "%s", sl__cfg_size_str(*(const uint64_t *)field, buf, sizeof buf));
    case SL__CFG_FLOAT: return fprintf(f, "%s", sl__cfg_float_str(*(const double *)field, buf, sizeof buf));
    case SL__CFG_BOOL: return fprintf(f, "%s", *(const int *)field ? "true" : "false");
    case SL__CFG_ENUM: return fprintf(f, "%s", sl__cfg_choice_name(k->choices, *(const int *)field, buf, sizeof buf));
    }
    return 0;
}

SL_API void sl_config_print(const sl_config *c, FILE *f) {
    fprintf(f, "# Sluice's effective configuration (--print-config); usable as a --config file.\n"
               "# Precedence: flag > environment > file > default.\n");
    if (c->config_path && c->config_path[0]) {
        fprintf(f, "# file: ");
        sl__cfg_print_comment(f, c->config_path);
        fputc('\n', f);
    }
    const char *group = NULL;
    for (int i = 0; i < SL_CONFIG_N_KEYS; i++) {
        const sl__cfg_key *k = &sl__cfg_keys[i];
        if (!group || strcmp(group, k->group) != 0) fprintf(f, "\n# %s\n", group = k->group);
        int n = fprintf(f, "%s: ", k->name);
        n += sl__cfg_print_value(f, c, i);
        /* Comments start at column 40 (past the longest "key: value" of numbers) so they line up. */
        fprintf(f, "%*s# ", n < 40 ? 40 - n : 1, "");
        char name[8 + SL__CFG_NAME_MAX];
        switch ((sl_config_source)c->source[i]) {
        case SL_CONFIG_SRC_DEFAULT:
            if (i == SL_CONFIG_KEY_model && !c->model[0]) { /* say which file "empty" means now */
                char *path = sl_default_model_path();
                fprintf(f, "default: ");
                sl__cfg_print_comment(f, path ? path : "the default model in the cache");
                fputc('\n', f);
                free(path);
                break;
            }
            fprintf(f, "default\n");
            break;
        case SL_CONFIG_SRC_FILE: fprintf(f, "file, line %d\n", c->source_line[i]); break;
        case SL_CONFIG_SRC_ENV: sl__cfg_env_name(k, name, sizeof name), fprintf(f, "env %s\n", name); break;
        case SL_CONFIG_SRC_FLAG: sl__cfg_flag_name(k, name, sizeof name), fprintf(f, "flag %s\n", name); break;
        }
    }
}

/* In help text, a space the wrapper must not break at ("[1, 4096]" stays on one line); printed as ' '. */
#define SL__CFG_NBSP '\x1f'

/* Prints text word-wrapped at width columns, every line indented by indent spaces. */
static void sl__cfg_wrap(FILE *f, const char *text, int indent, int width) {
    const char *p = text;
    while (*p) {
        while (*p == ' ') p++;
        if (!*p) break;
        int col = indent;
        fprintf(f, "%*s", indent, "");
        int first = 1;
        while (*p) {
            const char *w = p;
            while (*p && *p != ' ') p++;
            int wl = (int)(p - w);
            if (!first && col + 1 + wl > width) {
                p = w;
                break;
            }
            col += (first ? 0 : 1) + wl;
            if (!first) fputc(' ', f);
            for (int j = 0; j < wl; j++) fputc(w[j] == SL__CFG_NBSP ? ' ' : w[j], f);
            first = 0;
            while (*p == ' ') p++;
        }
        fputc('\n', f);
    }
}

/* Help is wrapped at 100 columns: readable in half a wide screen, and a terminal rarely is narrower. */
#define SL__CFG_HELP_WIDTH 100

SL_API void sl_config_help(FILE *f) {
    char line[512], text[2048], flag[4 + SL__CFG_NAME_MAX], env[8 + SL__CFG_NAME_MAX], list[256], a[32], b[32];
    sl__cfg_wrap(f,
                 "Settings. Each one is a --flag, a key of the YAML file named by --config FILE (or $SLUICE_CONFIG), "
                 "and an environment variable SLUICE_<KEY>. A flag beats the environment, which beats the file, "
                 "which beats the default.",
                 0, SL__CFG_HELP_WIDTH);
    fprintf(f, "\n      --config FILE\n");
    sl__cfg_wrap(f, "Read settings from this YAML file: a flat mapping of key: value.", 8, SL__CFG_HELP_WIDTH);
    fprintf(f, "      --print-config\n");
    sl__cfg_wrap(f, "Print the effective settings as YAML, saying where each value came from, and exit.", 8,
                 SL__CFG_HELP_WIDTH);
    fprintf(f, "  -h, --help\n");
    sl__cfg_wrap(f, "Print this help and exit.", 8, SL__CFG_HELP_WIDTH);

    for (int g = 0; g < SL_CONFIG_N_KEYS; g++) {
        const char *group = sl__cfg_keys[g].group;
        int first = 1;
        for (int j = 0; j < g; j++) first &= strcmp(sl__cfg_keys[j].group, group) != 0;
        if (!first) continue; /* groups are printed at their first row, whole */
        fprintf(f, "\n%s:\n", group);
        for (int i = g; i < SL_CONFIG_N_KEYS; i++) {
            const sl__cfg_key *k = &sl__cfg_keys[i];
            if (strcmp(k->group, group) != 0) continue;
            sl__cfg_flag_name(k, flag, sizeof flag);
            sl__cfg_env_name(k, env, sizeof env);
            int n = k->short_flag ? snprintf(line, sizeof line, "  -%c, %s", k->short_flag, flag)
                                  : snprintf(line, sizeof line, "      %s", flag);
            const char *what = "";
            switch (k->type) {
            case SL__CFG_STRING: what = " STRING"; break;
            case SL__CFG_INT: what = " INT"; break;
            case SL__CFG_SIZE: what = " SIZE"; break;
            case SL__CFG_FLOAT: what = " NUMBER"; break;
            case SL__CFG_BOOL: break;
            case SL__CFG_ENUM: what = NULL; break;
            }
            if (k->type == SL__CFG_BOOL)
                snprintf(line + n, sizeof line - (size_t)n, "[=BOOL], --no-%s", flag + 2);
            else if (!what)
                snprintf(line + n, sizeof line - (size_t)n, " {%s}", k->choices);
            else
                snprintf(line + n, sizeof line - (size_t)n, "%s", what);
            fprintf(f, "%s\n", line);

            const char *range = "";
            char range_buf[300];
            switch (k->type) {
            case SL__CFG_STRING: range = "text"; break;
            case SL__CFG_INT:
                if (k->choices)
                    snprintf(range_buf, sizeof range_buf, "one of %s",
                             sl__cfg_choices_list(k->choices, list, sizeof list));
                else
                    snprintf(range_buf, sizeof range_buf, "integer in [%.0f,\x1f%.0f]", k->lo, k->hi);
                range = range_buf;
                break;
            case SL__CFG_SIZE:
                snprintf(range_buf, sizeof range_buf, "bytes in [%s,\x1f%s], units allowed (512MiB, 2GiB, 1.5GB)",
                         sl__cfg_size_str((uint64_t)k->lo, a, sizeof a),
                         sl__cfg_size_str((uint64_t)k->hi, b, sizeof b));
                range = range_buf;
                break;
            case SL__CFG_FLOAT:
                snprintf(range_buf, sizeof range_buf, "number in [%s,\x1f%s]", sl__cfg_float_str(k->lo, a, sizeof a),
                         sl__cfg_float_str(k->hi, b, sizeof b));
                range = range_buf;
                break;
            case SL__CFG_BOOL: range = "true/false, yes/no, on/off, 1/0"; break;
            case SL__CFG_ENUM:
                snprintf(range_buf, sizeof range_buf, "one of %s", sl__cfg_choices_list(k->choices, list, sizeof list));
                range = range_buf;
                break;
            }
            if (k->type == SL__CFG_STRING)
                snprintf(text, sizeof text, "%s [%s; default %s%s%s; env %s]", k->help, range, k->def[0] ? "\"" : "",
                         k->def[0] ? k->def : "empty", k->def[0] ? "\"" : "", env);
            else
                snprintf(text, sizeof text, "%s [%s; default %s; env %s]", k->help, range, k->def, env);
            sl__cfg_wrap(f, text, 8, SL__CFG_HELP_WIDTH);
        }
    }
}

/* ---- to the engine ------------------------------------------------------------------------------------------- */

static const char *sl__cfg_or_null(const char *s) { return s && *s ? s : NULL; }

SL_API void sl_config_to_engine_params(const sl_config *c, sl_engine_params *p) {
    p->model_path = sl__cfg_or_null(c->model);
    p->served_model_name = sl__cfg_or_null(c->served_model_name);
    p->chat_template = sl__cfg_or_null(c->chat_template);
    p->n_threads = c->threads;
    p->max_model_len = c->max_model_len;
    p->max_num_seqs = c->max_num_seqs;
    p->max_num_batched_tokens = c->max_num_batched_tokens;
    p->max_waiting_requests = c->max_waiting_requests;
    p->max_waiting_tokens = c->max_waiting_tokens;
    p->block_size = c->block_size;
    p->kv_cache_bytes = c->kv_cache_size;
    /* the ENUM row's index is the enum's value: "f32|f16|auto" in the order of sl_kv_dtype */
    _Static_assert(SL_KV_F32 == 0 && SL_KV_F16 == 1 && SL_KV_AUTO == 2, "kv_dtype's choices follow sl_kv_dtype");
    p->kv_dtype = (sl_kv_dtype)c->kv_dtype;
    p->precision = c->precision == 1 ? SL_PRECISION_EXACT : SL_PRECISION_FAST; /* "fast|exact" */
    p->enable_prefix_caching = c->enable_prefix_caching;
    p->devices = sl__cfg_or_null(c->devices); /* NULL: the engine's default, cpu */
    p->tensor_parallel_size = c->tensor_parallel_size;
    p->gpu_memory_utilization = c->gpu_memory_utilization;
}
