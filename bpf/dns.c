// DNS collector: every lookup on the host, seen on the packet path.
//
// cgroup_skb programs on the root cgroup v2 see every packet a socket sends
// (egress) or receives (ingress), on every network namespace, with the
// socket. They look at the socket's peer port before anything else, so a
// packet of a connected socket talking to another port (nearly all traffic)
// costs one context load and a bit test; only unconnected sockets' packets
// have their headers read to find the ports. A query (egress, destination
// port a DNS port, QR=0) opens a pending entry keyed by (socket cookie, DNS
// id) with its kernel timestamp; the answer (ingress, source port a DNS
// port, QR=1) closes it, so the latency is measured here and the answer's
// record carries the query's timestamp. Both are copied (a bounded prefix of
// the message) to user space, which parses them.
//
// The process comes from the socket: cgroup sock_addr programs (connect,
// sendmsg) run in the calling process and record socket cookie -> tgid for
// sockets talking to a DNS port; sock_release forgets it.
//
// A lookup ends early, without an answer, when the client's socket reports
// an error (an ICMP port unreachable: "connection refused"; a TCP reset) or
// when the client closes the socket (it stopped waiting). Each socket's
// entry counts its queries still waiting for an answer, so that only a
// socket with such queries sends a record (KIND_SOCK_ERROR at the error,
// KIND_CLOSE at sock_release) and user space ends them then, at the time
// the client saw, instead of at its own timeout.
//
// Nothing is lost silently: every query either reaches the ring buffer or is
// counted as dropped, in total and per process.
#include "common.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define DNS_CAPTURE 512
#define DNS_MIN_LEN 3 // id and flags: enough to tell a query from an answer
#define IPPROTO_UDP_ 17
#define IPPROTO_IPV6_TCP 6

enum dns_kind {
	KIND_QUERY = 1,
	KIND_RESPONSE = 2,
	KIND_SOCK_ERROR = 3, // the socket reported an error; error says which
	KIND_CLOSE = 4,      // the socket closed with queries unanswered
};

enum dns_counter {
	COUNTER_QUERIES = 0,            // query packets seen
	COUNTER_RESPONSES = 1,          // answer packets seen
	COUNTER_QUERIES_SUBMITTED = 2,  // query records in the ring buffer
	COUNTER_RESPONSES_SUBMITTED = 3,
	COUNTER_RETRANSMITS = 4,        // query whose (socket, id) was already pending
	COUNTER_UNMATCHED = 5,          // answer with no pending query
	COUNTER_DROP_QUERY_RINGBUF = 6, // ring buffer full: query record lost
	COUNTER_DROP_RESPONSE_RINGBUF = 7,
	COUNTER_DROP_PENDING_FULL = 8, // pending map full: query not tracked
	COUNTER_DROP_SOCKS_FULL = 9,   // socket owner not recorded
	COUNTER_ENDS_SUBMITTED = 10,   // error and close records in the ring buffer
	COUNTER_DROP_END_RINGBUF = 11, // ring buffer full: an error or close record lost (its queries end at the timeout)
	COUNTER_MAX = 12,
};

struct pending_key {
	__u64 cookie;
	__u16 id;
	__u16 _pad[3];
};

struct pending_val {
	__u64 ts_ns;
	__u32 tgid;
	__u32 _pad;
};

// sock_info is what is known of a socket that talked to a DNS port.
struct sock_info {
	__u32 tgid;        // process that connected it or sent on it, 0 if unknown
	__u32 outstanding; // its queries in pending (may overcount: user space's timeouts do not decrement it)
};

// proc_drops counts, per process, lookups lost before user space saw them.
struct proc_drops {
	__u64 ringbuf;
	__u64 pending_full;
};

struct dns_event {
	__u64 ts_ns;       // bpf_ktime_get_ns() when the packet passed the hook
	__u64 query_ts_ns; // answers: the matched query's timestamp
	__u64 cookie;      // socket cookie
	__u32 tgid;        // process owning the socket, 0 if unknown
	__u16 msg_len;     // DNS message length on the wire (without the TCP length prefix)
	__u16 cap_len;     // bytes of the message in data
	__u8 saddr[16];    // IPv6, or IPv4-mapped IPv6
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u8 kind;      // enum dns_kind
	__u8 transport; // IPPROTO_UDP or IPPROTO_TCP
	__u16 id;       // DNS id
	__s32 error;    // KIND_SOCK_ERROR: the socket's error number
	__u8 data[DNS_CAPTURE];
};

const struct pending_key *unused_pending_key __attribute__((unused));
const struct sock_info *unused_sock_info __attribute__((unused));
const struct pending_val *unused_pending_val __attribute__((unused));
const struct proc_drops *unused_proc_drops __attribute__((unused));
const struct dns_event *unused_dns_event __attribute__((unused));
const enum dns_counter *unused_dns_counter __attribute__((unused));
const enum dns_kind *unused_dns_kind __attribute__((unused));

// dns_ports is a bitmap of the server ports to watch (53 and the configured
// ones), written by user space before load.
volatile __u64 dns_ports[1024] = {};

// Socket cookie -> what is known of a socket that talked to a DNS port.
// LRU: an entry evicted under churn only costs attribution, and the early
// end of its unanswered queries (they end at user space's timeout).
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct sock_info);
} socks SEC(".maps");

// Queries waiting for their answer. Not LRU: an entry leaves on its answer
// or on user space's timeout sweep; a full map is counted.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct pending_key);
	__type(value, struct pending_val);
} pending SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, struct proc_drops);
} drops_by_proc SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 * 1024 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline int is_dns_port(__u16 port)
{
	__u32 word = (port >> 6) & 1023;
	return (dns_ports[word] >> (port & 63)) & 1;
}

static __always_inline void count_proc_drop(__u32 tgid, int ringbuf)
{
	struct proc_drops *d = bpf_map_lookup_elem(&drops_by_proc, &tgid);
	if (!d) {
		struct proc_drops zero = {};
		bpf_map_update_elem(&drops_by_proc, &tgid, &zero, BPF_NOEXIST);
		d = bpf_map_lookup_elem(&drops_by_proc, &tgid);
		if (!d)
			return; // the per-CPU total still has it
	}
	if (ringbuf)
		__sync_fetch_and_add(&d->ringbuf, 1);
	else
		__sync_fetch_and_add(&d->pending_full, 1);
}

struct pkt {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u32 off; // offset of the DNS message
	__u32 len; // its length in this packet
	__u8 transport;
};

static __always_inline void map4(__u8 dst[16], __u32 addr)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(dst + 12, &addr, 4);
}

// A packet to read: a cgroup_skb context (is_skb: data starts at the network
// header), or, on the tracepoint path, kernel memory at the IP header with
// len linear bytes. is_skb is a constant at every call site, so each program
// keeps only its own branch (tracepoints cannot call bpf_skb_load_bytes).
struct src {
	struct __sk_buff *skb;
	const __u8 *l3;
	__u32 len; // bytes from the network header
};

static __always_inline int load(const struct src *s, int is_skb, __u32 off, void *dst, __u32 n)
{
	if (is_skb)
		return bpf_skb_load_bytes(s->skb, off, dst, n);
	if (off + n > s->len)
		return -1;
	return bpf_probe_read_kernel(dst, n, s->l3 + off);
}

// parse_headers fills p from the IP and UDP/TCP headers. Returns 0 for a
// packet to look at.
static __always_inline int parse_headers(const struct src *s, int is_skb, int egress, struct pkt *p)
{
	__u8 vihl;
	if (load(s, is_skb, 0, &vihl, 1))
		return -1;
	__u32 l4;
	__u8 proto;
	if ((vihl >> 4) == 4) {
		struct iphdr ip;
		if (load(s, is_skb, 0, &ip, sizeof(ip)))
			return -1;
		// Only the first fragment carries the transport header.
		if (ip.frag_off & bpf_htons(0x1fff))
			return -1;
		proto = ip.protocol;
		l4 = (vihl & 0xf) * 4;
		map4(p->saddr, ip.saddr);
		map4(p->daddr, ip.daddr);
	} else if ((vihl >> 4) == 6) {
		struct ipv6hdr ip6;
		if (load(s, is_skb, 0, &ip6, sizeof(ip6)))
			return -1;
		proto = ip6.nexthdr; // extension headers are not followed
		l4 = sizeof(ip6);
		__builtin_memcpy(p->saddr, &ip6.saddr, 16);
		__builtin_memcpy(p->daddr, &ip6.daddr, 16);
	} else {
		return -1;
	}
	__u16 ports[2];
	if (proto != IPPROTO_UDP_ && proto != IPPROTO_TCP_)
		return -1;
	if (load(s, is_skb, l4, ports, sizeof(ports)))
		return -1;
	p->sport = bpf_ntohs(ports[0]);
	p->dport = bpf_ntohs(ports[1]);
	// The cheap test first: is the server side of this packet a DNS port?
	if (!is_dns_port(egress ? p->dport : p->sport))
		return -1;
	p->transport = proto;
	if (proto == IPPROTO_UDP_) {
		p->off = l4 + 8;
	} else {
		__u8 doff;
		if (load(s, is_skb, l4 + 12, &doff, 1))
			return -1;
		// DNS over TCP: a two-byte length, then the message.
		p->off = l4 + (doff >> 4) * 4 + 2;
	}
	if (s->len < p->off + DNS_MIN_LEN)
		return -1;
	p->len = s->len - p->off;
	return 0;
}

// tuple_cookie stands in for the socket cookie on the tracepoint path: a
// hash of the network namespace and the client and server ends.
static __always_inline __u64 tuple_cookie(const struct pkt *p, int egress, __u32 netns)
{
	const __u8 *client = egress ? p->saddr : p->daddr;
	const __u8 *server = egress ? p->daddr : p->saddr;
	__u16 cport = egress ? p->sport : p->dport;
	__u16 sport = egress ? p->dport : p->sport;
	__u64 h = ((__u64)netns << 32) | ((__u64)cport << 16) | sport;
	h ^= (__u64)p->transport << 56;
	__u64 w[4];
	__builtin_memcpy(w, client, 16);
	__builtin_memcpy(w + 2, server, 16);
#pragma unroll
	for (int i = 0; i < 4; i++) {
		h ^= w[i];
		h *= 0x9E3779B97F4A7C15ULL;
		h ^= h >> 29;
	}
	return h | 1; // never 0
}

// submit_flags batches wakeups: user space drains the ring on a short timer,
// so a record wakes the reader only once the ring is an eighth full. A
// wakeup per record would cost an interrupt per DNS packet.
static __always_inline __u64 submit_flags(void)
{
	__u64 avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	__u64 size = bpf_ringbuf_query(&events, BPF_RB_RING_SIZE);
	return avail >= size / 8 ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
}

static __always_inline struct dns_event *reserve(const struct src *src, int is_skb, const struct pkt *p,
						 __u8 kind)
{
	struct dns_event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev)
		return 0;
	ev->ts_ns = 0;
	ev->query_ts_ns = 0;
	ev->tgid = 0;
	__builtin_memcpy(ev->saddr, p->saddr, 16);
	__builtin_memcpy(ev->daddr, p->daddr, 16);
	ev->sport = p->sport;
	ev->dport = p->dport;
	ev->kind = kind;
	ev->transport = p->transport;
	ev->id = 0;
	ev->error = 0;
	ev->msg_len = p->len > 0xffff ? 0xffff : p->len;
	__u64 cap = p->len;
	if (cap > DNS_CAPTURE)
		cap = DNS_CAPTURE;
	// Hide the value from the compiler, then bound it for the verifier:
	// [1, DNS_CAPTURE] (p->len >= DNS_MIN_LEN, so this keeps it as is).
	asm volatile("" : "+r"(cap));
	cap = ((cap - 1) & (DNS_CAPTURE - 1)) + 1;
	ev->cap_len = cap;
	if (load(src, is_skb, p->off, ev->data, cap))
		ev->cap_len = 0;
	return ev;
}

// on_packet handles one packet. netns is only used on the tracepoint path.
static __always_inline int on_packet(const struct src *src, int is_skb, int egress, __u32 netns)
{
	struct pkt p;
	if (parse_headers(src, is_skb, egress, &p))
		return 1;
	__u8 hdr[DNS_MIN_LEN];
	if (load(src, is_skb, p.off, hdr, sizeof(hdr)))
		return 1;
	int is_response = hdr[2] >> 7;
	// A client's query leaves; a client's answer arrives. The server side
	// of the same exchange (a query arriving, an answer leaving) is skipped.
	if (egress == is_response)
		return 1;

	struct pending_key key = {};
	if (is_skb)
		key.cookie = bpf_get_socket_cookie(src->skb);
	else
		key.cookie = tuple_cookie(&p, egress, netns);
	key.id = ((__u16)hdr[0] << 8) | hdr[1];
	__u64 now = bpf_ktime_get_ns();
	struct dns_event *ev;

	if (egress) {
		bump(&counters, COUNTER_QUERIES);
		struct pending_val val = { .ts_ns = now };
		struct sock_info *owner = 0;
		if (is_skb) {
			owner = bpf_map_lookup_elem(&socks, &key.cookie);
			val.tgid = owner ? owner->tgid : 0;
		} else {
			// net_dev_queue runs in the sending process for UDP and for
			// TCP data sent from sendmsg.
			val.tgid = current_tgid();
		}
		long err = bpf_map_update_elem(&pending, &key, &val, BPF_NOEXIST);
		if (err == -17 /* EEXIST */) {
			// The client sent the same query again on the same socket:
			// the lookup is still the first one.
			bump(&counters, COUNTER_RETRANSMITS);
			return 1;
		}
		if (err) {
			bump(&counters, COUNTER_DROP_PENDING_FULL);
			count_proc_drop(val.tgid, 0);
			return 1;
		}
		ev = reserve(src, is_skb, &p, KIND_QUERY);
		if (!ev) {
			bpf_map_delete_elem(&pending, &key);
			bump(&counters, COUNTER_DROP_QUERY_RINGBUF);
			count_proc_drop(val.tgid, 1);
			return 1;
		}
		ev->ts_ns = now;
		ev->cookie = key.cookie;
		ev->id = key.id;
		ev->tgid = val.tgid;
		bpf_ringbuf_submit(ev, submit_flags());
		bump(&counters, COUNTER_QUERIES_SUBMITTED);
		if (owner) {
			__sync_fetch_and_add(&owner->outstanding, 1);
		} else if (is_skb) {
			// No owner recorded (a socket older than the agent, or the
			// owner hooks are missing): still track its queries.
			struct sock_info si = { .outstanding = 1 };
			bpf_map_update_elem(&socks, &key.cookie, &si, BPF_NOEXIST);
		}
		return 1;
	}

	bump(&counters, COUNTER_RESPONSES);
	struct pending_val *pv = bpf_map_lookup_elem(&pending, &key);
	if (!pv) {
		bump(&counters, COUNTER_UNMATCHED);
		return 1;
	}
	__u64 query_ts = pv->ts_ns;
	__u32 tgid = pv->tgid;
	// Whoever deletes the entry owns the lookup: this answer, or user
	// space's timeout sweep.
	if (bpf_map_delete_elem(&pending, &key)) {
		bump(&counters, COUNTER_UNMATCHED);
		return 1;
	}
	if (is_skb) {
		struct sock_info *si = bpf_map_lookup_elem(&socks, &key.cookie);
		if (si && si->outstanding)
			__sync_fetch_and_add(&si->outstanding, -1);
	}
	ev = reserve(src, is_skb, &p, KIND_RESPONSE);
	if (!ev) {
		bump(&counters, COUNTER_DROP_RESPONSE_RINGBUF);
		count_proc_drop(tgid, 1);
		return 1;
	}
	ev->ts_ns = now;
	ev->query_ts_ns = query_ts;
	ev->cookie = key.cookie;
	ev->id = key.id;
	ev->tgid = tgid;
	bpf_ringbuf_submit(ev, submit_flags());
	bump(&counters, COUNTER_RESPONSES_SUBMITTED);
	return 1;
}

// ---- packets: cgroup_skb on the root cgroup v2. Always let the packet pass.

// other_peer is true for a packet of a socket connected to a port that is
// not a DNS port: nearly every packet on a host (HTTP, databases, ...). It
// is one load through the socket the hook is given (remote_port reads
// skc_dport: on little-endian the network-order port sits in the upper 16
// bits), so such packets cost a handful of instructions and no header
// reads. Unconnected sockets (peer port 0: sendto clients, servers) still
// take the header path, where the packet's own ports decide.
static __always_inline int other_peer(struct __sk_buff *skb)
{
	__u16 peer = bpf_ntohs((__u16)(skb->remote_port >> 16));
	return peer != 0 && !is_dns_port(peer);
}

SEC("cgroup_skb/egress")
int dns_egress(struct __sk_buff *skb)
{
	if (other_peer(skb))
		return 1;
	struct src s = { .skb = skb, .len = skb->len };
	return on_packet(&s, 1, 1, 0);
}

SEC("cgroup_skb/ingress")
int dns_ingress(struct __sk_buff *skb)
{
	if (other_peer(skb))
		return 1;
	struct src s = { .skb = skb, .len = skb->len };
	return on_packet(&s, 1, 0, 0);
}

// ---- packets, fallback: the net tracepoints every packet passes, for hosts
// without cgroup v2. net_dev_queue sees a packet leave (data at the link
// header, network_header set), netif_receive_skb sees it arrive (data at
// the network header). Only the linear part of the skb is read.

static __always_inline int tp_packet(const struct sk_buff *skb, int egress)
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	unsigned char *data = BPF_CORE_READ(skb, data);
	__u32 len = BPF_CORE_READ(skb, len);
	__u32 data_len = BPF_CORE_READ(skb, data_len);
	const __u8 *l3 = data;
	if (egress) {
		__u16 nh = BPF_CORE_READ(skb, network_header);
		if (nh == 0xffff)
			return 0;
		l3 = head + nh;
	}
	__u64 end = (__u64)data + (len - data_len);
	if ((__u64)l3 >= end || end - (__u64)l3 > 0xffff)
		return 0;
	struct src s = { .l3 = l3, .len = end - (__u64)l3 };
	__u32 netns = BPF_CORE_READ(skb, dev, nd_net.net, ns.inum);
	on_packet(&s, 0, egress, netns);
	return 0;
}

SEC("tracepoint/net/net_dev_queue")
int dns_dev_queue_tp(struct trace_event_raw_net_dev_template *ctx)
{
	return tp_packet(BPF_CORE_READ(ctx, skbaddr), 1);
}

SEC("tracepoint/net/netif_receive_skb")
int dns_receive_tp(struct trace_event_raw_net_dev_template *ctx)
{
	return tp_packet(BPF_CORE_READ(ctx, skbaddr), 0);
}

// ---- socket owners: cgroup sock_addr hooks run in the calling process.

static __always_inline int remember_owner(struct bpf_sock_addr *ctx)
{
	if (!is_dns_port(bpf_ntohs(ctx->user_port)))
		return 1;
	__u64 cookie = bpf_get_socket_cookie(ctx);
	__u32 tgid = current_tgid();
	struct sock_info *cur = bpf_map_lookup_elem(&socks, &cookie);
	if (cur) {
		// Keep the count of waiting queries.
		if (cur->tgid != tgid)
			cur->tgid = tgid;
		return 1;
	}
	struct sock_info si = { .tgid = tgid };
	if (bpf_map_update_elem(&socks, &cookie, &si, BPF_NOEXIST))
		bump(&counters, COUNTER_DROP_SOCKS_FULL);
	return 1;
}

// end_record tells user space that the queries still waiting on a socket
// ended now: its error (KIND_SOCK_ERROR) or its close (KIND_CLOSE).
static __always_inline void end_record(__u64 cookie, const struct sock_info *si, __u8 kind, int error)
{
	struct dns_event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		bump(&counters, COUNTER_DROP_END_RINGBUF);
		return;
	}
	__builtin_memset(ev, 0, offsetof(struct dns_event, data));
	ev->ts_ns = bpf_ktime_get_ns();
	ev->cookie = cookie;
	ev->tgid = si->tgid;
	ev->kind = kind;
	ev->error = error;
	bpf_ringbuf_submit(ev, submit_flags());
	bump(&counters, COUNTER_ENDS_SUBMITTED);
}

SEC("cgroup/connect4")
int dns_connect4(struct bpf_sock_addr *ctx)
{
	return remember_owner(ctx);
}

SEC("cgroup/connect6")
int dns_connect6(struct bpf_sock_addr *ctx)
{
	return remember_owner(ctx);
}

SEC("cgroup/sendmsg4")
int dns_sendmsg4(struct bpf_sock_addr *ctx)
{
	return remember_owner(ctx);
}

SEC("cgroup/sendmsg6")
int dns_sendmsg6(struct bpf_sock_addr *ctx)
{
	return remember_owner(ctx);
}

SEC("cgroup/sock_release")
int dns_sock_release(struct bpf_sock *sk)
{
	__u64 cookie = bpf_get_socket_cookie(sk);
	struct sock_info *si = bpf_map_lookup_elem(&socks, &cookie);
	if (!si)
		return 1;
	if (si->outstanding)
		end_record(cookie, si, KIND_CLOSE, 0);
	bpf_map_delete_elem(&socks, &cookie);
	return 1;
}

// ---- socket errors: every error a socket reports passes sk_error_report
// (UDP: an ICMP error on a connected socket, such as port unreachable; TCP:
// a reset). The cookie was made when the query left (bpf_get_socket_cookie
// on the packet), so it is read as it is.

SEC("tp_btf/inet_sk_error_report")
int BPF_PROG(dns_sk_error, const struct sock *sk)
{
	__u64 cookie = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
	if (!cookie)
		return 0;
	struct sock_info *si = bpf_map_lookup_elem(&socks, &cookie);
	if (!si || !si->outstanding)
		return 0;
	end_record(cookie, si, KIND_SOCK_ERROR, BPF_CORE_READ(sk, sk_err));
	return 0;
}
