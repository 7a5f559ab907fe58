/* check.h: the CHECK macro of the standalone C tests. A test defines nothing else for it
 * and prints "passed, failed" from these counters last. */
#ifndef ESPD_TEST_CHECK_H
#define ESPD_TEST_CHECK_H

#include <stdio.h>

static unsigned long passed, failed;

/* Count cond; on failure print file, line, the condition and a printf-style detail (the
 * first 60 failures only). */
#define CHECK(cond, ...)                                                        \
	do {                                                                    \
		if (cond) {                                                     \
			passed++;                                               \
		} else {                                                        \
			if (failed++ < 60) {                                    \
				fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__,   \
					__LINE__, #cond);                       \
				fprintf(stderr, __VA_ARGS__);                   \
				fputc('\n', stderr);                            \
			}                                                       \
		}                                                               \
	} while (0)

#endif
