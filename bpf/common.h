// Shared definitions for every otelbee BPF program.
//
// vmlinux.h is generated per architecture from kernel BTF (see bpf/README.md);
// CO-RE relocations make the programs portable across kernels, so the header
// only has to describe *a* kernel, not the one we run on.
#pragma once

#if defined(__TARGET_ARCH_x86)
#include "headers/amd64/vmlinux.h"
#elif defined(__TARGET_ARCH_arm64)
#include "headers/arm64/vmlinux.h"
#else
#error "unsupported target architecture"
#endif

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP_ 6
#define SOCK_STREAM_ 1

// Error numbers are ABI; vmlinux.h carries no macros.
#define ECONNRESET_ 104
#define ENETUNREACH_ 101
#define ETIMEDOUT_ 110
#define ECONNREFUSED_ 111
#define EHOSTUNREACH_ 113

static __always_inline __u32 current_tgid(void)
{
	return bpf_get_current_pid_tgid() >> 32;
}

// bump adds to a slot of a per-CPU counter array. Atomic because a softirq
// program can interrupt a process-context one on the same CPU.
static __always_inline void bump(void *map, __u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(map, &slot);
	if (v)
		__sync_fetch_and_add(v, 1);
}

// sock_peer_addr writes the remote address of sk as 16 bytes: IPv6 as is,
// IPv4 as an IPv4-mapped IPv6 address, so one key layout serves both.
static __always_inline void sock_peer_addr(const struct sock *sk, __u16 family, __u8 peer[16])
{
	if (family == AF_INET) {
		__u32 daddr = BPF_CORE_READ(sk, __sk_common.skc_daddr);
		__builtin_memset(peer, 0, 10);
		peer[10] = 0xff;
		peer[11] = 0xff;
		__builtin_memcpy(peer + 12, &daddr, 4);
		return;
	}
	// Not BPF_CORE_READ_INTO: through the decayed pointer it would read one byte.
	bpf_core_read(peer, 16, &sk->__sk_common.skc_v6_daddr);
}

static __always_inline __u32 sock_netns(const struct sock *sk)
{
	return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
}
