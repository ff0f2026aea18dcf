/*
 * http.h — Sluice's HTTP/1.1 transport: a libuv event loop, llhttp parsing, limits and timeouts.
 *
 * This layer knows nothing of OpenAI or the engine. It accepts connections, parses one request at a time per
 * connection (pipelined requests wait, unparsed, until the one before them is answered, which answers them in
 * order and bounds what a client can make us buffer), enforces the limits (header and body size, connection
 * count, idle/header/body timeouts, queued output), refuses framing that a strict server must refuse, and
 * hands each complete request to one handler. The handler answers at once (sl_http_respond) or later from the
 * loop thread, possibly as a chunked stream (sl_http_stream_*). When a connection closes while a request is
 * being answered, the close callback tells the handler's side so it can cancel the work.
 *
 * Everything here runs on the loop thread; nothing blocks.
 */
#ifndef SL_SERVER_HTTP_H
#define SL_SERVER_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "sluice/sluice.h"

/* A growable byte buffer: p[0..n) is the content, always NUL-terminated when p != NULL. */
typedef struct sl_buf {
    char *p;
    size_t n, cap;
} sl_buf;

int sl_buf_append(sl_buf *b, const void *data, size_t len); /* 0 when out of memory */
int sl_buf_printf(sl_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sl_buf_free(sl_buf *b);

typedef struct sl_http_server sl_http_server;
typedef struct sl_http_conn sl_http_conn;

typedef struct sl_http_limits {
    size_t max_header_bytes;    /* request line plus headers */
    size_t max_body_bytes;      /* raw body bytes, chunk framing included */
    int max_connections;        /* beyond it new connections get a 503 and are closed */
    uint64_t keepalive_ms;      /* an idle connection is closed after this */
    uint64_t header_timeout_ms; /* the request line and headers must arrive within this (else 408) */
    uint64_t body_timeout_ms;   /* the body must arrive within this after the headers (else 408) */
    size_t max_output_bytes;    /* output queued on one connection beyond which the client counts as stalled */
    uint64_t write_timeout_ms;  /* queued output that makes no progress for this long: the client is stalled */
} sl_http_limits;

/* A parsed request, valid during the handler call only (copy what must outlive it). */
typedef struct sl_http_request {
    const char *method; /* "GET", "POST", ... */
    const char *path;   /* the URL's path, without the query string */
    const char *body;   /* NUL-terminated; body_len bytes */
    size_t body_len;
    const char *authorization; /* the Authorization header, or NULL */
    const char *origin;        /* the Origin header, or NULL */
    const char *sluice_replica; /* the X-Sluice-Replica header (replica pinning, api.c), or NULL */
} sl_http_request;

typedef void (*sl_http_handler_cb)(sl_http_conn *c, const sl_http_request *req, void *user_data);
/* The connection is closing while exchange (set with sl_http_conn_set_exchange) was still being answered. */
typedef void (*sl_http_close_cb)(sl_http_conn *c, void *exchange, void *user_data);

sl_status sl_http_server_start(uv_loop_t *loop, const char *host, int port, const sl_http_limits *lim,
                               sl_http_handler_cb on_request, sl_http_close_cb on_close, void *user_data,
                               sl_http_server **out);
int sl_http_server_port(const sl_http_server *s);
/* Stops accepting new connections; keep-alive connections get `Connection: close` from now on. */
void sl_http_server_stop_accepting(sl_http_server *s);
/* Closes every connection that is not answering a request. */
void sl_http_server_close_idle(sl_http_server *s);
int sl_http_server_n_busy(const sl_http_server *s);
/* Closes all connections and the listener; the server is freed once libuv has closed its handles. */
void sl_http_server_close(sl_http_server *s);

void sl_http_conn_set_exchange(sl_http_conn *c, void *exchange);
/* Header lines (each ending in \r\n) added to the answer of the current request, e.g. CORS headers. */
void sl_http_conn_add_headers(sl_http_conn *c, const char *lines);
/* A complete response with a body; extra_headers is "" or lines each ending in \r\n. Ends the exchange. */
void sl_http_respond(sl_http_conn *c, int status, const char *content_type, const char *extra_headers,
                     const char *body, size_t len);
/* Streaming: headers now, then chunks, then the end, which ends the exchange. */
void sl_http_stream_begin(sl_http_conn *c, int status, const char *content_type, const char *extra_headers);
/* Returns 0 if the connection was closed because the client stopped reading (the exchange is gone). */
int sl_http_stream_write(sl_http_conn *c, const char *data, size_t len);
void sl_http_stream_end(sl_http_conn *c);

#endif /* SL_SERVER_HTTP_H */
