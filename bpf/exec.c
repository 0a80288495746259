// Process watcher: announces every exec with a snapshot of the new
// process's environment, taken in the kernel before the program runs its
// first instruction. User space finds OTEL_SERVICE_NAME there: reading
// /proc/<pid>/environ later is too late for programs that rewrite their
// environment area for their process titles (nginx, postgres, php-fpm) and
// for processes that live a few milliseconds. One event per exec: cheap by
// nature.
#include "common.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

// Bytes of the environment copied (less one, for the verifier's sake); a
// longer one is cut (flag
// EXEC_ENV_TRUNCATED) and user space falls back to /proc when the cut part
// could hold what it looks for.
#define ENV_MAX 16384

enum exec_flags {
	EXEC_ENV_TRUNCATED = 1,
	EXEC_ENV_UNREADABLE = 2,
};

// EXE_MAX: bytes of the executable's file name kept (NUL included).
#define EXE_MAX 64

struct exec_event {
	__u32 tgid;
	__u32 flags;
	__u32 env_len;
	__u32 pad;
	// The process's cgroup (v2) id at exec: a process that exits before
	// user space handles its exec has no /proc/<pid>/cgroup left, and its
	// container is found from this (the cgroup's directory inode).
	__u64 cgroup_id;
	// The base name of the file the process runs (what /proc/<pid>/exe
	// points to): a process that exits before user space handles its exec
	// has no /proc entry left to read it from.
	__u8 exe[EXE_MAX];
	__u8 env[ENV_MAX];
};

const struct exec_event *unused_exec_event __attribute__((unused));
const enum exec_flags *unused_exec_flags __attribute__((unused));

// Events are variable-sized (header + the environment's actual length):
// a burst of execs with ordinary environments fits many to the megabyte.
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1024 * 1024);
} exec_events SEC(".maps");

// The event is assembled here: too large for the BPF stack.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct exec_event);
} exec_scratch SEC(".maps");

// Slot 0: events submitted, slot 1: ring buffer full.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} exec_counters SEC(".maps");

#define EXEC_HDR_SIZE (sizeof(struct exec_event) - ENV_MAX)

static __always_inline void on_exec(void)
{
	__u32 zero = 0;
	struct exec_event *ev = bpf_map_lookup_elem(&exec_scratch, &zero);
	if (!ev)
		return;
	ev->tgid = current_tgid();
	ev->flags = 0;
	ev->env_len = 0;
	ev->cgroup_id = bpf_get_current_cgroup_id();

	// Field by field through CO-RE: the new mm, now current's.
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	const unsigned char *exe = BPF_CORE_READ(task, mm, exe_file, f_path.dentry, d_name.name);
	ev->exe[0] = 0;
	if (exe)
		bpf_probe_read_kernel_str(ev->exe, sizeof(ev->exe), exe);
	unsigned long start = BPF_CORE_READ(task, mm, env_start);
	unsigned long end = BPF_CORE_READ(task, mm, env_end);
	__u64 len = end > start ? end - start : 0;
	if (len > ENV_MAX - 1) {
		len = ENV_MAX - 1;
		ev->flags |= EXEC_ENV_TRUNCATED;
	}
	// Bounded for the verifiers of older kernels, which may track no range
	// through the comparison above.
	asm volatile("%[l] &= 16383" : [l] "+r"(len));
	__u64 got = 0;
	if (len > 0) {
		if (bpf_probe_read_user(ev->env, len, (const void *)start) == 0)
			got = len;
		else
			ev->flags |= EXEC_ENV_UNREADABLE;
	}
	ev->env_len = got;
	__u64 size = EXEC_HDR_SIZE + got;
	asm volatile("%[s] &= 32767" : [s] "+r"(size));
	if (size > sizeof(*ev))
		size = sizeof(*ev);
	// Wake the reader at once: the process may exit within milliseconds.
	if (bpf_ringbuf_output(&exec_events, ev, size, 0)) {
		bump(&exec_counters, 1);
		return;
	}
	bump(&exec_counters, 0);
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(exec_btf)
{
	on_exec();
	return 0;
}

SEC("tracepoint/sched/sched_process_exec")
int exec_tp(void *ctx)
{
	on_exec();
	return 0;
}
