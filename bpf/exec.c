// Process watcher: announces every exec so user space reads the new
// process's identity (/proc/<pid>/environ for OTEL_SERVICE_NAME) while it is
// alive, however short its life. One event per exec: cheap by nature.
#include "common.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct exec_event {
	__u32 tgid;
};

const struct exec_event *unused_exec_event __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} exec_events SEC(".maps");

// Slot 0: events submitted, slot 1: ring buffer full.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} exec_counters SEC(".maps");

static __always_inline void on_exec(void)
{
	struct exec_event *ev = bpf_ringbuf_reserve(&exec_events, sizeof(*ev), 0);
	if (!ev) {
		bump(&exec_counters, 1);
		return;
	}
	ev->tgid = current_tgid();
	// Wake the reader at once: the process may exit within milliseconds.
	bpf_ringbuf_submit(ev, 0);
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
