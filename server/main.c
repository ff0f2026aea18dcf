/*
 * main.c — the `sluice` command: subcommands over the public engine API.
 *
 *   sluice generate -m MODEL -p PROMPT [-n N] [--temp T --top-p P --seed S] [--chat]
 *   sluice tokenize -m MODEL [--ids|--pieces] [--add-special] [--parse-special] [TEXT]
 *   sluice info -m MODEL
 *   sluice serve [-m MODEL] [--host H] [--port P] [...]   (the HTTP server: server/api.c)
 *
 * Settings common to every command (model, threads, precision, ...) come from the configuration table
 * (sluice/config.h: flags, SLUICE_* environment variables, a YAML file); each command parses only its own
 * extra flags from what the table left. This file sees nothing but include/sluice/.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/config.h"
#include "sluice/sluice.h"
#include "api.h"

#define MAX_STOPS 16

static void usage(FILE *f) {
    fprintf(f,
            "Sluice %s — an LLM inference server and CLI.\n"
            "\n"
            "Usage: sluice COMMAND [OPTIONS]\n"
            "\n"
            "Commands:\n"
            "  generate   Generate text from a prompt, streamed to stdout; a speed line follows on stderr.\n"
            "             -p, --prompt TEXT    prompt (empty: start from BOS where the model uses one)\n"
            "             -f, --file PATH      read the prompt from a file\n"
            "             -n, --max-tokens N   tokens to generate (default 128; -1: up to the context)\n"
            "             --temp T             temperature (default 0.8; 0 = greedy)\n"
            "             --top-p P  --top-k K  --min-p P  --repeat-penalty R\n"
            "             --presence-penalty X  --frequency-penalty X\n"
            "             --seed S             seed of the sampler (default: random)\n"
            "             --chat               wrap the prompt in the model's chat template as a user message\n"
            "             --system TEXT        system message (with --chat)\n"
            "             --stop TEXT          stop string (repeatable, up to %d)\n"
            "             --ignore-eos         keep generating past end-of-sequence tokens\n"
            "  tokenize   Print the tokens of TEXT (or of stdin, read verbatim to EOF).\n"
            "             --ids                only the ids, space-separated, on one line\n"
            "             --pieces             one token per line: id and its text\n"
            "             --add-special        add BOS/EOS as the model's tokenizer does\n"
            "             --parse-special      text of special tokens (\"<|im_end|>\") becomes those tokens\n"
            "  serve      Run the OpenAI-compatible HTTP server (settings below: host, port, api_key, limits).\n"
            "             Prints 'sluice: listening on http://HOST:PORT'; --port 0 picks a free port.\n"
            "             SIGTERM/SIGINT: stop accepting, finish in-flight requests (shutdown_grace), exit 0.\n"
            "  info       Print a model file's metadata and tensor table.\n"
            "  version    Print the version.\n"
            "\n"
            "Settings (every command; also SLUICE_* environment variables and a YAML file):\n",
            sl_version(), MAX_STOPS);
    sl_config_help(f);
}

static int fail(const char *what, sl_status st) {
    fprintf(stderr, "sluice: %s: %s\n", what, *sl_last_error() ? sl_last_error() : sl_status_str(st));
    return 1;
}

/* Parses a number flag value; prints the error itself. */
static int parse_double(const char *flag, const char *v, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double d = v ? strtod(v, &end) : 0;
    if (!v || !*v || *end || errno || !(d >= lo && d <= hi)) {
        fprintf(stderr, "sluice: %s: '%s' is not a number in [%g, %g]\n", flag, v ? v : "", lo, hi);
        return 0;
    }
    *out = d;
    return 1;
}

static char *read_stream(FILE *f, size_t *len) {
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    if (!buf) return NULL;
    for (;;) {
        if (n + 4096 > cap) {
            char *p = realloc(buf, cap *= 2);
            if (!p) {
                free(buf);
                return NULL;
            }
            buf = p;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) break;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

static sl_status open_engine(const sl_config *cfg, sl_engine_t **eng) {
    sl_engine_params ep;
    sl_engine_params_init(&ep);
    sl_config_to_engine_params(cfg, &ep);
    char *default_path = NULL;
    if (!ep.model_path || !*ep.model_path) ep.model_path = default_path = sl_default_model_path();
    sl_status st = sl_engine_create(&ep, eng);
    free(default_path);
    return st;
}

static volatile sig_atomic_t g_interrupted;
static void on_sigint(int sig) {
    (void)sig;
    g_interrupted = 1;
}

static int cmd_generate(const sl_config *cfg, int argc, char **argv) {
    const char *prompt = NULL, *prompt_file = NULL, *system_msg = NULL;
    const char *stops[MAX_STOPS];
    size_t n_stops = 0;
    int chat = 0;
    sl_request_params rp;
    sl_request_params_init(&rp);
    rp.max_tokens = 128;
    rp.sampling.temperature = 0.8f;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        double d;
#define NEEDS_VALUE                                                                                                \
    if (!v) {                                                                                                      \
        fprintf(stderr, "sluice generate: %s needs a value\n", a);                                                 \
        return 2;                                                                                                  \
    }                                                                                                              \
    i++
        if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) {
            NEEDS_VALUE;
            prompt = v;
        } else if (!strcmp(a, "-f") || !strcmp(a, "--file")) {
            NEEDS_VALUE;
            prompt_file = v;
        } else if (!strcmp(a, "-n") || !strcmp(a, "--max-tokens")) {
            NEEDS_VALUE;
            if (!parse_double(a, v, -1, 1 << 24, &d) || d != (int)d) return 2;
            rp.max_tokens = (int)d;
        } else if (!strcmp(a, "--temp") || !strcmp(a, "--temperature")) {
            NEEDS_VALUE;
            if (!parse_double(a, v, 0, 100, &d)) return 2;
            rp.sampling.temperature = (float)d;
        } else if (!strcmp(a, "--top-p")) {
            NEEDS_VALUE;
            if (!parse_double(a, v, 1e-9, 1, &d)) return 2;
            rp.sampling.top_p = (float)d;
        } else if (!strcmp(a, "--top-k")) {
            NEEDS_VALUE;
            if (!parse_double(a, v, 0, 1 << 24, &d) || d != (int)d) return 2;
            rp.sampling.top_k = (int)d;
        } else if (!strcmp(a, "--min-p")) {
            NEEDS_VALUE;
            if (!parse_double(a, v, 0, 1, &d)) return 2;
            rp.sampling.min_p = (float)d;
        } else if (!strcmp(a, "--repeat-penalty")) {
            NEEDS_VALUE;
            if (!parse_double(a, v, 1e-3, 10, &d)) return 2;
            rp.sampling.repetition_penalty = (float)d;
        } else if (!strcmp(a, "--presence-penalty")) {
            NEEDS_VALUE;
            if (!parse_double(a, v, -2, 2, &d)) return 2;
            rp.sampling.presence_penalty = (float)d;
        } else if (!strcmp(a, "--frequency-penalty")) {
            NEEDS_VALUE;
            if (!parse_double(a, v, -2, 2, &d)) return 2;
            rp.sampling.frequency_penalty = (float)d;
        } else if (!strcmp(a, "--seed")) {
            NEEDS_VALUE;
            char *end;
            errno = 0;
            unsigned long long s = strtoull(v, &end, 10);
            if (!*v || *end || errno) {
                fprintf(stderr, "sluice generate: --seed: '%s' is not an unsigned integer\n", v);
                return 2;
            }
            rp.sampling.seed = s;
            rp.sampling.has_seed = 1;
        } else if (!strcmp(a, "--stop")) {
            NEEDS_VALUE;
            if (n_stops == MAX_STOPS) {
                fprintf(stderr, "sluice generate: at most %d --stop strings\n", MAX_STOPS);
                return 2;
            }
            stops[n_stops++] = v;
        } else if (!strcmp(a, "--system")) {
            NEEDS_VALUE;
            system_msg = v;
        } else if (!strcmp(a, "--chat")) {
            chat = 1;
        } else if (!strcmp(a, "--ignore-eos")) {
            rp.ignore_eos = 1;
        } else {
            fprintf(stderr, "sluice generate: unknown option '%s' (see sluice --help)\n", a);
            return 2;
        }
#undef NEEDS_VALUE
    }
    char *file_text = NULL;
    if (prompt_file) {
        FILE *f = fopen(prompt_file, "rb");
        size_t len;
        if (!f || !(file_text = read_stream(f, &len))) {
            fprintf(stderr, "sluice generate: cannot read %s: %s\n", prompt_file, strerror(errno));
            if (f) fclose(f);
            return 1;
        }
        fclose(f);
        prompt = file_text;
    }
    if (!prompt) prompt = "";

    sl_engine_t *eng = NULL;
    sl_status st = open_engine(cfg, &eng);
    if (st != SL_OK) {
        free(file_text);
        return fail("loading the model", st);
    }
    sl_model_info info;
    sl_model_info_init(&info);
    sl_engine_model_info(eng, &info);

    sl_chat_message msgs[2];
    int32_t bos;
    if (chat) {
        size_t n = 0;
        if (system_msg) msgs[n++] = (sl_chat_message){"system", system_msg};
        msgs[n++] = (sl_chat_message){"user", prompt};
        rp.messages = msgs;
        rp.n_messages = n;
    } else if (!*prompt) {
        if (info.bos_id < 0) {
            fprintf(stderr, "sluice generate: empty prompt and the model has no BOS token to start from\n");
            sl_engine_free(eng);
            free(file_text);
            return 2;
        }
        bos = info.bos_id;
        rp.prompt_tokens = &bos;
        rp.n_prompt_tokens = 1;
    } else {
        rp.prompt_text = prompt;
        rp.prompt_text_len = strlen(prompt);
    }
    rp.stop = stops;
    rp.n_stop = n_stops;

    sl_request_t *req = NULL;
    if ((st = sl_request_submit(eng, &rp, &req)) != SL_OK) {
        int rc = fail("generate", st);
        sl_engine_free(eng);
        free(file_text);
        return rc;
    }
    signal(SIGINT, on_sigint);
    int rc = 0, cancelled = 0;
    sl_usage usage = {0};
    sl_timings tm = {0};
    for (;;) {
        sl_event *ev = NULL;
        st = sl_request_next_event(req, 200, &ev);
        if (st == SL_TIMEOUT) {
            if (g_interrupted && !cancelled) {
                sl_request_cancel(req);
                cancelled = 1;
            }
            continue;
        }
        if (st != SL_OK) {
            rc = fail("generate", st);
            break;
        }
        int done = ev->type == SL_EVENT_DONE;
        if (ev->text_len && (ev->type == SL_EVENT_TOKENS || ev->type == SL_EVENT_FINISH)) {
            fwrite(ev->text, 1, ev->text_len, stdout);
            fflush(stdout);
        }
        if (ev->type == SL_EVENT_FINISH && ev->finish_reason == SL_FINISH_ERROR) {
            fprintf(stderr, "\nsluice generate: %s\n", ev->message ? ev->message : sl_status_str(ev->status));
            rc = 1;
        }
        if (done) {
            usage = ev->usage;
            tm = ev->timings;
        }
        sl_event_free(ev);
        if (done) break;
    }
    printf("\n");
    double prefill_s = (double)(tm.first_token_us - tm.first_scheduled_us) * 1e-6;
    double decode_s = (double)(tm.finished_us - tm.first_token_us) * 1e-6;
    long long n_dec = usage.completion_tokens > 1 ? usage.completion_tokens - 1 : 0;
    fprintf(stderr, "prompt: %lld tokens in %.3f s (%.1f tok/s); generation: %lld tokens in %.3f s (%.1f tok/s)\n",
            (long long)usage.prompt_tokens, prefill_s, prefill_s > 0 ? (double)usage.prompt_tokens / prefill_s : 0.0,
            (long long)usage.completion_tokens, decode_s, decode_s > 0 ? (double)n_dec / decode_s : 0.0);
    sl_request_free(req);
    sl_engine_free(eng);
    free(file_text);
    return rc;
}

static void print_escaped(const char *s, size_t n) {
    putchar('\'');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n')
            fputs("\\n", stdout);
        else if (c == '\t')
            fputs("\\t", stdout);
        else if (c == '\r')
            fputs("\\r", stdout);
        else if (c == '\'' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20 || c == 0x7f)
            printf("\\x%02x", c);
        else
            putchar(c);
    }
    putchar('\'');
}

static int cmd_tokenize(const sl_config *cfg, int argc, char **argv) {
    int ids_only = 0, pieces = 0;
    unsigned flags = 0;
    const char *text = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--ids"))
            ids_only = 1;
        else if (!strcmp(argv[i], "--pieces"))
            pieces = 1;
        else if (!strcmp(argv[i], "--add-special"))
            flags |= SL_TOKENIZE_ADD_SPECIAL;
        else if (!strcmp(argv[i], "--parse-special"))
            flags |= SL_TOKENIZE_PARSE_SPECIAL;
        else if (argv[i][0] == '-' && argv[i][1] && !text) {
            fprintf(stderr, "sluice tokenize: unknown option '%s'\n", argv[i]);
            return 2;
        } else if (!text)
            text = argv[i];
        else {
            fprintf(stderr, "sluice tokenize: one TEXT argument at most (quote it)\n");
            return 2;
        }
    }
    char *stdin_text = NULL;
    size_t len;
    if (!text) {
        stdin_text = read_stream(stdin, &len);
        if (!stdin_text) {
            fprintf(stderr, "sluice tokenize: cannot read stdin\n");
            return 1;
        }
        text = stdin_text;
    } else {
        len = strlen(text);
    }
    sl_engine_t *eng = NULL;
    sl_status st = open_engine(cfg, &eng);
    if (st != SL_OK) {
        free(stdin_text);
        return fail("loading the model", st);
    }
    int32_t *ids = NULL;
    size_t n = 0;
    st = sl_engine_tokenize(eng, text, len, flags, &ids, &n);
    int rc = 0;
    if (st != SL_OK) {
        rc = fail("tokenize", st);
    } else if (ids_only || !pieces) {
        for (size_t i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
        printf("\n");
        if (!ids_only) fprintf(stderr, "%zu tokens\n", n);
    } else {
        for (size_t i = 0; i < n; i++) {
            char *piece = NULL;
            size_t plen = 0;
            printf("%6d ", ids[i]);
            if (sl_engine_token_piece(eng, ids[i], &piece, &plen) == SL_OK) print_escaped(piece, plen);
            printf("\n");
            sl_free(piece);
        }
    }
    sl_free(ids);
    sl_engine_free(eng);
    free(stdin_text);
    return rc;
}

static int cmd_info(const sl_config *cfg, int argc, char **argv) {
    const char *path = cfg->model && *cfg->model ? cfg->model : NULL;
    if (argc == 1 && !path)
        path = argv[0];
    else if (argc > 0) {
        fprintf(stderr, "sluice info: unexpected argument '%s'\n", argv[0]);
        return 2;
    }
    char *default_path = NULL;
    if (!path) path = default_path = sl_default_model_path();
    char *text = NULL;
    sl_status st = sl_model_file_describe(path, &text);
    free(default_path);
    if (st != SL_OK) return fail("info", st);
    fputs(text, stdout);
    sl_free(text);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "version") || !strcmp(argv[1], "--version")) {
        printf("sluice %s\n", sl_version());
        return 0;
    }
    const char *cmd = argv[1];
    int (*run)(const sl_config *, int, char **) = NULL;
    if (!strcmp(cmd, "generate"))
        run = cmd_generate;
    else if (!strcmp(cmd, "tokenize"))
        run = cmd_tokenize;
    else if (!strcmp(cmd, "info"))
        run = cmd_info;
    else if (!strcmp(cmd, "serve"))
        run = sl_serve_main;
    else {
        fprintf(stderr, "sluice: unknown command '%s' (commands: generate, tokenize, serve, info, version; see --help)\n", cmd);
        return 2;
    }
    sl_config cfg;
    sl_config_init(&cfg);
    char **rest = calloc((size_t)argc, sizeof(char *));
    int n_rest = 0;
    if (!rest) return 1;
    sl_status st = sl_config_load(&cfg, argc - 2, argv + 2, rest, &n_rest);
    if (st != SL_OK) {
        fprintf(stderr, "sluice %s: %s\n", cmd, sl_last_error());
        sl_config_free(&cfg);
        free(rest);
        return 2;
    }
    int rc;
    if (cfg.help) {
        usage(stdout);
        rc = 0;
    } else if (cfg.print_config) {
        sl_config_print(&cfg, stdout);
        rc = 0;
    } else {
        rc = run(&cfg, n_rest, rest);
    }
    sl_config_free(&cfg);
    free(rest);
    return rc;
}
