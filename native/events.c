/* events: SA expiry, sequence exhaustion, acquires and peer moves, from the packet path to the
 * control plane.
 *
 * Producers (any worker) append under a mutex (events are rare: at most a few per SA
 * lifetime) and signal an eventfd; the control plane polls the fd and drains the ring.
 * A full ring drops the newest event and reports the loss as an events_lost event.
 */
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "dp.h"
#include "sa.h"

void events_init(struct events *ev)
{
	memset(ev, 0, sizeof(*ev));
	pthread_mutex_init(&ev->lock, NULL);
	ev->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
}

void events_destroy(struct events *ev)
{
	if (ev->fd >= 0)
		close(ev->fd);
	pthread_mutex_destroy(&ev->lock);
}

static void push(espdp *dp, const struct espdp_event *e)
{
	struct events *ev = &dp->events;
	uint64_t one = 1;

	pthread_mutex_lock(&ev->lock);
	if (ev->tail - ev->head < EVENT_RING)
		ev->ring[ev->tail++ % EVENT_RING] = *e;
	else
		ev->lost++;
	pthread_mutex_unlock(&ev->lock);
	if (ev->fd >= 0 && write(ev->fd, &one, sizeof(one)) < 0) {
		/* the counter is saturated: the fd is readable, which is all we need */
	}
}

/* An event of `kind` that names sa; the rest zero. */
static void sa_event(struct espdp_event *e, uint32_t kind, const espdp_sa *sa)
{
	memset(e, 0, sizeof(*e));
	e->kind = kind;
	e->spi = sa->cfg.spi;
	e->direction = sa->cfg.direction;
	e->cookie = sa->cfg.cookie;
}

void events_push(espdp *dp, uint32_t kind, const espdp_sa *sa, uint64_t value)
{
	struct espdp_event e;

	sa_event(&e, kind, sa);
	e.value = value;
	push(dp, &e);
}

void events_push_acquire(espdp *dp, uint32_t index, uint32_t policy, const struct spd_key *key)
{
	struct espdp_event e;

	memset(&e, 0, sizeof(e));
	e.kind = ESPD_EVENT_acquire;
	e.direction = ESPDP_DIR_OUT;
	e.value = index;
	e.policy = policy;
	e.family = key->family;
	e.proto = key->proto;
	e.sport = key->sport;
	e.dport = key->dport;
	memcpy(e.src, key->src, sizeof(e.src));
	memcpy(e.dst, key->dst, sizeof(e.dst));
	push(dp, &e);
}

void events_push_moved(espdp *dp, const espdp_sa *sa, const uint8_t *src, uint16_t sport)
{
	struct espdp_event e;

	sa_event(&e, ESPD_EVENT_peer_moved, sa);
	e.family = sa->cfg.peer.family;
	e.sport = sport;
	memcpy(e.src, src, e.family == 4 ? 4 : 16);
	push(dp, &e);
}

int espdp_event_fd(const espdp *dp)
{
	return dp->events.fd;
}

size_t espdp_events_read(espdp *dp, struct espdp_event *out, size_t n)
{
	struct events *ev = &dp->events;
	uint64_t drain;
	size_t k = 0;

	pthread_mutex_lock(&ev->lock);
	if (ev->lost && n) {
		memset(&out[k], 0, sizeof(out[k]));
		out[k].kind = ESPD_EVENT_events_lost;
		out[k++].value = ev->lost;
		ev->lost = 0;
	}
	while (k < n && ev->head != ev->tail)
		out[k++] = ev->ring[ev->head++ % EVENT_RING];
	if (ev->head == ev->tail && ev->fd >= 0 && read(ev->fd, &drain, sizeof(drain)) < 0) {
		/* EAGAIN: nothing was pending */
	}
	pthread_mutex_unlock(&ev->lock);
	return k;
}
