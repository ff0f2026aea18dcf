/*
 * test_comm_tcp.c — sharing a group's unique id over TCP on 127.0.0.1.
 *
 * The real exchange with 1 and 3 peers (ports picked by the system, so tests never collide), a fetch that
 * times out when nobody publishes, a publisher that times out when nobody comes, fake publishers that send
 * garbage or close early (the fetcher returns a status naming host:port), and hostile clients against the
 * real publisher (garbage, early close, partial request): they are dropped, and a real peer still gets the id.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "comm.h"
#include "sl_util.h"
#include "testutil.h"

static void make_id(uint8_t *id, uint64_t seed) {
    for (int i = 0; i < SL_COMM_ID_BYTES; i++) id[i] = (uint8_t)sl_test_rand_u64(&seed);
}

typedef struct fetcher {
    pthread_t th;
    int port;
    int timeout_ms;
    uint8_t id[SL_COMM_ID_BYTES];
    sl_status st;
    char err[1024];
} fetcher;

static void *fetch_main(void *p) {
    fetcher *f = p;
    f->st = sl_comm_id_fetch("127.0.0.1", f->port, f->id, f->timeout_ms);
    snprintf(f->err, sizeof f->err, "%s", sl_last_error());
    return NULL;
}

static void exchange(int n_peers) {
    sl_comm_id_server *s;
    int port = 0;
    cr_assert_eq(sl_comm_id_server_open("127.0.0.1", 0, &s, &port), SL_OK, "%s", sl_last_error());
    cr_assert(port > 0);
    uint8_t id[SL_COMM_ID_BYTES];
    make_id(id, 42 + (uint64_t)n_peers);
    fetcher f[3];
    for (int i = 0; i < n_peers; i++) {
        f[i] = (fetcher){.port = port, .timeout_ms = 5000};
        pthread_create(&f[i].th, NULL, fetch_main, &f[i]);
    }
    cr_assert_eq(sl_comm_id_server_serve(s, id, n_peers, 5000), SL_OK, "%s", sl_last_error());
    for (int i = 0; i < n_peers; i++) {
        pthread_join(f[i].th, NULL);
        cr_assert_eq(f[i].st, SL_OK, "peer %d: %s", i, f[i].err);
        cr_assert(memcmp(f[i].id, id, SL_COMM_ID_BYTES) == 0, "peer %d got another id", i);
    }
    sl_comm_id_server_close(s);
}

Test(comm_tcp, one_peer_gets_the_id, .timeout = 30) { exchange(1); }

Test(comm_tcp, three_peers_get_the_id, .timeout = 30) { exchange(3); }

/* A port nobody listens on: open a server to learn a free port, then close it. */
static int free_port(void) {
    sl_comm_id_server *s;
    int port = 0;
    cr_assert_eq(sl_comm_id_server_open("127.0.0.1", 0, &s, &port), SL_OK);
    sl_comm_id_server_close(s);
    return port;
}

Test(comm_tcp, fetch_times_out_when_nobody_publishes, .timeout = 30) {
    int port = free_port();
    uint8_t id[SL_COMM_ID_BYTES];
    int64_t t0 = sl_now_us();
    cr_assert_eq(sl_comm_id_fetch("127.0.0.1", port, id, 300), SL_TIMEOUT);
    int64_t ms = (sl_now_us() - t0) / 1000;
    cr_assert(ms >= 250 && ms < 5000, "took %lld ms for a 300 ms timeout", (long long)ms);
    char where[64];
    snprintf(where, sizeof where, "127.0.0.1:%d", port);
    cr_assert(strstr(sl_last_error(), where) != NULL, "message does not name %s: %s", where, sl_last_error());
}

Test(comm_tcp, publish_times_out_when_no_peer_comes, .timeout = 30) {
    uint8_t id[SL_COMM_ID_BYTES] = {0};
    sl_comm_id_server *s;
    int port;
    cr_assert_eq(sl_comm_id_server_open("127.0.0.1", 0, &s, &port), SL_OK);
    int64_t t0 = sl_now_us();
    cr_assert_eq(sl_comm_id_server_serve(s, id, 2, 200), SL_TIMEOUT);
    cr_assert((sl_now_us() - t0) / 1000 < 5000);
    cr_assert(strstr(sl_last_error(), "0 of 2") != NULL, "%s", sl_last_error());
    sl_comm_id_server_close(s);
}

/* ---- a fake publisher ------------------------------------------------------------------------------------ */
typedef struct fake {
    pthread_t th;
    int fd;
    const void *bytes;
    size_t n;
} fake;

static void *fake_main(void *p) {
    fake *f = p;
    int c = accept(f->fd, NULL, NULL);
    if (c >= 0) {
        char req[8];
        ssize_t got = recv(c, req, sizeof req, MSG_WAITALL);
        (void)got;
        if (f->n) send(c, f->bytes, f->n, MSG_NOSIGNAL);
        close(c);
    }
    return NULL;
}

static int listen_any(int *port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(fd, 8), 0);
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    *port = ntohs(a.sin_port);
    return fd;
}

static sl_status fetch_from_fake(const void *bytes, size_t n) {
    int port;
    fake f = {.fd = listen_any(&port), .bytes = bytes, .n = n};
    pthread_create(&f.th, NULL, fake_main, &f);
    uint8_t id[SL_COMM_ID_BYTES];
    sl_status st = sl_comm_id_fetch("127.0.0.1", port, id, 3000);
    pthread_join(f.th, NULL);
    close(f.fd);
    return st;
}

Test(comm_tcp, a_publisher_sending_garbage_is_refused, .timeout = 30) {
    char junk[200];
    uint64_t s = 5;
    for (size_t i = 0; i < sizeof junk; i++) junk[i] = (char)sl_test_rand_u64(&s);
    cr_assert_eq(fetch_from_fake(junk, sizeof junk), SL_BAD_FORMAT);
    cr_assert(strstr(sl_last_error(), "does not speak") != NULL, "%s", sl_last_error());
    const char http[] = "HTTP/1.1 400 Bad Request\r\n\r\n";
    cr_assert_eq(fetch_from_fake(http, sizeof http - 1), SL_BAD_FORMAT);
}

Test(comm_tcp, a_publisher_closing_early_is_an_error, .timeout = 30) {
    cr_assert_eq(fetch_from_fake(NULL, 0), SL_IO);
    cr_assert(strstr(sl_last_error(), "closed the connection after 0 of") != NULL, "%s", sl_last_error());
    char partial[20] = "SLCOMMA1"; /* the right magic, then the id cut short */
    cr_assert_eq(fetch_from_fake(partial, sizeof partial), SL_IO);
    cr_assert(strstr(sl_last_error(), "after 20 of") != NULL, "%s", sl_last_error());
}

/* ---- hostile clients against the real publisher ----------------------------------------------------------- */
typedef struct server_run {
    pthread_t th;
    sl_comm_id_server *s;
    const uint8_t *id;
    sl_status st;
} server_run;

static void *serve_main(void *p) {
    server_run *r = p;
    r->st = sl_comm_id_server_serve(r->s, r->id, 1, 5000);
    return NULL;
}

static int connect_to(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

Test(comm_tcp, hostile_clients_are_dropped_and_not_counted, .timeout = 30) {
    uint8_t id[SL_COMM_ID_BYTES];
    make_id(id, 9);
    server_run r = {.id = id};
    int port;
    cr_assert_eq(sl_comm_id_server_open("127.0.0.1", 0, &r.s, &port), SL_OK);
    pthread_create(&r.th, NULL, serve_main, &r);
    /* garbage, then read: the publisher answers nothing and hangs up */
    int g = connect_to(port);
    char junk[100];
    memset(junk, 0xA5, sizeof junk);
    send(g, junk, sizeof junk, MSG_NOSIGNAL);
    char buf[256];
    cr_assert(recv(g, buf, sizeof buf, 0) <= 0, "the publisher answered garbage");
    close(g);
    /* connect and close at once; and half a request then close */
    close(connect_to(port));
    int h = connect_to(port);
    send(h, "SLCO", 4, MSG_NOSIGNAL);
    close(h);
    /* a real peer still gets the id, and it is the one the publisher counts */
    uint8_t got[SL_COMM_ID_BYTES];
    cr_assert_eq(sl_comm_id_fetch("127.0.0.1", port, got, 5000), SL_OK, "%s", sl_last_error());
    cr_assert(memcmp(got, id, sizeof got) == 0);
    pthread_join(r.th, NULL);
    cr_assert_eq(r.st, SL_OK);
    sl_comm_id_server_close(r.s);
}

/* More idle connections than the publisher has slots (they connect and never send a byte): each is dropped
 * after its second, so a real peer that came after them still gets the id, within the publisher's timeout. */
Test(comm_tcp, idle_connections_cannot_keep_a_peer_out, .timeout = 30) {
    enum { N_IDLE = 300 }; /* > the publisher's 256 slots, < its listen backlog + slots */
    uint8_t id[SL_COMM_ID_BYTES];
    make_id(id, 11);
    server_run r = {.id = id};
    int port;
    cr_assert_eq(sl_comm_id_server_open("127.0.0.1", 0, &r.s, &port), SL_OK);
    pthread_create(&r.th, NULL, serve_main, &r);
    int idle[N_IDLE];
    for (int i = 0; i < N_IDLE; i++) idle[i] = connect_to(port);
    uint8_t got[SL_COMM_ID_BYTES];
    int64_t t0 = sl_now_us();
    cr_assert_eq(sl_comm_id_fetch("127.0.0.1", port, got, 4500), SL_OK, "%s", sl_last_error());
    cr_assert(memcmp(got, id, sizeof got) == 0);
    cr_assert_lt(sl_now_us() - t0, 4000000, "the peer waited more than two rounds of idle drops");
    pthread_join(r.th, NULL);
    cr_assert_eq(r.st, SL_OK, "%s", sl_last_error());
    for (int i = 0; i < N_IDLE; i++) close(idle[i]);
    sl_comm_id_server_close(r.s);
}

Test(comm_tcp, bad_arguments_are_statuses, .timeout = 10) {
    uint8_t id[SL_COMM_ID_BYTES] = {0};
    sl_comm_id_server *s;
    cr_assert_eq(sl_comm_id_server_open("127.0.0.1", 70000, &s, NULL), SL_INVALID_ARGUMENT);
    cr_assert_eq(sl_comm_id_fetch("127.0.0.1", 0, id, 100), SL_INVALID_ARGUMENT);
    cr_assert_eq(sl_comm_id_fetch("127.0.0.1", 1234, id, -1), SL_INVALID_ARGUMENT);
}
