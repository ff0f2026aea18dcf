/*
 * paths.h — where Sluice keeps files outside the source tree: the cache of downloaded models.
 *
 * The setup script (models/fetch_default_model.sh) and the tests' helper (tests/testutil.c) follow the same
 * rule, so a model fetched by one is found by the others.
 */
#ifndef SL_PATHS_H
#define SL_PATHS_H

#include "sluice/sluice.h" /* SL_API */

/* File name of the default model inside <cache>/models/. */
#define SL_DEFAULT_MODEL_FILE "SmolLM2-135M-Instruct.Q4_1.gguf"

/* $SLUICE_MODEL if set (and not empty), else
 * ($SLUICE_CACHE_DIR, else $XDG_CACHE_HOME/sluice, else $HOME/.cache/sluice)/models/SmolLM2-135M-Instruct.Q4_1.gguf
 * ($HOME unset: /tmp stands for it). Allocated with sl__malloc (release with free); NULL when out of memory.
 * Whether the file exists is not checked: loading it says so. (config.h declares it too, for the CLI.) */
SL_API char *sl_default_model_path(void);

#endif /* SL_PATHS_H */
