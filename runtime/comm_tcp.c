/*
 * comm_tcp.c — sharing a group's unique id (NCCL's ncclUniqueId) over TCP, so ranks in several processes
 * or hosts can join one communicator, as the established engines bootstrap NCCL.
 *
 * Protocol (all fixed sizes, so a reader never trusts a length from the wire):
 *   peer      → publisher: "SLCOMMQ1"                      (8 bytes, the request)
 *   publisher → peer:      "SLCOMMA1" + id[SL_COMM_ID_BYTES] (the answer)
 * The publisher serves connections concurrently with poll(): a connection that sends anything but the
 * request, closes before sending it, or has not sent it within SL_ID_CLIENT_MS, is dropped and not counted,
 * so a port scanner, a confused client or a crowd of idle connections can neither crash the publisher nor
 * keep a real peer out for longer than that (peers wait in the listen backlog meanwhile). Every wait is bounded by the caller's
 * timeout through poll(); sockets are non-blocking throughout and writes use MSG_NOSIGNAL (a peer that
 * hangs up must not kill the process with SIGPIPE).
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "comm.h"
#include "sl_util.h"

#define SL_ID_MAGIC_LEN 8
static const char sl__id_req[SL_ID_MAGIC_LEN] = {'S', 'L', 'C', 'O', 'M', 'M', 'Q', '1'};
static const char sl__id_ans[SL_ID_MAGIC_LEN] = {'S', 'L', 'C', 'O', 'M', 'M', 'A', '1'};
#define SL_ID_ANSWER_BYTES (SL_ID_MAGIC_LEN + SL_COMM_ID_BYTES)

/* Connections the publisher serves at once: peers are the ranks of one group (a few to a few hundred);
 * beyond this a new connection waits in the listen backlog until a slot frees. */
#define SL_ID_MAX_CLIENTS 256
/* Pause between connection attempts of a fetcher while the publisher is not listening yet. */
#define SL_ID_RETRY_MS 50
/* How long an accepted connection may take to send its 8-byte request: a real peer sends it at once, so a
 * second is generous, and it bounds how long idle connections can hold the publisher's slots. */
#define SL_ID_CLIENT_MS 1000
/* Pause of the listener after accept() ran out of file descriptors (EMFILE/ENFILE): the pending connection
 * stays readable, so without a pause poll() would return at once, again and again. */
#define SL_ID_EMFILE_PAUSE_MS 50

struct sl_comm_id_server {
    int fd;
    char where[300]; /* "host:port" for messages */
};

static const char *host_or_any(const char *host, int fetch) {
    if (host && *host) return host;
    return fetch ? "127.0.0.1" : NULL;
}

static int set_nonblocking(int fd) {
    int fl = fcntl(fd, F_GETFL, 0);
    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static int ms_left(int64_t deadline_us) {
    int64_t left = (deadline_us - sl_now_us()) / 1000;
    return left < 0 ? 0 : left > 1000000000 ? 1000000000 : (int)left;
}

sl_status sl_comm_id_server_open(const char *host, int port, sl_comm_id_server **out, int *bound_port) {
    *out = NULL;
    if (port < 0 || port > 65535)
        return sl__errorf(SL_INVALID_ARGUMENT, "id exchange: port %d outside [0, 65535]", port);
    const char *h = host_or_any(host, 0);
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai;
    int gai = getaddrinfo(h, portstr, &hints, &ai);
    if (gai != 0)
        return sl__errorf(SL_IO, "id exchange: cannot resolve %s:%d (%s)", h ? h : "*", port, gai_strerror(gai));
    sl_comm_id_server *s = sl__calloc(1, sizeof *s);
    if (!s) {
        freeaddrinfo(ai);
        return sl__errorf(SL_OUT_OF_MEMORY, "id exchange server");
    }
    s->fd = -1;
    int err = 0;
    for (struct addrinfo *a = ai; a && s->fd < 0; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        /* backlog: peers that connect while the publisher is busy queue here */
        if (bind(fd, a->ai_addr, a->ai_addrlen) != 0 || listen(fd, 128) != 0 || set_nonblocking(fd) != 0) {
            err = errno;
            close(fd);
            continue;
        }
        s->fd = fd;
    }
    freeaddrinfo(ai);
    if (s->fd < 0) {
        free(s);
        return sl__errorf(SL_IO, "id exchange: cannot listen on %s:%d (%s)", h ? h : "*", port, strerror(err));
    }
    struct sockaddr_storage sa;
    socklen_t len = sizeof sa;
    int p = port;
    if (getsockname(s->fd, (struct sockaddr *)&sa, &len) == 0) {
        if (sa.ss_family == AF_INET) p = ntohs(((struct sockaddr_in *)&sa)->sin_port);
        if (sa.ss_family == AF_INET6) p = ntohs(((struct sockaddr_in6 *)&sa)->sin6_port);
    }
    snprintf(s->where, sizeof s->where, "%.256s:%d", h ? h : "*", p);
    if (bound_port) *bound_port = p;
    *out = s;
    return SL_OK;
}

void sl_comm_id_server_close(sl_comm_id_server *s) {
    if (!s) return;
    if (s->fd >= 0) close(s->fd);
    free(s);
}

typedef struct id_client {
    int fd;
    int64_t drop_at_us; /* accepted + SL_ID_CLIENT_MS: dropped then if still incomplete */
    int got;            /* request bytes received so far */
    char req[SL_ID_MAGIC_LEN];
} id_client;

/* Reads what the client sent; returns 1 when it is complete and correct, 0 while incomplete, -1 to drop it. */
static int client_read(id_client *c) {
    for (;;) {
        ssize_t n = recv(c->fd, c->req + c->got, (size_t)(SL_ID_MAGIC_LEN - c->got), 0);
        if (n > 0) {
            c->got += (int)n;
            if (c->got < SL_ID_MAGIC_LEN) continue;
            return memcmp(c->req, sl__id_req, SL_ID_MAGIC_LEN) == 0 ? 1 : -1;
        }
        if (n == 0) return -1; /* closed before a whole request */
        if (errno == EINTR) continue;
        return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
    }
}

sl_status sl_comm_id_server_serve(sl_comm_id_server *s, const uint8_t *id, int n_peers, int timeout_ms) {
    if (!s || !id || n_peers < 0 || timeout_ms < 0)
        return sl__errorf(SL_INVALID_ARGUMENT, "id exchange: bad arguments (n_peers %d, timeout %d ms)", n_peers,
                          timeout_ms);
    uint8_t ans[SL_ID_ANSWER_BYTES];
    memcpy(ans, sl__id_ans, SL_ID_MAGIC_LEN);
    memcpy(ans + SL_ID_MAGIC_LEN, id, SL_COMM_ID_BYTES);
    id_client cl[SL_ID_MAX_CLIENTS];
    struct pollfd pf[SL_ID_MAX_CLIENTS + 1];
    int n_cl = 0, served = 0;
    int64_t deadline = sl_now_us() + (int64_t)timeout_ms * 1000, listen_again_us = 0;
    sl_status st = SL_OK;
    while (served < n_peers) {
        int left = ms_left(deadline);
        if (left == 0) {
            st = sl__errorf(SL_TIMEOUT, "id exchange on %s: %d of %d peers fetched the id within %d ms", s->where,
                            served, n_peers, timeout_ms);
            break;
        }
        /* wake for the earliest client deadline, and for the end of a listener pause */
        int64_t now = sl_now_us(), wake = deadline;
        for (int i = 0; i < n_cl; i++) wake = SL_MIN(wake, cl[i].drop_at_us);
        if (listen_again_us > now) wake = SL_MIN(wake, listen_again_us);
        left = SL_MIN(left, ms_left(wake) + 1);
        int n_pf = 0;
        if (n_cl < SL_ID_MAX_CLIENTS && now >= listen_again_us)
            pf[n_pf++] = (struct pollfd){.fd = s->fd, .events = POLLIN};
        int first_client = n_pf;
        for (int i = 0; i < n_cl; i++) pf[n_pf++] = (struct pollfd){.fd = cl[i].fd, .events = POLLIN};
        int r = poll(pf, (nfds_t)n_pf, left);
        if (r < 0 && errno != EINTR) {
            st = sl__errorf(SL_IO, "id exchange on %s: poll: %s", s->where, strerror(errno));
            break;
        }
        if (r < 0) continue;
        now = sl_now_us();
        /* clients first, from the back, so dropping one (swap with the last) keeps indices valid */
        for (int i = n_cl - 1; i >= 0; i--) {
            int res = 0;
            if (pf[first_client + i].revents & (POLLIN | POLLHUP | POLLERR)) res = client_read(&cl[i]);
            if (res == 0 && now >= cl[i].drop_at_us) res = -1; /* too slow: its slot goes to someone else */
            if (res == 0) continue;
            if (res == 1 && send(cl[i].fd, ans, sizeof ans, MSG_NOSIGNAL) == (ssize_t)sizeof ans) served++;
            close(cl[i].fd);
            cl[i] = cl[--n_cl];
        }
        if (first_client == 1 && (pf[0].revents & POLLIN)) {
            while (n_cl < SL_ID_MAX_CLIENTS) {
                int fd = accept4(s->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0) {
                    /* out of descriptors: the connection stays pending; listen again a little later */
                    if (errno == EMFILE || errno == ENFILE) listen_again_us = sl_now_us() + SL_ID_EMFILE_PAUSE_MS * 1000;
                    break; /* EAGAIN: no more pending; other errors: that connection is gone */
                }
                cl[n_cl++] = (id_client){.fd = fd, .drop_at_us = sl_now_us() + (int64_t)SL_ID_CLIENT_MS * 1000};
            }
        }
    }
    for (int i = 0; i < n_cl; i++) close(cl[i].fd);
    return st;
}

sl_status sl_comm_id_publish(const char *host, int port, const uint8_t *id, int n_peers, int timeout_ms) {
    sl_comm_id_server *s;
    sl_status st = sl_comm_id_server_open(host, port, &s, NULL);
    if (st != SL_OK) return st;
    st = sl_comm_id_server_serve(s, id, n_peers, timeout_ms);
    sl_comm_id_server_close(s);
    return st;
}

/* Whether a failed connect is worth retrying: the publisher may not listen yet, or the network may still come
 * up; a permission or address-family error will not change. */
static int connect_retryable(int e) {
    return e == ECONNREFUSED || e == ETIMEDOUT || e == ENETUNREACH || e == EHOSTUNREACH || e == ECONNRESET ||
           e == EAGAIN || e == EINTR;
}

/* One connection attempt: 1 connected (*fd_out), 0 refused or unreachable for now (retry), -1 an error that
 * retrying cannot cure (on every address). */
static int try_connect(const struct addrinfo *ai, int64_t deadline, int *fd_out, int *err) {
    int retry = 0;
    for (const struct addrinfo *a = ai; a; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            *err = errno;
            continue;
        }
        int rc = connect(fd, a->ai_addr, a->ai_addrlen);
        if (rc != 0 && errno == EINPROGRESS) {
            struct pollfd pf = {.fd = fd, .events = POLLOUT};
            int pr;
            do pr = poll(&pf, 1, ms_left(deadline));
            while (pr < 0 && errno == EINTR);
            int so = 0;
            socklen_t sl = sizeof so;
            if (pr == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &so, &sl) == 0 && so == 0)
                rc = 0;
            else
                errno = pr == 0 ? ETIMEDOUT : so ? so : errno;
        }
        if (rc == 0) {
            *fd_out = fd;
            return 1;
        }
        *err = errno;
        retry |= connect_retryable(errno);
        close(fd);
    }
    return retry ? 0 : -1;
}

sl_status sl_comm_id_fetch(const char *host, int port, uint8_t *id, int timeout_ms) {
    if (!id || timeout_ms < 0 || port <= 0 || port > 65535)
        return sl__errorf(SL_INVALID_ARGUMENT, "id exchange: bad arguments (port %d, timeout %d ms)", port, timeout_ms);
    const char *h = host_or_any(host, 1);
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
    int gai = getaddrinfo(h, portstr, &hints, &ai);
    if (gai != 0) return sl__errorf(SL_IO, "id exchange: cannot resolve %s:%d (%s)", h, port, gai_strerror(gai));
    int64_t deadline = sl_now_us() + (int64_t)timeout_ms * 1000;
    int fd = -1, err = ETIMEDOUT, rc;
    while ((rc = try_connect(ai, deadline, &fd, &err)) == 0) {
        int left = ms_left(deadline);
        if (left == 0) break;
        poll(NULL, 0, SL_MIN(left, SL_ID_RETRY_MS)); /* the publisher may not listen yet: try again soon */
    }
    freeaddrinfo(ai);
    if (rc < 0)
        return sl__errorf(SL_IO, "id exchange: cannot connect to %s:%d: %s", h, port, strerror(err));
    if (fd < 0)
        return sl__errorf(SL_TIMEOUT, "id exchange: no publisher at %s:%d within %d ms (last error: %s)", h, port,
                          timeout_ms, strerror(err));
    sl_status st = SL_OK;
    if (send(fd, sl__id_req, sizeof sl__id_req, MSG_NOSIGNAL) != (ssize_t)sizeof sl__id_req) {
        st = sl__errorf(SL_IO, "id exchange: sending the request to %s:%d: %s", h, port, strerror(errno));
        goto out;
    }
    uint8_t ans[SL_ID_ANSWER_BYTES];
    size_t got = 0;
    while (got < sizeof ans) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        int left = ms_left(deadline);
        int pr = left > 0 ? poll(&pf, 1, left) : 0;
        if (pr < 0 && errno == EINTR) continue;
        if (pr == 0) {
            st = sl__errorf(SL_TIMEOUT, "id exchange: %s:%d sent %zu of %d bytes within %d ms", h, port, got,
                            SL_ID_ANSWER_BYTES, timeout_ms);
            goto out;
        }
        ssize_t n = recv(fd, ans + got, sizeof ans - got, 0);
        if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
        if (n <= 0) {
            st = sl__errorf(SL_IO, "id exchange: %s:%d closed the connection after %zu of %d bytes%s%s", h, port, got,
                            SL_ID_ANSWER_BYTES, n < 0 ? ": " : "", n < 0 ? strerror(errno) : "");
            goto out;
        }
        got += (size_t)n;
        /* refuse another protocol as soon as the magic is in, without waiting for the rest */
        if (got >= SL_ID_MAGIC_LEN && memcmp(ans, sl__id_ans, SL_ID_MAGIC_LEN) != 0) {
            st = sl__errorf(SL_BAD_FORMAT, "id exchange: %s:%d does not speak the Sluice id exchange", h, port);
            goto out;
        }
    }
    memcpy(id, ans + SL_ID_MAGIC_LEN, SL_COMM_ID_BYTES);
out:
    close(fd);
    return st;
}
