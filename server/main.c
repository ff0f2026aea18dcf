/* main.c — placeholder until the CLI lands. */
#include <stdio.h>
#include "sluice/sluice.h"
int main(void) { printf("sluice %s\n", sl_version()); return 0; }
