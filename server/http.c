/*
 * http.c — the HTTP/1.1 transport (see http.h for the shape).
 *
 * Each connection owns one llhttp parser, one timer and a buffer of received-but-unparsed bytes. Bytes are
 * parsed until a request is complete; on_message_complete pauses the parser so the request is dispatched
 * outside llhttp's callbacks, and parsing resumes only when that request has been answered. A pipelining
 * client therefore gets its answers in order, and what it can make us hold is bounded by SL_HTTP_MAX_PENDING.
 *
 * Strictness beyond llhttp 8.1's defaults (which accept several things a server must refuse): one Host in
 * HTTP/1.1, no Transfer-Encoding in HTTP/1.0, never Content-Length with Transfer-Encoding, no obs-fold, no
 * whitespace in or before a header name's colon, single spaces in the request line; raw body bytes, chunk
 * framing included, count against the body limit. A violation is a 400 and the connection is closed.
 *
 * One timer per connection serves every timeout: idle keep-alive, header read, body read, and write stall.
 */
#include "http.h"

#define SL_MIN_SIZE(a, b) ((a) < (b) ? (a) : (b))

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "llhttp.h"
#include "metrics.h" /* metrics: the transport hooks (connections, responses by route) */

/* Unparsed input held while a request is being answered: enough for a few pipelined small requests; past it
 * we stop reading until the answer is done (TCP backpressure does the rest). */
#define SL_HTTP_MAX_PENDING (64 * 1024)
/* Bytes per read callback buffer: libuv reads at most this much at once; 64 KiB is a socket buffer's worth. */
#define SL_HTTP_READ_CHUNK (64 * 1024)
/* Listen backlog: the kernel queues this many unaccepted connections (SOMAXCONN's usual value). */
#define SL_HTTP_BACKLOG 511

int sl_buf_append(sl_buf *b, const void *data, size_t len) {
    if (b->n + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + len + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) return 0;
        b->p = p;
        b->cap = cap;
    }
    if (len) memcpy(b->p + b->n, data, len);
    b->n += len;
    b->p[b->n] = 0;
    return 1;
}

int sl_buf_printf(sl_buf *b, const char *fmt, ...) {
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return 0;
    if ((size_t)n < sizeof small) return sl_buf_append(b, small, (size_t)n);
    char *big = malloc((size_t)n + 1);
    if (!big) return 0;
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    int ok = sl_buf_append(b, big, (size_t)n);
    free(big);
    return ok;
}

void sl_buf_free(sl_buf *b) {
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

typedef enum conn_state {
    ST_IDLE,    /* waiting for a request (keep-alive timer) */
    ST_HEADERS, /* reading request line and headers (header timer) */
    ST_BODY,    /* reading the body (body timer) */
    ST_BUSY,    /* the request is being answered (write-stall timer while output is queued) */
} conn_state;

struct sl_http_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    int listening;
    int port;
    int closing;
    sl_http_limits lim;
    llhttp_settings_t settings;
    sl_http_handler_cb on_request;
    sl_http_close_cb on_close;
    void *user_data;
    int n_conns;
    int n_alloc;  /* connections not yet freed (their handles may still be closing) */
    int draining; /* answers say Connection: close */
    sl_http_conn *conns; /* doubly linked list of open connections */
};

struct sl_http_conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    sl_http_server *srv;
    sl_http_conn *prev, *next;
    llhttp_t parser;
    int handles_open; /* tcp and timer: freed when both closed */
    int closing;
    conn_state state;
    /* The request being parsed. */
    sl_buf method, url, field, value, body;
    int in_value;           /* the last header callback was a value */
    size_t header_bytes;    /* request line plus header bytes so far */
    size_t raw_body_bytes;  /* body bytes with chunk framing */
    int n_host, has_te, has_cl, expect_continue;
    char *authorization, *origin, *sluice_replica;
    int err_status;         /* the status to answer a parse error with (400 unless a callback set another) */
    const char *err_msg;
    /* The request being answered. */
    int busy;
    int is_head;            /* HEAD: the answer's headers only */
    sl_buf resp_headers;    /* extra header lines for the current answer */
    int keep_alive;
    int streaming;
    int chunked;
    void *exchange;
    int in_process;         /* conn_process is on the stack: it continues parsing itself */
    int shutting_down;      /* its last answer is being flushed; it closes itself (bounded by the write timer) */
    int hs_active, hs_line_start; /* scan_headers: inside a header section; at the start of a line */
    uint64_t last_write_progress_ms;
    /* Received bytes not parsed yet: pending.p[off .. n). */
    sl_buf pending;
    size_t pending_off;
    int reading;
};

typedef struct write_req {
    uv_write_t req;
    sl_http_conn *conn;
    char *mem; /* owned: everything written by this request */
} write_req;

static void conn_close(sl_http_conn *c);
static void conn_process(sl_http_conn *c);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static const char *status_text(int status) {
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Unknown";
    }
}

/* ---- timers ------------------------------------------------------------------------------------------ */
static void on_timer(uv_timer_t *t);

static void conn_arm(sl_http_conn *c, uint64_t ms) {
    if (c->closing) return;
    if (ms)
        uv_timer_start(&c->timer, on_timer, ms, 0);
    else
        uv_timer_stop(&c->timer);
}

/* ---- writing ----------------------------------------------------------------------------------------- */
static void on_write(uv_write_t *req, int status) {
    write_req *w = (write_req *)req;
    sl_http_conn *c = w->conn;
    free(w->mem);
    free(w);
    if (status < 0) {
        if (status != UV_ECANCELED) conn_close(c);
        return;
    }
    c->last_write_progress_ms = uv_now(c->srv->loop);
}

/* Queues len bytes (copied). Returns 0 if the connection is closing or could not write. */
static int conn_write(sl_http_conn *c, const char *a, size_t na, const char *b, size_t nb) {
    if (c->closing) return 0;
    write_req *w = malloc(sizeof *w);
    char *mem = malloc(na + nb + 1);
    if (!w || !mem) {
        free(w);
        free(mem);
        conn_close(c);
        return 0;
    }
    if (na) memcpy(mem, a, na);
    if (nb) memcpy(mem + na, b, nb);
    w->conn = c;
    w->mem = mem;
    if (c->tcp.write_queue_size == 0) c->last_write_progress_ms = uv_now(c->srv->loop);
    uv_buf_t buf = uv_buf_init(mem, (unsigned)(na + nb));
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, on_write) < 0) {
        free(mem);
        free(w);
        conn_close(c);
        return 0;
    }
    return 1;
}

static void on_shutdown(uv_shutdown_t *req, int status) {
    sl_http_conn *c = req->data;
    free(req);
    conn_close(c);
}

/* Closes after everything queued has been written. */
static void conn_close_after_write(sl_http_conn *c) {
    if (c->closing) return;
    uv_shutdown_t *req = malloc(sizeof *req);
    if (!req) {
        conn_close(c);
        return;
    }
    uv_read_stop((uv_stream_t *)&c->tcp);
    req->data = c;
    c->shutting_down = 1;
    if (uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown) < 0) {
        free(req);
        conn_close(c);
        return;
    }
    c->reading = 0;
    /* A client that never reads could hold the shutdown forever: the write timer still runs. */
    c->state = ST_BUSY;
    conn_arm(c, c->srv->lim.write_timeout_ms);
}

/* A plain error answer from the transport itself (before any handler ran), then close. */
static void conn_fail(sl_http_conn *c, int status, const char *msg) {
    char body[512];
    int n = snprintf(body, sizeof body,
                     "{\"error\":{\"message\":\"%s\",\"type\":\"invalid_request_error\",\"param\":null,\"code\":null}}",
                     msg);
    char hdr[256];
    int h = snprintf(hdr, sizeof hdr,
                     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n",
                     status, status_text(status), n);
    sl_metrics_note_response("", status); /* metrics: refused before routing, so no route */
    conn_write(c, hdr, (size_t)h, body, (size_t)n);
    conn_close_after_write(c);
}

static void exchange_done(sl_http_conn *c) {
    c->busy = 0;
    c->resp_headers.n = 0;
    c->exchange = NULL;
    c->streaming = 0;
    if (c->closing) return;
    if (!c->keep_alive || c->srv->draining) {
        conn_close_after_write(c);
        return;
    }
    c->state = ST_IDLE;
    conn_arm(c, c->srv->lim.keepalive_ms);
    if (!c->reading) {
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
        c->reading = 1;
    }
    if (!c->in_process) conn_process(c);
}

static int header_block(sl_http_conn *c, sl_buf *h, int status, const char *content_type, const char *extra) {
    int close = !c->keep_alive || c->srv->draining;
    return sl_buf_printf(h, "HTTP/1.%d %d %s\r\nContent-Type: %s\r\n%s%s%s", c->parser.http_minor >= 1 ? 1 : 0,
                         status, status_text(status), content_type, close ? "Connection: close\r\n" : "",
                         extra ? extra : "", c->resp_headers.p && c->resp_headers.n ? c->resp_headers.p : "");
}

void sl_http_respond(sl_http_conn *c, int status, const char *content_type, const char *extra_headers,
                     const char *body, size_t len) {
    if (c->closing || !c->busy) return;
    sl_metrics_note_response(c->url.n ? c->url.p : "", status); /* metrics */
    sl_buf h = {0};
    if (!header_block(c, &h, status, content_type, extra_headers) ||
        !sl_buf_printf(&h, "Content-Length: %zu\r\n\r\n", len)) {
        sl_buf_free(&h);
        conn_close(c);
        return;
    }
    int ok = conn_write(c, h.p, h.n, body, c->is_head ? 0 : len);
    sl_buf_free(&h);
    if (ok) exchange_done(c);
}

void sl_http_stream_begin(sl_http_conn *c, int status, const char *content_type, const char *extra_headers) {
    if (c->closing || !c->busy) return;
    sl_metrics_note_response(c->url.n ? c->url.p : "", status); /* metrics */
    c->chunked = c->parser.http_minor >= 1;
    if (!c->chunked) c->keep_alive = 0; /* HTTP/1.0: the end of the stream is the end of the connection */
    sl_buf h = {0};
    if (!header_block(c, &h, status, content_type, extra_headers) ||
        !sl_buf_printf(&h, "Cache-Control: no-cache\r\n%s\r\n", c->chunked ? "Transfer-Encoding: chunked\r\n" : "")) {
        sl_buf_free(&h);
        conn_close(c);
        return;
    }
    c->streaming = 1;
    conn_write(c, h.p, h.n, NULL, 0);
    sl_buf_free(&h);
}

int sl_http_stream_write(sl_http_conn *c, const char *data, size_t len) {
    if (c->closing || !c->streaming || !len) return !c->closing;
    int ok;
    if (c->chunked) {
        char pre[32];
        int n = snprintf(pre, sizeof pre, "%zx\r\n", len);
        sl_buf b = {0};
        ok = sl_buf_append(&b, pre, (size_t)n) && sl_buf_append(&b, data, len) && sl_buf_append(&b, "\r\n", 2);
        ok = ok && conn_write(c, b.p, b.n, NULL, 0);
        sl_buf_free(&b);
    } else {
        ok = conn_write(c, data, len, NULL, 0);
    }
    if (!ok) return 0;
    /* A client that does not read its stream: bounded memory, then it is cut off (and its work cancelled). */
    if (c->tcp.write_queue_size > c->srv->lim.max_output_bytes) {
        conn_close(c);
        return 0;
    }
    /* Output backed up in our queue: the write timer watches it (armed once; on_timer re-arms while it drains). */
    if (c->state == ST_BUSY && c->tcp.write_queue_size > 0 && !uv_is_active((uv_handle_t *)&c->timer))
        conn_arm(c, c->srv->lim.write_timeout_ms);
    return 1;
}

void sl_http_stream_end(sl_http_conn *c) {
    if (c->closing || !c->streaming) return;
    if (c->chunked && !conn_write(c, "0\r\n\r\n", 5, NULL, 0)) return;
    exchange_done(c);
}

void sl_http_conn_set_exchange(sl_http_conn *c, void *exchange) { c->exchange = exchange; }

void sl_http_conn_add_headers(sl_http_conn *c, const char *lines) {
    if (!sl_buf_append(&c->resp_headers, lines, strlen(lines))) c->resp_headers.n = 0;
}

/* ---- parsing ----------------------------------------------------------------------------------------- */
static void request_reset(sl_http_conn *c) {
    c->method.n = c->url.n = c->field.n = c->value.n = c->body.n = 0;
    if (c->body.cap > SL_HTTP_MAX_PENDING) sl_buf_free(&c->body); /* don't keep a big body's buffer around */
    c->in_value = 0;
    c->header_bytes = c->raw_body_bytes = 0;
    c->n_host = c->has_te = c->has_cl = c->expect_continue = 0;
    free(c->authorization);
    free(c->origin);
    free(c->sluice_replica);
    c->authorization = c->origin = c->sluice_replica = NULL;
}

static int parse_fail(sl_http_conn *c, int status, const char *msg) {
    c->err_status = status;
    c->err_msg = msg;
    return HPE_USER;
}

static int count_header(sl_http_conn *c, size_t len) {
    c->header_bytes += len;
    return c->header_bytes > c->srv->lim.max_header_bytes ? parse_fail(c, 431, "request headers too large") : 0;
}

static int on_message_begin(llhttp_t *p) {
    sl_http_conn *c = p->data;
    request_reset(c);
    c->state = ST_HEADERS;
    conn_arm(c, c->srv->lim.header_timeout_ms);
    return 0;
}

static int on_method(llhttp_t *p, const char *at, size_t len) {
    sl_http_conn *c = p->data;
    if (count_header(c, len)) return HPE_USER;
    return sl_buf_append(&c->method, at, len) ? 0 : parse_fail(c, 503, "out of memory");
}

static int on_url(llhttp_t *p, const char *at, size_t len) {
    sl_http_conn *c = p->data;
    if (count_header(c, len)) return HPE_USER;
    return sl_buf_append(&c->url, at, len) ? 0 : parse_fail(c, 503, "out of memory");
}

static int header_done(sl_http_conn *c) {
    if (!c->field.p) return 0;
    const char *f = c->field.p, *v = c->value.p ? c->value.p : "";
    for (size_t i = 0; i < c->field.n; i++)
        if (f[i] == ' ' || f[i] == '\t') return parse_fail(c, 400, "whitespace in a header name");
    for (size_t i = 0; i < c->value.n; i++)
        if (v[i] == '\r' || v[i] == '\n') return parse_fail(c, 400, "folded header lines are not accepted");
    if (!strcasecmp(f, "host"))
        c->n_host++;
    else if (!strcasecmp(f, "transfer-encoding"))
        c->has_te = 1;
    else if (!strcasecmp(f, "content-length"))
        c->has_cl = 1;
    else if (!strcasecmp(f, "expect") && !strcasecmp(v, "100-continue"))
        c->expect_continue = 1;
    else if (!strcasecmp(f, "authorization") && !c->authorization)
        c->authorization = strdup(v);
    else if (!strcasecmp(f, "origin") && !c->origin)
        c->origin = strdup(v);
    else if (!strcasecmp(f, "x-sluice-replica") && !c->sluice_replica)
        c->sluice_replica = strdup(v);
    c->field.n = c->value.n = 0;
    if (c->field.p) c->field.p[0] = 0;
    if (c->value.p) c->value.p[0] = 0;
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len) {
    sl_http_conn *c = p->data;
    if (count_header(c, len)) return HPE_USER;
    if (c->in_value && header_done(c)) return HPE_USER;
    c->in_value = 0;
    return sl_buf_append(&c->field, at, len) ? 0 : parse_fail(c, 503, "out of memory");
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
    sl_http_conn *c = p->data;
    if (count_header(c, len)) return HPE_USER;
    c->in_value = 1;
    return sl_buf_append(&c->value, at, len) ? 0 : parse_fail(c, 503, "out of memory");
}

static int on_headers_complete(llhttp_t *p) {
    sl_http_conn *c = p->data;
    if (c->in_value && header_done(c)) return HPE_USER;
    c->in_value = 0;
    int minor = p->http_minor;
    if (p->http_major != 1) return parse_fail(c, 400, "only HTTP/1.x is served");
    if (minor >= 1 && c->n_host != 1) return parse_fail(c, 400, "an HTTP/1.1 request needs exactly one Host header");
    if (minor == 0 && c->has_te) return parse_fail(c, 400, "Transfer-Encoding is not allowed in HTTP/1.0");
    if (c->has_te && c->has_cl) return parse_fail(c, 400, "Content-Length together with Transfer-Encoding");
    if (c->has_cl && p->content_length > c->srv->lim.max_body_bytes)
        return parse_fail(c, 413, "request body too large");
    if (c->expect_continue) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        conn_write(c, cont, sizeof cont - 1, NULL, 0);
    }
    c->state = ST_BODY;
    conn_arm(c, c->srv->lim.body_timeout_ms);
    return 0;
}

static int count_body(sl_http_conn *c, size_t len) {
    c->raw_body_bytes += len;
    return c->raw_body_bytes > c->srv->lim.max_body_bytes ? parse_fail(c, 413, "request body too large") : 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
    sl_http_conn *c = p->data;
    if (count_body(c, len)) return HPE_USER;
    return sl_buf_append(&c->body, at, len) ? 0 : parse_fail(c, 503, "out of memory");
}

static int on_chunk_ext(llhttp_t *p, const char *at, size_t len) { return count_body(p->data, len); }

/* Each chunk's size line and CRLFs: at least 5 bytes ("0\r\n" + "\r\n"); counted so that a stream of empty
 * extension-only chunks cannot run forever under the limit. */
static int on_chunk_header(llhttp_t *p) { return count_body(p->data, 5); }

static int on_message_complete(llhttp_t *p) {
    sl_http_conn *c = p->data;
    c->state = ST_BUSY;
    conn_arm(c, 0);
    c->busy = 1;
    c->keep_alive = llhttp_should_keep_alive(p);
    return HPE_PAUSED; /* dispatched by conn_process, outside llhttp */
}

static void dispatch(sl_http_conn *c) {
    sl_buf_append(&c->body, "", 0); /* NUL-terminate even when empty */
    char *q = strchr(c->url.p ? c->url.p : "", '?');
    if (q) *q = 0;
    c->is_head = c->method.p && !strcmp(c->method.p, "HEAD");
    c->resp_headers.n = 0;
    sl_http_request r = {
        .method = c->method.p ? c->method.p : "",
        .path = c->url.p ? c->url.p : "",
        .body = c->body.p ? c->body.p : "",
        .body_len = c->body.n,
        .authorization = c->authorization,
        .origin = c->origin,
        .sluice_replica = c->sluice_replica,
    };
    c->srv->on_request(c, &r, c->srv->user_data);
}

/* Checks the request line's spacing, which llhttp 8.1 is lenient about: "METHOD SP target SP HTTP/1.x". */
static int request_line_ok(const char *p, size_t n) {
    size_t i = 0, spaces = 0;
    while (i < n && p[i] != '\r' && p[i] != '\n') {
        if (p[i] == ' ') {
            if (i == 0 || p[i - 1] == ' ') return 0;
            spaces++;
        } else if (p[i] == '\t') {
            return 0;
        }
        i++;
    }
    if (i == n) return 1; /* incomplete: checked again once more arrives (the header limit bounds it) */
    return spaces == 2 && p[i - 1] != ' ';
}

/* llhttp 8.1 joins obs-fold continuation lines into the value without telling us; the raw header section is
 * scanned here instead: a line starting with a space or tab is refused. Returns 0 on a violation. */
static int scan_headers(sl_http_conn *c, const char *p, size_t n) {
    for (size_t i = 0; i < n && c->hs_active; i++) {
        char ch = p[i];
        if (c->hs_line_start) {
            if (ch == ' ' || ch == '\t') return 0;
            if (ch == '\r') continue;
            if (ch == '\n') {
                c->hs_active = 0; /* the empty line: the body (if any) follows */
                break;
            }
            c->hs_line_start = 0;
        }
        if (ch == '\n') c->hs_line_start = 1;
    }
    return 1;
}

static void conn_process(sl_http_conn *c) {
    c->in_process = 1;
    while (!c->closing && !c->busy && c->pending_off < c->pending.n) {
        const char *start = c->pending.p + c->pending_off;
        size_t avail = c->pending.n - c->pending_off;
        if (c->state == ST_IDLE) {
            /* A new request starts here: skip the CRLFs some clients send between requests. */
            while (avail && (*start == '\r' || *start == '\n')) start++, avail--, c->pending_off++;
            if (!avail) break;
            if (!request_line_ok(start, avail)) {
                c->in_process = 0;
                conn_fail(c, 400, "malformed request line");
                return;
            }
            c->hs_active = 1;
            c->hs_line_start = 0;
        }
        if (c->hs_active && !scan_headers(c, start, avail)) {
            c->in_process = 0;
            conn_fail(c, 400, "folded header lines are not accepted");
            return;
        }
        c->err_status = 400;
        c->err_msg = NULL;
        llhttp_errno_t e = llhttp_execute(&c->parser, start, avail);
        if (e == HPE_OK) {
            c->pending_off = c->pending.n;
            break;
        }
        if (e == HPE_PAUSED) {
            c->pending_off += (size_t)(llhttp_get_error_pos(&c->parser) - start);
            llhttp_resume(&c->parser);
            dispatch(c);
            continue;
        }
        c->in_process = 0;
        conn_fail(c, c->err_status, c->err_msg ? c->err_msg : "malformed HTTP request");
        return;
    }
    c->in_process = 0;
    if (c->closing) return;
    if (c->pending_off == c->pending.n) {
        c->pending.n = c->pending_off = 0;
    } else if (c->pending_off > SL_HTTP_MAX_PENDING / 2) {
        memmove(c->pending.p, c->pending.p + c->pending_off, c->pending.n - c->pending_off);
        c->pending.n -= c->pending_off;
        c->pending_off = 0;
    }
}

/* ---- reading ----------------------------------------------------------------------------------------- */
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    sl_http_conn *c = h->data;
    size_t want = SL_HTTP_READ_CHUNK;
    if (c->pending.n + want + 1 > c->pending.cap) {
        size_t cap = c->pending.cap ? c->pending.cap : want + 1;
        while (cap < c->pending.n + want + 1) cap *= 2;
        char *p = realloc(c->pending.p, cap);
        if (!p) {
            *buf = uv_buf_init(NULL, 0);
            return;
        }
        c->pending.p = p;
        c->pending.cap = cap;
    }
    *buf = uv_buf_init(c->pending.p + c->pending.n, (unsigned)want);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    sl_http_conn *c = s->data;
    if (nread < 0) {
        /* EOF or error: the client is gone; whatever it asked for is cancelled (conn_close tells the handler). */
        conn_close(c);
        return;
    }
    if (nread == 0) return;
    c->pending.n += (size_t)nread;
    if (c->state == ST_IDLE && !c->busy) conn_arm(c, c->srv->lim.header_timeout_ms);
    if (!c->busy) conn_process(c);
    if (!c->closing && c->busy && c->pending.n - c->pending_off > SL_HTTP_MAX_PENDING) {
        uv_read_stop(s); /* resumed when the answer is done; until then the client's disconnect shows on write */
        c->reading = 0;
    }
}

static void on_timer(uv_timer_t *t) {
    sl_http_conn *c = t->data;
    switch (c->state) {
    case ST_IDLE:
        conn_close(c);
        break;
    case ST_HEADERS:
    case ST_BODY:
        conn_fail(c, 408, "the request was not received in time");
        break;
    case ST_BUSY: {
        /* Output queued and no write completed for write_timeout_ms: the client stopped reading. */
        uint64_t idle = uv_now(c->srv->loop) - c->last_write_progress_ms;
        if (c->tcp.write_queue_size == 0)
            break;
        if (idle >= c->srv->lim.write_timeout_ms)
            conn_close(c);
        else
            conn_arm(c, c->srv->lim.write_timeout_ms - idle);
        break;
    }
    }
}

/* ---- connections ------------------------------------------------------------------------------------- */
/* The server goes once it was closed, its listener is closed and no connection memory is left: pending write
 * callbacks of closing connections still look at it. */
static void server_maybe_free(sl_http_server *s) {
    if (s->closing && !s->listening && s->n_alloc == 0) free(s);
}

static void on_handle_closed(uv_handle_t *h) {
    sl_http_conn *c = h->data;
    if (--c->handles_open > 0) return;
    sl_http_server *s = c->srv;
    sl_buf_free(&c->method);
    sl_buf_free(&c->url);
    sl_buf_free(&c->field);
    sl_buf_free(&c->value);
    sl_buf_free(&c->body);
    sl_buf_free(&c->pending);
    sl_buf_free(&c->resp_headers);
    free(c->authorization);
    free(c->origin);
    free(c->sluice_replica);
    free(c);
    s->n_alloc--;
    server_maybe_free(s);
}

static void conn_close(sl_http_conn *c) {
    if (c->closing) return;
    c->closing = 1;
    sl_http_server *s = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    s->n_conns--;
    sl_metrics_note_connection(-1); /* metrics */
    if (c->exchange && s->on_close) s->on_close(c, c->exchange, s->user_data);
    c->exchange = NULL;
    c->busy = 0;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
}

static void on_connection(uv_stream_t *server, int status) {
    sl_http_server *s = server->data;
    if (status < 0) return;
    sl_http_conn *c = calloc(1, sizeof *c);
    if (!c) return;
    c->srv = s;
    s->n_alloc++;
    uv_tcp_init(s->loop, &c->tcp);
    uv_timer_init(s->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->handles_open = 2;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
        c->closing = 1;
        uv_close((uv_handle_t *)&c->timer, on_handle_closed);
        uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1); /* streamed tokens must not wait for Nagle's timer */
    /* Bound the kernel's share too: left to autotuning, a socket's send buffer grows to tcp_wmem's maximum
     * (4 MiB by default) for a client that does not read, hiding the stall from max_output_bytes. The
     * kernel doubles the value given; 256 KiB keeps a fast reader's throughput (a few ms of tokens). */
    int sndbuf = (int)SL_MIN_SIZE(s->lim.max_output_bytes, (size_t)256 << 10);
    uv_send_buffer_size((uv_handle_t *)&c->tcp, &sndbuf);
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    s->n_conns++;
    sl_metrics_note_connection(1); /* metrics */
    llhttp_init(&c->parser, HTTP_REQUEST, &s->settings);
    c->parser.data = c;
    c->state = ST_IDLE;
    if (s->n_conns > s->lim.max_connections) {
        c->busy = 1; /* as if answering, so the refusal goes out and the connection closes */
        c->keep_alive = 0;
        static const char msg[] =
            "{\"error\":{\"message\":\"too many connections\",\"type\":\"server_error\",\"param\":null,\"code\":null}}";
        sl_http_respond(c, 503, "application/json", "Retry-After: 1\r\n", msg, sizeof msg - 1);
        return;
    }
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    c->reading = 1;
    conn_arm(c, s->lim.keepalive_ms);
}

sl_status sl_http_server_start(uv_loop_t *loop, const char *host, int port, const sl_http_limits *lim,
                               sl_http_handler_cb on_request, sl_http_close_cb on_close, void *user_data,
                               sl_http_server **out) {
    *out = NULL;
    sl_http_server *s = calloc(1, sizeof *s);
    if (!s) return SL_OUT_OF_MEMORY;
    s->loop = loop;
    s->lim = *lim;
    s->on_request = on_request;
    s->on_close = on_close;
    s->user_data = user_data;
    llhttp_settings_init(&s->settings);
    s->settings.on_message_begin = on_message_begin;
    s->settings.on_method = on_method;
    s->settings.on_url = on_url;
    s->settings.on_header_field = on_header_field;
    s->settings.on_header_value = on_header_value;
    s->settings.on_headers_complete = on_headers_complete;
    s->settings.on_body = on_body;
    s->settings.on_chunk_extension_name = on_chunk_ext;
    s->settings.on_chunk_extension_value = on_chunk_ext;
    s->settings.on_chunk_header = on_chunk_header;
    s->settings.on_message_complete = on_message_complete;

    struct sockaddr_storage addr;
    int rc = strchr(host, ':') ? uv_ip6_addr(host, port, (struct sockaddr_in6 *)&addr)
                               : uv_ip4_addr(host, port, (struct sockaddr_in *)&addr);
    if (rc < 0) {
        free(s);
        fprintf(stderr, "sluice: '%s' is not an IP address\n", host);
        return SL_INVALID_ARGUMENT;
    }
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    if ((rc = uv_tcp_bind(&s->listener, (struct sockaddr *)&addr, 0)) < 0 ||
        (rc = uv_listen((uv_stream_t *)&s->listener, SL_HTTP_BACKLOG, on_connection)) < 0) {
        fprintf(stderr, "sluice: cannot listen on %s:%d: %s\n", host, port, uv_strerror(rc));
        s->closing = 1;
        uv_close((uv_handle_t *)&s->listener, NULL);
        uv_run(loop, UV_RUN_NOWAIT); /* let libuv finish closing before the memory goes */
        free(s);
        return SL_IO;
    }
    s->listening = 1;
    struct sockaddr_storage bound;
    int len = sizeof bound;
    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &len);
    s->port = bound.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
                                          : ntohs(((struct sockaddr_in *)&bound)->sin_port);
    *out = s;
    return SL_OK;
}

int sl_http_server_port(const sl_http_server *s) { return s->port; }

static void on_listener_closed(uv_handle_t *h) {
    sl_http_server *s = h->data;
    s->listening = 0;
    server_maybe_free(s);
}

void sl_http_server_stop_accepting(sl_http_server *s) {
    s->draining = 1;
    if (s->listening && !uv_is_closing((uv_handle_t *)&s->listener))
        uv_close((uv_handle_t *)&s->listener, on_listener_closed);
}

void sl_http_server_close_idle(sl_http_server *s) {
    sl_http_conn *c = s->conns;
    while (c) {
        sl_http_conn *next = c->next;
        if (!c->busy && c->state == ST_IDLE) conn_close(c);
        c = next;
    }
}

int sl_http_server_n_busy(const sl_http_server *s) {
    int n = 0;
    for (sl_http_conn *c = s->conns; c; c = c->next) n += c->busy;
    return n;
}

void sl_http_server_close(sl_http_server *s) {
    /* connections flushing their last answer finish that first (the write timer bounds it) */
    sl_http_conn *c = s->conns;
    while (c) {
        sl_http_conn *next = c->next;
        if (!c->shutting_down) conn_close(c);
        c = next;
    }
    s->closing = 1;
    if (s->listening && !uv_is_closing((uv_handle_t *)&s->listener))
        uv_close((uv_handle_t *)&s->listener, on_listener_closed);
    server_maybe_free(s);
}
