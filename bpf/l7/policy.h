// Per-protocol capture policy, and "one end records" for the protocols
// whose exchanges are recorded from the client's side.
//
// User space (collectors/l7/capture, from each protocol's l7.Capture) fills
// proto_policy, indexed by enum l7_proto, at load and whenever a protocol
// registers later. It is read once per connection, when the connection is
// decided, into conn_info (cap, policy): the calls after that pay nothing.
//
// POLICY_CLIENT_SIDE: the databases, caches and Kafka record an operation
// once, from the client's side when the client is on this host. The kernel
// remembers the local end of every client connection it tracks (filters
// passed) in client_ends, and a server-side connection of such a protocol
// whose peer is one of those ends is given up before any record is sent:
// its client's side records it, through loopback, a Unix socket or a
// bridge/veth address of another network namespace alike. A client the
// filters leave out has no entry, so its server's side records it.
#pragma once

#define POLICY_CLIENT_SIDE 1

struct l7_policy {
	__u32 capture_bytes; // prefix kept of each call (0: capture_bytes)
	__u32 flags;         // POLICY_*
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, L7_PROTO_MAX);
	__type(key, __u32);
	__type(value, struct l7_policy);
} proto_policy SEC(".maps");

const struct l7_policy *unused_l7_policy __attribute__((unused));

// A client connection's local end: a TCP address and port, or for a Unix
// socket the client's socket (the server's socket names it as its peer).
struct local_end {
	__u8 addr[16];
	__u16 port;
	__u16 unix_; // 1: addr holds the client's struct sock pointer
};

// Client ends of tracked connections. Not removed at close: a server may
// read its first request after a short-lived client closed (a one-way
// write and close); a stale entry names an end that is not reused before
// the LRU forgets it, or is reused by another local client, which is
// tracked again at its connect.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct local_end);
	__type(value, __u8);
} client_ends SEC(".maps");

// remember_client_end records a tracked client connection's local end.
static __always_inline void remember_client_end(const struct conn_info *ci)
{
	struct local_end e = {};
	if (ci->family == AF_UNIX_) {
		__builtin_memcpy(e.addr, &ci->sk, sizeof(ci->sk));
		e.unix_ = 1;
	} else {
		__builtin_memcpy(e.addr, ci->local, 16);
		e.port = ci->local_port;
	}
	__u8 one = 1;
	bpf_map_update_elem(&client_ends, &e, &one, BPF_ANY);
}

// client_is_tracked reports whether a server connection's peer is the
// local end of a client connection the capture tracks.
static __always_inline int client_is_tracked(const struct conn_info *ci)
{
	struct local_end e = {};
	if (ci->family == AF_UNIX_) {
		struct unix_sock *u = (struct unix_sock *)ci->sk;
		__u64 peer = (__u64)BPF_CORE_READ(u, peer);
		if (!peer)
			return 0;
		__builtin_memcpy(e.addr, &peer, sizeof(peer));
		e.unix_ = 1;
	} else {
		__builtin_memcpy(e.addr, ci->peer, 16);
		e.port = ci->peer_port;
	}
	return bpf_map_lookup_elem(&client_ends, &e) != 0;
}

// apply_policy copies protocol p's policy into a connection being decided.
static __always_inline void apply_policy(struct conn_info *ci, __u32 p)
{
	struct l7_policy *pol = bpf_map_lookup_elem(&proto_policy, &p);
	if (!pol)
		return;
	__u32 cap = pol->capture_bytes;
	ci->cap = cap > MAX_CAPTURE ? MAX_CAPTURE : cap;
	ci->policy = pol->flags;
}

// recorded_by_client gives up the server side of a client-side protocol's
// connection whose client end is tracked here (1: given up). Asked at the
// decision and at each record until the first request-direction one: the
// client's connect has returned by then (it wrote the request), while a
// server that speaks first (MySQL's greeting) may be decided before it.
// The connection's open record was sent when decided is set: its close is
// sent too, so user space ends it. A global function: its stack is not on
// the capture's call chain.
__noinline int recorded_by_client(__u64 key, __u32 request_dir, __u32 decided)
{
	struct conn_info *ci = bpf_map_lookup_elem(&conns, &key);
	if (!ci || ci->role != ROLE_SERVER || !(ci->policy & POLICY_CLIENT_SIDE) ||
	    (ci->flags & CONN_CLIENT_CHECKED))
		return 0;
	if (client_is_tracked(ci)) {
		if (decided)
			emit_conn_event(EVENT_CLOSE, (__u32)key, ci);
		ci->state = STATE_NONE;
		__u32 p = ci->proto;
		bump(&counters, HC_PROTO_CLIENT_SIDE(p & 7));
		return 1;
	}
	if (request_dir)
		ci->flags |= CONN_CLIENT_CHECKED;
	return 0;
}
