/*
 * test_config_load.c — the config as a user meets it: precedence of flag > env > file > default, the flags'
 * syntax and the leftover arguments handed to the subcommand, the YAML file's errors (with file:line),
 * --print-config read back as a config file, --help, the engine parameters, the default model's path, and
 * allocation failures at every step of a load.
 */
#include <criterion/criterion.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sluice/config.h"
#include "paths.h"
#include "sl_util.h"

/* ---- helpers ------------------------------------------------------------------------------------------- */

/* Unsets SLUICE_<KEY> for every row and SLUICE_CONFIG, so the CI's or a developer's environment cannot
 * leak in. Criterion runs each test in its own process, so a test's setenv stays in that test. */
static void clear_env(void) {
    static const char *const names[] = {
#define T_NAME(group, name, ...) #name,
        SL_CONFIG_TABLE(T_NAME)
#undef T_NAME
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char var[128] = "SLUICE_";
        for (size_t j = 0; names[i][j] && j + 9 < sizeof var; j++) {
            var[7 + j] = (char)toupper((unsigned char)names[i][j]);
            var[8 + j] = 0;
        }
        unsetenv(var);
    }
    unsetenv("SLUICE_CONFIG");
    unsetenv("SLUICE_MODEL");
}

static char g_paths[4][64]; /* temporary files of the running test, removed by fini */
static int g_n_paths;

/* Writes n bytes to a fresh temporary file and returns its path. */
static const char *temp_file(const void *content, size_t n) {
    cr_assert_lt(g_n_paths, 4);
    char *path = g_paths[g_n_paths++];
    snprintf(path, sizeof g_paths[0], "/tmp/sluice-config-test-XXXXXX");
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, content, n), (ssize_t)n);
    close(fd);
    return path;
}

static const char *temp_yaml(const char *text) { return temp_file(text, strlen(text)); }

static void setup(void) {
    clear_env();
    g_n_paths = 0;
}

static void teardown(void) {
    for (int i = 0; i < g_n_paths; i++) unlink(g_paths[i]);
}

/* Loads from a NULL-terminated argument list into a fresh config. */
static sl_status load(sl_config *c, const char *const *args) {
    char *argv[64];
    int argc = 0;
    while (args[argc]) {
        argv[argc] = (char *)args[argc];
        argc++;
    }
    char *rest[64];
    int n_rest = 0;
    sl_config_init(c);
    return sl_config_load(c, argc, argv, rest, &n_rest);
}

/* Loads a YAML file alone and returns the status (the message is in sl_last_error()). */
static sl_status load_yaml(const char *text) {
    const char *path = temp_yaml(text);
    sl_config c;
    sl_status st = load(&c, (const char *[]){"--config", path, NULL});
    sl_config_free(&c);
    return st;
}

/* Name of the first setting that differs between a and b, or NULL if all are equal. */
static const char *config_diff(const sl_config *a, const sl_config *b) {
#define T_EQ_STRING(x, y) (strcmp((x), (y)) == 0)
#define T_EQ_INT(x, y) ((x) == (y))
#define T_EQ_SIZE(x, y) ((x) == (y))
#define T_EQ_FLOAT(x, y) ((x) == (y))
#define T_EQ_BOOL(x, y) ((x) == (y))
#define T_EQ_ENUM(x, y) ((x) == (y))
#define T_CMP(group, name, type, ...)                                                                         \
    if (!T_EQ_##type(a->name, b->name)) return #name;
    SL_CONFIG_TABLE(T_CMP)
#undef T_CMP
    return NULL;
}

/* Everything f received, as a string (malloc'd). */
static char *captured(FILE *f) {
    long n = ftell(f);
    rewind(f);
    char *s = malloc((size_t)n + 1);
    cr_assert_eq(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = 0;
    return s;
}

TestSuite(config, .init = setup, .fini = teardown);

/* ---- defaults and precedence --------------------------------------------------------------------------- */

Test(config, defaults_match_the_public_header) {
    sl_config c;
    sl_config_init(&c);
    cr_assert_eq(c.max_num_seqs, SL_DEFAULT_MAX_NUM_SEQS);
    cr_assert_eq(c.max_num_batched_tokens, SL_DEFAULT_MAX_NUM_BATCHED_TOKENS);
    cr_assert_eq(c.max_waiting_requests, SL_DEFAULT_MAX_WAITING_REQUESTS);
    cr_assert_eq(c.block_size, SL_DEFAULT_BLOCK_SIZE);
    cr_assert_eq(c.port, 8080);
    cr_assert_str_eq(c.host, "127.0.0.1");
    cr_assert_eq(c.enable_prefix_caching, 1);
    cr_assert_eq(c.log_level, SL_CONFIG_LOG_INFO);
    cr_assert_eq(c.kv_cache_size, 0);
    for (int i = 0; i < SL_CONFIG_N_KEYS; i++) cr_assert_eq(c.source[i], SL_CONFIG_SRC_DEFAULT);
    sl_config_free(&c);
}

Test(config, flag_beats_env_beats_file_beats_default) {
    const char *path = temp_yaml("# a comment\n"
                                 "port: 1000\n"
                                 "max_num_seqs: 10\n"
                                 "threads: 3\n");
    setenv("SLUICE_PORT", "2000", 1);
    setenv("SLUICE_MAX_NUM_SEQS", "20", 1);
    sl_config c;
    sl_status st = load(&c, (const char *[]){"--port", "3000", "--config", path, NULL});
    cr_assert_eq(st, SL_OK, "%s", sl_last_error());
    cr_assert_eq(c.port, 3000);
    cr_assert_eq(c.source[SL_CONFIG_KEY_port], SL_CONFIG_SRC_FLAG);
    cr_assert_eq(c.max_num_seqs, 20);
    cr_assert_eq(c.source[SL_CONFIG_KEY_max_num_seqs], SL_CONFIG_SRC_ENV);
    cr_assert_eq(c.threads, 3);
    cr_assert_eq(c.source[SL_CONFIG_KEY_threads], SL_CONFIG_SRC_FILE);
    cr_assert_eq(c.source_line[SL_CONFIG_KEY_threads], 4);
    cr_assert_eq(c.max_num_batched_tokens, SL_DEFAULT_MAX_NUM_BATCHED_TOKENS);
    cr_assert_eq(c.source[SL_CONFIG_KEY_max_num_batched_tokens], SL_CONFIG_SRC_DEFAULT);
    cr_assert_str_eq(c.config_path, path);
    sl_config_free(&c);
}

Test(config, sluice_config_names_the_file_and_the_flag_overrides_it) {
    char env_file[64];
    snprintf(env_file, sizeof env_file, "%s", temp_yaml("port: 1111\n"));
    const char *flag_file = temp_yaml("port: 2222\n");
    setenv("SLUICE_CONFIG", env_file, 1);
    sl_config c;
    cr_assert_eq(load(&c, (const char *[]){NULL}), SL_OK, "%s", sl_last_error());
    cr_assert_eq(c.port, 1111);
    sl_config_free(&c);
    cr_assert_eq(load(&c, (const char *[]){"--config=", NULL}), SL_OK, "%s", sl_last_error()); /* no file */
    cr_assert_eq(c.port, 8080);
    sl_config_free(&c);
    cr_assert_eq(load(&c, (const char *[]){"--config", flag_file, NULL}), SL_OK, "%s", sl_last_error());
    cr_assert_eq(c.port, 2222);
    cr_assert_str_eq(c.config_path, flag_file);
    sl_config_free(&c);
}

Test(config, a_repeated_flag_takes_the_last_value) {
    sl_config c;
    cr_assert_eq(load(&c, (const char *[]){"-t", "2", "--threads=5", "-t7", NULL}), SL_OK, "%s", sl_last_error());
    cr_assert_eq(c.threads, 7);
    sl_config_free(&c);
}

Test(config, empty_env_variable_counts_as_unset) {
    setenv("SLUICE_PORT", "", 1);
    sl_config c;
    cr_assert_eq(load(&c, (const char *[]){NULL}), SL_OK, "%s", sl_last_error());
    cr_assert_eq(c.port, 8080);
    sl_config_free(&c);
}

/* ---- flags and rest[] ---------------------------------------------------------------------------------- */

Test(config, rest_keeps_positionals_and_unknown_flags_in_order) {
    char *argv[] = {"prompt.txt", "-m", "model.gguf", "--unknown", "x", "--max-num-seqs=8", "-v",
                    "-",          "--", "--port",     "1",         "-t", NULL};
    int argc = (int)(sizeof argv / sizeof argv[0]) - 1;
    char *rest[16];
    int n_rest = -1;
    sl_config c;
    sl_config_init(&c);
    cr_assert_eq(sl_config_load(&c, argc, argv, rest, &n_rest), SL_OK, "%s", sl_last_error());
    const char *want[] = {"prompt.txt", "--unknown", "x", "-v", "-", "--", "--port", "1", "-t"};
    cr_assert_eq(n_rest, 9);
    for (int i = 0; i < n_rest; i++) cr_assert_str_eq(rest[i], want[i], "rest[%d]", i);
    cr_assert_str_eq(c.model, "model.gguf");
    cr_assert_eq(c.max_num_seqs, 8);
    cr_assert_eq(c.port, 8080, "a flag after -- is not a setting");
    sl_config_free(&c);
}

Test(config, flag_spellings) {
    sl_config c;
    cr_assert_eq(load(&c, (const char *[]){"-mone.gguf", "--served_model_name", "smol", "--chat-template=chatml",
                                           "--kv-cache-size", "2GiB", NULL}),
                 SL_OK, "%s", sl_last_error());
    cr_assert_str_eq(c.model, "one.gguf");
    cr_assert_str_eq(c.served_model_name, "smol");
    cr_assert_str_eq(c.chat_template, "chatml");
    cr_assert_eq(c.kv_cache_size, 2ull << 30);
    sl_config_free(&c);
    /* A value that looks like a flag is still the value of the flag before it (getopt's rule). */
    cr_assert_eq(load(&c, (const char *[]){"--host", "-weird", NULL}), SL_OK, "%s", sl_last_error());
    cr_assert_str_eq(c.host, "-weird");
    sl_config_free(&c);
}

Test(config, boolean_flags) {
    sl_config c;
    cr_assert_eq(load(&c, (const char *[]){"--no-enable-prefix-caching", NULL}), SL_OK, "%s", sl_last_error());
    cr_assert_eq(c.enable_prefix_caching, 0);
    sl_config_free(&c);
    setenv("SLUICE_ENABLE_PREFIX_CACHING", "off", 1);
    cr_assert_eq(load(&c, (const char *[]){"--enable-prefix-caching", "positional", NULL}), SL_OK);
    cr_assert_eq(c.enable_prefix_caching, 1, "a bare boolean flag means true and takes no next argument");
    sl_config_free(&c);
    cr_assert_eq(load(&c, (const char *[]){"--enable-prefix-caching=No", NULL}), SL_OK);
    cr_assert_eq(c.enable_prefix_caching, 0);
    sl_config_free(&c);
    cr_assert_eq(load(&c, (const char *[]){"--no-enable-prefix-caching=1", NULL}), SL_INVALID_ARGUMENT);
    cr_assert_str_eq(sl_last_error(), "--no-enable-prefix-caching takes no value");
    sl_config_free(&c);
    cr_assert_eq(load(&c, (const char *[]){"--enable-prefix-caching=maybe", NULL}), SL_INVALID_ARGUMENT);
    cr_assert_str_eq(sl_last_error(),
                     "--enable-prefix-caching: 'maybe' is not a boolean (true/false, yes/no, on/off, 1/0)");
    sl_config_free(&c);
    /* --no- is only for booleans: --no-port is somebody else's flag. */
    char *argv[] = {"--no-port"};
    char *rest[1];
    int n_rest = 0;
    sl_config_init(&c);
    cr_assert_eq(sl_config_load(&c, 1, argv, rest, &n_rest), SL_OK);
    cr_assert_eq(n_rest, 1);
    sl_config_free(&c);
}

Test(config, missing_value_and_bad_values_name_the_flag) {
    sl_config c;
    cr_assert_eq(load(&c, (const char *[]){"--port", NULL}), SL_INVALID_ARGUMENT);
    cr_assert_str_eq(sl_last_error(), "--port: missing value");
    sl_config_free(&c);
    cr_assert_eq(load(&c, (const char *[]){"--max-num-seqs", "0", NULL}), SL_INVALID_ARGUMENT);
    cr_assert_str_eq(sl_last_error(), "--max-num-seqs: 0 is out of range [1, 4096]");
    sl_config_free(&c);
    cr_assert_eq(load(&c, (const char *[]){"-t", "2000", NULL}), SL_INVALID_ARGUMENT);
    cr_assert_str_eq(sl_last_error(), "-t: 2000 is out of range [0, 1024]");
    sl_config_free(&c);
    setenv("SLUICE_PORT", "abc", 1);
    cr_assert_eq(load(&c, (const char *[]){NULL}), SL_INVALID_ARGUMENT);
    cr_assert_str_eq(sl_last_error(), "SLUICE_PORT: 'abc' is not an integer");
    sl_config_free(&c);
    /* The flag would override the variable, but a bad variable is still reported: it is wrong either way. */
    cr_assert_eq(load(&c, (const char *[]){"--port", "1", NULL}), SL_INVALID_ARGUMENT);
    sl_config_free(&c);
}

Test(config, without_rest_a_mistyped_flag_gets_a_suggestion) {
    char *argv[] = {"--max-num-seq", "5"};
    sl_config c;
    sl_config_init(&c);
    cr_assert_eq(sl_config_load(&c, 2, argv, NULL, NULL), SL_INVALID_ARGUMENT);
    cr_assert_str_eq(sl_last_error(), "unknown flag '--max-num-seq' (did you mean --max-num-seqs?)");
    sl_config_free(&c);
    cr_assert_str_eq(sl_config_suggest("--kv-cache-sise"), "kv_cache_size");
    cr_assert_str_eq(sl_config_suggest("SLUICE_MAX_NUM_SEQ"), "max_num_seqs");
    cr_assert_null(sl_config_suggest("--verbose"));
}

Test(config, help_short_circuits_a_broken_config) {
    setenv("SLUICE_CONFIG", "/nonexistent/sluice.yaml", 1);
    setenv("SLUICE_PORT", "not a port", 1);
    sl_config c;
    cr_assert_eq(load(&c, (const char *[]){"-h", NULL}), SL_OK, "%s", sl_last_error());
    cr_assert_eq(c.help, 1);
    sl_config_free(&c);
    cr_assert_eq(load(&c, (const char *[]){"--help", NULL}), SL_OK);
    cr_assert_eq(c.help, 1);
    sl_config_free(&c);
    cr_assert_eq(load(&c, (const char *[]){NULL}), SL_NOT_FOUND);
    cr_assert(strstr(sl_last_error(), "/nonexistent/sluice.yaml"), "%s", sl_last_error());
    sl_config_free(&c);
}

/* ---- the YAML file --------------------------------------------------------------------------------------- */

Test(config, unknown_key_gets_file_line_and_suggestion) {
    const char *path = temp_yaml("port: 80\n\nmax_num_seq: 3\n");
    sl_config c;
    cr_assert_eq(load(&c, (const char *[]){"--config", path, NULL}), SL_INVALID_ARGUMENT);
    char want[256];
    snprintf(want, sizeof want, "%s:3: unknown key 'max_num_seq' (did you mean max_num_seqs?)", path);
    cr_assert_str_eq(sl_last_error(), want);
    sl_config_free(&c);
    cr_assert_eq(load_yaml("verbose: true\n"), SL_INVALID_ARGUMENT);
    cr_assert(strstr(sl_last_error(), ":1: unknown key 'verbose' (sluice --help lists the settings)"), "%s",
              sl_last_error());
    /* The file has one spelling per key; the flag's dashes are a hint away. */
    cr_assert_eq(load_yaml("max-num-seqs: 3\n"), SL_INVALID_ARGUMENT);
    cr_assert(strstr(sl_last_error(), "(did you mean max_num_seqs?)"), "%s", sl_last_error());
}

Test(config, bad_value_in_file_names_file_line_and_key) {
    const char *path = temp_yaml("host: 0.0.0.0\nport: 70000\n");
    sl_config c;
    cr_assert_eq(load(&c, (const char *[]){"--config", path, NULL}), SL_INVALID_ARGUMENT);
    char want[256];
    snprintf(want, sizeof want, "%s:2: port: 70000 is out of range [0, 65535]", path);
    cr_assert_str_eq(sl_last_error(), want);
    sl_config_free(&c);
}

/* Each malformed file must give a status and a message with its line, never a crash or a silent pass. */
Test(config, malformed_yaml_is_an_error_with_its_line) {
    static const struct {
        const char *text;
        sl_status st;
        const char *where; /* ":line: ..." part of the message */
    } cases[] = {
        {"port: 80\n\tthreads: 2\n", SL_BAD_FORMAT, ":2: "},                      /* tab indentation */
        {"port: 80\nthreads:\n  a: 1\n", SL_INVALID_ARGUMENT, ":3: threads: nested mapping"},
        {"port: 80\nthreads: [1, 2]\n", SL_INVALID_ARGUMENT, ":2: threads: a list is not a value"},
        {"threads:\n  - 1\n", SL_INVALID_ARGUMENT, ":2: threads: a list is not a value"},
        {"- port\n- 80\n", SL_INVALID_ARGUMENT, ":1: a list where a key was expected"},
        {"port: 80\nthreads: 2\nport: 81\n", SL_INVALID_ARGUMENT, ":3: duplicate key 'port' (first at line 1)"},
        {"port: &p 80\n", SL_INVALID_ARGUMENT, ":1: anchors (&p) are not supported"},
        {"threads: 2\nport: *p\n", SL_INVALID_ARGUMENT, ":2: aliases (*p) are not supported"},
        {"port: 80\n---\nport: 81\n", SL_INVALID_ARGUMENT, ":2: a second YAML document"},
        {"just some text\n", SL_INVALID_ARGUMENT, ":1: 'just some text': a config file is a mapping"},
        {"host: \"unterminated\n", SL_BAD_FORMAT, ":2: "},
        {"port: 80\nhost: \xc3\x28\n", SL_BAD_FORMAT, ":2: invalid trailing UTF-8 octet"},
        {"port: 80\n\x01\x02\x03\xff\xfe", SL_BAD_FORMAT, ":2: control characters are not allowed"},
        {"port: ~\n", SL_INVALID_ARGUMENT, ":1: port: '~' is not an integer"},
        {"port:\n", SL_INVALID_ARGUMENT, ":1: port: missing value"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sl_status st = load_yaml(cases[i].text);
        cr_expect_eq(st, cases[i].st, "case %zu: got %s: %s", i, sl_status_name(st), sl_last_error());
        cr_expect(strstr(sl_last_error(), cases[i].where), "case %zu: '%s' lacks '%s'", i, sl_last_error(),
                  cases[i].where);
        cr_expect(strncmp(sl_last_error(), "/tmp/sluice-config-test-", 24) == 0, "case %zu: %s", i,
                  sl_last_error());
        teardown();
        g_n_paths = 0;
    }
}

Test(config, binary_junk_is_an_error_not_a_crash) {
    uint64_t state = 42;
    unsigned char junk[4096];
    for (int round = 0; round < 20; round++) {
        for (size_t i = 0; i < sizeof junk; i++) {
            state = state * 6364136223846793005ull + 1442695040888963407ull;
            junk[i] = (unsigned char)(state >> 56);
        }
        const char *path = temp_file(junk, sizeof junk);
        sl_config c;
        sl_status st = load(&c, (const char *[]){"--config", path, NULL});
        cr_assert_neq(st, SL_OK, "round %d", round);
        cr_assert(strstr(sl_last_error(), path), "round %d: %s", round, sl_last_error());
        sl_config_free(&c);
        teardown();
        g_n_paths = 0;
    }
    /* A NUL byte names its line too. */
    cr_assert_eq(load_yaml("port: 80\nthreads: 2\n"), SL_OK);
    const char nul[] = "port: 80\nhost: a\0b\n";
    const char *path = temp_file(nul, sizeof nul - 1);
    sl_config c;
    cr_assert_eq(load(&c, (const char *[]){"--config", path, NULL}), SL_BAD_FORMAT);
    cr_assert(strstr(sl_last_error(), ":2: binary data"), "%s", sl_last_error());
    sl_config_free(&c);
}

Test(config, empty_files_and_nulls) {
    cr_assert_eq(load_yaml(""), SL_OK, "%s", sl_last_error());
    cr_assert_eq(load_yaml("# only a comment\n"), SL_OK, "%s", sl_last_error());
    cr_assert_eq(load_yaml("---\n...\n"), SL_OK, "%s", sl_last_error());
    /* A null string is the empty string: "use the default" for the settings where empty means that. */
    const char *path = temp_yaml("chat_template: ~\nserved_model_name: \"\"\nhost: 'with # hash'\n");
    sl_config c;
    cr_assert_eq(load(&c, (const char *[]){"--config", path, NULL}), SL_OK, "%s", sl_last_error());
    cr_assert_str_eq(c.chat_template, "");
    cr_assert_str_eq(c.served_model_name, "");
    cr_assert_str_eq(c.host, "with # hash");
    sl_config_free(&c);
}

Test(config, unreadable_files) {
    sl_config c;
    cr_assert_eq(load(&c, (const char *[]){"--config", "/nonexistent/x.yaml", NULL}), SL_NOT_FOUND);
    cr_assert_str_eq(sl_last_error(), "config file /nonexistent/x.yaml: No such file or directory");
    sl_config_free(&c);
    cr_assert_eq(load(&c, (const char *[]){"--config", "/tmp", NULL}), SL_IO);
    cr_assert_str_eq(sl_last_error(), "config file /tmp: Is a directory");
    sl_config_free(&c);
    cr_assert_eq(load(&c, (const char *[]){"--config", NULL}), SL_INVALID_ARGUMENT);
    cr_assert_str_eq(sl_last_error(), "--config: missing file name");
    sl_config_free(&c);
}

/* ---- --print-config, --help ------------------------------------------------------------------------------- */

Test(config, print_config_reads_back_as_the_same_config) {
    const char *path = temp_yaml("threads: 3\n"
                                 "kv_dtype: f16\n"
                                 "served_model_name: 'it''s \"quoted\" \\ back'\n"
                                 "chat_template: \"line1\\nline2\\ttab \\u00e9t\\u00e9 \\U0001F600\"\n");
    setenv("SLUICE_KV_CACHE_SIZE", "1.5GB", 1);
    setenv("SLUICE_PRECISION", "exact", 1);
    setenv("SLUICE_LOG_LEVEL", "debug", 1);
    sl_config a;
    cr_assert_eq(load(&a, (const char *[]){"--config", path, "--port", "0", "--no-enable-prefix-caching",
                                           "--block-size", "128", "--host", "::1", "--max-model-len", "4096",
                                           "--print-config", NULL}),
                 SL_OK, "%s", sl_last_error());
    cr_assert_eq(a.print_config, 1);
    cr_assert_str_eq(a.served_model_name, "it's \"quoted\" \\ back");
    cr_assert_str_eq(a.chat_template, "line1\nline2\ttab \xc3\xa9t\xc3\xa9 \xf0\x9f\x98\x80");

    FILE *f = tmpfile();
    sl_config_print(&a, f);
    char *text = captured(f);
    fclose(f);
    /* Where each value came from is said on its line. */
    cr_assert(strstr(text, "threads: 3"), "%s", text);
    cr_assert(strstr(text, "# file, line 1\n"), "%s", text);
    cr_assert(strstr(text, "# env SLUICE_KV_CACHE_SIZE\n"), "%s", text);
    cr_assert(strstr(text, "port: 0"), "%s", text);
    cr_assert(strstr(text, "# flag --port\n"), "%s", text);
    cr_assert(strstr(text, "max_num_seqs: 64"), "%s", text);

    clear_env();
    const char *printed = temp_yaml(text);
    sl_config b;
    cr_assert_eq(load(&b, (const char *[]){"--config", printed, NULL}), SL_OK, "%s\n%s", sl_last_error(), text);
    const char *diff = config_diff(&a, &b);
    cr_assert_null(diff, "%s differs after the round trip:\n%s", diff, text);
    for (int i = 0; i < SL_CONFIG_N_KEYS; i++) cr_assert_eq(b.source[i], SL_CONFIG_SRC_FILE);
    free(text);
    sl_config_free(&a);
    sl_config_free(&b);
}

Test(config, help_lists_every_setting_within_100_columns) {
    FILE *f = tmpfile();
    sl_config_help(f);
    char *text = captured(f);
    fclose(f);
    static const char *const expected[] = {"-m, --model STRING", "SLUICE_MODEL", "-t, --threads INT",
                                           "--max-num-seqs INT", "[1, 4096]", "default 64", "SLUICE_MAX_NUM_SEQS",
                                           "--kv-cache-size SIZE", "--kv-dtype {f32|f16|auto}",
                                           "--enable-prefix-caching[=BOOL], --no-enable-prefix-caching",
                                           "--log-level {error|warn|info|debug}", "one of 8, 16, 32, 64, 128",
                                           "default \"127.0.0.1\"", "--config FILE", "--print-config", "Server:"};
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++)
        cr_expect(strstr(text, expected[i]), "help lacks '%s'", expected[i]);
    int col = 0, longest = 0;
    for (const char *p = text; *p; p++) {
        col = *p == '\n' ? 0 : col + 1;
        if (col > longest) longest = col;
        cr_assert(*p == '\n' || (*p >= 0x20 && *p < 0x7f), "a control character in help");
    }
    cr_assert_leq(longest, 100);
    free(text);
}

/* ---- engine parameters and paths --------------------------------------------------------------------------- */

Test(config, engine_params_follow_the_config) {
    sl_config c;
    sl_engine_params p;
    memset(&p, 0xab, sizeof p); /* what sl_engine_params_init would have written, as far as we know */
    p.struct_size = 12345;
    cr_assert_eq(load(&c, (const char *[]){"-m", "/m.gguf", "-t", "3", "--kv-dtype", "f16", "--precision", "exact",
                                           "--kv-cache-size", "64MiB", "--no-enable-prefix-caching",
                                           "--max-model-len", "2048", "--block-size", "32", NULL}),
                 SL_OK, "%s", sl_last_error());
    sl_config_to_engine_params(&c, &p);
    cr_assert_eq(p.struct_size, 12345, "struct_size is sl_engine_params_init's to set");
    cr_assert_str_eq(p.model_path, "/m.gguf");
    cr_assert_null(p.served_model_name);
    cr_assert_null(p.chat_template);
    cr_assert_eq(p.n_threads, 3);
    cr_assert_eq(p.kv_dtype, SL_KV_F16);
    cr_assert_eq(p.precision, SL_PRECISION_EXACT);
    cr_assert_eq(p.kv_cache_bytes, 64ull << 20);
    cr_assert_eq(p.enable_prefix_caching, 0);
    cr_assert_eq(p.max_model_len, 2048);
    cr_assert_eq(p.block_size, 32);
    cr_assert_eq(p.max_num_seqs, SL_DEFAULT_MAX_NUM_SEQS);
    cr_assert_eq(p.max_num_batched_tokens, SL_DEFAULT_MAX_NUM_BATCHED_TOKENS);
    cr_assert_eq(p.max_waiting_requests, SL_DEFAULT_MAX_WAITING_REQUESTS);
    sl_config_free(&c);
    sl_config_init(&c);
    sl_config_to_engine_params(&c, &p);
    cr_assert_eq(p.kv_dtype, SL_KV_AUTO);
    cr_assert_eq(p.precision, SL_PRECISION_FAST);
    cr_assert_eq(p.enable_prefix_caching, 1);
    cr_assert_null(p.model_path, "empty model: the caller substitutes the default model's path");
}

Test(config, empty_model_means_the_cached_default) {
    setenv("SLUICE_CACHE_DIR", "/srv/cache", 1);
    sl_config c;
    cr_assert_eq(load(&c, (const char *[]){NULL}), SL_OK, "%s", sl_last_error());
    cr_assert_str_eq(c.model, "", "the command decides (it may take the model from a positional argument)");
    cr_assert_eq(c.source[SL_CONFIG_KEY_model], SL_CONFIG_SRC_DEFAULT);
    FILE *f = tmpfile();
    sl_config_print(&c, f);
    char *text = captured(f);
    fclose(f);
    cr_assert(strstr(text, "model: \"\"") && strstr(text, "# default: /srv/cache/models/SmolLM2-135M-Instruct.Q4_1.gguf\n"),
              "%s", text);
    free(text);
    sl_config_free(&c);
    setenv("SLUICE_MODEL", "/env/model.gguf", 1); /* SLUICE_MODEL is also the model key's variable */
    cr_assert_eq(load(&c, (const char *[]){NULL}), SL_OK, "%s", sl_last_error());
    cr_assert_str_eq(c.model, "/env/model.gguf");
    cr_assert_eq(c.source[SL_CONFIG_KEY_model], SL_CONFIG_SRC_ENV);
    sl_config_free(&c);
}

Test(config, default_model_path_rules) {
    unsetenv("SLUICE_CACHE_DIR");
    unsetenv("XDG_CACHE_HOME");
    setenv("HOME", "/home/u", 1);
    char *p = sl_default_model_path();
    cr_assert_str_eq(p, "/home/u/.cache/sluice/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    free(p);
    setenv("XDG_CACHE_HOME", "/xdg", 1);
    p = sl_default_model_path();
    cr_assert_str_eq(p, "/xdg/sluice/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    free(p);
    setenv("SLUICE_CACHE_DIR", "/c", 1);
    p = sl_default_model_path();
    cr_assert_str_eq(p, "/c/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    free(p);
    setenv("SLUICE_MODEL", "/exact.gguf", 1);
    p = sl_default_model_path();
    cr_assert_str_eq(p, "/exact.gguf");
    free(p);
    unsetenv("SLUICE_MODEL");
    unsetenv("SLUICE_CACHE_DIR");
    unsetenv("XDG_CACHE_HOME");
    unsetenv("HOME");
    p = sl_default_model_path();
    cr_assert_str_eq(p, "/tmp/.cache/sluice/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    free(p);
}

/* ---- allocation failures ----------------------------------------------------------------------------------- */

/* Every allocation of a full load (file, env, flags) fails in turn: each run must
 * end in SL_OK or SL_OUT_OF_MEMORY and leak nothing (the ASan build checks the leaks). */
Test(config, allocation_failure_at_every_step) {
    const char *path = temp_yaml("host: from-file\nchat_template: chatml\n");
    setenv("SLUICE_SERVED_MODEL_NAME", "env-name", 1);
    int ok = 0;
    for (long n = 0; n < 100 && !ok; n++) {
        sl_config c;
        sl_config_init(&c);
        char *argv[] = {"--config", (char *)path, "--host", "from-flag", "x"};
        char *rest[5];
        int n_rest = 0;
        sl__alloc_fail_after(n);
        sl_status st = sl_config_load(&c, 5, argv, rest, &n_rest);
        sl__alloc_fail_after(-1);
        cr_assert(st == SL_OK || st == SL_OUT_OF_MEMORY, "n=%ld: %s: %s", n, sl_status_name(st), sl_last_error());
        if (st == SL_OK) {
            ok = 1;
            cr_assert_str_eq(c.host, "from-flag");
            cr_assert_str_eq(c.served_model_name, "env-name");
            cr_assert_gt(n, 3, "a full load allocates at least the path, the file buffer and three strings");
        }
        sl_config_free(&c);
    }
    cr_assert(ok);
}
