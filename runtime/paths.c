/*
 * paths.c — the model cache's location (see paths.h). Only the environment decides it, so a test or a
 * container redirects it with one variable.
 */
#include "paths.h"

#include <stdio.h>
#include <stdlib.h>

#include "sl_util.h"

/* getenv, with an empty value counting as unset (`SLUICE_CACHE_DIR= cmd` should not mean the root). */
static const char *sl__env_nonempty(const char *name) {
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

SL_API char *sl_default_model_path(void) {
    const char *model = sl__env_nonempty("SLUICE_MODEL");
    if (model) return sl__strdup(model);

    const char *dir = sl__env_nonempty("SLUICE_CACHE_DIR");
    const char *base = dir, *suffix = "";
    if (!dir) {
        if ((base = sl__env_nonempty("XDG_CACHE_HOME"))) {
            suffix = "/sluice";
        } else {
            base = sl__env_nonempty("HOME");
            if (!base) base = "/tmp";
            suffix = "/.cache/sluice";
        }
    }
    const char *tail = "/models/" SL_DEFAULT_MODEL_FILE;
    int n = snprintf(NULL, 0, "%s%s%s", base, suffix, tail);
    if (n < 0) return NULL;
    char *path = sl__malloc((size_t)n + 1);
    if (!path) return NULL;
    snprintf(path, (size_t)n + 1, "%s%s%s", base, suffix, tail);
    return path;
}
