/* netns_lo.h: a standalone C test's own network namespace with loopback up, so the sockets
 * it opens see only its own packets. Needs root; exits 2 (not a failure count) without. */
#ifndef ESPD_TEST_NETNS_LO_H
#define ESPD_TEST_NETNS_LO_H

#ifndef _GNU_SOURCE
#error "define _GNU_SOURCE before any include (unshare, CLONE_NEWNET)"
#endif
#include <errno.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

static void own_netns_with_lo(const char *test)
{
	struct ifreq ifr = { 0 };
	int ctl;

	if (unshare(CLONE_NEWNET)) {
		fprintf(stderr, "%s needs root for a network namespace of its own: %s\n", test,
			strerror(errno));
		exit(2);
	}
	ctl = socket(AF_INET, SOCK_DGRAM, 0);
	strcpy(ifr.ifr_name, "lo");
	ifr.ifr_flags = IFF_UP;
	if (ctl < 0 || ioctl(ctl, SIOCSIFFLAGS, &ifr)) {
		perror("lo up");
		exit(2);
	}
	close(ctl);
}

#endif
