// The kernel-function data source of the L7 layer: where the kernel lets
// BPF trace its functions (fentry/fexit, else kprobes), the layer takes its
// data and the connection lifecycle from them and attaches no system call
// tracepoint. A syscalls:* tracepoint, once attached, sends every system
// call of every process through the kernel's slow path; these run only for
// the calls they trace.
//
// Lifecycle: the system call functions themselves (__x64_sys_accept4,
// __x64_sys_connect, __x64_sys_close...: their arguments are in the saved
// registers they are given), so connections are still named by (process,
// descriptor) and tracked exactly as from the tracepoints (track,
// close_fd).
//
// Data: the socket layer's send and receive functions, which every way of
// moving bytes through a TCP or Unix stream socket goes through (read,
// write, readv, writev, recvfrom, sendto, recvmsg, sendmsg, and sendfile
// from 6.5): tcp_sendmsg, inet_recvmsg and inet6_recvmsg (tcp_recvmsg's
// arguments changed in 5.19; these did not), unix_stream_sendmsg and
// unix_stream_recvmsg, and before 6.5 tcp_sendpage and unix_stream_sendpage
// for sendfile (from 6.5 it is a sendmsg of kernel pages). They see
// the socket: sock_keys maps it to the connection's key, and the entry's
// conn_info.sk must match (a socket's memory is reused). The entry program
// describes the call's buffer from the msghdr's iov_iter, read field by
// field with CO-RE: ITER_UBUF (one user buffer, 6.0+); ITER_IOVEC (5.10:
// every call; later readv, writev, sendmsg, recvmsg) with one iovec as that
// buffer, with several as the system call's own user iovec array or
// msghdr, found in the task's saved registers (the iov_iter's array is the
// kernel's copy, and the capture reads user memory); anything else
// (ITER_BVEC: sendfile's pages) as bytes counted, none captured. The
// return program knows the byte count and hands the call to l7_capture
// (SOURCE_KERNEL), as the syscall pairs do (through calls, by thread), with
// the call's real entry time.
//
// Connections open before the agent started get their socket from an
// iterator over every process's descriptors (l7_existing_socks). Not
// covered: accept/connect made through io_uring (their data would be seen
// once tracked), and SOCK_SEQPACKET Unix sockets (never tracked).
#pragma once

#if defined(__TARGET_ARCH_x86)
#define L7_SYS(name) "__x64_sys_" #name
#elif defined(__TARGET_ARCH_arm64)
#define L7_SYS(name) "__arm64_sys_" #name
#endif

// iov_iter before 5.14: the type is a bit set with the direction, and the
// iovec array is iov (until 6.4, then __iov).
struct iov_iter___old {
	unsigned int type;
} __attribute__((preserve_access_index));

struct iov_iter___iov {
	const struct iovec *iov;
} __attribute__((preserve_access_index));

// The system calls that move several iovecs, whose user array the capture
// reads (the iov_iter's array is the kernel's copy, which it cannot).
#if defined(__TARGET_ARCH_x86)
#define NR_READV 19
#define NR_WRITEV 20
#define NR_SENDMSG 46
#define NR_RECVMSG 47
#define SYSCALL_NR(regs) BPF_CORE_READ(regs, orig_ax)
#elif defined(__TARGET_ARCH_arm64)
#define NR_READV 65
#define NR_WRITEV 66
#define NR_SENDMSG 211
#define NR_RECVMSG 212
#define SYSCALL_NR(regs) BPF_CORE_READ(regs, syscallno)
#endif

// The kernel stack's size, where the task's saved user registers end it
// (task_pt_regs), for kernels without bpf_task_pt_regs (before 5.15): 16
// KiB on x86-64 and arm64 without KASAN. What is read there is checked (the
// system call number and the descriptor) before it is used.
#define KF_THREAD_SIZE 16384

static __always_inline struct pt_regs *kf_user_regs(void)
{
	if (bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_task_pt_regs))
		return (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	void *stack = BPF_CORE_READ(task, stack);
	if (!stack)
		return 0;
	return (struct pt_regs *)(stack + KF_THREAD_SIZE) - 1;
}

// kf_buffer describes the buffer of the call about to run on msg's
// iov_iter on descriptor fd: a user buffer (CALL_BUF), the system call's
// user iovec array (CALL_IOV) or msghdr (CALL_MSG), or, for anything else
// (kernel pages: sendfile; several iovecs from another call, e.g. io_uring
// or preadv2), the bytes are counted and none captured (CALL_SENDFILE).
static __always_inline void kf_buffer(struct msghdr *msg, __u32 fd, struct call_args *a)
{
	struct iov_iter *it = &msg->msg_iter;
	int ubuf = 0, iovec = 0;
	if (bpf_core_field_exists(it->iter_type)) {
		__u8 t = BPF_CORE_READ(it, iter_type);
		if (bpf_core_enum_value_exists(enum iter_type, ITER_UBUF) &&
		    t == bpf_core_enum_value(enum iter_type, ITER_UBUF))
			ubuf = 1;
		else if (t == bpf_core_enum_value(enum iter_type, ITER_IOVEC))
			iovec = 1;
	} else {
		struct iov_iter___old *o = (void *)it;
		iovec = (BPF_CORE_READ(o, type) & bpf_core_enum_value(enum iter_type, ITER_IOVEC)) != 0;
	}
	__u64 off = BPF_CORE_READ(it, iov_offset);
	if (ubuf) {
		a->kind = CALL_BUF;
		a->ptr = (__u64)BPF_CORE_READ(it, ubuf) + off;
		return;
	}
	if (!iovec)
		return;
	const struct iovec *iov;
	if (bpf_core_field_exists(it->__iov)) {
		iov = BPF_CORE_READ(it, __iov);
	} else {
		struct iov_iter___iov *o = (void *)it;
		iov = BPF_CORE_READ(o, iov);
	}
	if (BPF_CORE_READ(it, nr_segs) == 1) {
		// read, write, recvfrom, sendto before 6.0 (and one-iovec
		// vectors before 6.4): one iovec on the kernel's side pointing at
		// the user's buffer
		a->kind = CALL_BUF;
		a->ptr = (__u64)BPF_CORE_READ(iov, iov_base) + off;
		return;
	}
	if (off)
		return; // a call resumed past its start: not one the capture can describe
	struct pt_regs *regs = kf_user_regs();
	if (!regs || (__u32)PT_REGS_PARM1_CORE_SYSCALL(regs) != fd)
		return;
	long nr = SYSCALL_NR(regs);
	if (nr == NR_READV || nr == NR_WRITEV) {
		a->kind = CALL_IOV;
		a->ptr = PT_REGS_PARM2_CORE_SYSCALL(regs);
		a->count = PT_REGS_PARM3_CORE_SYSCALL(regs);
	} else if (nr == NR_SENDMSG || nr == NR_RECVMSG) {
		a->kind = CALL_MSG;
		a->ptr = PT_REGS_PARM2_CORE_SYSCALL(regs);
	}
}

// kf_enter remembers, for the return program, a call on sk about to move
// bytes through msg (0: sendpage's pages) if sk is a tracked connection.
static __always_inline void kf_enter(struct sock *sk, struct msghdr *msg)
{
	// Only this process's own entry (or an inherited one) is used below:
	// a process with neither mark has none (bpf/l7.c conns_seen).
	if (!seen(current_tgid()))
		return;
	__u64 skp = (__u64)sk;
	__u64 *k = bpf_map_lookup_elem(&sock_keys, &skp);
	if (!k)
		return;
	__u32 fd = (__u32)*k;
	// this process's descriptor (a forked child's is the parent's number)
	__u64 key = conn_key(fd);
	struct conn_info *ci = bpf_map_lookup_elem(&conns, &key);
	if (!ci)
		ci = inherited(fd, key);
	if (!ci || ci->sk != skp)
		return;
	__u8 mark = 0;
#ifdef L7_TLS_SYSCALL_HOOK
	// a TLS library's call in flight on this thread takes the descriptor
	mark = L7_TLS_SYSCALL_HOOK(fd, ci);
#endif
	if (!mark && skipped(ci))
		return;
	struct call_args a = { .enter_ns = bpf_ktime_get_ns(), .fd = fd, .kind = CALL_SENDFILE };
	if (mark)
		a.kind = CALL_TLS_MARK; // a memory-BIO TLS read's result (l7/tls.h)
	else if (msg)
		kf_buffer(msg, fd, &a);
	__u64 tid = bpf_get_current_pid_tgid();
	if (bpf_map_update_elem(&calls, &tid, &a, BPF_ANY))
		bump(&counters, HC_DROP_ARGS_FULL);
}

// kf_exit hands the call in flight on this thread, if kf_enter kept one,
// to l7_capture once its byte count is known (as handle_exit does for the
// syscall pairs, with this source).
static __always_inline void kf_exit(long ret, __u8 dir)
{
	__u64 tid = bpf_get_current_pid_tgid();
	struct call_args *ap = bpf_map_lookup_elem(&calls, &tid);
	if (!ap)
		return;
	struct call_args a = *ap;
	bpf_map_delete_elem(&calls, &tid);
	if (a.kind == CALL_CONNECT)
		return; // a kprobe connect's, left by a connect that never returned
#ifdef L7_TLS_SYSCALL_DONE
	if (a.kind == CALL_TLS_MARK) {
		L7_TLS_SYSCALL_DONE(a.fd, dir, ret);
		return;
	}
#endif
	if (ret < 0)
		emit_call_error(a.fd, ret, dir, a.enter_ns);
	if (ret <= 0)
		return;
	l7_capture(conn_key(a.fd), l7_meta(dir, a.kind, SOURCE_KERNEL, a.count), a.ptr, ret, a.enter_ns);
}

static __always_inline struct sock *kf_sock(struct socket *sock)
{
	return BPF_CORE_READ(sock, sk);
}

// ---- fentry / fexit

SEC("fexit/" L7_SYS(accept4))
int BPF_PROG(l7_accept4_fexit, struct pt_regs *regs, long ret)
{
	if (ret >= 0)
		track(ret, ROLE_SERVER);
	return 0;
}

SEC("fexit/" L7_SYS(accept))
int BPF_PROG(l7_accept_fexit, struct pt_regs *regs, long ret)
{
	if (ret >= 0)
		track(ret, ROLE_SERVER);
	return 0;
}

SEC("fexit/" L7_SYS(connect))
int BPF_PROG(l7_connect_fexit, struct pt_regs *regs, long ret)
{
	if (ret == 0 || ret == -EINPROGRESS_)
		track((__u32)PT_REGS_PARM1_CORE_SYSCALL(regs), ROLE_CLIENT);
	return 0;
}

// Where the system call functions are ambiguous in the kernel's BTF (6.1
// lists accept, accept4 and connect twice: the weak stubs of
// kernel/sys_ni.c), the functions they call, which take the descriptor as
// an argument. accept and accept4 both call __sys_accept4.
SEC("fexit/__sys_accept4")
int BPF_PROG(l7_sys_accept4_fexit, int fd, void *addr, int *addrlen, int flags, int ret)
{
	if (ret >= 0)
		track(ret, ROLE_SERVER);
	return 0;
}

SEC("fexit/__sys_connect")
int BPF_PROG(l7_sys_connect_fexit, int fd, void *addr, int addrlen, int ret)
{
	if (ret == 0 || ret == -EINPROGRESS_)
		track(fd, ROLE_CLIENT);
	return 0;
}

SEC("fentry/" L7_SYS(close))
int BPF_PROG(l7_close_fentry, struct pt_regs *regs)
{
	close_fd((__u32)PT_REGS_PARM1_CORE_SYSCALL(regs));
	return 0;
}

SEC("fentry/tcp_sendmsg")
int BPF_PROG(l7_send_fentry, struct sock *sk, struct msghdr *msg)
{
	kf_enter(sk, msg);
	return 0;
}

SEC("fexit/tcp_sendmsg")
int BPF_PROG(l7_send_fexit, struct sock *sk, struct msghdr *msg, size_t size, int ret)
{
	kf_exit(ret, DIR_WRITE);
	return 0;
}

SEC("fentry/unix_stream_sendmsg")
int BPF_PROG(l7_usend_fentry, struct socket *sock, struct msghdr *msg)
{
	kf_enter(kf_sock(sock), msg);
	return 0;
}

SEC("fexit/unix_stream_sendmsg")
int BPF_PROG(l7_usend_fexit, struct socket *sock, struct msghdr *msg, size_t len, int ret)
{
	kf_exit(ret, DIR_WRITE);
	return 0;
}

SEC("fentry/tcp_sendpage")
int BPF_PROG(l7_sendpage_fentry, struct sock *sk)
{
	kf_enter(sk, 0);
	return 0;
}

SEC("fexit/tcp_sendpage")
int BPF_PROG(l7_sendpage_fexit, struct sock *sk, struct page *page, int offset, size_t size, int flags, int ret)
{
	kf_exit(ret, DIR_WRITE);
	return 0;
}

SEC("fentry/unix_stream_sendpage")
int BPF_PROG(l7_usendpage_fentry, struct socket *sock)
{
	kf_enter(kf_sock(sock), 0);
	return 0;
}

SEC("fexit/unix_stream_sendpage")
int BPF_PROG(l7_usendpage_fexit, struct socket *sock, struct page *page, int offset, size_t size, int flags,
	     int ret)
{
	kf_exit(ret, DIR_WRITE);
	return 0;
}

// The receive functions: MSG_PEEK leaves the data queued for the real read.
#define KF_RECV(name, fn)                                                                             \
	SEC("fentry/" #fn)                                                                            \
	int BPF_PROG(l7_##name##_fentry, struct socket *sock, struct msghdr *msg, size_t size, int flags) \
	{                                                                                             \
		if (!(flags & MSG_PEEK_))                                                             \
			kf_enter(kf_sock(sock), msg);                                                 \
		return 0;                                                                             \
	}                                                                                             \
	SEC("fexit/" #fn)                                                                             \
	int BPF_PROG(l7_##name##_fexit, struct socket *sock, struct msghdr *msg, size_t size, int flags, \
		     int ret)                                                                         \
	{                                                                                             \
		kf_exit(ret, DIR_READ);                                                           \
		return 0;                                                                             \
	}

KF_RECV(recv4, inet_recvmsg)
KF_RECV(recv6, inet6_recvmsg)
KF_RECV(urecv, unix_stream_recvmsg)

// ---- connections open before the agent started
//
// User space puts them in conns by (process, descriptor) from /proc, which
// does not give their socket; this iterator, run once after that, walks
// every process's descriptors and gives each such entry its socket and
// its sock_keys entry, so the data programs find it.
#define S_IFMT_ 00170000
#define S_IFSOCK_ 0140000

SEC("iter/task_file")
int l7_existing_socks(struct bpf_iter__task_file *ctx)
{
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;
	if (!task || !file)
		return 0;
	struct inode *ino = BPF_CORE_READ(file, f_inode);
	if (!ino || (BPF_CORE_READ(ino, i_mode) & S_IFMT_) != S_IFSOCK_)
		return 0;
	__u64 key = (__u64)BPF_CORE_READ(task, tgid) << 32 | ctx->fd;
	struct conn_info *ci = bpf_map_lookup_elem(&conns, &key);
	if (!ci || ci->sk || !ci->midstream)
		return 0;
	struct socket *sock = BPF_CORE_READ(file, private_data);
	if (!sock)
		return 0;
	__u64 sk = (__u64)BPF_CORE_READ(sock, sk);
	if (!sk)
		return 0;
	ci->sk = sk;
	bpf_map_update_elem(&sock_keys, &sk, &key, BPF_ANY);
	return 0;
}

// ---- kprobes: the same, where fentry is refused (a kretprobe does not see
// the arguments: the lifecycle's connect goes through calls like the data)

static __always_inline struct pt_regs *kp_sys_regs(struct pt_regs *ctx)
{
	return (struct pt_regs *)PT_REGS_PARM1(ctx);
}

SEC("kretprobe/" L7_SYS(accept4))
int BPF_KRETPROBE(l7_accept4_kretprobe, long ret)
{
	if (ret >= 0)
		track(ret, ROLE_SERVER);
	return 0;
}

SEC("kretprobe/" L7_SYS(accept))
int BPF_KRETPROBE(l7_accept_kretprobe, long ret)
{
	if (ret >= 0)
		track(ret, ROLE_SERVER);
	return 0;
}

SEC("kprobe/" L7_SYS(connect))
int BPF_KPROBE(l7_connect_kprobe)
{
	connect_enter((__u32)PT_REGS_PARM1_CORE_SYSCALL(kp_sys_regs(ctx)));
	return 0;
}

SEC("kretprobe/" L7_SYS(connect))
int BPF_KRETPROBE(l7_connect_kretprobe, long ret)
{
	connect_exit(ret);
	return 0;
}

SEC("kprobe/" L7_SYS(close))
int BPF_KPROBE(l7_close_kprobe)
{
	close_fd((__u32)PT_REGS_PARM1_CORE_SYSCALL(kp_sys_regs(ctx)));
	return 0;
}

// Each kprobe has its own return program: one program attached to several
// functions would be one link of the loader's per program.
#define KP_SEND(name, fn, sk_of)                                                                      \
	SEC("kprobe/" #fn)                                                                            \
	int BPF_KPROBE(l7_##name##_kprobe, void *s, struct msghdr *msg)                               \
	{                                                                                             \
		kf_enter(sk_of(s), msg);                                                              \
		return 0;                                                                             \
	}                                                                                             \
	SEC("kretprobe/" #fn)                                                                         \
	int BPF_KRETPROBE(l7_##name##_kretprobe, int ret)                                             \
	{                                                                                             \
		kf_exit(ret, DIR_WRITE);                                                          \
		return 0;                                                                             \
	}

#define KP_RECV(name, fn)                                                                             \
	SEC("kprobe/" #fn)                                                                            \
	int BPF_KPROBE(l7_##name##_kprobe, struct socket *sock, struct msghdr *msg, size_t size, int flags) \
	{                                                                                             \
		if (!(flags & MSG_PEEK_))                                                             \
			kf_enter(kf_sock(sock), msg);                                                 \
		return 0;                                                                             \
	}                                                                                             \
	SEC("kretprobe/" #fn)                                                                         \
	int BPF_KRETPROBE(l7_##name##_kretprobe, int ret)                                             \
	{                                                                                             \
		kf_exit(ret, DIR_READ);                                                           \
		return 0;                                                                             \
	}

static __always_inline struct sock *kp_sk(void *s)
{
	return s;
}

static __always_inline struct sock *kp_socket_sk(void *s)
{
	return kf_sock(s);
}

KP_SEND(send, tcp_sendmsg, kp_sk)
KP_SEND(usend, unix_stream_sendmsg, kp_socket_sk)
KP_RECV(recv4, inet_recvmsg)
KP_RECV(recv6, inet6_recvmsg)
KP_RECV(urecv, unix_stream_recvmsg)

SEC("kprobe/tcp_sendpage")
int BPF_KPROBE(l7_sendpage_kprobe, struct sock *sk)
{
	kf_enter(sk, 0);
	return 0;
}

SEC("kretprobe/tcp_sendpage")
int BPF_KRETPROBE(l7_sendpage_kretprobe, int ret)
{
	kf_exit(ret, DIR_WRITE);
	return 0;
}

SEC("kprobe/unix_stream_sendpage")
int BPF_KPROBE(l7_usendpage_kprobe, struct socket *sock)
{
	kf_enter(kf_sock(sock), 0);
	return 0;
}

SEC("kretprobe/unix_stream_sendpage")
int BPF_KRETPROBE(l7_usendpage_kretprobe, int ret)
{
	kf_exit(ret, DIR_WRITE);
	return 0;
}
