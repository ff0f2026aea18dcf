/*
 * config.h — Sluice's settings: one table, and everything generated from it.
 *
 * SL_CONFIG_TABLE below is the one place a setting is declared. From each row come the field of the plain
 * struct sl_config, its default, its `--flag` (max_num_seqs -> --max-num-seqs, plus a short alias where the
 * row gives one), its environment variable (SLUICE_MAX_NUM_SEQS), its key in the YAML config file
 * (max_num_seqs), its entry in --help and its line in --print-config. Adding a setting is adding a row;
 * nothing else needs to know.
 *
 * Precedence is flag > environment > file > default. The YAML file (named by --config FILE, else by
 * $SLUICE_CONFIG) is a flat mapping of scalars, parsed with libyaml; anything else in it is refused with its
 * file:line. Every bad value is a status (SL_INVALID_ARGUMENT) and a message naming where it came from:
 *   "--max-num-seqs: 0 is out of range [1, 4096]", "SLUICE_PORT: 'abc' is not an integer",
 *   "sluice.yaml:3: unknown key 'max_num_seq' (did you mean max_num_seqs?)".
 * YAML that libyaml cannot parse at all is SL_BAD_FORMAT; a file that cannot be read is SL_NOT_FOUND/SL_IO.
 *
 * This header depends only on include/sluice/sluice.h and the C library, and its functions are SL_API, so
 * it can move to include/sluice/ as it is (the server sees nothing else).
 *
 * Types of a row:
 *   STRING  any text; the empty string means "not set" wherever a setting says what empty means.
 *   INT     a decimal integer within [lo, hi]; with a choices list ("8|16|32") only those values.
 *   SIZE    bytes: 123, 4KiB, 2GiB, 1.5GB (KiB/MiB/GiB/TiB/PiB = 1024^n; KB/MB/GB/TB/PB = 1000^n;
 *           K/M/G/T/P alone = 1024^n; case-insensitive; the result must be a whole number of bytes).
 *   FLOAT   a finite decimal number within [lo, hi].
 *   BOOL    true/false, yes/no, on/off, 1/0 (case-insensitive). As a flag, `--name` alone means true,
 *           `--no-name` false, `--name=VALUE` anything of the above.
 *   ENUM    one of the '|'-separated names in choices; the field holds the name's index.
 */
#ifndef SL_CONFIG_H
#define SL_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#include "sluice/sluice.h"

#define SL__CONFIG_STR2(x) #x
#define SL__CONFIG_STR(x) SL__CONFIG_STR2(x) /* expands a macro, then quotes it: SL_DEFAULT_... -> "64" */

/*
 * X(group, name, type, short_flag, default, lo, hi, choices, help)
 *   group       heading in --help and --print-config; groups appear in the order of their first row
 *   name        the field, the YAML key; the flag and the environment variable are derived from it
 *   type        STRING, INT, SIZE, FLOAT, BOOL or ENUM (see above)
 *   short_flag  a character ('m' gives -m), or 0
 *   default     written as a user would write the value (it goes through the same parser)
 *   lo, hi      inclusive range for INT, SIZE and FLOAT (0, 0 for the others); kept as doubles, exact up to
 *               2^53, far past any bound here
 *   choices     ENUM names or allowed INT values, '|'-separated; NULL when any value in range will do
 * The names config, print_config and help are taken by the meta flags and must not be rows.
 *
 * Why the bounds are what they are:
 *   threads <= 1024: more than any single host has cores; the pool's per-thread scratch is sized by it.
 *   max_model_len <= 2^24: rotary embeddings compute position x frequency in f32, whose integers are exact
 *       up to 2^24; no open model's context comes near it.
 *   max_num_seqs <= 4096: the scheduler's per-step arrays are sized by it up front; a replica cannot run
 *       more sequences than that in one step at any useful speed.
 *   max_num_batched_tokens 16..2^20: at least one 16-token block of prefill per step; at most what the
 *       up-front activation buffers (which scale with it) can hold in a sane amount of memory.
 *   max_waiting_requests <= 10^6: each waiting request holds its prompt; a million already means gigabytes.
 *   max_waiting_tokens <= 2^30: 4 GiB of waiting token ids is past any sane queue; an int holds it.
 *   block_size 8..128, powers of two: a slot's (block, offset) is a shift and a mask; above 128 the
 *       half-filled last block of every sequence wastes more memory than paging saves.
 *   kv_cache_size <= 16TiB: more than any host or GPU has; keeps byte counts far from overflow.
 *   devices: at most 256 entries (batching/placement.h), past any host's GPU count; each entry is cpu, a CUDA
 *       ordinal below 256, or cuda:N. Their number must be a multiple of tensor_parallel_size; a CUDA entry on
 *       a machine without that GPU is refused when the engine starts, not here (the config does not probe).
 *   tensor_parallel_size 1..64: every layer all-reduces across all ranks twice, so past a few dozen ranks a
 *       replica of any model we serve would spend its step communicating; 64 also bounds per-rank tables.
 *   gpu_memory_utilization 0.05..1: a fraction of device memory; below 5% not even a small model's KV fits
 *       beside CUDA's own context, and above 1 is not memory.
 *   port <= 65535: a TCP port; 0 lets the kernel pick one.
 *   max_connections <= 65536: each connection holds a file descriptor and a few KiB; more than one process's
 *       usual descriptor limit.
 *   max_header_size 1KiB..1MiB: below 1KiB ordinary clients' headers do not fit; above 1MiB is only ever an
 *       attack (nginx's largest default buffer is 32KiB).
 *   max_body_size 1KiB..1GiB: a body is held in memory whole until parsed; 1GiB is far beyond 2048 embedding
 *       inputs of a full context each.
 *   keepalive/header/body/write timeouts 0.1s..1h: short enough to test in a second, long enough for any
 *       sane client; a connection idle for an hour is a leak, not a client.
 *   max_output_buffer 4KiB..1GiB: at least a few SSE events; at most what one slow client may pin.
 *   shutdown_grace <= 1h: orchestrators kill far sooner (Kubernetes' default is 30 s).
 *   default_max_tokens <= 2^24: the same bound as max_model_len, which caps it anyway.
 *   metrics_require_key, access_log: no bound (a boolean; a path the server opens once at start).
 */
#define SL_CONFIG_TABLE(X)                                                                                  \
    X("Model", model, STRING, 'm', "", 0, 0, NULL,                                                          \
      "GGUF model file to serve. Empty: the default model (SmolLM2-135M-Instruct, Q4_1) in the cache "       \
      "directory ($SLUICE_CACHE_DIR, else $XDG_CACHE_HOME/sluice, else ~/.cache/sluice), where the setup "    \
      "script puts it.")                                                                                    \
    X("Model", served_model_name, STRING, 0, "", 0, 0, NULL,                                                \
      "Model name reported by /v1/models and expected in requests. Empty: the model file's name without "   \
      "\".gguf\".")                                                                                         \
    X("Model", chat_template, STRING, 0, "", 0, 0, NULL,                                                    \
      "Chat template for /v1/chat/completions: a template name (chatml, llama3, mistral, ...). Empty: the "  \
      "model's own.")                                                                                       \
    X("Model", max_model_len, INT, 0, "0", 0, 16777216, NULL,                                               \
      "Tokens of context per sequence (prompt plus output). 0: the model's training context.")              \
    X("Engine", threads, INT, 't', "0", 0, 1024, NULL,                                                      \
      "CPU compute threads. 0: one per online core.")                                                       \
    X("Engine", max_num_seqs, INT, 0, SL__CONFIG_STR(SL_DEFAULT_MAX_NUM_SEQS), 1, 4096, NULL,               \
      "Most sequences run in one engine step.")                                                             \
    X("Engine", max_num_batched_tokens, INT, 0, SL__CONFIG_STR(SL_DEFAULT_MAX_NUM_BATCHED_TOKENS), 16,      \
      1048576, NULL, "Most tokens (decodes plus prefill chunks) in one engine step.")                        \
    X("Engine", max_waiting_requests, INT, 0, SL__CONFIG_STR(SL_DEFAULT_MAX_WAITING_REQUESTS), 1, 1000000,  \
      NULL, "Bound of the waiting queue; beyond it new requests are refused (HTTP 429).")                    \
    X("Engine", max_waiting_tokens, INT, 0, SL__CONFIG_STR(SL_DEFAULT_MAX_WAITING_TOKENS), 1, 1073741824, NULL, \
      "Bound on the prompt tokens of waiting requests; beyond it new requests are refused (HTTP 429). A lone " \
      "request is always accepted.")                                                                        \
    X("Engine", block_size, INT, 0, SL__CONFIG_STR(SL_DEFAULT_BLOCK_SIZE), 8, 128, "8|16|32|64|128",        \
      "Tokens per KV-cache block.")                                                                         \
    X("Engine", kv_cache_size, SIZE, 0, "0", 0, 17592186044416.0, NULL,                                     \
      "Memory for the KV cache. 0: what max_num_seqs sequences of max_model_len tokens need, at most 2GiB.") \
    X("Engine", kv_dtype, ENUM, 0, "auto", 0, 0, "f32|f16|auto",                                            \
      "Element type of the KV cache. auto: f16 with precision fast (its rounding is far below the 8-bit "    \
      "activations'; half the bytes to read per step and twice the sequences per GiB), f32 with exact.")    \
    X("Engine", precision, ENUM, 0, "fast", 0, 0, "fast|exact",                                             \
      "fast: activations are quantized to 8 bits for products with quantized weights (as llama.cpp does); " \
      "exact: activations stay f32.")                                                                       \
    X("Engine", enable_prefix_caching, BOOL, 0, "true", 0, 0, NULL,                                         \
      "Reuse the KV cache of identical prompt prefixes across requests.")                                   \
    X("Engine", devices, STRING, 0, "cpu", 0, 0, NULL,                                                      \
      "Devices to serve on, comma-separated: cpu, or a CUDA ordinal (0, cuda:1), per entry. Consecutive "    \
      "groups of tensor_parallel_size entries form one replica (a copy of the model with its own KV cache "  \
      "of kv_cache_size); replicas serve side by side and each request goes to the one expected to finish "  \
      "it first. cpu,cpu: two CPU replicas sharing the threads evenly.")                                   \
    X("Engine", tensor_parallel_size, INT, 0, "1", 1, 64, NULL,                                             \
      "Devices per replica: each layer is split over this many consecutive devices entries. The number of "  \
      "entries must be a multiple of it.")                                                                  \
    X("Engine", gpu_memory_utilization, FLOAT, 0, "0.9", 0.05, 1, NULL,                                     \
      "GPU replicas: the fraction of each GPU's memory Sluice may fill; with kv_cache_size 0 the KV cache "   \
      "takes what the weights leave of it, measured after they load. CPU replicas ignore it.")              \
    X("Server", host, STRING, 0, "127.0.0.1", 0, 0, NULL, "Address the HTTP server listens on.")             \
    X("Server", port, INT, 0, "8080", 0, 65535, NULL, "TCP port of the HTTP server; 0: any free port.")      \
    X("Server", api_key, STRING, 0, "", 0, 0, NULL,                                                         \
      "API key clients must send as 'Authorization: Bearer KEY' (not needed for /health and /ready). Empty: " \
      "no key is asked for.")                                                                               \
    X("Server", api_key_file, STRING, 0, "", 0, 0, NULL,                                                    \
      "File of API keys, one per line (blank lines and lines starting with # ignored); each is accepted as " \
      "api_key is. Keeps keys out of the process list.")                                                    \
    X("Server", cors_allowed_origins, STRING, 0, "", 0, 0, NULL,                                            \
      "Origins browsers may call the API from, comma-separated (https://app.example.com), or * for any. "    \
      "Empty: no CORS headers are sent.")                                                                    \
    X("Server", max_connections, INT, 0, "1024", 1, 65536, NULL,                                            \
      "Most open client connections; beyond it new ones get a 503 and are closed.")                          \
    X("Server", max_header_size, SIZE, 0, "16KiB", 1024, 1048576, NULL,                                     \
      "Most bytes of a request line plus headers (HTTP 431 beyond).")                                       \
    X("Server", max_body_size, SIZE, 0, "8MiB", 1024, 1073741824, NULL,                                     \
      "Most bytes of a request body, chunk framing included (HTTP 413 beyond).")                            \
    X("Server", keepalive_timeout, FLOAT, 0, "5", 0.1, 3600, NULL,                                          \
      "Seconds an idle keep-alive connection is kept open.")                                                \
    X("Server", header_timeout, FLOAT, 0, "10", 0.1, 3600, NULL,                                            \
      "Seconds a client has to send a request's line and headers (HTTP 408 after).")                         \
    X("Server", body_timeout, FLOAT, 0, "30", 0.1, 3600, NULL,                                              \
      "Seconds a client has to send a request's body once its headers came (HTTP 408 after).")               \
    X("Server", write_timeout, FLOAT, 0, "30", 0.1, 3600, NULL,                                             \
      "Seconds queued output may make no progress before the client counts as gone (its request is "        \
      "cancelled).")                                                                                        \
    X("Server", max_output_buffer, SIZE, 0, "4MiB", 4096, 1073741824, NULL,                                 \
      "Most output queued for one connection; a client that lets more pile up is cut off and its request "  \
      "cancelled.")                                                                                         \
    X("Server", shutdown_grace, FLOAT, 0, "30", 0, 3600, NULL,                                              \
      "Seconds in-flight requests get to finish after SIGTERM/SIGINT; the rest then end with an error.")     \
    X("Server", default_max_tokens, INT, 0, "0", 0, 16777216, NULL,                                         \
      "Tokens a chat completion may generate when the request gives no max_tokens. 0: up to the context "   \
      "length. (Completions default to 16, as in OpenAI's API.)")                                           \
    X("Server", metrics_require_key, BOOL, 0, "true", 0, 0, NULL,                                          \
      "GET /metrics asks for the API key when keys are set (the dashboard page itself never does). false: "  \
      "Prometheus scrapes without a key.")                                                                  \
    X("Server", access_log, STRING, 0, "", 0, 0, NULL,                                                      \
      "Where one JSON line per finished request goes: a file path (appended to), - for stderr, empty: "      \
      "off.")                                                                                               \
    X("Logging", log_level, ENUM, 0, "info", 0, 0, "error|warn|info|debug", "Least severe messages logged.")

/* The C type of a field, by row type. Strings are const: sl_config owns the ones it allocated. */
#define SL__CONFIG_CTYPE_STRING const char *
#define SL__CONFIG_CTYPE_INT int
#define SL__CONFIG_CTYPE_SIZE uint64_t
#define SL__CONFIG_CTYPE_FLOAT double
#define SL__CONFIG_CTYPE_BOOL int
#define SL__CONFIG_CTYPE_ENUM int

/* SL_CONFIG_KEY_<name>: a row's index, for sl_config.source[] and friends. */
typedef enum sl_config_key {
#define SL__CONFIG_KEY_ENUM(group, name, ...) SL_CONFIG_KEY_##name,
    SL_CONFIG_TABLE(SL__CONFIG_KEY_ENUM)
#undef SL__CONFIG_KEY_ENUM
    SL_CONFIG_N_KEYS
} sl_config_key;

/* Values of the ENUM rows: the index of the name in the row's choices. kv_dtype and precision list their
 * names in the order of sl_kv_dtype and sl_precision. */
typedef enum sl_config_log_level {
    SL_CONFIG_LOG_ERROR = 0,
    SL_CONFIG_LOG_WARN = 1,
    SL_CONFIG_LOG_INFO = 2,
    SL_CONFIG_LOG_DEBUG = 3,
} sl_config_log_level;

typedef enum sl_config_source {
    SL_CONFIG_SRC_DEFAULT = 0,
    SL_CONFIG_SRC_FILE = 1,
    SL_CONFIG_SRC_ENV = 2,
    SL_CONFIG_SRC_FLAG = 3,
} sl_config_source;

typedef struct sl_config {
#define SL__CONFIG_FIELD(group, name, type, ...) SL__CONFIG_CTYPE_##type name;
    SL_CONFIG_TABLE(SL__CONFIG_FIELD)
#undef SL__CONFIG_FIELD
    /* Meta flags, which are not settings: */
    const char *config_path; /* --config FILE, else $SLUICE_CONFIG; NULL if neither (owned) */
    int print_config;        /* --print-config was given */
    int help;                /* -h or --help was given */
    /* Where each value came from, by SL_CONFIG_KEY_*: */
    unsigned char source[SL_CONFIG_N_KEYS];     /* sl_config_source */
    int source_line[SL_CONFIG_N_KEYS];          /* line in config_path when the source is the file */
    unsigned char owned_[SL_CONFIG_N_KEYS];     /* private: the string field was allocated here */
} sl_config;

/* Defaults only. Allocates nothing; sl_config_free is still the way to release a loaded config. */
SL_API void sl_config_init(sl_config *c);

/* Applies the file (if one is named), the environment, then the flags, on top of what *c holds (normally
 * the defaults of sl_config_init).
 *
 * argv[0] is NOT skipped: pass the arguments after the subcommand. Flags are `--long-name VALUE`,
 * `--long-name=VALUE` (a '_' may stand for a '-'), `-x VALUE`, `-xVALUE`; booleans take no separate
 * value. Arguments that are not settings (positional arguments, and flags the table doesn't know, with
 * their values as separate arguments) are returned in order in rest[] (*n_rest of them), for the
 * subcommand's own parser; rest must have room for argc pointers, which point into argv. "--" ends flag
 * parsing: it and everything after it go to rest[] as they are, so the subcommand's parser sees it too.
 * With rest == NULL, any such argument is an error (with a suggestion for a mistyped flag).
 *
 * --config FILE, --print-config and -h/--help are recognised and reported through c->config_path,
 * c->print_config and c->help. An empty FILE (--config=) reads no file, even if $SLUICE_CONFIG names one.
 * With --help nothing else is applied (a broken config file must not stop --help) and SL_OK is returned.
 *
 * An empty `model` stays empty: the default model (sl_default_model_path()) is the user's choice of the
 * moment it is opened, and a command may take the model from a positional argument instead.
 * On failure sl_last_error() says what and where; *c may be partly applied and must still be freed. */
SL_API sl_status sl_config_load(sl_config *c, int argc, char **argv, char **rest, int *n_rest);

/* The effective config as YAML that sl_config_load can read back, one line per key with a comment saying
 * where the value came from (default, file and line, env variable, or flag); an empty model's comment
 * names the default model's path. */
SL_API void sl_config_print(const sl_config *c, FILE *f);
/* The settings section of --help: every row, grouped, with its flags, type, range, default and variable,
 * wrapped at 100 columns. */
SL_API void sl_config_help(FILE *f);
/* Releases the owned strings and resets *c to the defaults. */
SL_API void sl_config_free(sl_config *c);

/* The key nearest to a mistyped name ("max-num-seq", "--max-num-seq" or "MAX_NUM_SEQ"), or NULL if none is
 * close; for the subcommands' "unknown flag" messages. */
SL_API const char *sl_config_suggest(const char *name);

/* Sets the fields of the engine parameters that have a row here; call sl_engine_params_init(p) first (the
 * others, and struct_size, are left alone). Strings point into *c; empty ones become NULL (the engine's
 * "not set": for model_path the caller substitutes sl_default_model_path()). */
SL_API void sl_config_to_engine_params(const sl_config *c, sl_engine_params *p);

/* $SLUICE_MODEL if set, else <cache>/models/SmolLM2-135M-Instruct.Q4_1.gguf (runtime/paths.h says where the
 * cache is). Allocated: release with free(); NULL when out of memory. Defined in paths.c. */
SL_API char *sl_default_model_path(void);

#endif /* SL_CONFIG_H */
