// HTTP collector: plaintext HTTP/1.x on TCP sockets, server and client side.
//
// Sockets are tracked from accept/accept4 (server role) and connect (client
// role), by (process, fd), in the process that owns them; the include and
// exclude filters (executable name, server port, cgroup) are applied there,
// once per connection, so a process we do not observe pays one hash miss per
// read or write. The read/write family (read, write, readv, writev, recvfrom,
// sendto, recvmsg, sendmsg, sendfile) is hooked at syscall entry (remember the
// buffer) and exit (the byte count is known): each call on a tracked
// connection becomes one ring buffer record with its timestamps, its total
// byte count, a bounded prefix of its payload and, where the call moved more
// than the prefix, a few small segments past it (the first bytes of each
// further iovec, the call's last bytes): chunk-size lines and the last chunk
// of a streamed body are mostly there. The first payload of a
// connection classifies it: a request line (any token-shaped method, a target,
// HTTP/1.x) in the direction a request flows (read on a server socket, write
// on a client socket) makes it HTTP; anything else marks it ignored, counted
// per process by what it looks like (TLS, HTTP/2, unknown), and no record of
// it is ever sent. A 101 response ends HTTP/1 on the connection. Framing
// (pipelining, chunked bodies, 100-continue) is left to the Go parser, which
// knows every call's total length even where it sees only the prefix.
#include "common.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define MAX_CAPTURE 4096
#define MAX_IOV 8
// Segments past the captured prefix: the first SEG_BYTES of each of up to
// SEG_IOV iovecs, and the call's last TAIL_BYTES. Each is written after the
// prefix as a 6-byte descriptor (offset in the call, u32 LE; length, u16 LE)
// and its bytes.
#define SEG_IOV 16
#define SEG_BYTES 16
#define TAIL_BYTES 32
#define SEG_HDR 6
// A connection that existed before the agent (picked up from /proc) is
// classified by the first request start seen on it; it is given up as not
// HTTP after this many request-direction calls without one.
#define MIDSTREAM_PROBES 64
#define EINPROGRESS_ 115
#define MSG_PEEK_ 2
#define AF_UNIX_ 1

enum http_event_type {
	EVENT_OPEN = 1,
	EVENT_DATA = 2,
	EVENT_CLOSE = 3,
};

enum http_role {
	ROLE_SERVER = 1,
	ROLE_CLIENT = 2,
	ROLE_SELF = 3, // a client connection of an otelbee process: never parsed, its end in self_ends
};

enum http_dir {
	DIR_READ = 0,
	DIR_WRITE = 1,
};

enum http_conn_state {
	STATE_UNKNOWN = 0,
	STATE_HTTP = 1,
	STATE_NOT_HTTP = 2,
	// After a 101 response: no more records (the close still is). An HTTP/2
	// parser for h2c would take the connection over here.
	STATE_UPGRADED = 3,
};

enum http_counter {
	HC_EVENTS_SUBMITTED = 0,
	HC_DROP_RINGBUF_FULL = 1,
	HC_DROP_REQUEST_STARTS = 2, // dropped records that began with a request line
	HC_CONNS_TRACKED = 3,
	HC_CONNS_HTTP = 4,
	HC_CONNS_NOT_HTTP = 5,
	HC_DROP_CONNS_FULL = 6,
	HC_CONNS_FILTERED = 7,
	HC_DROP_ARGS_FULL = 8,
	HC_START_REFUNDS = 9, // dropped request starts whose connection closed unanswered
	HC_CONNS_SELF = 10,   // connections of otelbee processes, or whose peer is one
	HC_CONNS_UPGRADED = 11,  // 101 seen: HTTP/1 records stopped
	HC_CONNS_INHERITED = 12, // served by a forked child of the process that accepted
	HC_MAX = 13,
};

// What a connection that is not HTTP/1.x looked like, per process.
enum http_unobserved {
	UNOBSERVED_TLS = 0,
	UNOBSERVED_HTTP2 = 1, // prior-knowledge h2c
	UNOBSERVED_UNKNOWN = 2,
	UNOBSERVED_MAX = 3,
};

enum filter_action {
	FILTER_INCLUDE = 1,
	FILTER_EXCLUDE = 2,
	FILTER_SELF = 3, // an otelbee executable (filter_comm): its traffic is the agents' own
};

// Set by user space before loading.
const volatile __u32 capture_bytes = 1024;
const volatile __u32 self_tgid = 0;
const volatile __u8 include_comm = 0;
const volatile __u8 include_port = 0;
const volatile __u8 include_cgroup = 0;
const volatile __u8 any_filter = 0;

struct conn_info {
	__u64 start_ns; // when tracking began: with (tgid, fd) it names the connection
	__u8 peer[16];  // IPv6, or IPv4-mapped IPv6
	__u8 local[16];
	__u16 peer_port;
	__u16 local_port;
	__u8 role;
	__u8 state;
	__u8 family;
	__u8 lost_start;   // the last request start was dropped, no response record since
	__u32 seq;         // records emitted (or dropped) on this connection
	__u32 resp_records; // of them, records of the response direction
	__u64 sk;          // the socket: a forked child's descriptor names the same one
	__u8 midstream;    // existed before the agent: wait for a request start
	__u8 unfiltered;   // inserted by user space: the filters are applied at the first call
	__u16 probes;      // midstream: request-direction calls seen without a request start
	__u32 owner;       // the process that accepted or connected (a forked child's parent)
	// per direction: where the next chunk-size line starts in the next call,
	// plus one (0: not known), as the kernel's walk of chunks left it
	__u32 chunk_next[2];
};

struct conn_event {
	__u8 type;
	__u8 role;
	__u8 family;
	__u8 lost_start;
	__u32 tgid;
	__u32 fd;
	__u32 seq;
	__u64 start_ns;
	__u64 ts_ns;
	__u8 peer[16];
	__u8 local[16];
	__u16 peer_port;
	__u16 local_port;
	__u32 resp_records;
	__u32 owner; // the process that accepted or connected it
	__u32 _pad;
};

struct data_event {
	__u8 type;
	__u8 dir;
	__u8 role;
	__u8 err; // total 0: the call failed with this errno (emit_call_error)
	__u32 tgid;
	__u32 fd;
	__u32 captured; // bytes of data[] that are the call's prefix
	__u64 start_ns;
	__u64 enter_ns;
	__u64 exit_ns;
	__u64 total; // bytes the call moved
	__u32 seq;
	__u32 seg_bytes; // bytes of data[] after the prefix: segment descriptors and bytes
	// Four times the capture: offset (< MAX_CAPTURE) and length (masked to
	// < 2 * MAX_CAPTURE) stay inside whatever the verifier can prove.
	__u8 data[MAX_CAPTURE * 4];
};

#define DATA_HDR_SIZE 56

enum call_kind {
	CALL_BUF = 0,
	CALL_IOV = 1,
	CALL_MSG = 2,
	CALL_SENDFILE = 3,
	CALL_CONNECT = 4,
};

struct call_args {
	__u64 ptr; // buffer, iovec array or user_msghdr
	__u64 count;
	__u64 enter_ns;
	__u32 fd;
	__u8 kind;
	__u8 _pad[3];
};

const struct conn_event *unused_conn_event __attribute__((unused));
const struct data_event *unused_data_event __attribute__((unused));
const struct conn_info *unused_conn_info __attribute__((unused));
const enum http_counter *unused_http_counter __attribute__((unused));
const enum http_event_type *unused_http_event_type __attribute__((unused));
const enum http_role *unused_http_role __attribute__((unused));
const enum filter_action *unused_filter_action __attribute__((unused));
const enum http_unobserved *unused_http_unobserved __attribute__((unused));

// Tracked connections by (tgid << 32 | fd). LRU: a process that exits closes
// its descriptors without close(2), and those entries must not pile up.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct conn_info);
} conns SEC(".maps");

// Arguments of the read/write call in flight on each thread.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct call_args);
} calls SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 * 1024 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct data_event);
} scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HC_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

// Dropped request starts and their refunds per process, for the
// per-service drop counters (touched only when a record is dropped).
struct tgid_drops {
	__u64 starts;
	__u64 refunds;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, struct tgid_drops);
} drops SEC(".maps");

const struct tgid_drops *unused_tgid_drops __attribute__((unused));

// Connections not parsed, per process and by what they looked like
// (enum http_unobserved), so user space can say which service is unseen.
struct tgid_unobserved {
	__u64 n[UNOBSERVED_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, struct tgid_unobserved);
} unobserved SEC(".maps");

const struct tgid_unobserved *unused_tgid_unobserved __attribute__((unused));

// Following a descriptor across fork (pre-fork servers, ForkingMixIn): the
// processes that accepted connections (owners), the children they forked
// (inherit: child tgid -> parent tgid), and each accepted socket's
// description by socket (by_sock), which outlives the parent's close. Only a
// child of an owner pays for more than one hash miss on an untracked call.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u8);
} owners SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u32);
} inherit SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct conn_info);
} by_sock SEC(".maps");

static __always_inline void count_unobserved(__u32 what)
{
	__u32 tgid = current_tgid();
	struct tgid_unobserved *u = bpf_map_lookup_elem(&unobserved, &tgid);
	if (!u) {
		struct tgid_unobserved zero = {};
		bpf_map_update_elem(&unobserved, &tgid, &zero, BPF_NOEXIST);
		u = bpf_map_lookup_elem(&unobserved, &tgid);
		if (!u)
			return;
	}
	if (what < UNOBSERVED_MAX)
		__sync_fetch_and_add(&u->n[what], 1);
}

static __always_inline void count_drop(int refund)
{
	__u32 tgid = current_tgid();
	struct tgid_drops *d = bpf_map_lookup_elem(&drops, &tgid);
	if (!d) {
		struct tgid_drops zero = {};
		bpf_map_update_elem(&drops, &tgid, &zero, BPF_NOEXIST);
		d = bpf_map_lookup_elem(&drops, &tgid);
		if (!d)
			return;
	}
	if (refund)
		__sync_fetch_and_add(&d->refunds, 1);
	else
		__sync_fetch_and_add(&d->starts, 1);
}

struct comm_key {
	char comm[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct comm_key);
	__type(value, __u8);
} filter_comm SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u16);
	__type(value, __u8);
} filter_port SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u64);
	__type(value, __u8);
} filter_cgroup SEC(".maps");

// ---- the agents' own traffic
//
// No otelbee process's connection is tracked (the agent itself by tgid,
// other agents on the host by their executable name in filter_comm as
// FILTER_SELF), and the local end (address, port) of each of their client
// connections is remembered here until its close, so the server side of
// those connections (a local OpenTelemetry Collector receiving an agent's
// export) is left out too. The server side is matched when its first request
// is read: the client's connect has returned by then (it wrote the request),
// while at accept it may not have.
struct self_end {
	__u8 addr[16];
	__u16 port;
	__u16 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct self_end);
	__type(value, __u8);
} self_ends SEC(".maps");

static __always_inline int is_self(void)
{
	if (self_tgid && current_tgid() == self_tgid)
		return 1;
	struct comm_key ck = {};
	bpf_get_current_comm(ck.comm, sizeof(ck.comm));
	__u8 *a = bpf_map_lookup_elem(&filter_comm, &ck);
	return a && *a == FILTER_SELF;
}

// Wake the reader only once a batch has piled up: a wakeup per record costs
// user space far more than the record itself. The reader also polls on a
// short deadline, so a lone record waits at most that long.
#define RINGBUF_WAKEUP_BYTES (32 * 1024)

static __always_inline __u64 wakeup_flags(void)
{
	return bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= RINGBUF_WAKEUP_BYTES ? BPF_RB_FORCE_WAKEUP :
										     BPF_RB_NO_WAKEUP;
}

static __always_inline __u64 conn_key(__u32 fd)
{
	return ((__u64)current_tgid() << 32) | fd;
}

// observed applies the filters: excluded by any list loses; when some include
// list is set, the connection must match one of them.
static __always_inline int observed(__u16 server_port)
{
	if (!any_filter)
		return 1;
	struct comm_key ck = {};
	bpf_get_current_comm(ck.comm, sizeof(ck.comm));
	__u64 cg = bpf_get_current_cgroup_id();
	__u8 *a;
	int included = 0;
	a = bpf_map_lookup_elem(&filter_comm, &ck);
	if (a) {
		// An otelbee executable is never included, whatever the lists say.
		if (*a == FILTER_EXCLUDE || *a == FILTER_SELF)
			return 0;
		included = 1;
	}
	a = bpf_map_lookup_elem(&filter_port, &server_port);
	if (a) {
		if (*a == FILTER_EXCLUDE)
			return 0;
		included = 1;
	}
	a = bpf_map_lookup_elem(&filter_cgroup, &cg);
	if (a) {
		if (*a == FILTER_EXCLUDE)
			return 0;
		included = 1;
	}
	if (include_comm || include_port || include_cgroup)
		return included;
	return 1;
}

static __always_inline struct sock *sock_from_fd(__u32 fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct file **fds = BPF_CORE_READ(task, files, fdt, fd);
	struct file *f = 0;
	if (!fds)
		return 0;
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	if (!f)
		return 0;
	struct socket *sock = BPF_CORE_READ(f, private_data);
	if (!sock)
		return 0;
	return BPF_CORE_READ(sock, sk);
}

static __always_inline void sock_local_addr(const struct sock *sk, __u16 family, __u8 local[16])
{
	if (family == AF_INET) {
		__u32 a = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		__builtin_memset(local, 0, 10);
		local[10] = 0xff;
		local[11] = 0xff;
		__builtin_memcpy(local + 12, &a, 4);
		return;
	}
	bpf_core_read(local, 16, &sk->__sk_common.skc_v6_rcv_saddr);
}

static __always_inline void track_self(__u32 fd, __u8 role);

static __always_inline void track(__u32 fd, __u8 role)
{
	if (is_self()) {
		track_self(fd, role);
		return;
	}
	struct sock *sk = sock_from_fd(fd);
	if (!sk)
		return;
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6 && family != AF_UNIX_)
		return;
	if (BPF_CORE_READ(sk, sk_type) != SOCK_STREAM_)
		return;
	struct conn_info ci = {};
	ci.family = family;
	ci.role = role;
	if (family == AF_UNIX_) {
		// Same protocol, no addresses or ports: the filters by port do
		// not apply.
		if (!observed(0)) {
			bump(&counters, HC_CONNS_FILTERED);
			return;
		}
	} else {
		if (BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol) != IPPROTO_TCP_)
			return;
		ci.local_port = BPF_CORE_READ(sk, __sk_common.skc_num);
		ci.peer_port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
		if (!observed(role == ROLE_SERVER ? ci.local_port : ci.peer_port)) {
			bump(&counters, HC_CONNS_FILTERED);
			return;
		}
		sock_peer_addr(sk, family, ci.peer);
		sock_local_addr(sk, family, ci.local);
	}
	ci.sk = (__u64)sk;
	ci.owner = current_tgid();
	ci.start_ns = bpf_ktime_get_ns();
	__u64 key = conn_key(fd);
	if (bpf_map_update_elem(&conns, &key, &ci, BPF_ANY)) {
		bump(&counters, HC_DROP_CONNS_FULL);
		return;
	}
	bump(&counters, HC_CONNS_TRACKED);
	if (role == ROLE_SERVER) {
		// A child forked later may serve it.
		__u32 tgid = current_tgid();
		if (!bpf_map_lookup_elem(&owners, &tgid)) {
			__u8 one = 1;
			bpf_map_update_elem(&owners, &tgid, &one, BPF_ANY);
		}
		bpf_map_update_elem(&by_sock, &ci.sk, &ci, BPF_ANY);
	}
}

SEC("tracepoint/sched/sched_process_fork")
int http_fork(struct trace_event_raw_sched_process_fork *ctx)
{
	__u32 parent = current_tgid();
	if (!bpf_map_lookup_elem(&owners, &parent))
		return 0;
	// A new thread shares the descriptors and the tgid: its entry is
	// never looked up.
	__u32 child = ctx->child_pid;
	bpf_map_update_elem(&inherit, &child, &parent, BPF_ANY);
	return 0;
}

// track_self remembers the local end of an otelbee process's client
// connection, in self_ends and in a never-parsed conns entry whose close
// forgets it.
static __always_inline void track_self(__u32 fd, __u8 role)
{
	bump(&counters, HC_CONNS_SELF);
	if (role != ROLE_CLIENT)
		return;
	struct sock *sk = sock_from_fd(fd);
	if (!sk)
		return;
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return;
	struct conn_info ci = {};
	ci.family = family;
	ci.role = ROLE_SELF;
	ci.state = STATE_NOT_HTTP;
	ci.local_port = BPF_CORE_READ(sk, __sk_common.skc_num);
	sock_local_addr(sk, family, ci.local);
	struct self_end e = { .port = ci.local_port };
	__builtin_memcpy(e.addr, ci.local, 16);
	__u8 one = 1;
	bpf_map_update_elem(&self_ends, &e, &one, BPF_ANY);
	__u64 key = conn_key(fd);
	bpf_map_update_elem(&conns, &key, &ci, BPF_ANY);
}

// peer_is_self reports whether a server connection's peer is the client end
// of an otelbee process's connection.
static __always_inline int peer_is_self(const struct conn_info *ci)
{
	struct self_end e = { .port = ci->peer_port };
	__builtin_memcpy(e.addr, ci->peer, 16);
	return bpf_map_lookup_elem(&self_ends, &e) != 0;
}

// ---- accept / connect / close

SEC("tracepoint/syscalls/sys_exit_accept4")
int http_accept4_exit(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;
	if (ret >= 0)
		track(ret, ROLE_SERVER);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept")
int http_accept_exit(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;
	if (ret >= 0)
		track(ret, ROLE_SERVER);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_connect")
int http_connect_enter(struct trace_event_raw_sys_enter *ctx)
{
	__u64 tid = bpf_get_current_pid_tgid();
	struct call_args a = { .fd = ctx->args[0], .kind = CALL_CONNECT };
	if (bpf_map_update_elem(&calls, &tid, &a, BPF_ANY))
		bump(&counters, HC_DROP_ARGS_FULL);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_connect")
int http_connect_exit(struct trace_event_raw_sys_exit *ctx)
{
	__u64 tid = bpf_get_current_pid_tgid();
	struct call_args *a = bpf_map_lookup_elem(&calls, &tid);
	if (!a)
		return 0;
	__u32 fd = a->fd;
	__u8 kind = a->kind;
	bpf_map_delete_elem(&calls, &tid);
	long ret = ctx->ret;
	if (kind == CALL_CONNECT && (ret == 0 || ret == -EINPROGRESS_))
		track(fd, ROLE_CLIENT);
	return 0;
}

static __always_inline void fill_conn_event(struct conn_event *ev, __u8 type, __u32 fd,
					    const struct conn_info *ci)
{
	ev->type = type;
	ev->role = ci->role;
	ev->family = ci->family;
	ev->lost_start = ci->lost_start;
	ev->tgid = current_tgid();
	ev->fd = fd;
	ev->seq = ci->seq;
	ev->start_ns = ci->start_ns;
	ev->ts_ns = bpf_ktime_get_ns();
	__builtin_memcpy(ev->peer, ci->peer, 16);
	__builtin_memcpy(ev->local, ci->local, 16);
	ev->peer_port = ci->peer_port;
	ev->local_port = ci->local_port;
	ev->resp_records = ci->resp_records;
	ev->owner = ci->owner;
	ev->_pad = 0;
}

static __always_inline void emit_conn_event(__u8 type, __u32 fd, struct conn_info *ci)
{
	struct conn_event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		ci->seq++;
		bump(&counters, HC_DROP_RINGBUF_FULL);
		return;
	}
	fill_conn_event(ev, type, fd, ci);
	ci->seq++;
	bpf_ringbuf_submit(ev, wakeup_flags());
	bump(&counters, HC_EVENTS_SUBMITTED);
}

SEC("tracepoint/syscalls/sys_enter_close")
int http_close_enter(struct trace_event_raw_sys_enter *ctx)
{
	__u32 fd = ctx->args[0];
	__u64 key = conn_key(fd);
	struct conn_info *ci = bpf_map_lookup_elem(&conns, &key);
	if (!ci)
		return 0;
	if (ci->lost_start) {
		// The request whose first record was dropped was cut off by the
		// close, not lost: counted here, even if the close record is lost.
		bump(&counters, HC_START_REFUNDS);
		count_drop(1);
	}
	if (ci->state == STATE_HTTP || ci->state == STATE_UPGRADED)
		emit_conn_event(EVENT_CLOSE, fd, ci);
	if (ci->role == ROLE_SELF) {
		struct self_end e = { .port = ci->local_port };
		__builtin_memcpy(e.addr, ci->local, 16);
		bpf_map_delete_elem(&self_ends, &e);
	}
	bpf_map_delete_elem(&conns, &key);
	return 0;
}

// ---- read / write family

// inherited returns the entry of a descriptor this process got from the
// parent that accepted it (fork), making it on first use.
static __always_inline struct conn_info *inherited(__u32 fd, __u64 key)
{
	__u32 tgid = current_tgid();
	if (!bpf_map_lookup_elem(&inherit, &tgid))
		return 0;
	struct sock *sk = sock_from_fd(fd);
	if (!sk)
		return 0;
	__u64 skp = (__u64)sk;
	struct conn_info *tmpl = bpf_map_lookup_elem(&by_sock, &skp);
	if (!tmpl)
		return 0;
	struct conn_info ci = *tmpl;
	if (ci.family != AF_UNIX_ && ci.local_port != BPF_CORE_READ(sk, __sk_common.skc_num))
		return 0; // a socket since made at that address
	ci.start_ns = bpf_ktime_get_ns();
	ci.seq = 0;
	ci.resp_records = 0;
	ci.lost_start = 0;
	if (bpf_map_update_elem(&conns, &key, &ci, BPF_NOEXIST))
		return 0;
	bump(&counters, HC_CONNS_INHERITED);
	struct conn_info *cp = bpf_map_lookup_elem(&conns, &key);
	if (cp && cp->state == STATE_HTTP)
		emit_conn_event(EVENT_OPEN, fd, cp);
	return cp;
}

static __always_inline void save_call(__u32 fd, __u64 ptr, __u64 count, __u8 kind)
{
	__u64 key = conn_key(fd);
	struct conn_info *ci = bpf_map_lookup_elem(&conns, &key);
	if (!ci)
		ci = inherited(fd, key);
	if (!ci || ci->state == STATE_NOT_HTTP || ci->state == STATE_UPGRADED)
		return;
	__u64 tid = bpf_get_current_pid_tgid();
	struct call_args a = {
		.ptr = ptr,
		.count = count,
		.enter_ns = bpf_ktime_get_ns(),
		.fd = fd,
		.kind = kind,
	};
	if (bpf_map_update_elem(&calls, &tid, &a, BPF_ANY))
		bump(&counters, HC_DROP_ARGS_FULL);
}

// is_tchar: a character of an HTTP token (RFC 9110 5.6.2), from a bit per
// character below 128.
static __always_inline int is_tchar(__u8 c)
{
	if (c < 64)
		return (0x03ff6cfa00000000ULL >> c) & 1;
	if (c < 128)
		return (0x57ffffffc7fffffeULL >> (c - 64)) & 1;
	return 0;
}

#define MAX_METHOD 20
#define REQ_LINE_WORDS 64 // the request line's end is looked for in 512 bytes

static __always_inline __u64 has_byte(__u64 w, __u64 pattern)
{
	__u64 x = w ^ pattern;
	return (x - 0x0101010101010101ULL) & ~x & 0x8080808080808080ULL;
}

// token_method returns the length of the token-shaped method that starts b
// and is followed by a space and a target, or 0.
static __always_inline __u32 token_method(const __u8 *b, __u32 n)
{
	__u32 sp = 0;
	for (__u32 i = 0; i < MAX_METHOD; i++) {
		if (i >= n)
			return 0;
		__u8 c = b[i];
		if (c == ' ') {
			sp = i;
			break;
		}
		if (!is_tchar(c))
			return 0;
	}
	if (sp == 0 || sp + 1 >= n)
		return 0;
	__u8 t = b[(sp + 1) & (MAX_CAPTURE - 1)];
	if (t == ' ' || t == '\r' || t == '\n')
		return 0;
	return sp;
}

static __always_inline int is_known_start(const __u8 *b, __u32 n)
{
	if (n < 4)
		return 0;
	__u32 w = b[0] | (b[1] << 8) | (b[2] << 16) | ((__u32)b[3] << 24);
#define W(a, b, c, d) ((__u32)(a) | ((__u32)(b) << 8) | ((__u32)(c) << 16) | ((__u32)(d) << 24))
	switch (w) {
	case W('G', 'E', 'T', ' '):
	case W('P', 'U', 'T', ' '):
	case W('P', 'O', 'S', 'T'):
	case W('H', 'E', 'A', 'D'):
	case W('D', 'E', 'L', 'E'):
	case W('O', 'P', 'T', 'I'):
	case W('P', 'A', 'T', 'C'):
	case W('C', 'O', 'N', 'N'):
	case W('T', 'R', 'A', 'C'):
		return 1;
	}
#undef W
	return 0;
}

// version_ends_line reports whether the first line of the record in the
// per-CPU scratch buffer ends with " HTTP/1.x" within its n captured bytes,
// looking a word at a time from byte from. A global (not inlined) function:
// the verifier checks it once, not once for every state of its callers.
__noinline int version_ends_line(__u32 from, __u32 n)
{
	__u32 zero = 0;
	struct data_event *ev = bpf_map_lookup_elem(&scratch, &zero);
	if (!ev)
		return 0;
	const __u8 *b = ev->data;
	for (__u32 k = 0; k < REQ_LINE_WORDS; k++) {
		__u64 off = from + k * 8;
		if (off >= n)
			return 0;
		asm volatile("%[o] &= 4095" : [o] "+r"(off));
		__u64 w;
		__builtin_memcpy(&w, &b[off], 8);
		if (!has_byte(w, 0x0d0d0d0d0d0d0d0dULL) && !has_byte(w, 0x0a0a0a0a0a0a0a0aULL))
			continue;
		__u64 j = off;
		for (int i = 0; i < 8; i++, j++) {
			__u64 jj = j;
			asm volatile("%[o] &= 8191" : [o] "+r"(jj));
			__u8 c = b[jj];
			if (c == '\r' || c == '\n')
				break;
		}
		// " HTTP/1.x" ends the line, within what was captured
		if (j >= n || j < from + 10)
			return 0;
		__u64 vo = j - 9;
		asm volatile("%[o] &= 8191" : [o] "+r"(vo));
		__u64 v;
		__builtin_memcpy(&v, &b[vo], 8);
		return v == (' ' | 'H' << 8 | 'T' << 16 | (__u64)'T' << 24 | (__u64)'P' << 32 | (__u64)'/' << 40 |
			     (__u64)'1' << 48 | (__u64)'.' << 56);
	}
	return 0;
}

// is_request_start reports whether b (the scratch record's data) starts an
// HTTP/1.x request line: a token-shaped method, a space, a target, and
// " HTTP/1.x" at the line's end. The nine registered methods are told by
// their first four bytes; any other token must show the version within the
// first 512 bytes. Asked once per connection, to classify it.
static __always_inline int is_request_start(const __u8 *b, __u32 n)
{
	if (is_known_start(b, n))
		return 1;
	__u32 sp = token_method(b, n);
	if (!sp)
		return 0;
	return version_ends_line(sp + 1, n);
}

// unobserved_kind tells what the first bytes of a connection that is not
// HTTP/1.x look like, from the side that spoke first.
static __always_inline __u32 unobserved_kind(const __u8 *b, __u32 n, int request_dir)
{
	if (!request_dir || n < 3)
		return UNOBSERVED_UNKNOWN;
	if (b[0] == 0x16 && b[1] == 0x03 && b[2] <= 0x04) // a TLS handshake record
		return UNOBSERVED_TLS;
	if (n >= 8 && b[0] == 'P' && b[1] == 'R' && b[2] == 'I' && b[3] == ' ' && b[4] == '*' && b[5] == ' ' &&
	    b[6] == 'H' && b[7] == 'T') // the HTTP/2 connection preface
		return UNOBSERVED_HTTP2;
	return UNOBSERVED_UNKNOWN;
}

// is_switching reports whether b starts a 101 response.
static __always_inline int is_switching(const __u8 *b, __u32 n)
{
	return n >= 12 && b[0] == 'H' && b[1] == 'T' && b[2] == 'T' && b[3] == 'P' && b[4] == '/' && b[5] == '1' &&
	       b[6] == '.' && b[8] == ' ' && b[9] == '1' && b[10] == '0' && b[11] == '1';
}

// read_user_at copies len bytes of user memory to ev->data + off. The masks
// are applied in assembly right before the call: older verifiers (5.10,
// 6.1) forget the bounds of a scalar the compiler spilled to the stack, so a
// check made earlier in C does not reach the helper call.
static __always_inline long read_user_at(struct data_event *ev, __u64 off, __u64 len, const void *src)
{
	asm volatile("%[o] &= 4095\n\t"
		     "%[l] &= 8191"
		     : [o] "+r"(off), [l] "+r"(len));
	return bpf_probe_read_user(&ev->data[off], len, src);
}

static __always_inline __u32 capture_iov(struct data_event *ev, const struct iovec *iov,
					 __u64 iovcnt, __u64 total, __u32 cap)
{
	__u32 off = 0;
#pragma unroll
	for (int i = 0; i < MAX_IOV; i++) {
		if (i >= iovcnt || off >= cap || off >= total)
			break;
		struct iovec v;
		if (bpf_probe_read_user(&v, sizeof(v), &iov[i]))
			break;
		__u64 n = v.iov_len;
		if (n > total - off)
			n = total - off;
		if (n > cap - off)
			n = cap - off;
		if (n > MAX_CAPTURE)
			break;
		// off < cap <= MAX_CAPTURE, n <= MAX_CAPTURE: the masks change nothing
		if (read_user_at(ev, off, n, v.iov_base))
			break;
		off += n;
	}
	return off;
}

// emit_call_error sends a header-only data record (total 0, err set) when a
// read or write on an HTTP connection fails in a way that ends it: the
// requests waiting there failed with that transport error (a reset before
// the response, a timeout), not merely "closed before a response".
static __always_inline void emit_call_error(__u32 fd, long ret, __u8 dir, __u64 enter_ns)
{
	long e = -ret;
	if (e != 104 && e != 32 && e != 110 && e != 103 && e != 113 && e != 101 && e != 100)
		return; // ECONNRESET EPIPE ETIMEDOUT ECONNABORTED EHOSTUNREACH ENETUNREACH ENETDOWN
	__u64 key = conn_key(fd);
	struct conn_info *ci = bpf_map_lookup_elem(&conns, &key);
	if (!ci || ci->state != STATE_HTTP)
		return;
	struct data_event *ev = bpf_ringbuf_reserve(&events, DATA_HDR_SIZE, 0);
	if (!ev) {
		ci->seq++;
		bump(&counters, HC_DROP_RINGBUF_FULL);
		return;
	}
	ev->type = EVENT_DATA;
	ev->dir = dir;
	ev->role = ci->role;
	ev->err = e;
	ev->tgid = current_tgid();
	ev->fd = fd;
	ev->captured = 0;
	ev->start_ns = ci->start_ns;
	ev->enter_ns = enter_ns;
	ev->exit_ns = bpf_ktime_get_ns();
	ev->total = 0;
	ev->seq = ci->seq;
	ev->seg_bytes = 0;
	ci->seq++;
	bpf_ringbuf_submit(ev, wakeup_flags());
	bump(&counters, HC_EVENTS_SUBMITTED);
}

// seg_out appends one segment past the prefix at ev->data[cur]: its
// descriptor, then len (<= TAIL_BYTES) bytes from src (zeros if they could
// not be read). It returns the new end.
static __always_inline __u32 seg_out(struct data_event *ev, __u32 cur, __u64 off, __u64 len, const void *src)
{
	// as in read_user_at: bounds where the helper sees them (cur stays
	// below MAX_CAPTURE plus SEG_IOV + 1 segments; the masks change nothing)
	asm volatile("%[c] &= 8191\n\t"
		     "%[l] &= 63"
		     : [c] "+r"(cur), [l] "+r"(len));
	bpf_probe_read_user(&ev->data[cur + SEG_HDR], len, src);
	ev->data[cur] = off;
	ev->data[cur + 1] = off >> 8;
	ev->data[cur + 2] = off >> 16;
	ev->data[cur + 3] = off >> 24;
	ev->data[cur + 4] = len;
	ev->data[cur + 5] = 0;
	return cur + SEG_HDR + len;
}

#define WALK_CHUNKS 32
#define HEAD_WORDS 128 // the head's end is looked for in the first 1024 bytes

// body_start returns the offset of the first byte after the head (the blank
// line) in the scratch record's n captured bytes, or 0.
static __always_inline __u32 body_start(const __u8 *b, __u32 n)
{
	for (__u32 k = 0; k < HEAD_WORDS; k++) {
		__u64 off = k * 8;
		if (off >= n)
			return 0;
		__u64 w;
		__builtin_memcpy(&w, &b[off & (MAX_CAPTURE - 1)], 8);
		if (!has_byte(w, 0x0a0a0a0a0a0a0a0aULL))
			continue;
		for (int i = 0; i < 8; i++) {
			__u64 j = off + i;
			if (j < 2 || j >= n)
				continue;
			asm volatile("%[j] &= 8191" : [j] "+r"(j));
			if (b[j] == '\n' && b[j - 1] == '\r' && b[j - 2] == '\n')
				return j + 1;
		}
	}
	return 0;
}

// chunk_line parses a chunk-size line in the 16 bytes lo, hi (little
// endian): hex digits, then CR or ';', up to LF. It returns size << 8 | the
// line's length, or 0. A global function: its loop is checked once.
__noinline __u64 chunk_line(__u64 lo, __u64 hi)
{
	__u64 size = 0;
	__u32 digits = 0;
	for (int j = 0; j < 16; j++) {
		__u8 c = j < 8 ? lo >> (j * 8) : hi >> ((j - 8) * 8);
		if (digits == j) {
			__u8 v = c | 0x20;
			if (v >= '0' && v <= '9' && j < 12) {
				size = size << 4 | (v - '0');
				digits++;
				continue;
			}
			if (v >= 'a' && v <= 'f' && j < 12) {
				size = size << 4 | (v - 'a' + 10);
				digits++;
				continue;
			}
			if (digits == 0 || (c != '\r' && c != ';'))
				return 0;
		}
		if (c == '\n')
			return j >= digits + 1 ? size << 8 | (j + 1) : 0;
	}
	return 0;
}

// walk_chunks follows a chunked body through one buffer call of total bytes
// (ptr in user memory, the first captured in the scratch record): from the
// end of the head when the call starts a message, else from where the last
// call's walk left off. Each chunk-size line past the captured prefix is
// appended as a segment, so user space frames the body exactly; where the
// walk stops is kept for the next call in this direction. A walk of a body
// that is not chunked stops at its first line (no hex size): the segments it
// may append are only bytes of the call. A global function, checked once by
// the verifier.
__noinline __u32 walk_chunks(__u64 key, __u64 ptr, __u64 total, __u32 captured, __u32 dir)
{
	__u32 zero = 0;
	struct data_event *ev = bpf_map_lookup_elem(&scratch, &zero);
	struct conn_info *ci = bpf_map_lookup_elem(&conns, &key);
	if (!ev || !ci)
		return captured;
	dir &= 1;
	__u64 o = ci->chunk_next[dir];
	ci->chunk_next[dir] = 0;
	const __u8 *b = ev->data;
	int starts = captured >= 8 && ((b[0] == 'H' && b[1] == 'T' && b[2] == 'T' && b[3] == 'P' && b[4] == '/') ||
				       is_known_start(b, captured));
	__u32 cur = captured;
	__u64 last = captured; // end of what was captured so far
	if (starts) {
		o = body_start(b, captured);
	} else if (o) {
		o--;
	}
	// o and last go through memory at each iteration: read back, they are
	// unknown to the verifier, so every path into an iteration is one state
	// (bounded, they would be as many states as paths)
	volatile __u64 *spill = (volatile __u64 *)&ev->data[MAX_CAPTURE * 4 - 16];
	for (int i = 0; o && i < WALK_CHUNKS; i++) {
		asm volatile("%[c] &= 8191" : [c] "+r"(cur));
		spill[0] = o;
		spill[1] = last;
		o = spill[0];
		last = spill[1];
		if (o >= total) {
			if (o - total < 0x7fffffff)
				ci->chunk_next[dir] = o - total + 1;
			break;
		}
		__u8 line[16] = {};
		__u64 avail = total - o < 16 ? total - o : 16;
		asm volatile("%[a] &= 31" : [a] "+r"(avail));
		if (avail > 16 || bpf_probe_read_user(line, avail, (const void *)(ptr + o)))
			break;
		__u64 lo, hi;
		__builtin_memcpy(&lo, line, 8);
		__builtin_memcpy(&hi, line + 8, 8);
		__u64 parsed = chunk_line(lo, hi);
		if (!parsed)
			break; // not a chunk-size line (or cut by the call's end): the tail is taken
		__u64 ll = parsed & 0xff;
		__u64 size = parsed >> 8;
		if (size == 0)
			ll = avail; // the last chunk: with the empty line that ends the body
		if (o + ll > last && cur < MAX_CAPTURE + 2048) {
			__u64 a = o < last ? last : o;
			cur = seg_out(ev, cur, a, o + ll - a, (const void *)(ptr + a));
			last = o + ll;
		}
		if (size == 0)
			break; // trailers are not followed
		o += ll + size + 2;
	}
	// the call's last bytes, past what was appended
	asm volatile("%[c] &= 8191" : [c] "+r"(cur));
	__u64 t = total > TAIL_BYTES ? total - TAIL_BYTES : 0;
	if (t < last)
		t = last;
	if (t < total && total - t <= TAIL_BYTES && cur < MAX_CAPTURE + 2048)
		cur = seg_out(ev, cur, t, total - t, (const void *)(ptr + t));
	return cur;
}

static __always_inline __u64 tail_start(__u64 total, __u32 captured)
{
	__u64 t = total > TAIL_BYTES ? total - TAIL_BYTES : 0;
	return t < captured ? captured : t;
}

// capture_segs_iov appends, past the prefix, the first bytes of each iovec
// that starts after it and the last bytes of the last one: a writer that
// puts each chunk-size line in its own iovec (Node's corked writev) is
// framed exactly, and a last chunk at the end of a long iovec is seen. A
// global (not inlined) function, checked once by the verifier; it finds the
// record in the per-CPU scratch buffer.
__noinline __u32 capture_segs_iov(__u64 iovp, __u64 iovcnt, __u64 total, __u32 captured)
{
	__u32 zero = 0;
	struct data_event *ev = bpf_map_lookup_elem(&scratch, &zero);
	if (!ev)
		return captured;
	const struct iovec *iov = (const struct iovec *)iovp;
	__u32 cur = captured;
	__u64 pos = 0, last_pos = 0, last_len = 0;
	const __u8 *last_base = 0;
	for (int i = 0; i < SEG_IOV; i++) {
		// One range for every path into the iteration, so the verifier
		// prunes them (the mask changes nothing: see seg_out).
		asm volatile("%[c] &= 8191" : [c] "+r"(cur));
		if (i >= iovcnt || pos >= total)
			break;
		struct iovec v;
		if (bpf_probe_read_user(&v, sizeof(v), &iov[i]))
			break;
		__u64 len = v.iov_len;
		if (len > total - pos)
			len = total - pos;
		if (pos >= captured && len > 0)
			cur = seg_out(ev, cur, pos, len < SEG_BYTES ? len : SEG_BYTES, v.iov_base);
		last_pos = pos;
		last_len = len;
		last_base = v.iov_base;
		pos += len;
	}
	// the call's last bytes, when the last iovec was longer than its head
	__u64 end = last_pos + last_len;
	__u64 t = tail_start(end, captured);
	if (last_pos >= captured && t < last_pos + SEG_BYTES)
		t = last_pos + SEG_BYTES;
	if (last_base && t < end && end - t <= TAIL_BYTES)
		cur = seg_out(ev, cur, t, end - t, last_base + (t - last_pos));
	return cur;
}

static __always_inline void handle_exit(long ret, __u8 dir)
{
	__u64 tid = bpf_get_current_pid_tgid();
	struct call_args *ap = bpf_map_lookup_elem(&calls, &tid);
	if (!ap)
		return;
	struct call_args a = *ap;
	bpf_map_delete_elem(&calls, &tid);
	if (ret < 0 && a.kind != CALL_CONNECT)
		emit_call_error(a.fd, ret, dir, a.enter_ns);
	if (ret <= 0 || a.kind == CALL_CONNECT)
		return;
	__u64 key = conn_key(a.fd);
	struct conn_info *ci = bpf_map_lookup_elem(&conns, &key);
	if (!ci || ci->state == STATE_NOT_HTTP || ci->state == STATE_UPGRADED)
		return;
	if (ci->unfiltered) {
		// Picked up by user space at start: the filters need the
		// owning process, which this is.
		ci->unfiltered = 0;
		if (is_self()) {
			// An agent's connection open before this agent started: left
			// out like the ones track() sees (and its client end
			// remembered, so the server side is left out too).
			__u8 role = ci->role;
			bpf_map_delete_elem(&conns, &key);
			track_self(a.fd, role);
			return;
		}
		if (!observed(ci->role == ROLE_SERVER ? ci->local_port : ci->peer_port)) {
			bump(&counters, HC_CONNS_FILTERED);
			bpf_map_delete_elem(&conns, &key);
			return;
		}
	}
	__u32 zero = 0;
	struct data_event *ev = bpf_map_lookup_elem(&scratch, &zero);
	if (!ev)
		return;
	__u32 cap = capture_bytes;
	if (cap > MAX_CAPTURE)
		cap = MAX_CAPTURE;
	__u32 captured = 0;
	__u32 end = 0;
	if (a.kind == CALL_BUF) {
		__u64 len = ret < cap ? ret : cap;
		if (read_user_at(ev, 0, len, (const void *)a.ptr) == 0)
			captured = len;
		end = captured;
		// a call longer than its prefix, or one inside a chunked body the
		// walk follows (to keep its place)
		if (captured && (captured < ret || ci->chunk_next[dir & 1]))
			end = walk_chunks(key, a.ptr, ret, captured, dir); // and the call's tail
	} else if (a.kind == CALL_IOV) {
		captured = capture_iov(ev, (const struct iovec *)a.ptr, a.count, ret, cap);
		end = captured;
		if (captured && captured < ret)
			end = capture_segs_iov(a.ptr, a.count, ret, captured);
	} else if (a.kind == CALL_MSG) {
		struct user_msghdr m;
		if (bpf_probe_read_user(&m, sizeof(m), (const void *)a.ptr) == 0) {
			captured = capture_iov(ev, m.msg_iov, m.msg_iovlen, ret, cap);
			end = captured;
			if (captured && captured < ret)
				end = capture_segs_iov((__u64)m.msg_iov, m.msg_iovlen, ret, captured);
		}
	}
	// One range for every capture path, so the verifier prunes them from
	// here on (the masks change nothing: captured <= MAX_CAPTURE, end below
	// 8192).
	asm volatile("%[c] &= 8191\n\t"
		     "%[e] &= 8191"
		     : [c] "+r"(captured), [e] "+r"(end));
	int request_dir = (ci->role == ROLE_SERVER) == (dir == DIR_READ);
	int starts = -1; // not asked yet
	if (ci->state == STATE_UNKNOWN) {
		if (ci->role == ROLE_SERVER && peer_is_self(ci)) {
			ci->state = STATE_NOT_HTTP;
			bump(&counters, HC_CONNS_SELF);
			return;
		}
		starts = request_dir && is_request_start(ev->data, captured);
		if (!starts) {
			if (ci->midstream) {
				// Inside an exchange that began before the agent: wait
				// for the next request to start.
				if (request_dir && ++ci->probes >= MIDSTREAM_PROBES) {
					ci->state = STATE_NOT_HTTP;
					bump(&counters, HC_CONNS_NOT_HTTP);
					count_unobserved(UNOBSERVED_UNKNOWN);
				}
				return;
			}
			// The peer spoke first, or what flows is no HTTP/1.x request.
			ci->state = STATE_NOT_HTTP;
			bump(&counters, HC_CONNS_NOT_HTTP);
			count_unobserved(unobserved_kind(ev->data, captured, request_dir));
			return;
		}
		ci->state = STATE_HTTP;
		bump(&counters, HC_CONNS_HTTP);
		emit_conn_event(EVENT_OPEN, a.fd, ci);
	}
	ev->type = EVENT_DATA;
	ev->dir = dir;
	ev->role = ci->role;
	ev->err = 0;
	ev->tgid = tid >> 32;
	ev->fd = a.fd;
	ev->captured = captured;
	ev->start_ns = ci->start_ns;
	ev->enter_ns = a.enter_ns;
	ev->exit_ns = bpf_ktime_get_ns();
	ev->total = ret;
	ev->seq = ci->seq;
	ev->seg_bytes = end - captured;
	ci->seq++;
	if (!request_dir) {
		// Tells user space at close whether response records were lost,
		// and that a dropped request start was answered (or not).
		ci->resp_records++;
		ci->lost_start = 0;
		if (is_switching(ev->data, captured)) {
			// HTTP/1 ends with this record (user space counts the
			// upgrade from it).
			ci->state = STATE_UPGRADED;
			bump(&counters, HC_CONNS_UPGRADED);
		}
	}
	__u64 size = DATA_HDR_SIZE + (__u64)end;
	// as in read_user_at: bound the size where the helper sees it
	asm volatile("%[s] &= 16383" : [s] "+r"(size));
	if (bpf_ringbuf_output(&events, ev, size, wakeup_flags())) {
		bump(&counters, HC_DROP_RINGBUF_FULL);
		if (starts < 0) // as likely a request start as the kernel can tell cheaply
			starts = request_dir && (is_known_start(ev->data, captured) || token_method(ev->data, captured));
		if (starts) {
			bump(&counters, HC_DROP_REQUEST_STARTS);
			count_drop(0);
			ci->lost_start = 1;
		}
		return;
	}
	bump(&counters, HC_EVENTS_SUBMITTED);
}

SEC("tracepoint/syscalls/sys_enter_read")
int http_read_enter(struct trace_event_raw_sys_enter *ctx)
{
	save_call(ctx->args[0], ctx->args[1], ctx->args[2], CALL_BUF);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_read")
int http_read_exit(struct trace_event_raw_sys_exit *ctx)
{
	handle_exit(ctx->ret, DIR_READ);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_recvfrom")
int http_recvfrom_enter(struct trace_event_raw_sys_enter *ctx)
{
	if (ctx->args[3] & MSG_PEEK_) // the data stays queued for the real read
		return 0;
	save_call(ctx->args[0], ctx->args[1], ctx->args[2], CALL_BUF);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_recvfrom")
int http_recvfrom_exit(struct trace_event_raw_sys_exit *ctx)
{
	handle_exit(ctx->ret, DIR_READ);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_readv")
int http_readv_enter(struct trace_event_raw_sys_enter *ctx)
{
	save_call(ctx->args[0], ctx->args[1], ctx->args[2], CALL_IOV);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_readv")
int http_readv_exit(struct trace_event_raw_sys_exit *ctx)
{
	handle_exit(ctx->ret, DIR_READ);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_recvmsg")
int http_recvmsg_enter(struct trace_event_raw_sys_enter *ctx)
{
	if (ctx->args[2] & MSG_PEEK_)
		return 0;
	save_call(ctx->args[0], ctx->args[1], 0, CALL_MSG);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_recvmsg")
int http_recvmsg_exit(struct trace_event_raw_sys_exit *ctx)
{
	handle_exit(ctx->ret, DIR_READ);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_write")
int http_write_enter(struct trace_event_raw_sys_enter *ctx)
{
	save_call(ctx->args[0], ctx->args[1], ctx->args[2], CALL_BUF);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_write")
int http_write_exit(struct trace_event_raw_sys_exit *ctx)
{
	handle_exit(ctx->ret, DIR_WRITE);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_sendto")
int http_sendto_enter(struct trace_event_raw_sys_enter *ctx)
{
	save_call(ctx->args[0], ctx->args[1], ctx->args[2], CALL_BUF);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_sendto")
int http_sendto_exit(struct trace_event_raw_sys_exit *ctx)
{
	handle_exit(ctx->ret, DIR_WRITE);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_writev")
int http_writev_enter(struct trace_event_raw_sys_enter *ctx)
{
	save_call(ctx->args[0], ctx->args[1], ctx->args[2], CALL_IOV);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_writev")
int http_writev_exit(struct trace_event_raw_sys_exit *ctx)
{
	handle_exit(ctx->ret, DIR_WRITE);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_sendmsg")
int http_sendmsg_enter(struct trace_event_raw_sys_enter *ctx)
{
	save_call(ctx->args[0], ctx->args[1], 0, CALL_MSG);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_sendmsg")
int http_sendmsg_exit(struct trace_event_raw_sys_exit *ctx)
{
	handle_exit(ctx->ret, DIR_WRITE);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_sendfile64")
int http_sendfile_enter(struct trace_event_raw_sys_enter *ctx)
{
	save_call(ctx->args[0], 0, ctx->args[3], CALL_SENDFILE);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_sendfile64")
int http_sendfile_exit(struct trace_event_raw_sys_exit *ctx)
{
	handle_exit(ctx->ret, DIR_WRITE);
	return 0;
}
