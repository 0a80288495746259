// The HTTP/2 capture policy (bpf/l7.c capture_call dispatches here for a
// connection decided as L7_PROTO_HTTP2). HPACK's dynamic table is per
// connection and direction, so every header block must reach the parser in
// order: the policy is "whole frames". This default keeps the call's first
// MAX_CAPTURE bytes (capture_call reads them for HTTP/2 whatever
// capture_bytes says) and no segments: a call longer than that reaches user
// space with Total > len(Data), which the parser accounts as loss of the
// rest (it knows the frame lengths). A frame walker that appends each frame
// header and HEADERS/CONTINUATION payload past the prefix as segments (as
// walk_chunks does for chunk-size lines) replaces capture_h2's body here.
#pragma once

// capture_h2 returns the end of the record's data after the captured prefix
// (captured: nothing appended). Same contract as walk_chunks: a global
// function, it finds the record in the per-CPU scratch buffer and appends
// segments with seg_out.
__noinline __u32 capture_h2(__u64 key, __u64 ptr, __u64 total, __u32 captured, __u32 dir)
{
	return captured;
}
