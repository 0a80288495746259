// The socket-tracepoint data source of the L7 layer: where the kernel has
// the sock_send_length and sock_recv_length tracepoints as tp_btf (6.3+;
// used from 6.5, when sendfile became a sendmsg of kernel pages and goes
// through them too), one program runs after each socket send or receive
// (sock_sendmsg, sock_recvmsg), handed the socket and the call's result.
// Reads and writes of pipes, files and terminals run no program at all,
// and the program is not a system call tracepoint's (no perf record is
// built for it).
//
// The buffer and the descriptor come from the task's saved user registers,
// as the single syscall-exit programs read them (bpf_task_pt_regs), and the
// system call number says which call it was: read, recvfrom, readv,
// recvmsg; write, sendto, writev, sendmsg, sendfile. The call then goes
// through the syscall source's exit handler (handle_exit1), with the
// socket: the connection the descriptor names must be this socket, so a
// socket call made from anything else (io_uring, splice, sendmmsg, a
// kernel thread, whose registers are not a read/write's) is never captured
// as the descriptor's; when it moved bytes on a tracked connection it is
// counted (HC_SOCK_CALLS_SKIPPED). The lifecycle (accept, connect, close)
// is still taken from its own hooks: connections are named by descriptor.
#pragma once

#if defined(__TARGET_ARCH_x86)
#define NR_READ 0
#define NR_WRITE 1
#define NR_SENDFILE 40
#define NR_SENDTO 44
#define NR_RECVFROM 45
#elif defined(__TARGET_ARCH_arm64)
#define NR_READ 63
#define NR_WRITE 64
#define NR_SENDFILE 71
#define NR_SENDTO 206
#define NR_RECVFROM 207
#endif

// socktp_skipped counts a socket call that moved bytes on a tracked
// connection but was not one of the read/write system calls.
static __always_inline void socktp_skipped(struct sock *sk, int ret)
{
	if (ret <= 0)
		return;
	__u64 skp = (__u64)sk;
	__u64 *k = bpf_map_lookup_elem(&sock_keys, &skp);
	if (!k)
		return;
	__u64 key = *k;
	struct conn_info *ci = bpf_map_lookup_elem(&conns, &key);
	if (ci && ci->sk == skp && !skipped(ci))
		bump(&counters, HC_SOCK_CALLS_SKIPPED);
}

// socktp_kind is the buffer kind of system call nr moving bytes in
// direction dir, or -1 for a call the capture cannot describe.
static __always_inline int socktp_kind(long nr, __u8 dir)
{
	if (dir == DIR_READ) {
		if (nr == NR_READ || nr == NR_RECVFROM)
			return CALL_BUF;
		if (nr == NR_READV)
			return CALL_IOV;
		if (nr == NR_RECVMSG)
			return CALL_MSG;
		return -1;
	}
	if (nr == NR_WRITE || nr == NR_SENDTO)
		return CALL_BUF;
	if (nr == NR_WRITEV)
		return CALL_IOV;
	if (nr == NR_SENDMSG)
		return CALL_MSG;
	if (nr == NR_SENDFILE)
		return CALL_SENDFILE;
	return -1;
}

static __always_inline void socktp_call(struct sock *sk, int ret, __u8 dir)
{
	struct pt_regs *regs = call_regs();
	if (!regs)
		return;
	int kind = socktp_kind(CALL_NR(regs), dir);
	if (kind < 0) {
		socktp_skipped(sk, ret);
		return;
	}
	__u64 fd = (__u32)CALL_ARG1(regs);
	__u64 ptr = 0, count = 0;
	if (kind != CALL_SENDFILE)
		ptr = CALL_ARG2(regs);
	if (kind == CALL_IOV)
		count = CALL_ARG3(regs);
	handle_exit1(ret, dir, kind, fd, ptr, count, (__u64)sk);
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(l7_sock_send, struct sock *sk, int ret, int flags)
{
	socktp_call(sk, ret, DIR_WRITE);
	return 0;
}

// MSG_PEEK leaves the data queued for the real read.
SEC("tp_btf/sock_recv_length")
int BPF_PROG(l7_sock_recv, struct sock *sk, int ret, int flags)
{
	if (!(flags & MSG_PEEK_))
		socktp_call(sk, ret, DIR_READ);
	return 0;
}
