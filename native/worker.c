/* worker: the threads that move packets. Each worker owns an epoll set, a TUN queue, a
 * batch of buffers and its counters. Each network socket has exactly one reader (socket s
 * goes to worker s % nworkers): an SA's packets arrive on one socket, so they are
 * decapsulated and written to the TUN device in arrival order. Two readers of one socket
 * reorder packets by a batch or more, which TCP answers with spurious retransmissions and
 * the replay window, when a reader stalls, with replay_old drops.
 *
 *   TUN readable:     read a batch -> espdp_encap_batch (classify, seal) -> sock_send
 *   socket readable:  sock_recv a batch -> espdp_decap_batch (verify, open) -> TUN write
 *
 * Workers never call into Python and never block on anything but epoll_wait. A worker
 * is inside a table read section only during one batch call (dp_enter/dp_leave).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "dp.h"
#include "io.h"
#include "ring.h"
#include "sock.h"

#define TAG_TUN IO_SOURCES /* epoll tags: enum io_source for sockets, then these */
#define TAG_STOP (IO_SOURCES + 1)
#define TAG_RING (IO_SOURCES + 2)
#define RING_BLOCKS 64 /* blocks of io.rx_ring_block bytes in the receive ring */
#define ROUNDS 8 /* batches per readable fd before looking at the others again */

struct worker {
	espdp *dp;
	struct workers *ws;
	unsigned index;
	pthread_t thread;
	int started;
	int epfd;
	int tun_fd;
	struct io_batch batch;
	struct tun_stage stage; /* with vnet: the TCP super-packet being segmented */
	struct sock_pool pool[IO_SOURCES]; /* datagrams received, not yet decapsulated */
	struct rx_ring ring; /* worker 0 with io.rx_ring_fd: raw ESP of both IP versions */
	struct espdp_io_stats stats; /* written by this worker only; read relaxed */
};

struct workers {
	struct espdp_io_config io;
	struct sock_out out; /* shared: GSO refusals are learnt once for all workers */
	int net_fd[IO_SOURCES];
	int stop_fd;
	int stop;
	uint64_t ring_drops; /* read from the kernel by espdp_io_stats, under threads_lock */
	unsigned n;
	struct worker w[];
};

static void stat_add(uint64_t *c, uint64_t v)
{
	__atomic_store_n(c, *c + v, __ATOMIC_RELAXED); /* single writer */
}

static void on_tun(struct worker *w, struct workers *ws)
{
	/* Returns with the stage empty: epoll would not wake the worker for its segments. */
	for (int round = 0; round < ROUNDS || w->stage.next < w->stage.count; round++) {
		unsigned n = ws->io.tun_vnet_hdr ?
				     io_tun_read_vnet(w->tun_fd, &w->batch, ws->io.batch, &w->stage,
						      &w->stats.tun_errors) :
				     io_tun_read(w->tun_fd, &w->batch, ws->io.batch, &w->stats.tun_errors);

		if (!n)
			return;
		stat_add(&w->stats.tun_rx, n);
		espdp_encap_batch(w->dp, w->index, w->batch.pkts, n);
		uint64_t errors = 0, gso = 0, packet = 0;
		unsigned sent = sock_send(&ws->out, &w->batch,
					  (struct sock_counts){ &errors, &gso, &packet });

		stat_add(&w->stats.net_tx, sent);
		stat_add(&w->stats.net_tx_gso, gso);
		stat_add(&w->stats.net_tx_packet, packet);
		stat_add(&w->stats.send_errors, errors);
		if (n < ws->io.batch && w->stage.next >= w->stage.count)
			return;
	}
}

/* Returns with the pool empty: epoll would not wake the worker for datagrams in it. */
static void on_net(struct worker *w, const struct workers *ws, enum io_source src)
{
	struct sock_pool *pool = &w->pool[src];

	for (int round = 0; round < ROUNDS || sock_pool_pending(pool); round++) {
		uint64_t errors = 0, gro = 0;
		unsigned n = sock_recv(ws->net_fd[src], src, pool, &w->batch, ws->io.batch,
				       (struct sock_counts){ &errors, &gro, NULL });

		stat_add(&w->stats.recv_errors, errors);
		stat_add(&w->stats.net_rx_gro, gro);
		if (!n)
			return;
		stat_add(&w->stats.net_rx, n);
		espdp_decap_batch(w->dp, w->index, w->batch.pkts, n);
		stat_add(&w->stats.tun_tx, io_tun_write(w->tun_fd, &w->batch, ws->io.tun_vnet_hdr,
							&w->stats.tun_errors));
		if (n < ws->io.batch && !sock_pool_pending(pool))
			return;
	}
}

/* Returns with no handed-over block half read: epoll would not wake the worker for it. */
static void on_ring(struct worker *w, const struct workers *ws)
{
	for (int round = 0; round < ROUNDS || ring_pending(&w->ring); round++) {
		unsigned n = ring_recv(&w->ring, &w->batch, ws->io.batch);

		if (!n)
			return;
		stat_add(&w->stats.net_rx, n);
		stat_add(&w->stats.net_rx_ring, n);
		espdp_decap_batch(w->dp, w->index, w->batch.pkts, n);
		stat_add(&w->stats.tun_tx, io_tun_write(w->tun_fd, &w->batch, ws->io.tun_vnet_hdr,
							&w->stats.tun_errors));
		if (n < ws->io.batch && !ring_pending(&w->ring))
			return;
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct workers *ws = w->ws;
	struct epoll_event ev[IO_SOURCES + 3];

	while (!__atomic_load_n(&ws->stop, __ATOMIC_ACQUIRE)) {
		int n = epoll_wait(w->epfd, ev, IO_SOURCES + 3, 1000);

		for (int i = 0; i < n; i++) {
			uint32_t tag = ev[i].data.u32;

			if (tag == TAG_TUN)
				on_tun(w, ws);
			else if (tag == TAG_RING)
				on_ring(w, ws);
			else if (tag < IO_SOURCES)
				on_net(w, ws, (enum io_source)tag);
		}
	}
	return NULL;
}

static int epoll_add(int epfd, int fd, uint32_t tag, uint32_t flags)
{
	struct epoll_event ev = { .events = EPOLLIN | flags, .data.u32 = tag };

	return fd < 0 ? 0 : epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
}

static int set_nonblock(int fd)
{
	int fl = fd < 0 ? 0 : fcntl(fd, F_GETFL);

	return fd < 0 ? 0 : fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static int worker_init(struct worker *w, espdp *dp, unsigned index, struct workers *ws)
{
	w->dp = dp;
	w->ws = ws;
	w->index = index;
	w->tun_fd = ws->io.tun_fds[index % ws->io.ntun];
	w->epfd = epoll_create1(EPOLL_CLOEXEC);
	w->stage.buf = malloc(IO_BUF_SIZE);
	if (w->epfd < 0 || !w->stage.buf || io_batch_init(&w->batch) || set_nonblock(w->tun_fd) ||
	    epoll_add(w->epfd, w->tun_fd, TAG_TUN, 0) || epoll_add(w->epfd, ws->stop_fd, TAG_STOP, 0))
		return -1;
	if (index == 0 && ws->io.rx_ring_fd >= 0 &&
	    epoll_add(w->epfd, ws->io.rx_ring_fd, TAG_RING, 0))
		return -1;
	for (unsigned s = 0; s < IO_SOURCES; s++)
		if (s % ws->n == index && ws->net_fd[s] >= 0 &&
		    (sock_pool_init(&w->pool[s]) || epoll_add(w->epfd, ws->net_fd[s], s, 0)))
			return -1;
	for (unsigned s = IO_UDP4; s <= IO_UDP6; s++)
		if (ws->net_fd[s] >= 0 && sock_port(ws->net_fd[s]))
			w->pool[s].port = sock_port(ws->net_fd[s]);
	return 0;
}

static void workers_free(struct workers *ws)
{
	for (unsigned i = 0; i < ws->n; i++) {
		if (ws->w[i].epfd >= 0)
			close(ws->w[i].epfd);
		io_batch_free(&ws->w[i].batch);
		for (unsigned s = 0; s < IO_SOURCES; s++)
			sock_pool_free(&ws->w[i].pool[s]);
		free(ws->w[i].stage.buf);
		ring_close(&ws->w[i].ring);
	}
	if (ws->stop_fd >= 0)
		close(ws->stop_fd);
	free((void *)ws->io.tun_fds);
	free(ws);
}

int espdp_workers_start(espdp *dp, const struct espdp_io_config *io)
{
	struct workers *ws;
	int *tun;

	if (dp->threads)
		return ESPDP_ERR_STATE;
	if (!io->ntun || !io->tun_fds || io->batch < 1 || io->batch > IO_BATCH_MAX ||
	    (io->rx_ring_fd >= 0 && (io->rx_ring_block < 4096 || io->rx_ring_block > (4u << 20) ||
				     (io->rx_ring_block & (io->rx_ring_block - 1)) ||
				     io->rx_ring_timeout_ms < 1 || io->rx_ring_timeout_ms > 1000)))
		return ESPDP_ERR_INVALID;
	ws = calloc(1, sizeof(*ws) + dp->nworkers * sizeof(struct worker));
	tun = ws ? malloc(io->ntun * sizeof(int)) : NULL;
	if (!tun) {
		free(ws);
		return ESPDP_ERR_NOMEM;
	}
	memcpy(tun, io->tun_fds, io->ntun * sizeof(int));
	ws->io = *io;
	ws->io.tun_fds = tun;
	if (io->rx_ring_fd >= 0) {
		/* Worker 0 reads the ring; the raw ESP sockets stay open, muted, so that the
		 * kernel's own copy counts as delivered (no ICMP protocol unreachable). A ring
		 * that cannot be set up changes nothing: the caller falls back to the sockets. */
		if (ring_open(&ws->w[0].ring, io->rx_ring_fd, io->rx_ring_block, RING_BLOCKS,
			      io->rx_ring_timeout_ms, io->rx_ring_skip_ifindex) ||
		    (io->esp4_fd >= 0 && ring_mute(io->esp4_fd)) ||
		    (io->esp6_fd >= 0 && ring_mute(io->esp6_fd))) {
			int err = errno;

			if (io->esp4_fd >= 0)
				ring_unmute(io->esp4_fd);
			if (io->esp6_fd >= 0)
				ring_unmute(io->esp6_fd);
			ring_close(&ws->w[0].ring);
			free(tun);
			free(ws);
			errno = err;
			return ESPDP_ERR_IO; /* errno: why the kernel refused */
		}
		ws->io.esp4_fd = ws->io.esp6_fd = -1;
	}
	ws->net_fd[IO_ESP4] = ws->io.esp4_fd;
	ws->net_fd[IO_ESP6] = ws->io.esp6_fd;
	ws->net_fd[IO_UDP4] = io->udp4_fd;
	ws->net_fd[IO_UDP6] = io->udp6_fd;
	ws->out = (struct sock_out){ .send4 = io->send4_fd, .send6 = io->send6_fd,
				     .udp4 = io->udp4_fd, .udp6 = io->udp6_fd,
				     .port4 = io->udp4_fd >= 0 ? sock_port(io->udp4_fd) : 0,
				     .port6 = io->udp6_fd >= 0 ? sock_port(io->udp6_fd) : 0,
				     .packet_fd = io->packet_fd, .nh = &dp->nexthops };
	ws->n = dp->nworkers;
	for (unsigned i = 0; i < ws->n; i++)
		ws->w[i].epfd = -1;
	ws->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	pthread_mutex_lock(&dp->threads_lock);
	dp->threads = ws;
	pthread_mutex_unlock(&dp->threads_lock);
	for (int s = 0; s < IO_SOURCES; s++)
		if (ws->net_fd[s] >= 0 && (set_nonblock(ws->net_fd[s]) ||
					   sock_prepare(ws->net_fd[s], (enum io_source)s)))
			goto err;
	for (unsigned i = 0; i < ws->n; i++)
		if (ws->stop_fd < 0 || worker_init(&ws->w[i], dp, i, ws))
			goto err;
	for (unsigned i = 0; i < ws->n; i++) {
		if (pthread_create(&ws->w[i].thread, NULL, worker_main, &ws->w[i]))
			goto err;
		ws->w[i].started = 1;
	}
	return ESPDP_OK;
err:
	espdp_workers_stop(dp);
	return ESPDP_ERR_INVALID;
}

void espdp_workers_stop(espdp *dp)
{
	struct workers *ws;
	uint64_t one = 1;

	pthread_mutex_lock(&dp->threads_lock); /* readers of dp->threads hold it too */
	ws = dp->threads;
	dp->threads = NULL;
	pthread_mutex_unlock(&dp->threads_lock);
	if (!ws)
		return;
	__atomic_store_n(&ws->stop, 1, __ATOMIC_RELEASE);
	if (ws->stop_fd >= 0 && write(ws->stop_fd, &one, sizeof(one)) < 0) {
		/* workers also wake up within a second on their own */
	}
	for (unsigned i = 0; i < ws->n; i++)
		if (ws->w[i].started)
			pthread_join(ws->w[i].thread, NULL);
	workers_free(ws);
}

void espdp_io_stats(const espdp *dp, struct espdp_io_stats *out)
{
	pthread_mutex_t *lock = (pthread_mutex_t *)&dp->threads_lock;
	struct workers *ws;

	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(lock); /* espdp_workers_stop cannot free ws meanwhile */
	ws = dp->threads;
	for (unsigned i = 0; ws && i < ws->n; i++) {
		const struct espdp_io_stats *s = &ws->w[i].stats;

		out->tun_rx += __atomic_load_n(&s->tun_rx, __ATOMIC_RELAXED);
		out->tun_tx += __atomic_load_n(&s->tun_tx, __ATOMIC_RELAXED);
		out->net_rx += __atomic_load_n(&s->net_rx, __ATOMIC_RELAXED);
		out->net_tx += __atomic_load_n(&s->net_tx, __ATOMIC_RELAXED);
		out->send_errors += __atomic_load_n(&s->send_errors, __ATOMIC_RELAXED);
		out->recv_errors += __atomic_load_n(&s->recv_errors, __ATOMIC_RELAXED);
		out->tun_errors += __atomic_load_n(&s->tun_errors, __ATOMIC_RELAXED);
		out->net_tx_gso += __atomic_load_n(&s->net_tx_gso, __ATOMIC_RELAXED);
		out->net_rx_gro += __atomic_load_n(&s->net_rx_gro, __ATOMIC_RELAXED);
		out->net_tx_packet += __atomic_load_n(&s->net_tx_packet, __ATOMIC_RELAXED);
		out->net_rx_ring += __atomic_load_n(&s->net_rx_ring, __ATOMIC_RELAXED);
	}
	if (ws && ws->io.rx_ring_fd >= 0) { /* published workers with a fd have their ring */
		ws->ring_drops += ring_drops(ws->io.rx_ring_fd);
		out->net_rx_ring_drops = ws->ring_drops;
	}
	pthread_mutex_unlock(lock);
}

int espdp_send_ike(espdp *dp, const struct espdp_addr *local, const struct espdp_addr *peer,
		   uint16_t port, const uint8_t *msg, size_t len)
{
	int fd = -1, r;

	if ((local->family != 4 && local->family != 6) || peer->family != local->family || !port ||
	    len > IP_MAX_LEN)
		return ESPDP_ERR_INVALID;
	pthread_mutex_lock(&dp->threads_lock); /* the socket stays open while workers run */
	if (dp->threads)
		fd = dp->threads->net_fd[local->family == 4 ? IO_UDP4 : IO_UDP6];
	r = fd < 0 ? ESPDP_ERR_STATE :
		     sock_send_ike(fd, local->family, local->bytes, peer->bytes, port, msg, len) ?
		     ESPDP_ERR_IO : ESPDP_OK;
	pthread_mutex_unlock(&dp->threads_lock);
	return r;
}
