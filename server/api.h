/*
 * api.h — `sluice serve`: the OpenAI-compatible API over the HTTP transport (http.h) and the engine
 * (sluice.h). main.c calls sl_serve_main with the loaded configuration and the arguments the table left.
 */
#ifndef SL_SERVER_API_H
#define SL_SERVER_API_H

#include "sluice/config.h"

/* Runs the server until SIGTERM/SIGINT and the drain that follows; returns the process exit code. */
int sl_serve_main(const sl_config *cfg, int argc, char **argv);

#endif /* SL_SERVER_API_H */
