/* io: batched packet I/O for one worker: TUN reads and writes, ESP and UDP receive with
 * the outer header rebuilt where the kernel strips it, whole-packet sends.
 *
 * Every packet the data plane sees from the network is a full outer IP packet: raw IPv4
 * sockets deliver one; for raw IPv6 and for UDP the header is rebuilt in the headroom from
 * the addresses, ports and traffic class the kernel reports (so esp_in has one format).
 */
#ifndef ESPD_IO_H
#define ESPD_IO_H

#include <stddef.h>
#include <stdint.h>

#include "espdp.h"
#include "offload.h"
#include "proto.h"

#define IO_BUF_SIZE (ESPD_HEADROOM + 65536 + ESPD_TAILROOM)
#define IO_BATCH_MAX 64
#define IO_VNET_USO 2 /* in tun_vnet_hdr: UDP segmentation offload too */

enum io_source { IO_ESP4, IO_ESP6, IO_UDP4, IO_UDP6, IO_SOURCES };

struct io_batch {
	struct espdp_pkt pkts[IO_BATCH_MAX];
	uint8_t *bufs[IO_BATCH_MAX];
	unsigned n;
};

/* A TCP super-packet read from the TUN device, handed out segment by segment. */
struct tun_stage {
	uint8_t *buf; /* IO_BUF_SIZE; swapped with a batch buffer, never copied */
	uint32_t len;
	unsigned next, count; /* next < count: segments still to hand out */
	struct vnet_hdr h;
};

int io_batch_init(struct io_batch *b);
void io_batch_free(struct io_batch *b);
/* Read up to max packets from a non-blocking TUN fd into b; returns how many. */
unsigned io_tun_read(int fd, struct io_batch *b, unsigned max, uint64_t *errors);
/* The same with IFF_VNET_HDR: super-packets are segmented, partial checksums completed. */
unsigned io_tun_read_vnet(int fd, struct io_batch *b, unsigned max, struct tun_stage *st,
			  uint64_t *errors);
/* Write the passed packets of b to the TUN fd (with vnet: coalesced, each behind its
 * vnet_hdr); returns how many inner packets were delivered. */
unsigned io_tun_write(int fd, struct io_batch *b, int vnet, uint64_t *errors);
/* Receive up to max packets from a socket of kind `src` into b, as full outer packets. */
unsigned io_net_recv(int fd, enum io_source src, struct io_batch *b, unsigned max,
		     uint64_t *errors);
/* Send the passed packets of b (whole outer packets) on the raw send sockets. */
unsigned io_net_send(int send4, int send6, const struct io_batch *b, uint64_t *errors);
/* Enable the ancillary data io_net_recv needs on a receive socket. */
int io_socket_prepare(int fd, enum io_source src);

#endif
