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
// byte count and a bounded prefix of its payload. The first payload of a
// connection classifies it: a request line in the direction a request flows
// (read on a server socket, write on a client socket) makes it HTTP; anything
// else marks it ignored, counted, and no record of it is ever sent. Framing
// (pipelining, chunked bodies, 100-continue) is left to the Go parser, which
// knows every call's total length even where it sees only the prefix.
#include "common.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define MAX_CAPTURE 4096
#define MAX_IOV 8
#define EINPROGRESS_ 115
#define MSG_PEEK_ 2

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
	HC_MAX = 11,
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
};

struct data_event {
	__u8 type;
	__u8 dir;
	__u8 role;
	__u8 err; // total 0: the call failed with this errno (emit_call_error)
	__u32 tgid;
	__u32 fd;
	__u32 captured; // bytes of data[] that are valid
	__u64 start_ns;
	__u64 enter_ns;
	__u64 exit_ns;
	__u64 total; // bytes the call moved
	__u32 seq;
	__u32 _pad2;
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
		if (*a == FILTER_EXCLUDE)
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
	if (family != AF_INET && family != AF_INET6)
		return;
	if (BPF_CORE_READ(sk, sk_type) != SOCK_STREAM_)
		return;
	if (BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol) != IPPROTO_TCP_)
		return;
	struct conn_info ci = {};
	ci.family = family;
	ci.role = role;
	ci.local_port = BPF_CORE_READ(sk, __sk_common.skc_num);
	ci.peer_port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (!observed(role == ROLE_SERVER ? ci.local_port : ci.peer_port)) {
		bump(&counters, HC_CONNS_FILTERED);
		return;
	}
	sock_peer_addr(sk, family, ci.peer);
	sock_local_addr(sk, family, ci.local);
	ci.start_ns = bpf_ktime_get_ns();
	__u64 key = conn_key(fd);
	if (bpf_map_update_elem(&conns, &key, &ci, BPF_ANY)) {
		bump(&counters, HC_DROP_CONNS_FULL);
		return;
	}
	bump(&counters, HC_CONNS_TRACKED);
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
	if (ci->state == STATE_HTTP)
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

static __always_inline void save_call(__u32 fd, __u64 ptr, __u64 count, __u8 kind)
{
	__u64 key = conn_key(fd);
	struct conn_info *ci = bpf_map_lookup_elem(&conns, &key);
	if (!ci || ci->state == STATE_NOT_HTTP)
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

// is_method reports whether b starts with an HTTP/1.x request method and a
// space (the first four bytes are enough to tell).
static __always_inline int is_request_start(const __u8 *b, __u32 n)
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
	ev->_pad2 = 0;
	ci->seq++;
	bpf_ringbuf_submit(ev, wakeup_flags());
	bump(&counters, HC_EVENTS_SUBMITTED);
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
	if (!ci || ci->state == STATE_NOT_HTTP)
		return;
	__u32 zero = 0;
	struct data_event *ev = bpf_map_lookup_elem(&scratch, &zero);
	if (!ev)
		return;
	__u32 cap = capture_bytes;
	if (cap > MAX_CAPTURE)
		cap = MAX_CAPTURE;
	__u32 captured = 0;
	if (a.kind == CALL_BUF) {
		__u64 len = ret < cap ? ret : cap;
		if (read_user_at(ev, 0, len, (const void *)a.ptr) == 0)
			captured = len;
	} else if (a.kind == CALL_IOV) {
		captured = capture_iov(ev, (const struct iovec *)a.ptr, a.count, ret, cap);
	} else if (a.kind == CALL_MSG) {
		struct user_msghdr m;
		if (bpf_probe_read_user(&m, sizeof(m), (const void *)a.ptr) == 0)
			captured = capture_iov(ev, m.msg_iov, m.msg_iovlen, ret, cap);
	}
	int starts = 0;
	int request_dir = (ci->role == ROLE_SERVER) == (dir == DIR_READ);
	if (request_dir)
		starts = is_request_start(ev->data, captured);
	if (ci->state == STATE_UNKNOWN) {
		if (ci->role == ROLE_SERVER && peer_is_self(ci)) {
			ci->state = STATE_NOT_HTTP;
			bump(&counters, HC_CONNS_SELF);
			return;
		}
		if (!starts) {
			// The peer spoke first, or what flows is no HTTP/1.x request.
			ci->state = STATE_NOT_HTTP;
			bump(&counters, HC_CONNS_NOT_HTTP);
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
	ev->_pad2 = 0;
	ci->seq++;
	if (!request_dir) {
		// Tells user space at close whether response records were lost,
		// and that a dropped request start was answered (or not).
		ci->resp_records++;
		ci->lost_start = 0;
	}
	__u64 size = DATA_HDR_SIZE + (__u64)captured;
	// as in read_user_at: bound the size where the helper sees it
	asm volatile("%[s] &= 16383" : [s] "+r"(size));
	if (bpf_ringbuf_output(&events, ev, size, wakeup_flags())) {
		bump(&counters, HC_DROP_RINGBUF_FULL);
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
