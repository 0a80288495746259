// TCP collector: connection lifecycle, exact payload bytes, retransmits and
// resets, summed per (process, peer, server port, direction) in a per-CPU
// hash; the duration and RTT histograms are bucketed here too, at close, so
// every number stays exact under any load and user space does nothing per
// connection.
//
// Every hook has several entry points (tp_btf, fentry/fexit, kprobe, classic
// tracepoint); user space attaches exactly one per hook, so each entry point
// only unpacks its context and calls the shared handler.
#include "common.h"

#define EEXIST_ 17

char LICENSE[] SEC("license") = "Dual BSD/GPL";

enum direction {
	DIRECTION_UNKNOWN = 0,
	DIRECTION_OUTBOUND = 1,
	DIRECTION_INBOUND = 2,
};

enum connect_failure {
	FAILURE_REFUSED = 0,
	FAILURE_TIMEOUT = 1,
	FAILURE_RESET = 2,
	FAILURE_UNREACHABLE = 3,
	FAILURE_OTHER = 4,
	FAILURE_MAX = 5,
};

enum tcp_counter {
	COUNTER_CLOSES = 0,
	COUNTER_DROP_HIST_FULL = 1,
	COUNTER_DROP_SOCKS_FULL = 2,
	COUNTER_DROP_STATS_FULL = 3,
	COUNTER_DROP_LISTENERS_FULL = 4,
	COUNTER_PEERS_FOLDED = 5,
	COUNTER_EXISTING = 6,
	COUNTER_MAX = 7,
};

// Histogram bucket upper bounds, set by user space before loading (one
// source of truth for the kernel and the exported bounds). A value v lands in
// the first bucket whose bound is >= v; the last bucket is +Inf.
#define DURATION_BOUNDS 17
#define RTT_BOUNDS 24
const volatile __u64 duration_bounds_ns[DURATION_BOUNDS];
const volatile __u64 rtt_bounds_us[RTT_BOUNDS];

// Distinct peer addresses one process may have series for; the rest share
// the process's _OTHER peer. Set by user space (tcp.max_peers_per_process).
const volatile __u32 max_peers_per_process = 100;

// conn_key identifies one series. The ephemeral port is never part of it.
struct conn_key {
	__u8 peer[16]; // IPv6, or IPv4-mapped IPv6
	__u32 tgid;    // 0: no process context (softirq) and no owner known
	__u16 server_port;
	__u8 direction;
	__u8 _pad;
};

struct conn_counters {
	__u64 opened;
	__u64 closed;
	__u64 failed[FAILURE_MAX];
	__u64 bytes_sent;
	__u64 bytes_received;
	__u64 retransmits;
	__u64 resets_sent;
	__u64 resets_received;
};

struct sock_info {
	struct conn_key key;
	__u64 start_ns;
	// Counted as opened here: its close is counted too. Cleared at close,
	// and never set for connections that predate the agent.
	__u8 established;
	__u8 _pad[7];
};

// peer_key is one (process, peer address) admitted to its own series.
struct peer_key {
	__u8 peer[16];
	__u32 tgid;
};

struct listener_key {
	__u32 netns;
	__u16 port;
	__u16 _pad;
};

struct conn_hist {
	__u64 duration[DURATION_BOUNDS + 1];
	__u64 rtt[RTT_BOUNDS + 1];
	__u64 duration_sum_ns;
	__u64 rtt_sum_us;
};

// Unused instances make bpf2go emit Go types for these structs.
const struct conn_key *unused_conn_key __attribute__((unused));
const struct conn_counters *unused_conn_counters __attribute__((unused));
const struct conn_hist *unused_conn_hist __attribute__((unused));
const struct listener_key *unused_listener_key __attribute__((unused));
const struct peer_key *unused_peer_key __attribute__((unused));
const enum connect_failure *unused_connect_failure __attribute__((unused));
const enum tcp_counter *unused_tcp_counter __attribute__((unused));
const enum direction *unused_direction __attribute__((unused));

// Connections we saw being set up (or found established at start), by socket
// address. An entry lives as long as the socket, not the connection: a
// write after the peer closed (a TLS close_notify answered by a reset) or
// a reset sent by close() comes after TCP_CLOSE, when the socket no longer
// says which side it is (its local port is already released), so the key
// decided at set-up is kept until tcp_destroy_sock. Not LRU: an eviction
// would silently lose a close; a full map is counted instead.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct sock_info);
} socks SEC(".maps");

// Listening ports by network namespace, to the process that called listen():
// inbound connections become established in softirq context, with no useful
// current task.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, struct listener_key);
	__type(value, __u32);
} listeners SEC(".maps");

// Per-CPU: the hot path (every send and receive) adds without contention.
// Not preallocated: per-CPU memory is max_entries x CPUs x value size.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct conn_key);
	__type(value, struct conn_counters);
} conn_stats SEC(".maps");

// Shared with atomic adds: touched once per closed connection, and a
// per-CPU copy of 400 bytes per series per CPU would cost more than the
// rare contention.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct conn_key);
	__type(value, struct conn_hist);
} conn_hists SEC(".maps");

// The peers each process has its own series for, and how many: a process
// with more peers than max_peers_per_process folds the rest into one _OTHER
// peer here, in the kernel, so that one process talking to thousands of
// peers cannot fill conn_stats for the whole host. Both are sized like
// conn_stats by user space; touched only when a series is created.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct peer_key);
	__type(value, __u8);
} peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, __u32);
} peer_counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

// Per-thread socket of an in-flight tcp_sendmsg, for the kprobe link only:
// a kretprobe sees the return value but not the arguments.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u64);
} sendmsg_args SEC(".maps");

// The _OTHER peer: all ones is no address a connection can have.
static __always_inline int is_other_peer(const __u8 peer[16])
{
	const __u32 *w = (const __u32 *)peer;
	return w[0] == ~0U && w[1] == ~0U && w[2] == ~0U && w[3] == ~0U;
}

static __always_inline void fold_peer(struct conn_key *key)
{
	__builtin_memset(key->peer, 0xff, 16);
}

// admitted reports whether key's peer may have series of its own for key's
// process, admitting it while the process has peers left in its budget.
// Runs only when a series is about to be created. Two CPUs admitting new
// peers of one process at the same instant can both pass the check: the
// budget is exceeded by at most one peer per CPU, never unbounded.
static __always_inline int admitted(const struct conn_key *key)
{
	if (is_other_peer(key->peer))
		return 1;
	struct peer_key pk = { .tgid = key->tgid };
	__builtin_memcpy(pk.peer, key->peer, 16);
	if (bpf_map_lookup_elem(&peers, &pk))
		return 1;
	__u32 tgid = key->tgid;
	__u32 *n = bpf_map_lookup_elem(&peer_counts, &tgid);
	if (!n) {
		__u32 zero = 0;
		bpf_map_update_elem(&peer_counts, &tgid, &zero, BPF_NOEXIST);
		n = bpf_map_lookup_elem(&peer_counts, &tgid);
		if (!n)
			return 0;
	}
	if (*n >= max_peers_per_process)
		return 0;
	__u8 one = 1;
	if (bpf_map_update_elem(&peers, &pk, &one, BPF_NOEXIST))
		// Another CPU admitted it meanwhile, or the map is full.
		return bpf_map_lookup_elem(&peers, &pk) != NULL;
	__sync_fetch_and_add(n, 1);
	return 1;
}

// admit_connection decides once, at set-up, whether a connection's series
// is its peer's own or the process's _OTHER one, and counts a fold.
static __always_inline void admit_connection(struct conn_key *key)
{
	if (!admitted(key)) {
		fold_peer(key);
		bump(&counters, COUNTER_PEERS_FOLDED);
	}
}

// stats_for returns the counters of key's series, creating it if the
// process may have it; else key is folded into its _OTHER peer.
static __always_inline struct conn_counters *stats_for(struct conn_key *key)
{
	struct conn_counters *c = bpf_map_lookup_elem(&conn_stats, key);
	if (c)
		return c;
	if (!admitted(key)) {
		fold_peer(key);
		c = bpf_map_lookup_elem(&conn_stats, key);
		if (c)
			return c;
	}
	struct conn_counters zero = {};
	// NOEXIST: another CPU may have created it meanwhile; the lookup below
	// then finds theirs.
	bpf_map_update_elem(&conn_stats, key, &zero, BPF_NOEXIST);
	c = bpf_map_lookup_elem(&conn_stats, key);
	if (!c)
		bump(&counters, COUNTER_DROP_STATS_FULL);
	return c;
}

static __always_inline int is_tcp_inet(const struct sock *sk, __u16 *family)
{
	*family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (*family != AF_INET && *family != AF_INET6)
		return 0;
	__u16 protocol = BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol);
	return protocol == IPPROTO_TCP_;
}

static __always_inline int is_listener(const struct sock *sk, __u16 lport)
{
	struct listener_key lk = { .netns = sock_netns(sk), .port = lport };
	return bpf_map_lookup_elem(&listeners, &lk) != NULL;
}

// key_for returns the key of a connection: the one recorded at set-up when we
// saw it, else one derived from the socket (connections older than the agent).
static __always_inline void key_for(const struct sock *sk, __u16 family, __u32 tgid,
				    struct conn_key *key)
{
	__u64 skp = (__u64)sk;
	struct sock_info *si = bpf_map_lookup_elem(&socks, &skp);
	if (si) {
		*key = si->key;
		if (tgid) {
			key->tgid = tgid;
			// Found at start with no owner known (an outbound connection
			// that predates the agent): the first process to use it owns
			// it, for the events that run without process context.
			if (!si->key.tgid && !si->established)
				si->key.tgid = tgid;
		}
		return;
	}
	__builtin_memset(key, 0, sizeof(*key));
	sock_peer_addr(sk, family, key->peer);
	key->tgid = tgid;
	__u16 lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	if (is_listener(sk, lport)) {
		key->direction = DIRECTION_INBOUND;
		key->server_port = lport;
	} else {
		key->direction = DIRECTION_OUTBOUND;
		key->server_port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	}
}

static __always_inline __u32 failure_reason(const struct sock *sk)
{
	int err = BPF_CORE_READ(sk, sk_err);
	switch (err) {
	case ECONNREFUSED_:
		return FAILURE_REFUSED;
	case ETIMEDOUT_:
		return FAILURE_TIMEOUT;
	case ECONNRESET_:
		return FAILURE_RESET;
	case EHOSTUNREACH_:
	case ENETUNREACH_:
		return FAILURE_UNREACHABLE;
	}
	return FAILURE_OTHER;
}

static __always_inline __u32 bucket_of(const volatile __u64 *bounds, __u32 n, __u64 v)
{
	__u32 i;
	for (i = 0; i < n; i++) {
		if (v <= bounds[i])
			break;
	}
	return i;
}

// record_close buckets the connection's duration and smoothed RTT.
static __always_inline void record_close(const struct sock *sk, const struct sock_info *si)
{
	struct conn_hist *h = bpf_map_lookup_elem(&conn_hists, &si->key);
	if (!h) {
		static const struct conn_hist zero;
		bpf_map_update_elem(&conn_hists, &si->key, &zero, BPF_NOEXIST);
		h = bpf_map_lookup_elem(&conn_hists, &si->key);
		if (!h) {
			bump(&counters, COUNTER_DROP_HIST_FULL);
			return;
		}
	}
	__u64 duration = bpf_ktime_get_ns() - si->start_ns;
	__u32 b = bucket_of(duration_bounds_ns, DURATION_BOUNDS, duration);
	if (b <= DURATION_BOUNDS)
		__sync_fetch_and_add(&h->duration[b], 1);
	__sync_fetch_and_add(&h->duration_sum_ns, duration);
	__u64 srtt = BPF_CORE_READ((struct tcp_sock *)sk, srtt_us) >> 3;
	if (srtt) {
		b = bucket_of(rtt_bounds_us, RTT_BOUNDS, srtt);
		if (b <= RTT_BOUNDS)
			__sync_fetch_and_add(&h->rtt[b], 1);
		__sync_fetch_and_add(&h->rtt_sum_us, srtt);
	}
	bump(&counters, COUNTER_CLOSES);
}

// interesting_transition filters on the states alone, before any read of
// the socket: half of a connection's transitions (FIN_WAIT1, FIN_WAIT2,
// CLOSE_WAIT, LAST_ACK, LISTEN -> SYN_RECV) need nothing.
static __always_inline int interesting_transition(int oldstate, int newstate)
{
	return newstate == TCP_LISTEN || newstate == TCP_SYN_SENT || newstate == TCP_CLOSE ||
	       oldstate == TCP_SYN_SENT || (oldstate == TCP_SYN_RECV && newstate == TCP_ESTABLISHED);
}

static __always_inline void on_state_change(const struct sock *sk, int oldstate, int newstate)
{
	if (!interesting_transition(oldstate, newstate))
		return;
	__u16 family;
	if (!is_tcp_inet(sk, &family))
		return;
	__u64 skp = (__u64)sk;
	struct conn_counters *c;

	if (newstate == TCP_LISTEN) {
		// listen() runs in the listening process.
		struct listener_key lk = {
			.netns = sock_netns(sk),
			.port = BPF_CORE_READ(sk, __sk_common.skc_num),
		};
		__u32 tgid = current_tgid();
		if (bpf_map_update_elem(&listeners, &lk, &tgid, BPF_ANY))
			bump(&counters, COUNTER_DROP_LISTENERS_FULL);
		return;
	}
	if (oldstate == TCP_LISTEN && newstate == TCP_CLOSE) {
		struct listener_key lk = {
			.netns = sock_netns(sk),
			.port = BPF_CORE_READ(sk, __sk_common.skc_num),
		};
		__u32 *owner = bpf_map_lookup_elem(&listeners, &lk);
		// Another process may still listen on the port (SO_REUSEPORT).
		// Owner 0: found at start with no process holding it.
		if (owner && (*owner == current_tgid() || !*owner))
			bpf_map_delete_elem(&listeners, &lk);
		return;
	}
	if (newstate == TCP_SYN_SENT) {
		// connect() runs in the connecting process; address and port are set.
		struct sock_info si = {};
		sock_peer_addr(sk, family, si.key.peer);
		si.key.tgid = current_tgid();
		si.key.server_port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
		si.key.direction = DIRECTION_OUTBOUND;
		si.start_ns = bpf_ktime_get_ns();
		admit_connection(&si.key);
		if (bpf_map_update_elem(&socks, &skp, &si, BPF_ANY))
			bump(&counters, COUNTER_DROP_SOCKS_FULL);
		return;
	}
	if (oldstate == TCP_SYN_SENT) {
		struct sock_info *si = bpf_map_lookup_elem(&socks, &skp);
		if (!si)
			return;
		// A copy: stats_for may fold its key, and the connection keeps the
		// one decided at set-up.
		struct conn_key key = si->key;
		c = stats_for(&key);
		if (newstate == TCP_ESTABLISHED) {
			si->established = 1;
			si->start_ns = bpf_ktime_get_ns();
			if (c)
				__sync_fetch_and_add(&c->opened, 1);
			return;
		}
		if (newstate == TCP_CLOSE) {
			__u32 reason = failure_reason(sk);
			if (c && reason < FAILURE_MAX)
				__sync_fetch_and_add(&c->failed[reason], 1);
			bpf_map_delete_elem(&socks, &skp);
		}
		return;
	}
	if (oldstate == TCP_SYN_RECV && newstate == TCP_ESTABLISHED) {
		struct sock_info si = {};
		__u16 lport = BPF_CORE_READ(sk, __sk_common.skc_num);
		struct listener_key lk = { .netns = sock_netns(sk), .port = lport };
		__u32 *owner = bpf_map_lookup_elem(&listeners, &lk);
		sock_peer_addr(sk, family, si.key.peer);
		si.key.tgid = owner ? *owner : 0;
		si.key.server_port = lport;
		si.key.direction = DIRECTION_INBOUND;
		si.start_ns = bpf_ktime_get_ns();
		si.established = 1;
		admit_connection(&si.key);
		if (bpf_map_update_elem(&socks, &skp, &si, BPF_ANY)) {
			bump(&counters, COUNTER_DROP_SOCKS_FULL);
		}
		c = stats_for(&si.key);
		if (c)
			__sync_fetch_and_add(&c->opened, 1);
		return;
	}
	if (newstate == TCP_CLOSE) {
		// The entry stays until the socket is destroyed (see socks).
		struct sock_info *si = bpf_map_lookup_elem(&socks, &skp);
		if (!si || !si->established)
			return;
		si->established = 0;
		struct conn_key key = si->key;
		c = stats_for(&key);
		if (c)
			__sync_fetch_and_add(&c->closed, 1);
		record_close(sk, si);
	}
}

static __always_inline void on_destroy(const struct sock *sk)
{
	__u64 skp = (__u64)sk;
	bpf_map_delete_elem(&socks, &skp);
}

// on_payload counts bytes moved on sk. btf: sk is a BTF pointer (the tp_btf
// hooks, 6.3+), whose fields are loaded directly rather than by a
// bpf_probe_read_kernel call each (~20 ns here, on every send and receive).
static __always_inline void on_payload(const struct sock *sk, int bytes, int sent, int btf)
{
	if (bytes <= 0)
		return;
	__u16 family;
	if (btf) {
		family = sk->__sk_common.skc_family;
		if ((family != AF_INET && family != AF_INET6) || BPF_CORE_READ_BITFIELD(sk, sk_protocol) != IPPROTO_TCP_)
			return;
	} else if (!is_tcp_inet(sk, &family)) {
		return;
	}
	struct conn_key key;
	key_for(sk, family, current_tgid(), &key);
	struct conn_counters *c = stats_for(&key);
	if (!c)
		return;
	if (sent)
		__sync_fetch_and_add(&c->bytes_sent, bytes);
	else
		__sync_fetch_and_add(&c->bytes_received, bytes);
}

// on_retransmit runs from timers and softirqs: the owner comes from socks.
static __always_inline void on_retransmit(const struct sock *sk, const struct sk_buff *skb)
{
	__u16 family;
	if (!sk || !is_tcp_inet(sk, &family))
		return;
	struct conn_key key;
	key_for(sk, family, 0, &key);
	struct conn_counters *c = stats_for(&key);
	if (!c)
		return;
	// A TSO skb stands for several segments; TcpRetransSegs counts segments.
	const struct tcp_skb_cb *cb =
		(const void *)skb + bpf_core_field_offset(struct sk_buff, cb);
	__u16 segs = BPF_CORE_READ(cb, tcp_gso_segs);
	__sync_fetch_and_add(&c->retransmits, segs ? segs : 1);
}

static __always_inline void on_reset(const struct sock *sk, int sent)
{
	__u16 family;
	if (!sk || !is_tcp_inet(sk, &family))
		return;
	struct conn_key key;
	key_for(sk, family, 0, &key);
	struct conn_counters *c = stats_for(&key);
	if (!c)
		return;
	if (sent)
		__sync_fetch_and_add(&c->resets_sent, 1);
	else
		__sync_fetch_and_add(&c->resets_received, 1);
}

// ---- state: tp_btf -> tracepoint

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tcp_state_btf, const struct sock *sk, int oldstate, int newstate)
{
	on_state_change(sk, oldstate, newstate);
	return 0;
}

SEC("tracepoint/sock/inet_sock_set_state")
int tcp_state_tp(struct trace_event_raw_inet_sock_set_state *ctx)
{
	if (BPF_CORE_READ(ctx, protocol) != IPPROTO_TCP_)
		return 0;
	on_state_change(BPF_CORE_READ(ctx, skaddr), BPF_CORE_READ(ctx, oldstate),
			BPF_CORE_READ(ctx, newstate));
	return 0;
}

// ---- payload sent: tp_btf -> fexit -> kprobe -> tracepoint

SEC("tp_btf/sock_send_length")
int BPF_PROG(tcp_send_btf, struct sock *sk, int ret, int flags)
{
	on_payload(sk, ret, 1, 1);
	return 0;
}

SEC("fexit/tcp_sendmsg")
int BPF_PROG(tcp_send_fexit, struct sock *sk, struct msghdr *msg, size_t size, int ret)
{
	on_payload(sk, ret, 1, 0);
	return 0;
}

SEC("kprobe/tcp_sendmsg")
int BPF_KPROBE(tcp_send_kprobe, struct sock *sk)
{
	__u64 tid = bpf_get_current_pid_tgid();
	__u64 skp = (__u64)sk;
	bpf_map_update_elem(&sendmsg_args, &tid, &skp, BPF_ANY);
	return 0;
}

SEC("kretprobe/tcp_sendmsg")
int BPF_KRETPROBE(tcp_send_kretprobe, int ret)
{
	__u64 tid = bpf_get_current_pid_tgid();
	__u64 *skp = bpf_map_lookup_elem(&sendmsg_args, &tid);
	if (!skp)
		return 0;
	const struct sock *sk = (const struct sock *)*skp;
	bpf_map_delete_elem(&sendmsg_args, &tid);
	on_payload(sk, ret, 1, 0);
	return 0;
}

SEC("tracepoint/sock/sock_send_length")
int tcp_send_tp(struct trace_event_raw_sock_msg_length *ctx)
{
	if (BPF_CORE_READ(ctx, protocol) != IPPROTO_TCP_)
		return 0;
	on_payload(BPF_CORE_READ(ctx, sk), BPF_CORE_READ(ctx, ret), 1, 0);
	return 0;
}

// ---- payload received: tp_btf -> fentry -> kprobe -> tracepoint
// tcp_cleanup_rbuf(sk, copied) has had the same signature on every kernel we
// support, unlike tcp_recvmsg, whose arguments changed in 5.19.

SEC("tp_btf/sock_recv_length")
int BPF_PROG(tcp_recv_btf, struct sock *sk, int ret, int flags)
{
	// MSG_PEEK reads leave the data queued; it is counted when consumed.
	if (flags & 2)
		return 0;
	on_payload(sk, ret, 0, 1);
	return 0;
}

SEC("fentry/tcp_cleanup_rbuf")
int BPF_PROG(tcp_recv_fentry, struct sock *sk, int copied)
{
	on_payload(sk, copied, 0, 0);
	return 0;
}

SEC("kprobe/tcp_cleanup_rbuf")
int BPF_KPROBE(tcp_recv_kprobe, struct sock *sk, int copied)
{
	on_payload(sk, copied, 0, 0);
	return 0;
}

SEC("tracepoint/sock/sock_recv_length")
int tcp_recv_tp(struct trace_event_raw_sock_msg_length *ctx)
{
	if (BPF_CORE_READ(ctx, protocol) != IPPROTO_TCP_)
		return 0;
	if (BPF_CORE_READ(ctx, flags) & 2)
		return 0;
	on_payload(BPF_CORE_READ(ctx, sk), BPF_CORE_READ(ctx, ret), 0, 0);
	return 0;
}

// ---- retransmits: tp_btf -> tracepoint

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(tcp_retransmit_btf, const struct sock *sk, const struct sk_buff *skb)
{
	on_retransmit(sk, skb);
	return 0;
}

// The record layout of tcp_retransmit_skb moved from the shared
// tcp_event_sk_skb class to its own in 6.x, and tcp_send_reset's likewise;
// all start with skbaddr, skaddr. Local flavours (CO-RE matches the name up
// to "___") keep this file independent of which layouts vmlinux.h has.
struct trace_event_raw_tcp_retransmit_skb___own {
	const void *skbaddr;
	const void *skaddr;
} __attribute__((preserve_access_index));

struct trace_event_raw_tcp_send_reset___own {
	const void *skbaddr;
	const void *skaddr;
} __attribute__((preserve_access_index));

struct trace_event_raw_tcp_event_sk_skb___compat {
	const void *skbaddr;
	const void *skaddr;
} __attribute__((preserve_access_index));

SEC("tracepoint/tcp/tcp_retransmit_skb")
int tcp_retransmit_tp(void *ctx)
{
	if (bpf_core_type_exists(struct trace_event_raw_tcp_retransmit_skb___own)) {
		struct trace_event_raw_tcp_retransmit_skb___own *rec = ctx;
		on_retransmit(BPF_CORE_READ(rec, skaddr), BPF_CORE_READ(rec, skbaddr));
	} else {
		struct trace_event_raw_tcp_event_sk_skb___compat *rec = ctx;
		on_retransmit(BPF_CORE_READ(rec, skaddr), BPF_CORE_READ(rec, skbaddr));
	}
	return 0;
}

// ---- resets: tp_btf -> tracepoint

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(tcp_reset_sent_btf, const struct sock *sk)
{
	on_reset(sk, 1);
	return 0;
}

SEC("tracepoint/tcp/tcp_send_reset")
int tcp_reset_sent_tp(void *ctx)
{
	if (bpf_core_type_exists(struct trace_event_raw_tcp_send_reset___own)) {
		struct trace_event_raw_tcp_send_reset___own *rec = ctx;
		on_reset(BPF_CORE_READ(rec, skaddr), 1);
	} else {
		struct trace_event_raw_tcp_event_sk_skb___compat *rec = ctx;
		on_reset(BPF_CORE_READ(rec, skaddr), 1);
	}
	return 0;
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(tcp_reset_received_btf, struct sock *sk)
{
	on_reset(sk, 0);
	return 0;
}

// tcp_receive_reset's record starts with skaddr on every kernel.
struct trace_event_raw_tcp_event_sk___first {
	const void *skaddr;
} __attribute__((preserve_access_index));

SEC("tracepoint/tcp/tcp_receive_reset")
int tcp_reset_received_tp(struct trace_event_raw_tcp_event_sk___first *ctx)
{
	on_reset(BPF_CORE_READ(ctx, skaddr), 0);
	return 0;
}

// ---- socket destroyed: tp_btf -> tracepoint

SEC("tp_btf/tcp_destroy_sock")
int BPF_PROG(tcp_destroy_btf, struct sock *sk)
{
	on_destroy(sk);
	return 0;
}

SEC("tracepoint/tcp/tcp_destroy_sock")
int tcp_destroy_tp(struct trace_event_raw_tcp_event_sk___first *ctx)
{
	on_destroy(BPF_CORE_READ(ctx, skaddr));
	return 0;
}

// ---- connections that predate the agent: one pass of a TCP socket iterator
// at start, after the listeners are seeded, so that each gets the direction
// and server port of how it was set up rather than whatever its state says
// later. Sockets the hooks already recorded are left alone.

SEC("iter/tcp")
int tcp_existing(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	if (!skc)
		return 0;
	// Time-wait and request sockets are not full sockets: filter on the
	// state before reading anything else.
	int state = BPF_CORE_READ(skc, skc_state);
	if (state == TCP_LISTEN) {
		// Listening sockets come first. One no process holds (so user
		// space could not seed it) still makes its connections inbound.
		struct listener_key lk = {
			.netns = sock_netns((const struct sock *)skc),
			.port = BPF_CORE_READ(skc, skc_num),
		};
		__u32 none = 0;
		bpf_map_update_elem(&listeners, &lk, &none, BPF_NOEXIST);
		return 0;
	}
	switch (state) {
	case TCP_ESTABLISHED:
	case TCP_FIN_WAIT1:
	case TCP_FIN_WAIT2:
	case TCP_CLOSE_WAIT:
	case TCP_LAST_ACK:
	case TCP_CLOSING:
		break;
	default:
		return 0;
	}
	const struct sock *sk = (const struct sock *)skc;
	__u16 family = BPF_CORE_READ(skc, skc_family);
	if (family != AF_INET && family != AF_INET6)
		return 0;
	struct sock_info si = {};
	sock_peer_addr(sk, family, si.key.peer);
	__u16 lport = BPF_CORE_READ(skc, skc_num);
	struct listener_key lk = { .netns = sock_netns(sk), .port = lport };
	__u32 *owner = bpf_map_lookup_elem(&listeners, &lk);
	if (owner) {
		si.key.direction = DIRECTION_INBOUND;
		si.key.server_port = lport;
		si.key.tgid = *owner;
	} else {
		si.key.direction = DIRECTION_OUTBOUND;
		si.key.server_port = bpf_ntohs(BPF_CORE_READ(skc, skc_dport));
	}
	// Not established here: it was not counted as opened, so its close is
	// not counted either and its unknown duration is not recorded.
	si.start_ns = bpf_ktime_get_ns();
	admit_connection(&si.key);
	__u64 skp = (__u64)sk;
	long err = bpf_map_update_elem(&socks, &skp, &si, BPF_NOEXIST);
	if (!err)
		bump(&counters, COUNTER_EXISTING);
	else if (err != -EEXIST_)
		bump(&counters, COUNTER_DROP_SOCKS_FULL);
	return 0;
}
