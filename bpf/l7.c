// The L7 capture: protocol-neutral connection tracking and capture for every
// L7 protocol (HTTP/1 and HTTP/2, PostgreSQL, MySQL, Redis, Memcached,
// Kafka), written once and fed by every data source: the read/write system
// calls here, the TLS libraries' plaintext (l7/tls.h), the kernel's socket
// functions (l7/kfunc.h). One object, one set of hooks, whichever protocols are enabled.
//
// Sockets are tracked from accept/accept4 (server role) and connect (client
// role), by (process, fd), in the process that owns them; the include and
// exclude filters (executable name, server port, cgroup) are applied there,
// once per connection, so a process we do not observe pays one hash miss per
// read or write. The read/write family (read, write, readv, writev, recvfrom,
// sendto, recvmsg, sendmsg, sendfile) is hooked at syscall entry (remember the
// buffer) and exit (the byte count is known), and each call on a tracked
// connection goes to l7_capture, the data sources' one entry point.
//
// While a connection is undecided, l7_classify (l7/classify.h) looks at each
// record for a protocol's first message, for a bounded budget of records;
// then the connection is given up as none, counted per process by what it
// looked like. Ciphertext never decides: a TLS connection stays
// undecided-as-TLS (counted as unobserved TLS unless its process's TLS is
// instrumented) until a TLS source supplies its plaintext. No record of an
// undecided connection is ever sent; the record that decides is.
//
// Once decided, each call becomes one ring buffer record (its protocol and
// data source, timestamps, total byte count, sequence) with the bytes the
// protocol's capture policy keeps: HTTP/1 a bounded prefix and, where the
// call moved more, small segments past it (the first bytes of each further
// iovec, chunk-size lines found by walking the chunked body, the call's last
// bytes); HTTP/2 every frame but DATA payloads (l7/http2.h); the databases, caches and Kafka
// the prefix and the call's last bytes (a terminator at the end of a long
// response). A 101 response ends HTTP/1 on the connection (an h2c upgrade
// continues as HTTP/2 when that is on: l7/http2.h). Framing is left
// to the parsers in user space, which know every call's total length even
// where they see only a part of its bytes.
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
// A connection is given up as none after this many records without a
// protocol's start. One that existed before the agent (picked up from
// /proc) may be inside a message: it waits for a start for up to
// MIDSTREAM_PROBES records in the request direction.
#define CLASSIFY_RECORDS 8
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

// The protocols (the values of collectors/l7/capture's registry and of the
// record's proto). The bit 1 << proto in proto_mask enables one.
enum l7_proto {
	L7_PROTO_UNDECIDED = 0,
	L7_PROTO_HTTP1 = 1,
	L7_PROTO_HTTP2 = 2,
	L7_PROTO_POSTGRES = 3,
	L7_PROTO_MYSQL = 4,
	L7_PROTO_REDIS = 5,
	L7_PROTO_MEMCACHED = 6,
	L7_PROTO_KAFKA = 7,
	L7_PROTO_MAX = 8,
};

// Where a record's plaintext came from (collectors/l7 Source).
enum l7_source {
	SOURCE_SYSCALL = 1,
	SOURCE_OPENSSL = 2,
	SOURCE_GOTLS = 3,
	SOURCE_KERNEL = 4,
};

enum http_conn_state {
	STATE_UNDECIDED = 0,
	STATE_DECIDED = 1, // proto says which
	STATE_NONE = 2,    // no enabled protocol: nothing more is looked at
	// After a 101 response: no more records (the close still is). An HTTP/2
	// parser for h2c would take the connection over here.
	STATE_UPGRADED = 3,
	// Ciphertext seen: nothing is sent unless a TLS source supplies the
	// plaintext (CONN_TLS_PLAINTEXT), which is classified afresh.
	STATE_TLS = 4,
};

// conn_info.flags
#define CONN_TLS_PLAINTEXT 1 // a TLS source feeds this connection: the syscall source leaves it alone
#define CONN_CLIENT_CHECKED 2 // server side: its client end was looked for after a request (l7/policy.h)

enum http_counter {
	HC_EVENTS_SUBMITTED = 0,
	HC_DROP_RINGBUF_FULL = 1,
	HC_DROP_REQUEST_STARTS = 2, // dropped records that began with a request line
	HC_CONNS_TRACKED = 3,
	HC_CONNS_HTTP = 4,     // decided as an enabled protocol (any: the per-protocol slots follow HC_MAX)
	HC_CONNS_NOT_HTTP = 5, // given up: no enabled protocol (or TLS not instrumented)
	HC_DROP_CONNS_FULL = 6,
	HC_CONNS_FILTERED = 7,
	HC_DROP_ARGS_FULL = 8,
	HC_START_REFUNDS = 9, // dropped request starts whose connection closed unanswered
	HC_CONNS_SELF = 10,   // connections of otelbee processes, or whose peer is one
	HC_CONNS_UPGRADED = 11,  // 101 seen: HTTP/1 records stopped
	HC_CONNS_INHERITED = 12, // served by a forked child of the process that accepted
	// socket calls on a tracked connection the socket-tracepoint source
	// could not attribute to a read/write system call (io_uring, splice,
	// sendmmsg...): bytes neither captured nor guessed (l7/socktp.h)
	HC_SOCK_CALLS_SKIPPED = 13,
	HC_MAX = 14,
};

// Per-protocol counter slots after HC_MAX: connections decided as the
// protocol, and its records dropped because the ring buffer was full.
#define HC_PROTO_CONNS(p) (HC_MAX + (p))
#define HC_PROTO_DROPS(p) (HC_MAX + L7_PROTO_MAX + (p))
// Then server-side connections given up because their client end is
// tracked here and records them (l7/policy.h).
#define HC_PROTO_CLIENT_SIDE(p) (HC_MAX + 2 * L7_PROTO_MAX + (p))
#define HC_SLOTS (HC_MAX + 3 * L7_PROTO_MAX)

// What a connection that was not decided looked like, per process: a
// protocol's start whose collector is off (the protocol's own value), TLS
// not instrumented, or nothing known.
enum http_unobserved {
	UNOBSERVED_UNKNOWN = 0,
	UNOBSERVED_HTTP1 = 1,
	UNOBSERVED_HTTP2 = 2, // prior-knowledge h2c
	UNOBSERVED_POSTGRES = 3,
	UNOBSERVED_MYSQL = 4,
	UNOBSERVED_REDIS = 5,
	UNOBSERVED_MEMCACHED = 6,
	UNOBSERVED_KAFKA = 7,
	UNOBSERVED_TLS = 8,
	UNOBSERVED_MAX = 9,
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
// The enabled protocols: bit 1 << enum l7_proto.
const volatile __u32 proto_mask = 1 << L7_PROTO_HTTP1;
// The unread bytes past which a data record is dropped (counted) rather than
// written: the rest of the ring is kept for the open and close records. A
// lost close record cannot be made up: the kernel's entry is gone with it, so
// user space would never learn that the last response was lost (it would
// call the request incomplete), nor when the connection ended. 0: no limit.
const volatile __u32 data_room = 0;

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
	// Records emitted (or dropped) on this connection, per direction. One
	// counter per direction, each moved only by the calls of its own
	// direction: a process that reads and writes one connection on two
	// CPUs at once (HTTP/2, gRPC, Kafka clients) would otherwise number two
	// records alike, or see them reach the ring out of their order, and
	// user space would take that for lost records. A program serialises
	// the calls of one direction itself (Go's fd locks, one reader or
	// writer per connection), and a record is in the ring before its call
	// returns.
	__u32 req_records;
	__u32 resp_records;
	__u64 sk;          // the socket: a forked child's descriptor names the same one
	__u8 midstream;    // existed before the agent: wait for a request start
	__u8 unfiltered;   // inserted by user space: the filters are applied at the first call
	__u16 probes;      // undecided: records looked at without a decision
	__u32 owner;       // the process that accepted or connected (a forked child's parent)
	// per direction: where the next chunk-size line starts in the next call,
	// plus one (0: not known), as the kernel's walk of chunks left it
	__u32 chunk_next[2];
	__u8 proto;  // enum l7_proto, once decided
	__u8 source; // enum l7_source of the records sent
	__u8 flags;  // CONN_*
	__u8 policy; // POLICY_* of the protocol, once decided (l7/policy.h)
	__u16 cap;   // its capture prefix (0: capture_bytes)
	__u8 _pad[2];
};

struct conn_event {
	__u8 type;
	__u8 role;
	__u8 family;
	__u8 lost_start;
	__u32 tgid;
	__u32 fd;
	__u32 req_records; // conn_info's counts when it was emitted
	__u64 start_ns;
	__u64 ts_ns;
	__u8 peer[16];
	__u8 local[16];
	__u16 peer_port;
	__u16 local_port;
	__u32 resp_records;
	__u32 owner; // the process that accepted or connected it
	__u8 proto;
	__u8 source;
	__u8 midstream; // open before the agent started: its first record may be mid-message
	__u8 _pad;
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
	// conn_info's counts before this record: the one of its own direction
	// is its number in that direction, the other direction's as this CPU
	// saw it (a record of it may still be on its way to the ring)
	__u32 req_records;
	__u32 seg_bytes; // bytes of data[] after the prefix: segment descriptors and bytes
	__u8 proto;      // enum l7_proto
	__u8 source;     // enum l7_source
	__u8 _pad[2];
	__u32 resp_records;
	// Four times the capture: offset (< MAX_CAPTURE) and length (masked to
	// < 2 * MAX_CAPTURE) stay inside whatever the verifier can prove.
	__u8 data[MAX_CAPTURE * 4];
};

#define DATA_HDR_SIZE 64

enum call_kind {
	CALL_BUF = 0,
	CALL_IOV = 1,
	CALL_MSG = 2,
	CALL_SENDFILE = 3,
	CALL_CONNECT = 4,
	CALL_TLS_MARK = 5, // followed to its exit for the TLS source only (L7_TLS_SYSCALL_DONE)
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
const enum l7_proto *unused_l7_proto __attribute__((unused));
const enum l7_source *unused_l7_source __attribute__((unused));
const enum http_conn_state *unused_http_conn_state __attribute__((unused));
const enum http_dir *unused_http_dir __attribute__((unused));

// Tracked connections by (tgid << 32 | fd). LRU: a process that exits closes
// its descriptors without close(2), and those entries must not pile up.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct conn_info);
} conns SEC(".maps");

// Per-process marks in front of the conns and inherit lookups, which every
// read and write on the host otherwise pays (a hash lookup):
// conns_seen[tgid % SEEN_SLOTS] is set before a conns entry of the process
// is made (track, track_self, make_inherited, and user space's pick-up of
// the connections open before the agent: collectors/l7/capture/seen.go),
// inherit_seen[...] before its inherit entry (the fork program). A process
// with neither mark has no entry in either map, so its calls return before
// looking. A mark is only ever set, never cleared: the slot a process shares
// with others (tgids SEEN_SLOTS apart), and the mark of an exited process
// whose tgid comes back, only cost the lookups the mark would have spared;
// they can never hide a connection. Two arrays of single bytes rather than
// bits of one: a byte store needs no atomic read-modify-write (5.10 has no
// atomic or), so two CPUs marking one slot cannot lose a mark. In .bss:
// read by a direct load, no helper call; user space writes its marks
// through the map's memory.
#define SEEN_SLOTS 65536
__u8 conns_seen[SEEN_SLOTS];
__u8 inherit_seen[SEEN_SLOTS];

static __always_inline __u32 seen_slot(__u32 tgid)
{
	return tgid & (SEEN_SLOTS - 1);
}

// seen: the process may have a conns entry, or an inherit one.
static __always_inline int seen(__u32 tgid)
{
	__u32 s = seen_slot(tgid);
	return conns_seen[s] | inherit_seen[s];
}

// mark_seen sets tgid's slot of one of the per-process mark arrays
// (conns_seen, inherit_seen, ssl_seen in l7/tls.h), writing it only when it
// is not set yet: a mark already there is not dirtied again by every
// connection, fork or call.
static __always_inline void mark_seen(__u8 *marks, __u32 tgid)
{
	__u32 s = seen_slot(tgid);
	if (!marks[s])
		marks[s] = 1;
}

// Tracked connections by socket (struct sock *) -> their conns key, for the
// kernel-function source (l7/kfunc.h), which sees the socket, not the
// descriptor. Filled wherever a connection is tracked; never deleted (a
// socket's memory is reused: the source checks conn_info.sk), so LRU.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u64);
} sock_keys SEC(".maps");

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
	__uint(max_entries, HC_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

// Processes whose TLS a TLS data source instruments (filled by the tls
// collector): their ciphertext is not counted as unobserved, their
// plaintext is expected from l7_capture.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, __u8);
} tls_tgids SEC(".maps");

// The path from a *tls.Conn to its descriptor, as sums of collectors/tls
// GoFD's offsets: *(conn + conn_iface) is the *net.TCPConn, *(that +
// tcpconn_fd) the *net.netFD, *(int32 *)(that + netfd_sysfd) the fd.
struct go_offsets {
	__u64 conn_iface;
	__u64 tcpconn_fd;
	__u64 netfd_sysfd;
	__u64 read_recv_slot; // (*Conn).Read's receiver at its copy site: *(sp + this); 0 unknown (l7/tls.h)
};

// Executables by identity: the kernel's device number (MKDEV: major << 20 |
// minor) and inode of the file.
struct go_exe {
	__u64 ino;
	__u32 dev;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct go_exe);
	__type(value, struct go_offsets);
} go_fd_offsets SEC(".maps");

// current_go_offsets returns the descriptor path of the current process's
// executable when it is a Go executable whose crypto/tls is instrumented
// (user space fills go_fd_offsets after it attached the file's last probe
// and deletes it before it removes the first: every Go program looks it up,
// so none acts on a file whose probes are only partly there).
static __always_inline struct go_offsets *current_go_offsets(void)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct go_exe exe = {
		.ino = BPF_CORE_READ(task, mm, exe_file, f_inode, i_ino),
		.dev = BPF_CORE_READ(task, mm, exe_file, f_inode, i_sb, s_dev),
	};
	return bpf_map_lookup_elem(&go_fd_offsets, &exe);
}

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

// A global function: its zeroed value is not on the capture's call chain
// (older kernels cap the chain's combined stack at 512 bytes).
__noinline int count_unobserved(__u32 what)
{
	__u32 tgid = current_tgid();
	struct tgid_unobserved *u = bpf_map_lookup_elem(&unobserved, &tgid);
	if (!u) {
		struct tgid_unobserved zero = {};
		bpf_map_update_elem(&unobserved, &tgid, &zero, BPF_NOEXIST);
		u = bpf_map_lookup_elem(&unobserved, &tgid);
		if (!u)
			return 0;
	}
	if (what < UNOBSERVED_MAX)
		__sync_fetch_and_add(&u->n[what], 1);
	return 0;
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
// user space far more than the record itself, and the producer too (a
// wakeup is an interrupt the CPU sends itself: on this VM an exit, ~2.6 us).
// So a record wakes the reader when it takes the unread data past a
// multiple of RINGBUF_WAKEUP_BYTES, not each record while that much is
// unread (the reader, once woken, drains the ring: waking it again before
// it has caught up gains nothing). Two CPUs crossing a multiple at once may
// both miss it: the next multiple covers that in a large ring; in a small
// one (ring_buffer_bytes) there may be none before it is full, so once half
// the ring is unread every record wakes the reader, as all did before. The
// reader also polls on a short deadline, so a lone record waits at most
// that long.
#define RINGBUF_WAKEUP_BYTES (32 * 1024)
#define RINGBUF_REC_HDR 8 // the ring's own header of each record

static __always_inline __u64 wakeup_crossing(__u64 before, __u64 after)
{
	if ((before ^ after) >= RINGBUF_WAKEUP_BYTES)
		return BPF_RB_FORCE_WAKEUP;
	if (after >= RINGBUF_WAKEUP_BYTES && after >= bpf_ringbuf_query(&events, BPF_RB_RING_SIZE) / 2)
		return BPF_RB_FORCE_WAKEUP;
	return BPF_RB_NO_WAKEUP;
}

// output_data writes a data record of size bytes, unless the unread data
// would pass data_room; non-zero when it was not written.
static __always_inline long output_data(void *ev, __u64 size)
{
	__u64 avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	__u64 after = avail + size + RINGBUF_REC_HDR;
	if (data_room && after > data_room)
		return -1;
	return bpf_ringbuf_output(&events, ev, size, wakeup_crossing(avail, after));
}

// wakeup_flags_reserved is for a reserved record of size bytes (already
// counted in the unread data).
static __always_inline __u64 wakeup_flags_reserved(__u64 size)
{
	__u64 avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	__u64 rec = size + RINGBUF_REC_HDR;
	return wakeup_crossing(avail > rec ? avail - rec : 0, avail);
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
static __always_inline void emit_conn_event(__u8 type, __u32 fd, struct conn_info *ci);

#include "l7/policy.h"

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
	mark_seen(conns_seen, ci.owner);
	if (bpf_map_update_elem(&conns, &key, &ci, BPF_ANY)) {
		bump(&counters, HC_DROP_CONNS_FULL);
		return;
	}
	bump(&counters, HC_CONNS_TRACKED);
	if (role == ROLE_CLIENT)
		remember_client_end(&ci);
	bpf_map_update_elem(&sock_keys, &ci.sk, &key, BPF_ANY);
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
	mark_seen(inherit_seen, child);
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
	ci.state = STATE_NONE;
	ci.local_port = BPF_CORE_READ(sk, __sk_common.skc_num);
	sock_local_addr(sk, family, ci.local);
	struct self_end e = { .port = ci.local_port };
	__builtin_memcpy(e.addr, ci.local, 16);
	__u8 one = 1;
	bpf_map_update_elem(&self_ends, &e, &one, BPF_ANY);
	__u64 key = conn_key(fd);
	mark_seen(conns_seen, current_tgid());
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

static __always_inline void connect_enter(__u32 fd)
{
	__u64 tid = bpf_get_current_pid_tgid();
	struct call_args a = { .fd = fd, .kind = CALL_CONNECT };
	if (bpf_map_update_elem(&calls, &tid, &a, BPF_ANY))
		bump(&counters, HC_DROP_ARGS_FULL);
}

static __always_inline void connect_exit(long ret)
{
	__u64 tid = bpf_get_current_pid_tgid();
	struct call_args *a = bpf_map_lookup_elem(&calls, &tid);
	if (!a)
		return;
	__u32 fd = a->fd;
	__u8 kind = a->kind;
	bpf_map_delete_elem(&calls, &tid);
	if (kind == CALL_CONNECT && (ret == 0 || ret == -EINPROGRESS_))
		track(fd, ROLE_CLIENT);
}

SEC("tracepoint/syscalls/sys_enter_connect")
int http_connect_enter(struct trace_event_raw_sys_enter *ctx)
{
	connect_enter(ctx->args[0]);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_connect")
int http_connect_exit(struct trace_event_raw_sys_exit *ctx)
{
	connect_exit(ctx->ret);
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
	ev->req_records = ci->req_records;
	ev->start_ns = ci->start_ns;
	ev->ts_ns = bpf_ktime_get_ns();
	__builtin_memcpy(ev->peer, ci->peer, 16);
	__builtin_memcpy(ev->local, ci->local, 16);
	ev->peer_port = ci->peer_port;
	ev->local_port = ci->local_port;
	ev->resp_records = ci->resp_records;
	ev->owner = ci->owner;
	ev->proto = ci->proto;
	ev->source = ci->source;
	ev->midstream = ci->midstream;
	ev->_pad = 0;
}

static __always_inline void emit_conn_event(__u8 type, __u32 fd, struct conn_info *ci)
{
	// Open and close records are not numbered: a lost open is made up from
	// conns by user space at the connection's first data record.
	struct conn_event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		bump(&counters, HC_DROP_RINGBUF_FULL);
		return;
	}
	fill_conn_event(ev, type, fd, ci);
	bpf_ringbuf_submit(ev, wakeup_flags_reserved(sizeof(*ev)));
	bump(&counters, HC_EVENTS_SUBMITTED);
}

// count_none gives a connection up: no enabled protocol, counted per
// process by what it looked like.
static __always_inline void count_none(struct conn_info *ci, __u32 what)
{
	ci->state = STATE_NONE;
	bump(&counters, HC_CONNS_NOT_HTTP);
	count_unobserved(what);
}

static __always_inline void tls_close_hook(__u64 key);

static __always_inline void close_fd(__u32 fd)
{
	if (!conns_seen[seen_slot(current_tgid())])
		return;
	__u64 key = conn_key(fd);
	struct conn_info *ci = bpf_map_lookup_elem(&conns, &key);
	if (!ci)
		return;
	if (ci->lost_start) {
		// The request whose first record was dropped was cut off by the
		// close, not lost: counted here, even if the close record is lost.
		bump(&counters, HC_START_REFUNDS);
		count_drop(1);
	}
	if (ci->state == STATE_DECIDED || ci->state == STATE_UPGRADED)
		emit_conn_event(EVENT_CLOSE, fd, ci);
	else if (ci->state == STATE_UNDECIDED && ci->probes && !ci->midstream)
		count_none(ci, UNOBSERVED_UNKNOWN); // closed within the budget
	tls_close_hook(key); // l7/tls.h: what a TLS source learned of the descriptor
	if (ci->role == ROLE_SELF) {
		struct self_end e = { .port = ci->local_port };
		__builtin_memcpy(e.addr, ci->local, 16);
		bpf_map_delete_elem(&self_ends, &e);
	}
	bpf_map_delete_elem(&conns, &key);
}

SEC("tracepoint/syscalls/sys_enter_close")
int http_close_enter(struct trace_event_raw_sys_enter *ctx)
{
	close_fd(ctx->args[0]);
	return 0;
}

// ---- read / write family

// make_inherited makes the entry of a descriptor this process got from the
// parent that accepted it (fork): 1 when made.
// A global function (its copy of the template is not on the capture's
// call chain); the caller looks the entry up again.
__noinline int make_inherited(__u64 key)
{
	__u32 fd = key;
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
	ci.req_records = 0;
	ci.resp_records = 0;
	ci.lost_start = 0;
	mark_seen(conns_seen, tgid);
	if (bpf_map_update_elem(&conns, &key, &ci, BPF_NOEXIST))
		return 0;
	bump(&counters, HC_CONNS_INHERITED);
	struct conn_info *cp = bpf_map_lookup_elem(&conns, &key);
	if (cp && cp->state == STATE_DECIDED)
		emit_conn_event(EVENT_OPEN, fd, cp);
	return 1;
}

// skipped: a connection the syscall source sends nothing more of.
static __always_inline int skipped(const struct conn_info *ci)
{
	return ci->state == STATE_NONE || ci->state == STATE_UPGRADED || ci->state == STATE_TLS ||
	       (ci->flags & CONN_TLS_PLAINTEXT);
}

// inherited returns the entry of a descriptor this process got from the
// parent that accepted it (fork), making it on first use.
static __always_inline struct conn_info *inherited(__u32 fd, __u64 key)
{
	__u32 tgid = key >> 32;
	if (!inherit_seen[seen_slot(tgid)])
		return 0;
	if (!bpf_map_lookup_elem(&inherit, &tgid) || !make_inherited(key))
		return 0;
	return bpf_map_lookup_elem(&conns, &key);
}

static __always_inline void save_call(__u32 fd, __u64 ptr, __u64 count, __u8 kind);

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

// capture_iov copies the first cap bytes of the iovecs at iovp into the
// per-CPU scratch record and returns how many. A global function: checked
// once, not once per kind of call that carries iovecs.
__noinline __u32 capture_iov(__u64 iovp, __u64 iovcnt, __u64 total, __u32 cap)
{
	__u32 zero = 0;
	struct data_event *ev = bpf_map_lookup_elem(&scratch, &zero);
	if (!ev)
		return 0;
	const struct iovec *iov = (const struct iovec *)iovp;
	if (cap > MAX_CAPTURE)
		cap = MAX_CAPTURE;
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

// count_record numbers a record (emitted or dropped) in its direction.
static __always_inline void count_record(struct conn_info *ci, int request_dir)
{
	if (request_dir)
		ci->req_records++;
	else
		ci->resp_records++;
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
	if (!ci || ci->state != STATE_DECIDED || (ci->flags & CONN_TLS_PLAINTEXT))
		return;
	int request_dir = (ci->role == ROLE_SERVER) == (dir == DIR_READ);
	struct data_event *ev = bpf_ringbuf_reserve(&events, DATA_HDR_SIZE, 0);
	if (!ev) {
		count_record(ci, request_dir);
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
	ev->req_records = ci->req_records;
	ev->seg_bytes = 0;
	ev->resp_records = ci->resp_records;
	ev->proto = ci->proto;
	ev->source = SOURCE_SYSCALL;
	count_record(ci, request_dir);
	bpf_ringbuf_submit(ev, wakeup_flags_reserved(DATA_HDR_SIZE));
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

#include "l7/http1.h"
#include "l7/http2.h"

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


// capture_tail appends the call's last bytes past the prefix (the databases'
// and caches' policy: a terminator at the end of a long response).
__noinline __u32 capture_tail(__u64 ptr, __u64 total, __u32 captured)
{
	__u32 zero = 0;
	struct data_event *ev = bpf_map_lookup_elem(&scratch, &zero);
	if (!ev)
		return captured;
	__u64 t = tail_start(total, captured);
	if (t < total && total - t <= TAIL_BYTES)
		return seg_out(ev, captured & 8191, t, total - t, (const void *)(ptr + t));
	return captured;
}

// l7_meta packs l7_capture's call description: direction (enum http_dir),
// buffer kind (enum call_kind), data source (enum l7_source) and, for
// iovec calls, the iovec count.
static __always_inline __u64 l7_meta(__u32 dir, __u32 kind, __u32 source, __u64 count)
{
	return (dir & 1) | (__u64)(kind & 0xff) << 8 | (__u64)(source & 0xff) << 16 | count << 32;
}

// capture_state packs what capture_call needs of the connection: its
// protocol, its capture prefix (conn_info.cap) and whether a chunk walk is
// under way in direction dir. Passed by value: the caller has the entry,
// and a global function's map value pointer argument is refused by older
// verifiers (5.10), so capture_call would look it up again.
static __always_inline __u64 capture_state(const struct conn_info *ci, __u32 dir)
{
	return (__u64)ci->proto | (__u64)ci->cap << 8 | (__u64)(ci->chunk_next[dir & 1] != 0) << 24;
}

// capture_call copies what the connection's capture policy keeps of the
// call into the per-CPU scratch record: ret bytes moved through ptr (a
// buffer, an iovec array or a user_msghdr, by kind), on the connection key
// whose state is cstate (capture_state). It returns the prefix's length |
// the data's end << 16. A global function: the verifier checks the capture
// paths once, apart from the classification and emission after them.
__noinline __u32 capture_call(__u64 key, __u64 meta, __u64 ptr, __u64 ret, __u64 cstate)
{
	__u32 zero = 0;
	struct data_event *ev = bpf_map_lookup_elem(&scratch, &zero);
	if (!ev)
		return 0;
	__u32 dir = meta & 1;
	__u32 kind = (meta >> 8) & 0xff;
	__u64 count = meta >> 32;
	__u8 proto = cstate & 0xff;
	__u32 ci_cap = (cstate >> 8) & 0xffff;
	int chunking = (cstate >> 24) & 1;
	__u32 cap = capture_bytes;
	if (cap > MAX_CAPTURE)
		cap = MAX_CAPTURE;
	if (ci_cap)
		cap = ci_cap; // the protocol's own (l7/policy.h)
	if (proto == L7_PROTO_HTTP2)
		cap = MAX_CAPTURE; // whole frames (l7/http2.h)
	// HTTP/1 and undecided connections: chunk walk and iovec heads
	int http1 = proto == L7_PROTO_HTTP1 || proto == L7_PROTO_UNDECIDED;
	__u32 captured = 0;
	__u32 end = 0;
	if (kind == CALL_BUF) {
		__u64 len = ret < cap ? ret : cap;
		if (read_user_at(ev, 0, len, (const void *)ptr) == 0)
			captured = len;
		end = captured;
		if (!captured) {
		} else if (proto == L7_PROTO_HTTP2) {
			// l7_capture walks the frames (capture_h2)
		} else if (!http1) {
			if (captured < ret)
				end = capture_tail(ptr, ret, captured);
		} else if (captured < ret || chunking) {
			// a call longer than its prefix, or one inside a chunked body
			// the walk follows (to keep its place)
			end = walk_chunks(key, ptr, ret, captured, dir); // and the call's tail
		}
	} else if (kind == CALL_IOV) {
		captured = capture_iov(ptr, count, ret, cap);
		end = captured;
		if (captured && captured < ret && proto != L7_PROTO_HTTP2)
			end = capture_segs_iov(ptr, count, ret, captured);
	} else if (kind == CALL_MSG) {
		// msg_iov and msg_iovlen only: the whole user_msghdr would sit on
		// the capture's call chain
		struct user_msghdr *m = (struct user_msghdr *)ptr;
		__u64 iov = 0, iovlen = 0;
		if (bpf_probe_read_user(&iov, sizeof(iov), &m->msg_iov) == 0 &&
		    bpf_probe_read_user(&iovlen, sizeof(iovlen), &m->msg_iovlen) == 0) {
			captured = capture_iov(iov, iovlen, ret, cap);
			end = captured;
			if (captured && captured < ret && proto != L7_PROTO_HTTP2)
				end = capture_segs_iov(iov, iovlen, ret, captured);
		}
	}
	return (captured & 8191) | (end & 8191) << 16;
}

#include "l7/classify.h"

// count_ciphertext holds a connection whose bytes are TLS records: counted
// as unobserved TLS unless its process's TLS is instrumented (then its
// plaintext comes from l7_capture with a TLS source).
static __always_inline void count_ciphertext(struct conn_info *ci)
{
	__u32 tgid = current_tgid();
	if (bpf_map_lookup_elem(&tls_tgids, &tgid)) {
		ci->state = STATE_TLS;
		return;
	}
	// A new process of a Go executable already instrumented: its plaintext
	// comes from the file's probes even before user space has handled its
	// exec (a short-lived client's whole life can fit in that gap).
	if (current_go_offsets()) {
		__u8 one = 1;
		bpf_map_update_elem(&tls_tgids, &tgid, &one, BPF_NOEXIST);
		ci->state = STATE_TLS;
		return;
	}
	count_none(ci, UNOBSERVED_TLS);
}

// filter_first_call applies the filters to a connection user space put in
// the table at start, at its first call (they need the owning process,
// which this is); it returns 1 when the connection is left out. A global
// function: its stack (a conn_info for track_self) is not on the capture's
// call chain, whose combined stack older kernels cap at 512 bytes.
__noinline int filter_first_call(__u64 key)
{
	struct conn_info *ci = bpf_map_lookup_elem(&conns, &key);
	if (!ci)
		return 1;
	ci->unfiltered = 0;
	if (is_self()) {
		// An agent's connection open before this agent started: left out
		// like the ones track() sees (and its client end remembered, so
		// the server side is left out too).
		__u8 role = ci->role;
		bpf_map_delete_elem(&conns, &key);
		track_self((__u32)key, role);
		return 1;
	}
	if (!observed(ci->role == ROLE_SERVER ? ci->local_port : ci->peer_port)) {
		bump(&counters, HC_CONNS_FILTERED);
		bpf_map_delete_elem(&conns, &key);
		return 1;
	}
	if (ci->role == ROLE_CLIENT)
		remember_client_end(ci);
	return 0;
}

// l7_capture is the data sources' one entry point: one call that moved ret
// bytes (> 0) through ptr on the connection key (tgid << 32 | fd, tracked
// from accept/connect), described by meta (l7_meta: direction, buffer kind,
// source, iovec count), entered at enter_ns (0: when it returned). It
// applies the filters left for the first call, classifies an undecided
// connection, captures by the protocol's policy and sends the record. A global function: each program
// that calls it is verified with it once. TLS sources call it from their
// uprobes (l7/tls.h) with their source: the connection is then theirs. The
// socket's own sources (SOURCE_SYSCALL, SOURCE_KERNEL: l7/kfunc.h) leave a
// TLS source's connection alone.
__noinline int l7_capture(__u64 key, __u64 meta, __u64 ptr, __u64 ret, __u64 enter_ns)
{
	__u32 dir = meta & 1;
	__u32 source = (meta >> 16) & 0xff;
	__u32 fd = key;
	if (ret == 0 || ret > (1ULL << 40))
		return 0;
	struct conn_info *ci = bpf_map_lookup_elem(&conns, &key);
	if (!ci)
		return 0;
	if (source == SOURCE_OPENSSL || source == SOURCE_GOTLS) {
		if (!(ci->flags & CONN_TLS_PLAINTEXT)) {
			// From now on the plaintext is the TLS source's; what the
			// syscalls saw of the handshake decided nothing.
			ci->flags |= CONN_TLS_PLAINTEXT;
			if (ci->state == STATE_TLS || ci->state == STATE_NONE) {
				ci->state = STATE_UNDECIDED;
				ci->probes = 0;
			}
		}
	} else if (ci->flags & CONN_TLS_PLAINTEXT) {
		return 0;
	}
	if (ci->state == STATE_NONE || ci->state == STATE_UPGRADED || ci->state == STATE_TLS)
		return 0;
	if (ci->unfiltered && filter_first_call(key))
		return 0;
	__u32 ce = capture_call(key, meta, ptr, ret, capture_state(ci, dir));
	__u32 zero = 0;
	struct data_event *ev = bpf_map_lookup_elem(&scratch, &zero);
	if (!ev)
		return 0;
	// One range for every capture path (the masks change nothing: captured
	// <= MAX_CAPTURE, end below 8192).
	__u32 captured = ce & 8191;
	__u32 end = (ce >> 16) & 8191;
	if (end < captured)
		end = captured;
	asm volatile("%[c] &= 8191\n\t"
		     "%[e] &= 8191"
		     : [c] "+r"(captured), [e] "+r"(end));
	int request_dir = (ci->role == ROLE_SERVER) == (dir == DIR_READ);
	int starts = -1; // not asked yet
	if (ci->state == STATE_UNDECIDED) {
		if (ci->role == ROLE_SERVER && peer_is_self(ci)) {
			ci->state = STATE_NONE;
			bump(&counters, HC_CONNS_SELF);
			return 0;
		}
		__u32 c = l7_classify(captured, ret, request_dir, ci->midstream);
		if (c == CLASS_TLS) {
			count_ciphertext(ci);
			return 0;
		}
		if (c & CLASS_DISABLED) {
			count_none(ci, c & 0xf);
			return 0;
		}
		if (c == CLASS_NONE || c == CLASS_WAIT || c >= L7_PROTO_MAX) {
			if (ci->midstream) {
				// Inside an exchange that began before the agent: wait
				// for the next request to start.
				if (request_dir && ++ci->probes >= MIDSTREAM_PROBES)
					count_none(ci, UNOBSERVED_UNKNOWN);
				return 0;
			}
			if (++ci->probes >= CLASSIFY_RECORDS)
				count_none(ci, UNOBSERVED_UNKNOWN);
			return 0;
		}
		ci->proto = c;
		ci->source = source;
		ci->state = STATE_DECIDED;
		apply_policy(ci, c);
		if (ci->role == ROLE_SERVER && (ci->policy & POLICY_CLIENT_SIDE) &&
		    recorded_by_client(key, request_dir, 0))
			return 0;
		starts = c == L7_PROTO_HTTP1;
		bump(&counters, HC_CONNS_HTTP);
		bump(&counters, HC_PROTO_CONNS(c & 7));
		emit_conn_event(EVENT_OPEN, fd, ci);
	} else if (ci->role == ROLE_SERVER && (ci->policy & POLICY_CLIENT_SIDE) &&
		   !(ci->flags & CONN_CLIENT_CHECKED) && recorded_by_client(key, request_dir, 1)) {
		return 0;
	}
	__u8 proto = ci->proto;
	if (proto == L7_PROTO_HTTP2) {
		// The frame walk (l7/http2.h), called here rather than from
		// capture_call to keep it off the deepest call chain; ptr 0 for
		// an iovec call: it walks the prefix only.
		end = capture_h2(key, ((meta >> 8) & 0xff) == CALL_BUF ? ptr : 0, ret, captured, dir);
		asm volatile("%[e] &= 8191" : [e] "+r"(end));
		if (end < captured)
			end = captured;
	}
	ev->type = EVENT_DATA;
	ev->dir = dir;
	ev->role = ci->role;
	ev->err = 0;
	ev->tgid = key >> 32;
	ev->fd = fd;
	ev->captured = captured;
	ev->start_ns = ci->start_ns;
	__u64 now = bpf_ktime_get_ns();
	ev->enter_ns = enter_ns ? enter_ns : now;
	ev->exit_ns = now;
	ev->total = ret;
	ev->req_records = ci->req_records;
	ev->seg_bytes = end - captured;
	ev->resp_records = ci->resp_records;
	ev->proto = proto;
	ev->source = source;
	count_record(ci, request_dir);
	if (!request_dir) {
		// A dropped request start was answered: user space learns at
		// close whether the last one was (or not).
		ci->lost_start = 0;
		if (proto == L7_PROTO_HTTP1 && is_switching(ev->data, captured)) {
			// HTTP/1 ends with this record (user space counts the
			// upgrade from it); an h2c upgrade continues as HTTP/2
			// when that is on (l7/http2.h).
			bump(&counters, HC_CONNS_UPGRADED);
			if ((proto_mask & (1 << L7_PROTO_HTTP2)) && h2c_switch(ev, captured)) {
				ci->proto = L7_PROTO_HTTP2;
				apply_policy(ci, L7_PROTO_HTTP2);
				bump(&counters, HC_PROTO_CONNS(L7_PROTO_HTTP2));
			} else {
				ci->state = STATE_UPGRADED;
			}
		}
	}
	__u64 size = DATA_HDR_SIZE + (__u64)end;
	// as in read_user_at: bound the size where the helper sees it
	asm volatile("%[s] &= 16383" : [s] "+r"(size));
	if (output_data(ev, size)) {
		bump(&counters, HC_DROP_RINGBUF_FULL);
		bump(&counters, HC_PROTO_DROPS(proto & 7));
		if (proto != L7_PROTO_HTTP1)
			return 0;
		if (starts < 0) // as likely a request start as the kernel can tell cheaply
			starts = request_dir && (is_known_start(ev->data, captured) || token_method(ev->data, captured));
		if (starts) {
			bump(&counters, HC_DROP_REQUEST_STARTS);
			count_drop(0);
			ci->lost_start = 1;
		}
		return 0;
	}
	bump(&counters, HC_EVENTS_SUBMITTED);
	return 0;
}

// TLS data sources (the tls collector's uprobes) call l7_capture.
#include "l7/tls.h"

static __always_inline void save_call(__u32 fd, __u64 ptr, __u64 count, __u8 kind)
{
	__u64 key = conn_key(fd);
	if (!seen(key >> 32))
		return;
	struct conn_info *ci = bpf_map_lookup_elem(&conns, &key);
	if (!ci)
		ci = inherited(fd, key);
	if (!ci)
		return;
#ifdef L7_TLS_SYSCALL_HOOK
	if (L7_TLS_SYSCALL_HOOK(fd, ci))
		kind = CALL_TLS_MARK; // a TLS connection: skipped, but its result is wanted
	else
#endif
	if (skipped(ci))
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

static __always_inline void handle_exit(long ret, __u8 dir)
{
	__u64 tid = bpf_get_current_pid_tgid();
	struct call_args *ap = bpf_map_lookup_elem(&calls, &tid);
	if (!ap)
		return;
	struct call_args a = *ap;
	bpf_map_delete_elem(&calls, &tid);
#ifdef L7_TLS_SYSCALL_DONE
	if (a.kind == CALL_TLS_MARK) {
		L7_TLS_SYSCALL_DONE(a.fd, dir, ret);
		return;
	}
#endif
	if (ret < 0 && a.kind != CALL_CONNECT)
		emit_call_error(a.fd, ret, dir, a.enter_ns);
	if (ret <= 0 || a.kind == CALL_CONNECT)
		return;
	l7_capture(conn_key(a.fd), l7_meta(dir, a.kind, SOURCE_SYSCALL, a.count), a.ptr, ret, a.enter_ns);
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

// ---- one program per call (kernels with bpf_task_pt_regs, 5.15+)
//
// At a syscall's exit the task's saved user registers still hold the
// call's arguments, so one program at exit can do what the entry+exit pair
// does, and the entry program, which runs for every read and write on the
// host, tracked or not, is not attached at all. The call's entry time is
// not known: the record's enter and exit are both the exit's. User space
// attaches these first and falls back to the pairs above where the
// verifier refuses them (no bpf_task_pt_regs in tracepoint programs).

static __always_inline struct pt_regs *call_regs(void)
{
	return (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
}

// The call's arguments and number in call_regs' registers, loaded directly:
// bpf_task_pt_regs returns a BTF pointer, which the program may read
// without a bpf_probe_read_kernel call each (PT_REGS_*_CORE_SYSCALL make
// one per register, ~20 ns here).
#if defined(__TARGET_ARCH_x86)
#define CALL_ARG1(r) ((r)->di)
#define CALL_ARG2(r) ((r)->si)
#define CALL_ARG3(r) ((r)->dx)
#define CALL_ARG4(r) ((r)->r10)
#define CALL_NR(r) ((r)->orig_ax)
#elif defined(__TARGET_ARCH_arm64)
#define CALL_ARG1(r) ((r)->orig_x0)
#define CALL_ARG2(r) ((r)->regs[1])
#define CALL_ARG3(r) ((r)->regs[2])
#define CALL_ARG4(r) ((r)->regs[3])
#define CALL_NR(r) ((r)->syscallno)
#endif

// handle_exit1 hands one call that returned ret on descriptor fd to
// l7_capture; sk, when not 0, is the socket the call moved bytes through
// (the socket tracepoints: l7/socktp.h), which the connection's must be.
static __always_inline void handle_exit1(long ret, __u8 dir, __u8 kind, __u64 fd, __u64 ptr, __u64 count, __u64 sk)
{
	__u64 key = conn_key(fd);
	if (!seen(key >> 32))
		return;
	struct conn_info *ci = bpf_map_lookup_elem(&conns, &key);
	if (!ci)
		ci = inherited(fd, key);
	if (!ci || (sk && ci->sk != sk))
		return;
#ifdef L7_TLS_SYSCALL_HOOK
	if (L7_TLS_SYSCALL_HOOK(fd, ci))
		L7_TLS_SYSCALL_DONE(fd, dir, ret);
#endif
	if (skipped(ci))
		return;
	if (ret < 0) {
		emit_call_error(fd, ret, dir, bpf_ktime_get_ns());
		return;
	}
	if (ret == 0)
		return;
	// enter_ns 0: entered when it exits (l7_capture's one clock read)
	l7_capture(key, l7_meta(dir, kind, SOURCE_SYSCALL, count), ptr, ret, 0);
}

#define EXIT1(name, dir, kind, peek)                                                                  \
	SEC("tracepoint/syscalls/sys_exit_" #name)                                                    \
	int http_##name##_exit1(struct trace_event_raw_sys_exit *ctx)                                 \
	{                                                                                             \
		struct pt_regs *regs = call_regs();                                                   \
		if (!regs)                                                                            \
			return 0;                                                                     \
		__u64 fd = CALL_ARG1(regs);                                                           \
		__u64 ptr = CALL_ARG2(regs);                                                          \
		__u64 count = CALL_ARG3(regs);                                                        \
		if (peek == 4 && (CALL_ARG4(regs) & MSG_PEEK_))                                       \
			return 0;                                                                     \
		if (peek == 3 && (count & MSG_PEEK_))                                                 \
			return 0;                                                                     \
		if (kind == CALL_MSG)                                                                 \
			count = 0;                                                                    \
		if (kind == CALL_SENDFILE) {                                                          \
			ptr = 0;                                                                      \
			count = 0;                                                                    \
		}                                                                                     \
		handle_exit1(ctx->ret, dir, kind, (__u32)fd, ptr, count, 0);                          \
		return 0;                                                                             \
	}

EXIT1(read, DIR_READ, CALL_BUF, 0)
EXIT1(recvfrom, DIR_READ, CALL_BUF, 4)
EXIT1(readv, DIR_READ, CALL_IOV, 0)
EXIT1(recvmsg, DIR_READ, CALL_MSG, 3)
EXIT1(write, DIR_WRITE, CALL_BUF, 0)
EXIT1(sendto, DIR_WRITE, CALL_BUF, 0)
EXIT1(writev, DIR_WRITE, CALL_IOV, 0)
EXIT1(sendmsg, DIR_WRITE, CALL_MSG, 0)
EXIT1(sendfile64, DIR_WRITE, CALL_SENDFILE, 0)

// The kernel-function source (fentry/fexit, kprobes): the socket send and
// receive functions and the connection lifecycle, where the kernel has them.
#include "l7/kfunc.h"

// The socket tracepoints (tp_btf sock_send_length/sock_recv_length, 6.5+):
// one program per socket call, none on other reads and writes.
#include "l7/socktp.h"
