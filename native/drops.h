/* Every reason a packet can be dropped, and every event kind, in one list each.
 * The C enum, its name (the Prometheus `reason` label and the `show` output) and its
 * help text all come from here. Order is ABI: append only. */
#ifndef ESPD_DROPS_H
#define ESPD_DROPS_H

/* X(name, help) */
#define ESPD_FOREACH_DROP(X)                                                              \
	X(none, "not dropped")                                                            \
	X(malformed, "outer packet or ESP header is malformed or truncated")              \
	X(inner_malformed, "inner IP packet is malformed")                               \
	X(no_policy, "outbound packet matches no crypto map entry")                       \
	X(policy_deny, "outbound packet matches a deny entry")                            \
	X(no_sa, "crypto map entry has no usable outbound SA")                            \
	X(too_big, "packet does not fit the buffer or the IP length limit")               \
	X(seq_cycled, "outbound sequence number space exhausted; SA needs rekey")         \
	X(sa_expired, "SA reached its hard lifetime")                                     \
	X(unknown_spi, "no inbound SA for this SPI and destination")                      \
	X(encap_mismatch, "ESP arrived raw on a UDP SA or in UDP on a raw SA")            \
	X(bad_length, "ESP payload length is wrong for the transform")                    \
	X(replay_old, "sequence number left of the anti-replay window")                   \
	X(replay_dup, "sequence number already received")                                \
	X(auth_failed, "integrity check value (ICV) did not verify")                      \
	X(bad_padding, "ESP padding bytes or pad length are wrong")                       \
	X(bad_next_header, "ESP next header is not allowed for the SA mode")              \
	X(dummy, "dummy packet (next header 59), dropped silently")                       \
	X(selector_mismatch, "inner addresses do not match the SA's access list")         \
	X(ecn_drop, "outer CE on a not-ECT inner packet (RFC 6040)")                      \
	X(nat_keepalive, "NAT-T keepalive (0xFF), consumed")                              \
	X(non_esp_marker, "UDP 4500 packet with the non-ESP marker (IKE): punted, not decapsulated") \
	X(crypto_error, "the crypto library failed")                                      \
	X(seq_unreserved, "sequence numbers past the persisted reservation; state_dir not writable?") \
	X(internal, "not processed: the call named a worker the data plane does not have") \
	X(punt_full, "IKE datagram on UDP 4500 dropped: the queue to the control plane is full") \
	X(wrong_source, "outer source address (or UDP port) is not the inbound SA's peer") \
	X(link_local, "link-local multicast on the TUN device (the kernel's own MLD or IGMP), matches no entry")

/* X(name, help) */
#define ESPD_FOREACH_EVENT(X)                                                              \
	X(none, "no event")                                                               \
	X(soft_expired, "SA reached a soft lifetime limit: rekey now")                    \
	X(hard_expired, "SA reached a hard lifetime limit: it no longer passes traffic")  \
	X(seq_cycled, "outbound sequence number space exhausted")                         \
	X(events_lost, "the event ring overflowed; some events were lost")                \
	X(seq_reserve, "outbound SA is nearing its reserved sequence numbers: persist more") \
	X(acquire, "a PROTECT rule has no SA yet: negotiate one for this traffic")        \
	X(peer_moved, "an authenticated, new ESP-in-UDP packet came from another address or port")

#define ESPD_DROP_ENUM(name, help) ESPD_DROP_##name,
enum espd_drop { ESPD_FOREACH_DROP(ESPD_DROP_ENUM) ESPD_DROP__COUNT };
#undef ESPD_DROP_ENUM

#define ESPD_EVENT_ENUM(name, help) ESPD_EVENT_##name,
enum espd_event_kind { ESPD_FOREACH_EVENT(ESPD_EVENT_ENUM) ESPD_EVENT__COUNT };
#undef ESPD_EVENT_ENUM

#define ESPD_DROP_SLOTS 32 /* the drops[] arrays in espdp.h; must hold ESPD_DROP__COUNT */

#endif
