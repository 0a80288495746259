// TLS plaintext data sources: uprobes on OpenSSL's SSL_read/SSL_write (and
// their _ex variants) and on Go's crypto/tls (*Conn).Read/Write, attached
// by the tls collector's attacher (collectors/tls), one set per library or
// executable file. bpf/l7.c includes this header after l7_capture and
// before its syscall programs; the plaintext goes to
//
//	l7_capture(key, l7_meta(dir, CALL_BUF, source, 0), buf, n, enter_ns)
//
// with key = (tgid << 32 | fd) of the TCP connection the syscall programs
// track (accept/connect). The first such call marks the connection
// CONN_TLS_PLAINTEXT: from then on the syscall source leaves it alone (its
// ciphertext is neither parsed nor counted as unobserved TLS), and a
// connection held as TLS is classified afresh on the plaintext. Nothing is
// written to the process's memory.
//
// Processes whose TLS is instrumented are in tls_tgids (filled by user
// space, and here at OpenSSL's handshake, for a process that loaded an
// instrumented libssl after its exec): their handshake's ciphertext is held
// (STATE_TLS), not counted as unobserved, since their plaintext follows.
//
// Finding the descriptor. OpenSSL: an SSL_read/SSL_write makes its
// read/write system calls on the calling thread, which the syscall
// programs see (L7_TLS_SYSCALL_HOOK, below): the call in flight on that
// thread takes the descriptor, and SSL* -> fd is remembered for calls served
// from OpenSSL's buffer without a system call. No per-version struct
// offsets are needed. Go: from the *tls.Conn through the field offsets user
// space found in the executable (DWARF, or the generated table), by the
// executable's identity (device, inode).
#pragma once

// Per-CPU counters of the TLS sources (user space: otelbee.tls.*).
enum tls_counter {
	TLS_CALLS = 0,          // plaintext calls handed to l7_capture
	TLS_DROP_NO_FD = 1,     // an OpenSSL call whose descriptor was never seen
	TLS_DROP_ARGS_FULL = 2, // no room to remember a call in flight
	TLS_DROP_NO_OFFSETS = 3, // a Go executable without its offsets in go_fd_offsets
	TLS_DROP_BAD_FD = 4,    // a Go connection whose descriptor could not be read
	// Memory-BIO programs (Node): an SSL call on an SSL* known on one
	// connection entered right after a read on another (the ordering the
	// descriptor is learned from did not hold; nothing is changed).
	TLS_MEMBIO_MISMATCH = 5,
	TLS_MEMBIO_LEARNED = 6, // SSL* -> fd learned from the read before the SSL call
	// An OpenSSL call that entered while its file's probes were being
	// attached or removed (tls_files): not followed, so never seen in part.
	TLS_DROP_ATTACHING = 7,
	TLS_COUNTER_MAX = 8,
};

const enum tls_counter *unused_tls_counter __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TLS_COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} tls_counters SEC(".maps");

// ---- OpenSSL

// A file's probes are attached one link at a time (~100-200 ms apart under
// load) and removed likewise: a call made while only some are there would
// be seen in part (its entry without its return, a request without its
// response), so garbage for the parsers. Each OpenSSL link carries its
// file's slot here as its attach cookie; user space sets tls_files[slot]
// to 1 after the file's last link and back to 0 before its first link is
// closed, and the entry programs act only while it is 1. Cookie 0: a link
// without a slot (not gated). Kernels without bpf_get_attach_cookie (before
// 5.15) compile the check out: there only the link order (returns before
// entries) limits the window. Go needs no gate: its programs all look up
// go_fd_offsets, written after the last link and deleted before the first
// is closed.
#define TLS_FILE_SLOTS 256

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TLS_FILE_SLOTS);
	__type(key, __u32);
	__type(value, __u8);
} tls_files SEC(".maps");

// ssl_file_ready: the probe's file has all its links (tls_files); else the
// call is counted and left alone.
static __always_inline int ssl_file_ready(void *ctx)
{
	if (!bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_get_attach_cookie))
		return 1;
	__u32 slot = bpf_get_attach_cookie(ctx);
	if (!slot)
		return 1;
	__u8 *on = bpf_map_lookup_elem(&tls_files, &slot);
	if (on && *on)
		return 1;
	bump(&tls_counters, TLS_DROP_ATTACHING);
	return 0;
}

// An SSL_read/SSL_write in flight on a thread.
struct ssl_call {
	__u64 ssl;
	__u64 buf;
	__u64 size_ptr; // _ex: where the byte count is written; 0 for SSL_read/SSL_write
	__u64 enter_ns;
	__u32 fd;     // the descriptor its system calls used
	__u8 has_fd;  // fd is set
	__u8 _pad[3];
};

// LRU: a thread killed inside a call leaves its entry behind.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64); // pid_tgid
	__type(value, struct ssl_call);
} ssl_calls SEC(".maps");

// ssl_seen[tgid % SEEN_SLOTS] is set before a thread of the process makes
// an ssl_calls entry (ssl_enter, the handshake's entry), so that
// tls_syscall_hook skips its ssl_calls lookup, which every read and write
// on a tracked connection otherwise pays, in processes that never entered
// an instrumented SSL call: most of them (plaintext servers and clients,
// Go's crypto/tls). Like conns_seen (bpf/l7.c): one byte per slot in .bss,
// only ever set, so a shared slot or a reused tgid costs the lookup the
// mark would have spared and never hides a call in flight. The entry and
// the socket calls it waits for are on one thread, in that order.
__u8 ssl_seen[SEEN_SLOTS];


struct ssl_key {
	__u64 ssl;
	__u32 tgid;
	__u32 _pad;
};

// The descriptor of each SSL* seen, for calls that make no system call.
// LRU: SSL_free is not probed (a trap per connection), so entries of freed
// SSL*s age out; a reused SSL* address gets its fd anew at its first system
// call.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ssl_key);
	__type(value, __u32);
} ssl_fds SEC(".maps");

// Memory-BIO programs (Node's TLSWrap, Python's asyncio): OpenSSL reads
// and writes memory, the program moves the ciphertext with its own system
// calls outside the SSL calls, so no socket call is made inside one. On
// input the order is synchronous: libuv's uv__read makes read(fd) and hands
// the ciphertext to that stream's TLSWrap, whose Cycle calls SSL_write
// (ClearIn: cleartext written before the handshake ended) and SSL_read
// (ClearOut) for that stream on the same thread, before the event loop
// makes any other read. So the connection of the last read that returned
// ciphertext outside an SSL call on a thread (membio_reads) is taken, once,
// by the thread's next SSL call: an SSL* without a descriptor gets that
// read's (ssl_fds, and fd_ssls to forget it at the connection's close).
// Anything else leaves the SSL* as it was; a write's descriptor is never
// guessed from the write. A process is handled so (membio_tgids) after its
// first SSL call that made no system call and whose SSL* had no descriptor.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u8);
} membio_tgids SEC(".maps");

// The descriptor of the last read with ciphertext outside an SSL call, by
// thread; taken (deleted) by the thread's next SSL call.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64); // pid_tgid
	__type(value, __u32);
} membio_reads SEC(".maps");

// The SSL* learned for a connection (tgid << 32 | fd), so that its close
// forgets the SSL*'s descriptor: a freed SSL*'s address, reused by a
// later connection, must not inherit it.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u64);
} fd_ssls SEC(".maps");

// tls_syscall_hook runs for every read/write family call on a tracked
// connection (at its entry; on kernels with one program per call, at its
// exit): inside an SSL call on this thread, the call takes the descriptor.
// It returns 1 for a call on a TLS connection of a memory-BIO process made
// outside any SSL call, whose result tls_syscall_done wants.
static __always_inline int tls_syscall_hook(__u32 fd, const struct conn_info *ci)
{
	// A connection Go's crypto/tls feeds (decided on its plaintext): no
	// OpenSSL call reads it and no memory BIO is behind it, so its
	// ciphertext's calls stop here, after their one lookup (conns), and
	// the syscall source skips them (CONN_TLS_PLAINTEXT).
	if ((ci->flags & CONN_TLS_PLAINTEXT) && ci->source == SOURCE_GOTLS)
		return 0;
	__u64 tid = bpf_get_current_pid_tgid();
	struct ssl_call *c = 0;
	if (ssl_seen[seen_slot(tid >> 32)])
		c = bpf_map_lookup_elem(&ssl_calls, &tid);
	if (c) {
		c->fd = fd;
		c->has_fd = 1;
		return 0;
	}
	if (ci->state != STATE_TLS && !(ci->flags & CONN_TLS_PLAINTEXT))
		return 0;
	__u32 tgid = tid >> 32;
	return bpf_map_lookup_elem(&membio_tgids, &tgid) != 0;
}

// tls_syscall_done: a call tls_syscall_hook chose returned ret. A read
// with bytes leaves its descriptor for the thread's next SSL call; any
// other outcome (nothing read, a write: the input's SSL_read would have
// come before it) leaves nothing.
static __always_inline void tls_syscall_done(__u32 fd, __u8 dir, long ret)
{
	__u64 tid = bpf_get_current_pid_tgid();
	if (dir == DIR_READ && ret > 0)
		bpf_map_update_elem(&membio_reads, &tid, &fd, BPF_ANY);
	else
		bpf_map_delete_elem(&membio_reads, &tid);
}

// tls_close_hook: a tracked connection closes; the SSL* learned for it
// forgets its descriptor.
static __always_inline void tls_close_hook(__u64 key)
{
	__u64 *ssl = bpf_map_lookup_elem(&fd_ssls, &key);
	if (!ssl)
		return;
	struct ssl_key k = {.ssl = *ssl, .tgid = key >> 32};
	__u32 *fd = bpf_map_lookup_elem(&ssl_fds, &k);
	if (fd && *fd == (__u32)key)
		bpf_map_delete_elem(&ssl_fds, &k);
	bpf_map_delete_elem(&fd_ssls, &key);
}

#define L7_TLS_SYSCALL_HOOK(fd, ci) tls_syscall_hook(fd, ci)
#define L7_TLS_SYSCALL_DONE(fd, dir, ret) tls_syscall_done(fd, dir, ret)

// membio_learn: at an SSL call's entry, the descriptor of the read just
// before it on this thread (if any) is taken; an SSL* without one gets it.
static __always_inline void membio_learn(__u64 ssl)
{
	__u64 tid = bpf_get_current_pid_tgid();
	__u32 *fp = bpf_map_lookup_elem(&membio_reads, &tid);
	if (!fp)
		return;
	__u32 fd = *fp;
	bpf_map_delete_elem(&membio_reads, &tid);
	struct ssl_key k = {.ssl = ssl, .tgid = tid >> 32};
	__u32 *known = bpf_map_lookup_elem(&ssl_fds, &k);
	if (known) {
		if (*known != fd)
			bump(&tls_counters, TLS_MEMBIO_MISMATCH);
		return;
	}
	__u64 key = (tid & 0xffffffff00000000ULL) | fd;
	bpf_map_update_elem(&ssl_fds, &k, &fd, BPF_ANY);
	bpf_map_update_elem(&fd_ssls, &key, &ssl, BPF_ANY);
	bump(&tls_counters, TLS_MEMBIO_LEARNED);
}

static __always_inline void ssl_enter(void *ctx, __u64 ssl, __u64 buf, __u64 size_ptr)
{
	if (!ssl_file_ready(ctx))
		return;
	membio_learn(ssl);
	__u64 tid = bpf_get_current_pid_tgid();
	struct ssl_call c = {
		.ssl = ssl,
		.buf = buf,
		.size_ptr = size_ptr,
		.enter_ns = bpf_ktime_get_ns(),
	};
	mark_seen(ssl_seen, tid >> 32);
	if (bpf_map_update_elem(&ssl_calls, &tid, &c, BPF_ANY))
		bump(&tls_counters, TLS_DROP_ARGS_FULL);
}

// membio_mark: an SSL call made no system call and its SSL* has no
// descriptor: the process drives OpenSSL through memory BIOs. It is in
// tls_tgids from now on too: Node's client makes its ClientHello in an
// SSL_read (no SSL_do_handshake), and a process younger than user space's
// look at it would otherwise have that ciphertext, written right after,
// counted as unobserved TLS, and the connection never held as TLS.
static __always_inline void membio_mark(const struct ssl_key *k)
{
	if (bpf_map_lookup_elem(&membio_tgids, &k->tgid) || bpf_map_lookup_elem(&ssl_fds, k))
		return;
	__u8 one = 1;
	bpf_map_update_elem(&membio_tgids, &k->tgid, &one, BPF_NOEXIST);
	if (!bpf_map_lookup_elem(&tls_tgids, &k->tgid))
		bpf_map_update_elem(&tls_tgids, &k->tgid, &one, BPF_NOEXIST);
}

// ssl_learn_nested: an SSL call made a socket call: its descriptor is the
// SSL*'s, and the process uses socket BIOs (whatever an earlier call
// without a system call suggested): no longer handled as a memory BIO's.
static __always_inline void ssl_learn_nested(const struct ssl_key *k, __u32 fd)
{
	bpf_map_update_elem(&ssl_fds, k, &fd, BPF_ANY);
	bpf_map_delete_elem(&membio_tgids, &k->tgid);
}

// membio_owned: the SSL*'s descriptor fd was learned from a memory BIO's
// read (fd_ssls), not from a socket call inside its SSL call.
static __always_inline int membio_owned(const struct ssl_key *k, __u32 fd)
{
	__u64 owner = (__u64)k->tgid << 32 | fd;
	__u64 *s = bpf_map_lookup_elem(&fd_ssls, &owner);
	return s && *s == k->ssl;
}

static __always_inline void ssl_exit(int rc, __u32 dir)
{
	__u64 tid = bpf_get_current_pid_tgid();
	struct ssl_call *cp = bpf_map_lookup_elem(&ssl_calls, &tid);
	if (!cp)
		return;
	// Fields one by one, not a copy of the struct: l7_capture's stack is
	// most of the 512 bytes a program and its calls may use.
	struct ssl_key k = {.ssl = cp->ssl, .tgid = tid >> 32};
	__u64 buf = cp->buf, size_ptr = cp->size_ptr, enter_ns = cp->enter_ns;
	__u32 fd = cp->fd;
	__u8 has_fd = cp->has_fd;
	bpf_map_delete_elem(&ssl_calls, &tid);
	if (!has_fd && rc <= 0)
		membio_mark(&k);
	__u64 n = rc;
	if (size_ptr) {
		// SSL_read_ex/SSL_write_ex (1 on success) and the inner
		// ssl_read_internal/ssl_write_internal they and SSL_read/SSL_write
		// call (> 0 on success): the count through the pointer
		if (rc <= 0 || bpf_probe_read_user(&n, sizeof(n), (const void *)size_ptr))
			return;
	} else if (rc <= 0) {
		return;
	}
	if (n == 0)
		return;
	__u32 *known = bpf_map_lookup_elem(&ssl_fds, &k);
	// A descriptor learned from a memory BIO's read stays: a socket call
	// inside its SSL call is the program's (a callback into JavaScript),
	// not the SSL*'s.
	if (has_fd && known && *known != fd && membio_owned(&k, *known))
		has_fd = 0;
	if (has_fd) {
		if (!known || *known != fd)
			ssl_learn_nested(&k, fd);
	} else if (known) {
		fd = *known;
	} else {
		// Not a sign of a memory BIO: a socket BIO's SSL_read served from
		// what an unprobed call (SSL_peek, a handshake without its return
		// probe) read is the same.
		bump(&tls_counters, TLS_DROP_NO_FD);
		return;
	}
	bump(&tls_counters, TLS_CALLS);
	l7_capture((tid & 0xffffffff00000000ULL) | fd, l7_meta(dir, CALL_BUF, SOURCE_OPENSSL, 0), buf, n, enter_ns);
}

SEC("uprobe")
int tls_ssl_read_enter(struct pt_regs *ctx)
{
	ssl_enter(ctx, PT_REGS_PARM1(ctx), PT_REGS_PARM2(ctx), 0);
	return 0;
}

SEC("uprobe")
int tls_ssl_read_ex_enter(struct pt_regs *ctx)
{
	ssl_enter(ctx, PT_REGS_PARM1(ctx), PT_REGS_PARM2(ctx), PT_REGS_PARM4(ctx));
	return 0;
}

SEC("uretprobe")
int tls_ssl_read_exit(struct pt_regs *ctx)
{
	ssl_exit((int)PT_REGS_RC(ctx), DIR_READ); // every probed function returns an int
	return 0;
}

SEC("uprobe")
int tls_ssl_write_enter(struct pt_regs *ctx)
{
	ssl_enter(ctx, PT_REGS_PARM1(ctx), PT_REGS_PARM2(ctx), 0);
	return 0;
}

SEC("uprobe")
int tls_ssl_write_ex_enter(struct pt_regs *ctx)
{
	ssl_enter(ctx, PT_REGS_PARM1(ctx), PT_REGS_PARM2(ctx), PT_REGS_PARM4(ctx));
	return 0;
}

SEC("uretprobe")
int tls_ssl_write_exit(struct pt_regs *ctx)
{
	ssl_exit((int)PT_REGS_RC(ctx), DIR_WRITE);
	return 0;
}

// At SSL_do_handshake's entry (SSL_connect and SSL_accept call it too) the
// process is known to use an instrumented libssl before its handshake's
// ciphertext reaches the syscall programs: one map update per connection.
// The handshake is an SSL call in flight too (ssl_calls, no buffer): the
// socket calls it makes give the SSL* its descriptor, so that an
// SSL_read served from what the handshake read (TLS 1.3: a request sent
// with the client's Finished) finds it.
SEC("uprobe")
int tls_ssl_handshake_enter(struct pt_regs *ctx)
{
	if (!ssl_file_ready(ctx))
		return 0;
	__u64 tid = bpf_get_current_pid_tgid();
	__u32 tgid = tid >> 32;
	if (!bpf_map_lookup_elem(&tls_tgids, &tgid)) {
		__u8 one = 1;
		bpf_map_update_elem(&tls_tgids, &tgid, &one, BPF_NOEXIST);
	}
	struct ssl_call c = {.ssl = PT_REGS_PARM1(ctx)};
	mark_seen(ssl_seen, tgid);
	if (bpf_map_update_elem(&ssl_calls, &tid, &c, BPF_ANY))
		bump(&tls_counters, TLS_DROP_ARGS_FULL);
	return 0;
}

SEC("uretprobe")
int tls_ssl_handshake_exit(struct pt_regs *ctx)
{
	__u64 tid = bpf_get_current_pid_tgid();
	struct ssl_call *cp = bpf_map_lookup_elem(&ssl_calls, &tid);
	if (!cp)
		return 0;
	struct ssl_key k = {.ssl = cp->ssl, .tgid = tid >> 32};
	__u32 fd = cp->fd;
	__u8 has_fd = cp->has_fd;
	bpf_map_delete_elem(&ssl_calls, &tid);
	if (!has_fd)
		return 0;
	__u32 *known = bpf_map_lookup_elem(&ssl_fds, &k);
	if (known && (*known == fd || membio_owned(&k, *known)))
		return 0;
	ssl_learn_nested(&k, fd);
	return 0;
}

// ---- Go crypto/tls
//
// Register ABI: the receiver and the slice's pointer and length in the
// first three integer registers, the results from the first one; the
// current goroutine in a fixed register (r14 amd64, x28 arm64). A goroutine
// may move between threads inside Read, so calls in flight are keyed by
// goroutine, and the returns are probed at each RET instruction (user space
// disassembles the function): a uretprobe would rewrite the return address
// on a stack the runtime moves.
#if defined(__TARGET_ARCH_x86)
#define GO_PARAM1(x) ((x)->ax)
#define GO_PARAM2(x) ((x)->bx)
#define GO_PARAM3(x) ((x)->cx)
#define GO_G(x) ((x)->r14)
#elif defined(__TARGET_ARCH_arm64)
#define GO_PARAM1(x) ((x)->regs[0])
#define GO_PARAM2(x) ((x)->regs[1])
#define GO_PARAM3(x) ((x)->regs[2])
#define GO_G(x) ((x)->regs[28])
#endif

// struct go_offsets, struct go_exe and go_fd_offsets are in bpf/l7.c, beside
// tls_tgids: the syscall side reads them too (count_ciphertext).

struct go_call {
	__u64 buf;
	__u64 enter_ns;
	__u32 fd;
	__u32 _pad;
};

struct go_key {
	__u64 g;
	__u32 tgid;
	__u32 _pad;
};

// Reads in flight by goroutine (LRU: a goroutine that panics inside Read
// leaves its entry behind).
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct go_key);
	__type(value, struct go_call);
} go_calls SEC(".maps");

const struct go_offsets *unused_go_offsets __attribute__((unused));
const struct go_exe *unused_go_exe __attribute__((unused));

// go_conn_key finds the tracked connection of a *tls.Conn: its key in
// conns, or 0 when the executable's offsets are unknown or the connection
// is not tracked (not TCP, not observed).
static __always_inline __u64 go_conn_key_at(const struct go_offsets *o, __u64 conn)
{
	__u64 tcpconn = 0, netfd = 0;
	__s32 fd = -1;
	if (bpf_probe_read_user(&tcpconn, sizeof(tcpconn), (const void *)(conn + o->conn_iface)) || !tcpconn ||
	    bpf_probe_read_user(&netfd, sizeof(netfd), (const void *)(tcpconn + o->tcpconn_fd)) || !netfd ||
	    bpf_probe_read_user(&fd, sizeof(fd), (const void *)(netfd + o->netfd_sysfd)) || fd < 0) {
		bump(&tls_counters, TLS_DROP_BAD_FD);
		return 0;
	}
	__u64 key = conn_key(fd);
	if (!bpf_map_lookup_elem(&conns, &key))
		return 0;
	return key;
}

static __always_inline __u64 go_conn_key(__u64 conn)
{
	struct go_offsets *o = current_go_offsets();
	if (!o) {
		bump(&tls_counters, TLS_DROP_NO_OFFSETS);
		return 0;
	}
	return go_conn_key_at(o, conn);
}

SEC("uprobe")
int tls_go_read_enter(struct pt_regs *ctx)
{
	__u64 key = go_conn_key(GO_PARAM1(ctx));
	if (!key)
		return 0;
	struct go_key k = {.g = GO_G(ctx), .tgid = key >> 32};
	struct go_call c = {.buf = GO_PARAM2(ctx), .enter_ns = bpf_ktime_get_ns(), .fd = key};
	if (bpf_map_update_elem(&go_calls, &k, &c, BPF_ANY))
		bump(&tls_counters, TLS_DROP_ARGS_FULL);
	return 0;
}

// At each return of Read: n in the first result register.
SEC("uprobe")
int tls_go_read_exit(struct pt_regs *ctx)
{
	struct go_key k = {.g = GO_G(ctx), .tgid = current_tgid()};
	struct go_call *cp = bpf_map_lookup_elem(&go_calls, &k);
	if (!cp)
		return 0;
	struct go_call c = *cp;
	bpf_map_delete_elem(&go_calls, &k);
	__s64 n = GO_PARAM1(ctx);
	if (n <= 0)
		return 0;
	bump(&tls_counters, TLS_CALLS);
	l7_capture((__u64)k.tgid << 32 | c.fd, l7_meta(DIR_READ, CALL_BUF, SOURCE_GOTLS, 0), c.buf, n, c.enter_ns);
	return 0;
}

// At Read's one call of runtime.memmove (copy(b, c.input's unread
// plaintext), found by user space; amd64): ax the destination, b's data;
// bx the plaintext; cx the count Read returns. Probed instead of Read's
// returns, each a single-stepped RET (~14 µs on a VM against ~0.4 µs for
// this emulated call). The destination must be the buffer Read was called
// with, so an entry left by a Read that failed is never taken for
// another's.
SEC("uprobe")
int tls_go_read_copy(struct pt_regs *ctx)
{
	struct go_key k = {.g = GO_G(ctx), .tgid = current_tgid()};
	struct go_call *cp = bpf_map_lookup_elem(&go_calls, &k);
	if (!cp)
		return 0;
	__u64 buf = cp->buf, enter_ns = cp->enter_ns;
	__u32 fd = cp->fd;
	bpf_map_delete_elem(&go_calls, &k);
	__s64 n = GO_PARAM3(ctx);
	if (n <= 0 || GO_PARAM1(ctx) != buf)
		return 0;
	bump(&tls_counters, TLS_CALLS);
	l7_capture((__u64)k.tgid << 32 | fd, l7_meta(DIR_READ, CALL_BUF, SOURCE_GOTLS, 0), GO_PARAM2(ctx), n, enter_ns);
	return 0;
}

// tls_go_read_copy_slot is tls_go_read_copy without an entry probe: the
// receiver is read from the stack slot Read spilled it to in its prologue
// (go_offsets.read_recv_slot, from the stack pointer at the copy; user
// space found by disassembly that the slot is written there only, on every
// path, and that the stack pointer is the body's at the copy). The
// destination is the caller's buffer (Read copies into b itself), the
// count what Read returns. Read's entry probe is then not attached: net/http
// makes two Reads per request (the request's and the background read that
// ends in an error when the handler is done), so this is two traps and two
// program runs fewer per request. The call's start is the copy's time, as
// for the syscall source's one program per call.
SEC("uprobe")
int tls_go_read_copy_slot(struct pt_regs *ctx)
{
	__s64 n = GO_PARAM3(ctx);
	if (n <= 0)
		return 0;
	struct go_offsets *o = current_go_offsets();
	if (!o || !o->read_recv_slot) {
		bump(&tls_counters, TLS_DROP_NO_OFFSETS);
		return 0;
	}
	__u64 conn = 0;
	if (bpf_probe_read_user(&conn, sizeof(conn), (const void *)(PT_REGS_SP(ctx) + o->read_recv_slot)) || !conn) {
		bump(&tls_counters, TLS_DROP_BAD_FD);
		return 0;
	}
	__u64 key = go_conn_key_at(o, conn);
	if (!key)
		return 0;
	bump(&tls_counters, TLS_CALLS);
	l7_capture(key, l7_meta(DIR_READ, CALL_BUF, SOURCE_GOTLS, 0), GO_PARAM2(ctx), n, bpf_ktime_get_ns());
	return 0;
}

// Write is captured at its entry: the plaintext is all there, and Write
// returns only when all of it was written or the connection failed, so
// the return probes (a trap each) would add only the call's end time.
SEC("uprobe")
int tls_go_write_enter(struct pt_regs *ctx)
{
	__u64 key = go_conn_key(GO_PARAM1(ctx));
	if (!key)
		return 0;
	__u64 n = GO_PARAM3(ctx);
	if (n == 0)
		return 0;
	bump(&tls_counters, TLS_CALLS);
	l7_capture(key, l7_meta(DIR_WRITE, CALL_BUF, SOURCE_GOTLS, 0), GO_PARAM2(ctx), n, bpf_ktime_get_ns());
	return 0;
}
