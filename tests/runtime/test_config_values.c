/*
 * test_config_values.c — what each type of setting accepts and how it refuses the rest: integers (ranges,
 * allowed values), sizes with units, floats, booleans, enums, with the exact messages a user reads.
 *
 * It includes config.c to reach the per-type parser, so the FLOAT type is tested although no row uses it
 * yet; every other type is also driven through the public API from a flag or a variable.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "config.c"

/* Parses text as the given row would; returns the status (message in sl_last_error()). */
static sl_status parse_as(const sl__cfg_key *k, const char *text, sl__cfg_value *v) {
    return sl__cfg_parse(k, text, "--x", v);
}

static const sl__cfg_key *row(sl_config_key idx) { return &sl__cfg_keys[idx]; }

static void clear_env(void) {
    for (int i = 0; i < SL_CONFIG_N_KEYS; i++) {
        char var[8 + SL__CFG_NAME_MAX];
        sl__cfg_env_name(&sl__cfg_keys[i], var, sizeof var);
        unsetenv(var);
    }
    unsetenv("SLUICE_CONFIG");
}

TestSuite(config_values, .init = clear_env);

Test(config_values, integers) {
    sl__cfg_value v;
    const sl__cfg_key *k = row(SL_CONFIG_KEY_max_num_seqs);
    cr_assert_eq(parse_as(k, "4096", &v), SL_OK);
    cr_assert_eq(v.i, 4096);
    cr_assert_eq(parse_as(k, "+1", &v), SL_OK);
    cr_assert_eq(v.i, 1);
    static const struct {
        const char *text, *msg;
    } bad[] = {
        {"0", "--x: 0 is out of range [1, 4096]"},
        {"4097", "--x: 4097 is out of range [1, 4096]"},
        {"-3", "--x: -3 is out of range [1, 4096]"},
        {"99999999999999999999999", "--x: 99999999999999999999999 is out of range [1, 4096]"},
        {"abc", "--x: 'abc' is not an integer"},
        {"12x", "--x: '12x' is not an integer"},
        {" 12", "--x: ' 12' is not an integer"},
        {"1.5", "--x: '1.5' is not an integer"},
        {"0x10", "--x: '0x10' is not an integer"},
        {"", "--x: missing value"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_expect_eq(parse_as(k, bad[i].text, &v), SL_INVALID_ARGUMENT, "'%s'", bad[i].text);
        cr_expect_str_eq(sl_last_error(), bad[i].msg);
    }
    /* Allowed values: block_size is a power of two in [8, 128]. */
    k = row(SL_CONFIG_KEY_block_size);
    cr_assert_eq(parse_as(k, "64", &v), SL_OK);
    cr_assert_eq(v.i, 64);
    cr_assert_eq(parse_as(k, "24", &v), SL_INVALID_ARGUMENT);
    cr_assert_str_eq(sl_last_error(), "--x: 24 is not one of 8, 16, 32, 64, 128");
    cr_assert_eq(parse_as(k, "256", &v), SL_INVALID_ARGUMENT);
}

Test(config_values, sizes) {
    static const struct {
        const char *text;
        uint64_t bytes;
    } good[] = {
        {"0", 0},
        {"123", 123},
        {"123B", 123},
        {"4KiB", 4096},
        {"4kib", 4096},
        {"4 KiB", 4096},
        {"4K", 4096},
        {"2GiB", 2ull << 30},
        {"2G", 2ull << 30},
        {"1.5GB", 1500000000ull},
        {"1.5KiB", 1536},
        {".5MiB", 512ull << 10},
        {"3MB", 3000000},
        {"16TiB", 16ull << 40},
        {"0.001KB", 1},
    };
    const sl__cfg_key *k = row(SL_CONFIG_KEY_kv_cache_size);
    sl__cfg_value v;
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        cr_expect_eq(parse_as(k, good[i].text, &v), SL_OK, "'%s': %s", good[i].text, sl_last_error());
        cr_expect_eq(v.u, good[i].bytes, "'%s' gave %llu", good[i].text, (unsigned long long)v.u);
    }
    static const struct {
        const char *text, *msg;
    } bad[] = {
        {"17TiB", "--x: 17TiB is out of range [0, 16TiB]"},
        {"99999999999999999999", "--x: 99999999999999999999 is out of range [0, 16TiB]"},
        {"20000PiB", "--x: 20000PiB is out of range [0, 16TiB]"},
        {"0.5B", "--x: 0.5B is not a whole number of bytes"},
        {"1.0001KiB", "--x: 1.0001KiB is not a whole number of bytes"},
        {"-1", "--x: '-1' is not a size (a number of bytes, or with a unit: 512MiB, 2GiB, 1.5GB)"},
        {"4XB", "--x: '4XB' is not a size (a number of bytes, or with a unit: 512MiB, 2GiB, 1.5GB)"},
        {"GiB", "--x: 'GiB' is not a size (a number of bytes, or with a unit: 512MiB, 2GiB, 1.5GB)"},
        {"1.GiB", "--x: '1.GiB' is not a size (a number of bytes, or with a unit: 512MiB, 2GiB, 1.5GB)"},
        {"1e9", "--x: '1e9' is not a size (a number of bytes, or with a unit: 512MiB, 2GiB, 1.5GB)"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_expect_eq(parse_as(k, bad[i].text, &v), SL_INVALID_ARGUMENT, "'%s'", bad[i].text);
        cr_expect_str_eq(sl_last_error(), bad[i].msg);
    }
    /* Printed sizes read back exactly. */
    static const uint64_t values[] = {0, 1, 1000, 1024, 1536, 3ull << 30, (5ull << 40) + 1, 1ull << 44};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        char buf[32];
        sl__cfg_size_str(values[i], buf, sizeof buf);
        cr_expect_eq(parse_as(k, buf, &v), SL_OK, "'%s'", buf);
        cr_expect_eq(v.u, values[i], "'%s'", buf);
    }
}

Test(config_values, floats) {
    const sl__cfg_key k = {"Test", "ratio", SL__CFG_FLOAT, 0, "0.5", 0.0, 1.0, NULL, "", 0};
    sl__cfg_value v;
    cr_assert_eq(parse_as(&k, "0.9", &v), SL_OK);
    cr_assert_float_eq(v.f, 0.9, 1e-15);
    cr_assert_eq(parse_as(&k, "1", &v), SL_OK);
    cr_assert_eq(parse_as(&k, ".25", &v), SL_OK);
    cr_assert_float_eq(v.f, 0.25, 0);
    cr_assert_eq(parse_as(&k, "1e-3", &v), SL_OK);
    cr_assert_float_eq(v.f, 0.001, 1e-18);
    cr_assert_eq(parse_as(&k, "1.5", &v), SL_INVALID_ARGUMENT);
    cr_assert_str_eq(sl_last_error(), "--x: 1.5 is out of range [0, 1]");
    cr_assert_eq(parse_as(&k, "-0.1", &v), SL_INVALID_ARGUMENT);
    cr_assert_str_eq(sl_last_error(), "--x: -0.1 is out of range [0, 1]");
    static const char *const not_numbers[] = {"abc", "nan", "inf", "0x1p-2", " 0.5", "0.5 ", "0,5", "--1"};
    for (size_t i = 0; i < sizeof not_numbers / sizeof not_numbers[0]; i++) {
        cr_expect_eq(parse_as(&k, not_numbers[i], &v), SL_INVALID_ARGUMENT, "'%s'", not_numbers[i]);
        char want[64];
        snprintf(want, sizeof want, "--x: '%s' is not a number", not_numbers[i]);
        cr_expect_str_eq(sl_last_error(), want);
    }
    const sl__cfg_key wide = {"Test", "scale", SL__CFG_FLOAT, 0, "1", -1e300, 1e300, NULL, "", 0};
    cr_assert_eq(parse_as(&wide, "1e999", &v), SL_INVALID_ARGUMENT); /* overflows to inf */
    cr_assert_str_eq(sl_last_error(), "--x: 1e999 is out of range [-1e+300, 1e+300]");
    /* Printed floats read back exactly. */
    static const double values[] = {0.1, 1.0 / 3.0, 0.9, 1e-7, 123456.789};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        char buf[64];
        sl__cfg_float_str(values[i], buf, sizeof buf);
        cr_expect_eq(parse_as(&wide, buf, &v), SL_OK, "'%s'", buf);
        cr_expect_eq(v.f, values[i], "'%s'", buf);
    }
    char buf[64];
    cr_assert_str_eq(sl__cfg_float_str(0.1, buf, sizeof buf), "0.1");
}

Test(config_values, booleans) {
    static const struct {
        const char *text;
        int value;
    } cases[] = {{"true", 1}, {"false", 0}, {"1", 1}, {"0", 0},  {"yes", 1}, {"no", 0},
                 {"on", 1},   {"off", 0},   {"TRUE", 1}, {"Off", 0}, {"Yes", 1}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        setenv("SLUICE_ENABLE_PREFIX_CACHING", cases[i].text, 1);
        sl_config c;
        sl_config_init(&c);
        c.enable_prefix_caching = !cases[i].value;
        cr_expect_eq(sl_config_load(&c, 0, NULL, NULL, NULL), SL_OK, "'%s': %s", cases[i].text, sl_last_error());
        cr_expect_eq(c.enable_prefix_caching, cases[i].value, "'%s'", cases[i].text);
        sl_config_free(&c);
    }
    static const char *const bad[] = {"maybe", "2", "t", "y", "enabled"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        setenv("SLUICE_ENABLE_PREFIX_CACHING", bad[i], 1);
        sl_config c;
        sl_config_init(&c);
        cr_expect_eq(sl_config_load(&c, 0, NULL, NULL, NULL), SL_INVALID_ARGUMENT, "'%s'", bad[i]);
        char want[160];
        snprintf(want, sizeof want,
                 "SLUICE_ENABLE_PREFIX_CACHING: '%s' is not a boolean (true/false, yes/no, on/off, 1/0)", bad[i]);
        cr_expect_str_eq(sl_last_error(), want);
        sl_config_free(&c);
    }
}

Test(config_values, enums) {
    char *argv[] = {"--kv-dtype", "F16", "--log-level=debug", "--precision", "exact"};
    sl_config c;
    sl_config_init(&c);
    cr_assert_eq(sl_config_load(&c, 5, argv, NULL, NULL), SL_OK, "%s", sl_last_error());
    cr_assert_eq(c.kv_dtype, SL_KV_F16);
    cr_assert_eq(c.log_level, SL_CONFIG_LOG_DEBUG);
    cr_assert_eq(c.precision, SL_PRECISION_EXACT);
    sl_config_free(&c);

    char *bad[] = {"--kv-dtype", "f8"};
    sl_config_init(&c);
    cr_assert_eq(sl_config_load(&c, 2, bad, NULL, NULL), SL_INVALID_ARGUMENT);
    cr_assert_str_eq(sl_last_error(), "--kv-dtype: 'f8' is not one of f32, f16, auto");
    sl_config_free(&c);
    setenv("SLUICE_LOG_LEVEL", "verbose", 1);
    sl_config_init(&c);
    cr_assert_eq(sl_config_load(&c, 0, NULL, NULL, NULL), SL_INVALID_ARGUMENT);
    cr_assert_str_eq(sl_last_error(), "SLUICE_LOG_LEVEL: 'verbose' is not one of error, warn, info, debug");
    sl_config_free(&c);
    /* The enum rows of the engine list their names in the order of the public enums. */
    char name[16];
    cr_assert_str_eq(sl__cfg_choice_name(row(SL_CONFIG_KEY_kv_dtype)->choices, SL_KV_F16, name, sizeof name), "f16");
    cr_assert_str_eq(sl__cfg_choice_name(row(SL_CONFIG_KEY_precision)->choices, SL_PRECISION_EXACT, name, sizeof name),
                     "exact");
    cr_assert_str_eq(sl__cfg_choice_name(row(SL_CONFIG_KEY_log_level)->choices, SL_CONFIG_LOG_WARN, name, sizeof name),
                     "warn");
}

Test(config_values, strings_are_copied_and_freed) {
    char value[] = "first";
    char *argv[] = {"--host", value};
    sl_config c;
    sl_config_init(&c);
    cr_assert_eq(sl_config_load(&c, 2, argv, NULL, NULL), SL_OK);
    value[0] = 'X'; /* the config does not point into argv */
    cr_assert_str_eq(c.host, "first");
    cr_assert_eq(c.owned_[SL_CONFIG_KEY_host], 1);
    sl_config_free(&c);
    cr_assert_str_eq(c.host, "127.0.0.1", "free leaves the defaults");
    sl_config_free(&c); /* and is safe to repeat */
}

Test(config_values, every_row_is_well_formed) {
    sl_config c;
    sl_config_init(&c); /* asserts that every default parses */
    for (int i = 0; i < SL_CONFIG_N_KEYS; i++) {
        const sl__cfg_key *k = &sl__cfg_keys[i];
        cr_expect(strcmp(k->name, "config") && strcmp(k->name, "help") && strcmp(k->name, "print_config"),
                  "%s is a meta flag", k->name);
        cr_expect(k->help && *k->help, "%s has no help", k->name);
        cr_expect((k->type == SL__CFG_ENUM) <= (k->choices != NULL), "%s: enum without names", k->name);
        if (k->type == SL__CFG_INT) cr_expect(k->lo >= -2147483648.0 && k->hi <= 2147483647.0, "%s", k->name);
        for (int j = 0; j < i; j++) {
            cr_expect(strcmp(k->name, sl__cfg_keys[j].name), "%s twice", k->name);
            cr_expect(!k->short_flag || k->short_flag != sl__cfg_keys[j].short_flag, "-%c twice", k->short_flag);
        }
        cr_expect(k->short_flag != 'h', "-h is --help");
    }
}
