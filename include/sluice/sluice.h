/*
 * sluice.h — the public contract of Sluice.
 *
 * This is the only header the server and the bindings may use. It exposes an engine (a loaded model plus
 * the thread that runs it), requests submitted to it, and the events a request produces. Everything else
 * (tensors, backends, the scheduler) is private.
 *
 * Shape of the API:
 *   - Structs that callers fill are versioned: `struct_size` comes first and must be set by the
 *     corresponding `*_init()` function, which also writes the defaults. Defaults live here, once.
 *   - Functions return an sl_status. When a call fails, sl_last_error() gives a human message naming the
 *     problem (thread-local, valid until the next failing call on the same thread).
 *   - Requests run on the engine's thread, never the caller's. Results are delivered either through a
 *     callback invoked on the engine thread (the server uses this; it must not block), or through a
 *     per-request event queue read with sl_request_next_event() (the CLI and the Python bindings use this).
 *   - Every buffer that crosses the API is owned by whoever allocated it: strings and arrays that Sluice
 *     returns are released with sl_free(); events from the queue with sl_event_free().
 */
#ifndef SLUICE_H
#define SLUICE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(SL_BUILDING_LIBRARY)
#define SL_API __attribute__((visibility("default")))
#else
#define SL_API
#endif

#define SL_VERSION_MAJOR 0
#define SL_VERSION_MINOR 1
#define SL_VERSION_PATCH 0

SL_API const char *sl_version(void);

/* ---------------------------------------------------------------------------------------------------- */
/* Status codes: one table makes the enum, the names and the messages (libuv's UV_ERRNO_MAP habit).      */
/* The HTTP status for each is chosen only at the server's edge.                                         */
/* ---------------------------------------------------------------------------------------------------- */
#define SL_STATUS_MAP(X)                                                                  \
    X(OK, "success")                                                                      \
    X(INVALID_ARGUMENT, "invalid argument")                                               \
    X(OUT_OF_MEMORY, "out of memory")                                                     \
    X(IO, "input/output error")                                                           \
    X(BAD_FORMAT, "malformed file or data")                                               \
    X(UNSUPPORTED, "unsupported feature")                                                 \
    X(NOT_FOUND, "not found")                                                             \
    X(CONTEXT_OVERFLOW, "prompt and requested tokens exceed the context length")          \
    X(QUEUE_FULL, "the engine's queue is full")                                           \
    X(CANCELLED, "cancelled")                                                             \
    X(TIMEOUT, "timed out")                                                               \
    X(DEVICE, "device error")                                                             \
    X(SHUTTING_DOWN, "the engine is shutting down")                                       \
    X(INTERNAL, "internal error")

typedef enum sl_status {
#define SL__STATUS_ENUM(name, msg) SL_##name,
    SL_STATUS_MAP(SL__STATUS_ENUM)
#undef SL__STATUS_ENUM
    SL_STATUS_COUNT
} sl_status;

SL_API const char *sl_status_str(sl_status st);  /* "invalid argument" */
SL_API const char *sl_status_name(sl_status st); /* "SL_INVALID_ARGUMENT" */
/* The message of the last failed call on this thread ("" if none). */
SL_API const char *sl_last_error(void);
SL_API void sl_free(void *p);

/* ---------------------------------------------------------------------------------------------------- */
/* Engine                                                                                                */
/* ---------------------------------------------------------------------------------------------------- */
typedef struct sl_engine sl_engine_t;
typedef struct sl_request sl_request_t;

typedef enum sl_precision {
    SL_PRECISION_FAST = 0,  /* activations quantized to 8 bits for quantized products (llama.cpp's way) */
    SL_PRECISION_EXACT = 1, /* activations stay f32; weights dequantized on the fly */
} sl_precision;

typedef enum sl_kv_dtype {
    SL_KV_F32 = 0,
    SL_KV_F16 = 1,
    SL_KV_AUTO = 2, /* the default: f16 in the fast precision, f32 in the exact one */
} sl_kv_dtype;

typedef struct sl_engine_params {
    size_t struct_size;
    const char *model_path;        /* GGUF file (required) */
    const char *served_model_name; /* NULL: the model file's base name without ".gguf" */
    const char *chat_template;     /* NULL: the model's own; else a template name (chatml, llama3, mistral, ...) */
    int n_threads;                 /* compute threads; 0 = number of online cores */
    int max_model_len;             /* tokens of context per sequence; 0 = the model's training context */
    int max_num_seqs;              /* sequences in one engine step */
    int max_num_batched_tokens;    /* tokens in one engine step (decodes + prefill chunks) */
    int max_waiting_requests;      /* bound of the waiting queue: beyond it submit returns SL_QUEUE_FULL */
    int block_size;                /* tokens per KV-cache block */
    uint64_t kv_cache_bytes;       /* KV pool budget; 0 = min(2 GiB, what max_num_seqs x max_model_len needs) */
    sl_kv_dtype kv_dtype;
    sl_precision precision;
    int enable_prefix_caching;     /* reuse KV blocks of identical prompt prefixes */
    int64_t max_waiting_tokens;    /* bound on the prompt tokens of waiting requests (a lone request is always
                                    * accepted, whatever its size); beyond it submit returns SL_QUEUE_FULL */
    /* Placement (DESIGN.md §4). devices: comma-separated entries, each "cpu" or a CUDA ordinal ("0", "cuda:1");
     * consecutive groups of tensor_parallel_size entries form one replica, and the replicas serve side by side
     * (data parallel), each with its own copy of the model and its own KV pool of kv_cache_bytes. CPU replicas
     * split n_threads evenly. "cpu,cpu" = two CPU replicas; "0,1,2,3" with tensor_parallel_size 2 = two replicas
     * of two GPUs. NULL or "" = "cpu". A CUDA entry the machine lacks is refused by sl_engine_create. */
    const char *devices;           /* default "cpu" */
    int tensor_parallel_size;      /* devices per replica, 1..64; default 1 */
    /* GPU replicas with kv_cache_bytes 0: the KV cache takes what the weights leave of this fraction of each
     * device's memory (measured after they load); default 0.9. CPU replicas ignore it. */
    double gpu_memory_utilization;
} sl_engine_params;

#define SL_DEFAULT_MAX_NUM_SEQS 64
#define SL_DEFAULT_MAX_NUM_BATCHED_TOKENS 512
#define SL_DEFAULT_MAX_WAITING_REQUESTS 1024
#define SL_DEFAULT_BLOCK_SIZE 16
#define SL_DEFAULT_MAX_WAITING_TOKENS 1048576 /* 4 MiB of token ids: a deep queue, still bounded memory */

SL_API void sl_engine_params_init(sl_engine_params *p);
/* Loads the model and starts the engine thread. On failure *out is NULL and sl_last_error() says why. */
SL_API sl_status sl_engine_create(const sl_engine_params *params, sl_engine_t **out);
/* Cancels whatever is still running, joins the engine thread, releases everything. NULL is fine. */
SL_API void sl_engine_free(sl_engine_t *eng);

typedef struct sl_model_info {
    size_t struct_size;
    const char *name;         /* served model name */
    const char *architecture; /* "llama" */
    const char *path;
    int64_t n_params;
    uint64_t weight_bytes;    /* bytes of tensor data */
    int n_vocab;
    int n_ctx_train;
    int max_model_len;        /* effective context per sequence */
    int n_embd;
    int n_layer;
    int n_head;
    int n_head_kv;
    int bos_id;               /* -1 if none */
    int eos_id;               /* -1 if none */
    int add_bos;              /* the model expects BOS prepended to prompts */
    int has_chat_template;
    /* The KV cache as created (per replica; the first replica's when several): */
    int64_t kv_cache_tokens;  /* tokens the pool holds */
    uint64_t kv_cache_bytes;  /* bytes of the pool over all layers (and ranks) */
    const char *kv_dtype;     /* "f16" or "f32": kv_dtype with auto resolved */
} sl_model_info;

SL_API void sl_model_info_init(sl_model_info *info);
/* Strings in *info stay valid while the engine lives. */
SL_API sl_status sl_engine_model_info(sl_engine_t *eng, sl_model_info *info);

/* Tokenization. Flags: */
#define SL_TOKENIZE_ADD_SPECIAL 1u   /* prepend BOS (and append EOS) where the model's tokenizer asks for it */
#define SL_TOKENIZE_PARSE_SPECIAL 2u /* text of special tokens ("<|im_end|>") becomes those tokens */
/* *ids_out is allocated (release with sl_free); *n_out its length. Safe from any thread. */
SL_API sl_status sl_engine_tokenize(sl_engine_t *eng, const char *text, size_t len, unsigned flags,
                                    int32_t **ids_out, size_t *n_out);
/* Flags for detokenize: */
#define SL_DETOKENIZE_SKIP_SPECIAL 1u /* drop control tokens (BOS, EOS, <|im_end|>) from the text */
SL_API sl_status sl_engine_detokenize(sl_engine_t *eng, const int32_t *ids, size_t n, unsigned flags,
                                      char **text_out, size_t *len_out);
/* The raw bytes of one token (as stored in the vocabulary, after byte decoding). */
SL_API sl_status sl_engine_token_piece(sl_engine_t *eng, int32_t id, char **text_out, size_t *len_out);

typedef struct sl_chat_message {
    const char *role;    /* "system", "user", "assistant" */
    const char *content; /* UTF-8, NUL-terminated */
} sl_chat_message;

/* Renders messages through the model's chat template (or the override); the text is allocated. */
SL_API sl_status sl_engine_render_chat(sl_engine_t *eng, const sl_chat_message *msgs, size_t n_msgs,
                                       int add_generation_prompt, char **text_out);

/* ---------------------------------------------------------------------------------------------------- */
/* Requests                                                                                              */
/* ---------------------------------------------------------------------------------------------------- */
typedef struct sl_logit_bias {
    int32_t token;
    float bias;
} sl_logit_bias;

typedef struct sl_sampling_params {
    size_t struct_size;
    float temperature;        /* 0 = greedy; default 1 */
    float top_p;              /* (0, 1]; default 1 */
    int top_k;                /* 0 = off */
    float min_p;              /* [0, 1]; 0 = off */
    float repetition_penalty; /* 1 = off; > 1 penalizes tokens seen in prompt or output */
    float presence_penalty;   /* [-2, 2]; OpenAI semantics over generated tokens */
    float frequency_penalty;  /* [-2, 2] */
    const sl_logit_bias *logit_bias;
    size_t n_logit_bias;
    uint64_t seed;            /* each choice's generator is seeded from (seed, choice index) */
    int has_seed;             /* 0: a fresh seed is drawn per request */
} sl_sampling_params;

SL_API void sl_sampling_params_init(sl_sampling_params *p);

typedef enum sl_request_kind {
    SL_REQUEST_GENERATE = 0,
    SL_REQUEST_EMBED = 1, /* one pooled, L2-normalized hidden state; no decode */
} sl_request_kind;

/* Result delivery on the engine thread; the event and everything it points to live only during the call.
 * The callback must not block and must not call back into the engine except sl_request_cancel(). */
typedef struct sl_event sl_event;
typedef void (*sl_event_cb)(const sl_event *ev, void *user_data);

typedef struct sl_request_params {
    size_t struct_size;
    sl_request_kind kind;
    /* The prompt: exactly one of tokens, text, or chat messages. */
    const int32_t *prompt_tokens;
    size_t n_prompt_tokens;
    const char *prompt_text;
    size_t prompt_text_len;
    unsigned tokenize_flags;        /* for prompt_text; default SL_TOKENIZE_ADD_SPECIAL */
    const sl_chat_message *messages;
    size_t n_messages;
    sl_sampling_params sampling;
    int n;                          /* choices; default 1 */
    int max_tokens;                 /* -1 = up to the context length; default -1 */
    int min_tokens;                 /* EOS and stop tokens are masked until this many were generated */
    int ignore_eos;
    const char *const *stop;        /* stop strings; the matched text is not returned */
    size_t n_stop;
    const int32_t *stop_token_ids;  /* extra token ids that end generation */
    size_t n_stop_token_ids;
    int logprobs;                   /* -1 = none; k >= 0: the sampled token's logprob plus k alternatives (k <= 20) */
    int prompt_logprobs;            /* -1 = none; k >= 0: prompt tokens' logprobs plus k alternatives (echo) */
    int skip_special_tokens;        /* default 1: control tokens produce no text */
    int priority;                   /* lower value runs first (vLLM's convention); default 0 */
    const char *tenant;             /* NULL = default tenant; prefix-cache namespace and quotas (later) */
    int64_t deadline_us;            /* absolute, on sl_now_us()'s clock; 0 = none */
    sl_event_cb callback;           /* NULL: events go to the request's queue (sl_request_next_event) */
    void *user_data;
    int replica;                    /* -1 (default): the router picks; else run on this replica (0-based).
                                     * One that does not exist: SL_INVALID_ARGUMENT; one out of service: SL_DEVICE */
} sl_request_params;

SL_API void sl_request_params_init(sl_request_params *p);

/* Validates and enqueues on one replica (the router's choice, or the pinned one). On success *out is a handle the
 * caller must release with sl_request_free(). SL_QUEUE_FULL means try later; SL_CONTEXT_OVERFLOW means prompt +
 * max_tokens exceeds the context; SL_DEVICE means no replica (or not the pinned one) is in service. */
SL_API sl_status sl_request_submit(sl_engine_t *eng, const sl_request_params *params, sl_request_t **out);
/* Asks the engine to stop the request at the next step boundary; a final event with SL_FINISH_ABORT follows. */
SL_API void sl_request_cancel(sl_request_t *req);
/* Queue mode: waits up to timeout_ms (-1 = forever) for the next event. SL_TIMEOUT if none came.
 * After the SL_EVENT_DONE event no more events come. Release each event with sl_event_free(). */
SL_API sl_status sl_request_next_event(sl_request_t *req, int timeout_ms, sl_event **ev_out);
SL_API void sl_event_free(sl_event *ev);
/* Releases the handle; cancels the request if it is still running. Safe in any state. */
SL_API void sl_request_free(sl_request_t *req);

/* Monotonic clock used for deadlines and timings, in microseconds. */
SL_API int64_t sl_now_us(void);

/* ---------------------------------------------------------------------------------------------------- */
/* Events                                                                                                */
/* ---------------------------------------------------------------------------------------------------- */
typedef enum sl_event_type {
    SL_EVENT_PROMPT = 0,    /* once, before tokens, when prompt_logprobs was asked: the prompt's tokens */
    SL_EVENT_TOKENS = 1,    /* new tokens of one choice with their ready text delta */
    SL_EVENT_FINISH = 2,    /* one choice ended; finish_reason says why (may carry a last text delta) */
    SL_EVENT_EMBEDDING = 3, /* the embedding of an SL_REQUEST_EMBED request */
    SL_EVENT_DONE = 4,      /* the request ended: usage and timings; the last event */
} sl_event_type;

typedef enum sl_finish_reason {
    SL_FINISH_NONE = 0,
    SL_FINISH_STOP = 1,   /* EOS, a stop token or a stop string */
    SL_FINISH_LENGTH = 2, /* max_tokens or the context length */
    SL_FINISH_ABORT = 3,  /* cancelled, deadline passed, or engine shut down */
    SL_FINISH_ERROR = 4,  /* status and message say what went wrong */
} sl_finish_reason;

SL_API const char *sl_finish_reason_str(sl_finish_reason r); /* "stop", "length", "abort", "error" */

typedef struct sl_top_logprob {
    int32_t token;
    float logprob;
} sl_top_logprob;

typedef struct sl_usage {
    int64_t prompt_tokens;
    int64_t cached_prompt_tokens; /* prompt tokens whose KV came from the prefix cache */
    int64_t completion_tokens;    /* over all choices */
} sl_usage;

/* Timestamps of each hop on sl_now_us()'s clock (0 = did not happen), and device time consumed. */
typedef struct sl_timings {
    int64_t submitted_us;       /* sl_request_submit accepted it */
    int64_t first_scheduled_us; /* first engine step that ran any of its tokens */
    int64_t prefill_done_us;    /* the prompt's last chunk ran */
    int64_t first_token_us;     /* first generated token was ready */
    int64_t finished_us;        /* last event was produced */
    int64_t device_us;          /* share of engine step time attributed to this request (by tokens) */
} sl_timings;

struct sl_event {
    sl_event_type type;
    int choice;                    /* index among n (TOKENS, FINISH) */
    /* TOKENS / FINISH / PROMPT */
    const char *text;              /* UTF-8-complete text delta; never splits a character; may be "" */
    size_t text_len;
    const int32_t *tokens;         /* the token ids this event covers */
    size_t n_tokens;
    const float *logprobs;         /* [n_tokens] the token's log-probability, or NULL if not asked */
    const sl_top_logprob *top_logprobs; /* [n_tokens][n_top] best alternatives, most likely first, or NULL */
    int n_top;
    /* FINISH */
    sl_finish_reason finish_reason;
    const char *stop_reason;       /* the stop string matched, or NULL */
    int32_t stop_token;            /* the token that stopped the choice, or -1 */
    /* FINISH with SL_FINISH_ERROR, or DONE when the whole request failed */
    sl_status status;
    const char *message;
    /* EMBEDDING */
    const float *embedding;        /* [n_embd], L2-normalized */
    int n_embd;
    /* DONE */
    sl_usage usage;
    sl_timings timings;
};

/* ---------------------------------------------------------------------------------------------------- */
/* Engine counters (for /metrics and the dashboard)                                                      */
/* ---------------------------------------------------------------------------------------------------- */
/* Buckets of sl_engine_stats.steps_by_tokens: bounds 1, 2, 4, ..., 2048 tokens, then the rest. */
#define SL_STEP_TOKEN_BUCKETS 13
#define SL_STEP_TOKENS_BOUND(i) (1 << (i)) /* for i < SL_STEP_TOKEN_BUCKETS - 1 */

typedef struct sl_engine_stats {
    size_t struct_size;
    int num_running;
    int num_waiting;
    double kv_cache_usage;          /* fraction 0..1 of KV blocks in use */
    uint64_t prompt_tokens_total;
    uint64_t generation_tokens_total;
    uint64_t num_preemptions_total;
    uint64_t prefix_cache_queries_total; /* tokens looked up */
    uint64_t prefix_cache_hits_total;    /* tokens found */
    uint64_t steps_total;
    double busy_seconds_total;      /* time spent in engine steps */
    /* Tokens per step, a histogram: steps_by_tokens[i] counts steps of at most SL_STEP_TOKENS_BOUND(i) tokens
     * (and more than the previous bound); the last slot counts the larger ones. */
    uint64_t steps_by_tokens[SL_STEP_TOKEN_BUCKETS];
    uint64_t step_tokens_total;     /* tokens run in all steps (recomputed ones included) */
    /* Counters and running/waiting above are sums over the replicas; kv_cache_usage is over those in service. */
    int num_replicas;               /* replicas the engine was created with */
    int num_replicas_ready;         /* those still in service (a device error takes one out for good) */
} sl_engine_stats;

SL_API void sl_engine_stats_init(sl_engine_stats *s);
/* A readable description of a GGUF file (metadata and tensor table) without loading it; allocated text. */
SL_API sl_status sl_model_file_describe(const char *path, char **text_out);
SL_API sl_status sl_engine_get_stats(sl_engine_t *eng, sl_engine_stats *s);

#ifdef __cplusplus
}
#endif

#endif /* SLUICE_H */
