// The HTTP/2 capture policy (bpf/l7.c capture_call dispatches here for a
// connection decided as L7_PROTO_HTTP2). HPACK's dynamic table is per
// connection and direction, so every header block must reach the parser in
// order, while DATA payloads are needed only by their length: the policy is
// "every frame but DATA payloads". The call's first MAX_CAPTURE bytes are
// the prefix (capture_call reads them for HTTP/2 whatever capture_bytes
// says); past it, a frame walker appends as segments each frame header and
// the whole payload of every frame but DATA (of a padded DATA its
// pad-length byte), and skips DATA payloads. The walker keeps, per
// connection and direction, where the next frame header lies in the next
// call and how much of the frame in progress is copied, so frames spanning
// calls are followed; a header cut by a call's end is kept until the next.
//
// What does not fit the record (segments end below 8192 bytes) is left
// out: user space, which follows the frames itself, finds bytes missing
// outside a DATA payload and counts the loss. The walker never decides
// anything user space relies on: a wrong guess of a boundary (after the
// walker lost its place) only makes it copy the wrong bytes, which the
// parser's own framing rejects.
#pragma once

#define H2_HDR 9
#define H2_PREFACE 24
// Frames walked per call: more (a long call of tiny frames) and the walker
// loses its place until a call starts with a frame header.
#define H2_MAX_FRAMES 96
// Segments end here: capture_call packs the record's end in 13 bits.
#define H2_SEG_END 8191
#define H2_DATA 0x0
#define H2_FLAG_PADDED 0x8
#define H2_NONE (~0ULL)

struct h2_dir {
	__u32 next; // bytes of the frame in progress at the next call's start
	__u32 copy; // of them, bytes to copy (the rest of a frame that is not DATA)
	__u8 hn;    // bytes of a frame header cut by the last call's end, in hdr
	__u8 known; // the walker knows where frames start
	__u8 _pad[2];
	__u8 hdr[24]; // room for a masked index and length
};

struct h2_walk {
	__u64 start_ns; // conn_info.start_ns: an entry of a closed connection whose fd came back is stale
	struct h2_dir d[2]; // by enum http_dir
};

const struct h2_walk *unused_h2_walk __attribute__((unused));

// Per connection (tgid << 32 | fd). LRU: a connection that is not closed
// (its process exited) must not keep its entry.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct h2_walk);
} h2_walks SEC(".maps");

// A new entry is made from here, and the walk keeps its working values
// here rather than on the stack: they are not on the capture's call chain,
// whose combined stack older kernels cap at 512 bytes.
struct h2_scratch {
	struct h2_walk w;
	__u64 ptr;   // the call's flat buffer (0: not one)
	__u64 total; // bytes the call moved
	__u64 pos;   // the next frame header's offset in the call
	__u64 lastc; // where the last frame's copied part ends
	__u64 last;  // the last segment: its descriptor's place | its end in the call << 16 (0: none)
	__u32 cur;   // the record's end
	__u32 captured;
	__u8 h[8];
};

const struct h2_scratch *unused_h2_scratch __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct h2_scratch);
} h2_scratch SEC(".maps");

// h2_frame returns the length | type << 24 | flags << 32 of the frame header
// at s->pos in the call: from the prefix when it is there, else from the
// buffer (ptr 0: not a flat buffer), or H2_NONE.
static __always_inline __u64 h2_frame(struct data_event *ev, struct h2_scratch *s)
{
	__u64 pos = s->pos;
	if (pos + H2_HDR <= s->captured) {
		__u64 p = pos & (MAX_CAPTURE - 1);
		return ((__u64)ev->data[p] << 16 | (__u64)ev->data[p + 1] << 8 | ev->data[p + 2]) |
		       (__u64)ev->data[p + 3] << 24 | (__u64)ev->data[p + 4] << 32;
	}
	if (!s->ptr || bpf_probe_read_user(s->h, 5, (const void *)(s->ptr + pos)))
		return H2_NONE;
	return ((__u64)s->h[0] << 16 | (__u64)s->h[1] << 8 | s->h[2]) | (__u64)s->h[3] << 24 | (__u64)s->h[4] << 32;
}

// h2_plausible reports whether the prefix starts with a frame header a
// peer could send (known type, sizes and stream id as RFC 9113 fixes them):
// where the walker (re)starts when it does not know its place.
static __always_inline int h2_plausible(struct data_event *ev, __u32 captured)
{
	if (captured < H2_HDR)
		return 0;
	__u32 len = (__u32)ev->data[0] << 16 | (__u32)ev->data[1] << 8 | ev->data[2];
	__u8 type = ev->data[3];
	__u32 sid = ((__u32)ev->data[5] << 24 | (__u32)ev->data[6] << 16 | (__u32)ev->data[7] << 8 | ev->data[8]);
	if (len > 16384 || type > 9 || (sid & 0x80000000))
		return 0;
	if (type == 4 || type == 6 || type == 7) // SETTINGS, PING, GOAWAY
		return sid == 0 && (type != 4 || len % 6 == 0) && (type != 6 || len == 8) && (type != 7 || len >= 8);
	if (type == 8) // WINDOW_UPDATE
		return len == 4;
	if (type == 9) // CONTINUATION never starts a call the walker trusts
		return 0;
	return sid != 0 && (type != 3 || len == 4) && (type != 2 || len == 5);
}

// h2_seg appends the call's bytes [a, b) that lie past the prefix: as one
// segment, or, when they follow the last segment, by lengthening it. Bytes
// that do not fit are left out (user space counts the gap).
static __always_inline void h2_seg(struct data_event *ev, struct h2_scratch *s, __u64 a, __u64 b)
{
	if (b > s->total)
		b = s->total;
	if (a < s->captured)
		a = s->captured;
	if (b <= a || !s->ptr)
		return;
	__u64 len = b - a;
	__u64 cur = s->cur;
	int extend = s->last && (s->last >> 16) == a;
	__u64 at = extend ? cur : cur + SEG_HDR;
	if (at + len > H2_SEG_END)
		return;
	asm volatile("%[t] &= 8191\n\t"
		     "%[l] &= 4095"
		     : [t] "+r"(at), [l] "+r"(len));
	if (bpf_probe_read_user(&ev->data[at], len, (const void *)(s->ptr + a)))
		return;
	if (extend) {
		__u64 desc = s->last;
		asm volatile("%[d] &= 8191" : [d] "+r"(desc));
		__u32 n = ((__u32)ev->data[desc + 4] | (__u32)ev->data[desc + 5] << 8) + len;
		ev->data[desc + 4] = n;
		ev->data[desc + 5] = n >> 8;
	} else {
		asm volatile("%[c] &= 8191" : [c] "+r"(cur));
		ev->data[cur] = a;
		ev->data[cur + 1] = a >> 8;
		ev->data[cur + 2] = a >> 16;
		ev->data[cur + 3] = a >> 24;
		ev->data[cur + 4] = len;
		ev->data[cur + 5] = len >> 8;
		s->last = cur;
	}
	s->last = (s->last & 0xffff) | b << 16;
	s->cur = at + len;
}

// h2_state returns the walker's entry for the connection, made anew when
// missing or stale.
static __always_inline struct h2_walk *h2_state(__u64 key, __u64 start_ns, struct h2_scratch *s)
{
	struct h2_walk *w = bpf_map_lookup_elem(&h2_walks, &key);
	if (w && w->start_ns == start_ns)
		return w;
	__builtin_memset(&s->w, 0, sizeof(s->w));
	s->w.start_ns = start_ns;
	if (bpf_map_update_elem(&h2_walks, &key, &s->w, BPF_ANY))
		return 0;
	return bpf_map_lookup_elem(&h2_walks, &key);
}

#define H2_STEP_NEXT 0
#define H2_STEP_END 1   // the call's end
#define H2_STEP_CUT 2   // a frame header cut by the call's end
#define H2_STEP_LOST 3  // a header not readable

// h2_step walks the call's i-th frame, at s->pos: its copied part appended, s->pos at
// the next one. A global function, so the verifier checks one frame once,
// not once per iteration of capture_h2's walk.
__noinline int h2_step(__u32 i)
{
	if (i >= H2_MAX_FRAMES)
		return H2_STEP_LOST;
	__u32 zero = 0;
	struct data_event *ev = bpf_map_lookup_elem(&scratch, &zero);
	struct h2_scratch *s = bpf_map_lookup_elem(&h2_scratch, &zero);
	if (!ev || !s)
		return H2_STEP_LOST;
	__u64 pos = s->pos;
	if (pos >= s->total)
		return H2_STEP_END;
	if (pos + H2_HDR > s->total)
		return H2_STEP_CUT;
	__u64 f = h2_frame(ev, s);
	if (f == H2_NONE)
		return H2_STEP_LOST;
	__u64 fend = pos + H2_HDR + (f & 0xffffff);
	__u64 cend = fend;
	if (((f >> 24) & 0xff) == H2_DATA)
		cend = pos + H2_HDR + (((f >> 32) & H2_FLAG_PADDED) ? 1 : 0);
	h2_seg(ev, s, pos, cend);
	s->pos = fend;
	s->lastc = cend;
	return H2_STEP_NEXT;
}

// capture_h2 walks the call's frames from where the last call of its
// direction left them and appends what lies past the prefix of every frame
// but a DATA payload; ptr 0 (an iovec call) walks the prefix only. It
// returns the end of the record's data (captured: nothing appended). Same
// contract as walk_chunks: a global function, it finds the record in the
// per-CPU scratch buffer.
__noinline __u32 capture_h2(__u64 key, __u64 ptr, __u64 total, __u32 captured, __u32 dir)
{
	__u32 zero = 0;
	struct data_event *ev = bpf_map_lookup_elem(&scratch, &zero);
	struct h2_scratch *s = bpf_map_lookup_elem(&h2_scratch, &zero);
	struct conn_info *ci = bpf_map_lookup_elem(&conns, &key);
	if (!ev || !s || !ci)
		return captured;
	if (captured > MAX_CAPTURE)
		captured = MAX_CAPTURE;
	struct h2_walk *w = h2_state(key, ci->start_ns, s);
	if (!w)
		return captured;
	struct h2_dir *d = &w->d[dir & 1];
	s->ptr = ptr;
	s->total = total;
	s->captured = captured;
	s->cur = captured;
	s->last = 0;
	s->pos = 0;
	s->lastc = 0;
	if (!d->known) {
		// A new direction, or one whose place was lost: frames start
		// after the client preface or at a call that starts with a frame.
		d->hn = 0;
		if (captured >= H2_PREFACE && ev->data[0] == 'P' && ev->data[1] == 'R' && ev->data[2] == 'I' &&
		    ev->data[3] == ' ' && ev->data[22] == '\r' && ev->data[23] == '\n')
			s->pos = H2_PREFACE;
		else if (!h2_plausible(ev, captured))
			return captured;
		d->known = 1;
	} else if (d->hn) {
		// The last call ended inside a frame header: its rest starts
		// this one.
		__u32 hn = d->hn;
		if (hn >= H2_HDR)
			goto lost;
		__u64 need = H2_HDR - hn;
		if (total < need) {
			if (total > captured)
				goto lost;
			bpf_probe_read_kernel(&d->hdr[hn], total & 7, ev->data);
			d->hn = hn + total;
			return captured;
		}
		if (captured < need)
			goto lost;
		bpf_probe_read_kernel(&d->hdr[hn], need, ev->data);
		d->hn = 0;
		__u64 len = (__u64)d->hdr[0] << 16 | (__u64)d->hdr[1] << 8 | d->hdr[2];
		s->pos = need + len;
		s->lastc = d->hdr[3] == H2_DATA ? need + ((d->hdr[4] & H2_FLAG_PADDED) ? 1 : 0) : s->pos;
		h2_seg(ev, s, 0, s->lastc);
	} else {
		// The frame in progress at the last call's end continues here.
		s->pos = d->next;
		s->lastc = d->copy;
		h2_seg(ev, s, 0, s->lastc);
	}
	int r = H2_STEP_NEXT;
	for (int i = 0; i < H2_MAX_FRAMES && r == H2_STEP_NEXT; i++)
		r = h2_step(i);
	if (r == H2_STEP_LOST)
		goto lost;
	if (r == H2_STEP_CUT) {
		// A header cut by the call's end: kept for the next call.
		__u64 pos = s->pos;
		__u64 hn = (total - pos) & 15;
		if (hn >= H2_HDR)
			goto lost;
		if (total > captured) {
			if (!ptr || bpf_probe_read_user(d->hdr, hn, (const void *)(ptr + pos)))
				goto lost;
		} else {
			bpf_probe_read_kernel(d->hdr, hn, &ev->data[pos & (MAX_CAPTURE - 1)]);
		}
		h2_seg(ev, s, pos, total);
		d->hn = hn;
		d->next = 0;
		d->copy = 0;
		return s->cur & 8191;
	}
	if (s->pos < total)
		goto lost; // more frames than the walk's bound
	d->next = s->pos - total;
	d->copy = s->lastc > total ? s->lastc - total : 0;
	return s->cur & 8191;
lost:
	d->known = 0;
	d->hn = 0;
	return s->cur & 8191;
}

// ---- h2c by upgrade
//
// An HTTP/1.1 request with "Upgrade: h2c" answered 101 continues as HTTP/2
// on the same connection (RFC 7540 3.2): when the http2 collector is on,
// l7_capture re-decides the connection as HTTP/2 at the 101 instead of
// ending its records, and user space hands it from the HTTP/1 parser to
// the HTTP/2 one (the upgrade request is stream 1). The frame walk starts
// fresh in both directions (the client preface; the server's SETTINGS).
// Where the 101's "Upgrade: h2c" line lies: right after the status line
// "HTTP/1.1 101 Switching Protocols\r\n" (Apache), or after a
// "Connection: Upgrade\r\n" line (Go's x/net/http2/h2c, nghttpd). Fixed
// places rather than a scan: a scanning loop here met a verifier failure
// (EFAULT) on 6.18, and an unrolled one cost 57,000 instructions.
#define H2C_AT1 (34 + 9)
#define H2C_AT2 (34 + 21 + 9)

// h2c_switch reports whether the 101 response in the record's first n
// bytes switches to h2c.
static __always_inline int h2c_switch(struct data_event *ev, __u32 n)
{
	const __u32 want = 'h' | '2' << 8 | 'c' << 16 | '\r' << 24;
	__u32 w;
	if (n >= H2C_AT1 + 4) {
		__builtin_memcpy(&w, &ev->data[H2C_AT1], 4);
		if ((w | 0x00200020) == want && ev->data[H2C_AT1 - 1] == ' ')
			return 1;
	}
	if (n >= H2C_AT2 + 4) {
		__builtin_memcpy(&w, &ev->data[H2C_AT2], 4);
		if ((w | 0x00200020) == want && ev->data[H2C_AT2 - 1] == ' ')
			return 1;
	}
	return 0;
}
