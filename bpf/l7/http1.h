// HTTP/1.x in the L7 capture (bpf/l7.c): what starts a request (the
// classifier's HTTP/1 test), the 101 that ends HTTP/1 on a connection, and
// the capture policy's walk of chunked bodies through a call's buffer.
// Included by bpf/l7.c after its maps and seg_out.
#pragma once

// is_tchar: a character of an HTTP token (RFC 9110 5.6.2), from a bit per
// character below 128.
static __always_inline int is_tchar(__u8 c)
{
	if (c < 64)
		return (0x03ff6cfa00000000ULL >> c) & 1;
	if (c < 128)
		return (0x57ffffffc7fffffeULL >> (c - 64)) & 1;
	return 0;
}

#define MAX_METHOD 20
#define REQ_LINE_WORDS 64 // the request line's end is looked for in 512 bytes

static __always_inline __u64 has_byte(__u64 w, __u64 pattern)
{
	__u64 x = w ^ pattern;
	return (x - 0x0101010101010101ULL) & ~x & 0x8080808080808080ULL;
}

// token_method returns the length of the token-shaped method that starts b
// and is followed by a space and a target, or 0.
static __always_inline __u32 token_method(const __u8 *b, __u32 n)
{
	__u32 sp = 0;
	for (__u32 i = 0; i < MAX_METHOD; i++) {
		if (i >= n)
			return 0;
		__u8 c = b[i];
		if (c == ' ') {
			sp = i;
			break;
		}
		if (!is_tchar(c))
			return 0;
	}
	if (sp == 0 || sp + 1 >= n)
		return 0;
	__u8 t = b[(sp + 1) & (MAX_CAPTURE - 1)];
	if (t == ' ' || t == '\r' || t == '\n')
		return 0;
	return sp;
}

static __always_inline int is_known_start(const __u8 *b, __u32 n)
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

// version_ends_line reports whether the first line of the record in the
// per-CPU scratch buffer ends with " HTTP/1.x" within its n captured bytes,
// looking a word at a time from byte from. A global (not inlined) function:
// the verifier checks it once, not once for every state of its callers.
__noinline int version_ends_line(__u32 from, __u32 n)
{
	__u32 zero = 0;
	struct data_event *ev = bpf_map_lookup_elem(&scratch, &zero);
	if (!ev)
		return 0;
	const __u8 *b = ev->data;
	for (__u32 k = 0; k < REQ_LINE_WORDS; k++) {
		__u64 off = from + k * 8;
		if (off >= n)
			return 0;
		asm volatile("%[o] &= 4095" : [o] "+r"(off));
		__u64 w;
		__builtin_memcpy(&w, &b[off], 8);
		if (!has_byte(w, 0x0d0d0d0d0d0d0d0dULL) && !has_byte(w, 0x0a0a0a0a0a0a0a0aULL))
			continue;
		__u64 j = off;
		for (int i = 0; i < 8; i++, j++) {
			__u64 jj = j;
			asm volatile("%[o] &= 8191" : [o] "+r"(jj));
			__u8 c = b[jj];
			if (c == '\r' || c == '\n')
				break;
		}
		// " HTTP/1.x" ends the line, within what was captured
		if (j >= n || j < from + 10)
			return 0;
		__u64 vo = j - 9;
		asm volatile("%[o] &= 8191" : [o] "+r"(vo));
		__u64 v;
		__builtin_memcpy(&v, &b[vo], 8);
		return v == (' ' | 'H' << 8 | 'T' << 16 | (__u64)'T' << 24 | (__u64)'P' << 32 | (__u64)'/' << 40 |
			     (__u64)'1' << 48 | (__u64)'.' << 56);
	}
	return 0;
}

// is_request_start reports whether b (the scratch record's data) starts an
// HTTP/1.x request line: a token-shaped method, a space, a target, and
// " HTTP/1.x" at the line's end. The nine registered methods are told by
// their first four bytes; any other token must show the version within the
// first 512 bytes. Asked once per connection, to classify it.
static __always_inline int is_request_start(const __u8 *b, __u32 n)
{
	if (is_known_start(b, n))
		return 1;
	__u32 sp = token_method(b, n);
	if (!sp)
		return 0;
	return version_ends_line(sp + 1, n);
}

// is_switching reports whether b starts a 101 response.
static __always_inline int is_switching(const __u8 *b, __u32 n)
{
	return n >= 12 && b[0] == 'H' && b[1] == 'T' && b[2] == 'T' && b[3] == 'P' && b[4] == '/' && b[5] == '1' &&
	       b[6] == '.' && b[8] == ' ' && b[9] == '1' && b[10] == '0' && b[11] == '1';
}

#define WALK_CHUNKS 32
#define HEAD_WORDS 128 // the head's end is looked for in the first 1024 bytes

// body_start returns the offset of the first byte after the head (the blank
// line) in the scratch record's n captured bytes, or 0.
static __always_inline __u32 body_start(const __u8 *b, __u32 n)
{
	for (__u32 k = 0; k < HEAD_WORDS; k++) {
		__u64 off = k * 8;
		if (off >= n)
			return 0;
		__u64 w;
		__builtin_memcpy(&w, &b[off & (MAX_CAPTURE - 1)], 8);
		if (!has_byte(w, 0x0a0a0a0a0a0a0a0aULL))
			continue;
		for (int i = 0; i < 8; i++) {
			__u64 j = off + i;
			if (j < 2 || j >= n)
				continue;
			asm volatile("%[j] &= 8191" : [j] "+r"(j));
			if (b[j] == '\n' && b[j - 1] == '\r' && b[j - 2] == '\n')
				return j + 1;
		}
	}
	return 0;
}

// chunk_line parses a chunk-size line in the 16 bytes lo, hi (little
// endian): hex digits, then CR or ';', up to LF. It returns size << 8 | the
// line's length, or 0. A global function: its loop is checked once.
__noinline __u64 chunk_line(__u64 lo, __u64 hi)
{
	__u64 size = 0;
	__u32 digits = 0;
	for (int j = 0; j < 16; j++) {
		__u8 c = j < 8 ? lo >> (j * 8) : hi >> ((j - 8) * 8);
		if (digits == j) {
			__u8 v = c | 0x20;
			if (v >= '0' && v <= '9' && j < 12) {
				size = size << 4 | (v - '0');
				digits++;
				continue;
			}
			if (v >= 'a' && v <= 'f' && j < 12) {
				size = size << 4 | (v - 'a' + 10);
				digits++;
				continue;
			}
			if (digits == 0 || (c != '\r' && c != ';'))
				return 0;
		}
		if (c == '\n')
			return j >= digits + 1 ? size << 8 | (j + 1) : 0;
	}
	return 0;
}

// walk_chunks follows a chunked body through one buffer call of total bytes
// (ptr in user memory, the first captured in the scratch record): from the
// end of the head when the call starts a message, else from where the last
// call's walk left off. Each chunk-size line past the captured prefix is
// appended as a segment, so user space frames the body exactly; where the
// walk stops is kept for the next call in this direction. A walk of a body
// that is not chunked stops at its first line (no hex size): the segments it
// may append are only bytes of the call. A global function, checked once by
// the verifier.
__noinline __u32 walk_chunks(__u64 key, __u64 ptr, __u64 total, __u32 captured, __u32 dir)
{
	__u32 zero = 0;
	struct data_event *ev = bpf_map_lookup_elem(&scratch, &zero);
	struct conn_info *ci = bpf_map_lookup_elem(&conns, &key);
	if (!ev || !ci)
		return captured;
	dir &= 1;
	__u64 o = ci->chunk_next[dir];
	ci->chunk_next[dir] = 0;
	const __u8 *b = ev->data;
	int starts = captured >= 8 && ((b[0] == 'H' && b[1] == 'T' && b[2] == 'T' && b[3] == 'P' && b[4] == '/') ||
				       is_known_start(b, captured));
	__u32 cur = captured;
	__u64 last = captured; // end of what was captured so far
	if (starts) {
		o = body_start(b, captured);
	} else if (o) {
		o--;
	}
	// o and last go through memory at each iteration: read back, they are
	// unknown to the verifier, so every path into an iteration is one state
	// (bounded, they would be as many states as paths)
	volatile __u64 *spill = (volatile __u64 *)&ev->data[MAX_CAPTURE * 4 - 16];
	for (int i = 0; o && i < WALK_CHUNKS; i++) {
		asm volatile("%[c] &= 8191" : [c] "+r"(cur));
		spill[0] = o;
		spill[1] = last;
		o = spill[0];
		last = spill[1];
		if (o >= total) {
			if (o - total < 0x7fffffff)
				ci->chunk_next[dir] = o - total + 1;
			break;
		}
		__u8 line[16] = {};
		__u64 avail = total - o < 16 ? total - o : 16;
		asm volatile("%[a] &= 31" : [a] "+r"(avail));
		if (avail > 16 || bpf_probe_read_user(line, avail, (const void *)(ptr + o)))
			break;
		__u64 lo, hi;
		__builtin_memcpy(&lo, line, 8);
		__builtin_memcpy(&hi, line + 8, 8);
		__u64 parsed = chunk_line(lo, hi);
		if (!parsed)
			break; // not a chunk-size line (or cut by the call's end): the tail is taken
		__u64 ll = parsed & 0xff;
		__u64 size = parsed >> 8;
		if (size == 0)
			ll = avail; // the last chunk: with the empty line that ends the body
		if (o + ll > last && cur < MAX_CAPTURE + 2048) {
			__u64 a = o < last ? last : o;
			cur = seg_out(ev, cur, a, o + ll - a, (const void *)(ptr + a));
			last = o + ll;
		}
		if (size == 0)
			break; // trailers are not followed
		o += ll + size + 2;
	}
	// the call's last bytes, past what was appended
	asm volatile("%[c] &= 8191" : [c] "+r"(cur));
	__u64 t = total > TAIL_BYTES ? total - TAIL_BYTES : 0;
	if (t < last)
		t = last;
	if (t < total && total - t <= TAIL_BYTES && cur < MAX_CAPTURE + 2048)
		cur = seg_out(ev, cur, t, total - t, (const void *)(ptr + t));
	return cur;
}

