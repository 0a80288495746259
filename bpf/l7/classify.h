// The L7 classifier: which protocol a connection carries, from the first
// records the capture sees on it (bpf/l7.c asks while the connection is
// undecided, within a bounded budget of records).
//
// Each test is cheap and looks only at the captured prefix of one call and
// its total length. Tests run in the direction the protocol's first message
// flows: the client's (ToServer) for HTTP/1, HTTP/2, PostgreSQL, Redis,
// Memcached and Kafka; the server's (ToClient) for MySQL, whose server
// speaks first, so a MySQL connection is never decided on the client's
// bytes. Ciphertext (a TLS record header) never decides: the caller keeps
// the connection undecided-as-TLS until a TLS data source supplies its
// plaintext.
//
// A protocol whose bit is not in proto_mask never classifies: its match is
// returned with CLASS_DISABLED, so the connection is given up and counted
// as unobserved by what it looked like.
#pragma once

// l7_classify's results besides a protocol.
#define CLASS_NONE 0        // nothing recognised: undecided, the budget goes on
#define CLASS_TLS 0x80      // a TLS record: ciphertext
#define CLASS_DISABLED 0x40 // | proto: that protocol's start, with its collector off

static __always_inline __u32 be32(const __u8 *b)
{
	return (__u32)b[0] << 24 | (__u32)b[1] << 16 | (__u32)b[2] << 8 | b[3];
}

static __always_inline __u16 be16(const __u8 *b)
{
	return (__u16)b[0] << 8 | b[1];
}

static __always_inline int is_tls_record(const __u8 *b, __u32 n)
{
	// ChangeCipherSpec, Alert, Handshake, ApplicationData; TLS 1.0-1.3
	return n >= 5 && b[0] >= 0x14 && b[0] <= 0x17 && b[1] == 0x03 && b[2] <= 0x04;
}

static __always_inline int is_h2_preface(const __u8 *b, __u32 n)
{
	if (n < 24)
		return 0;
	__u64 w0, w1, w2;
	__builtin_memcpy(&w0, b, 8);
	__builtin_memcpy(&w1, b + 8, 8);
	__builtin_memcpy(&w2, b + 16, 8);
	// "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", little endian
	return w0 == 0x5448202a20495250ULL && w1 == 0x0a0d302e322f5054ULL && w2 == 0x0a0d0a0d4d530a0dULL;
}

// ---- HTTP/2 met mid-connection
//
// A connection open before the agent has sent its preface already: its
// client's calls are accepted as HTTP/2 when they start with a frame
// header a client could send there (RFC 9113: length within the default
// SETTINGS_MAX_FRAME_SIZE, a known type, only the flags that type defines,
// the stream id and length that type requires, HEADERS, DATA and
// CONTINUATION on the client's odd streams; not a CONTINUATION, which only
// follows HEADERS), and the next frame header lies exactly where the first
// frame ends: at the call's end, or a second well-formed header the prefix
// holds (a call that does not show it waits for the next). Text protocols never pass
// (a first byte >= 0x20 is a length over 2 MiB); length-prefixed binary
// ones would need their next bytes to line up as frames too. Only for
// connections open before the agent, and only when no protocol's start
// matched. User space trusts none of it (the parser's own framing and a
// joined connection's empty HPACK table: docs/http2.md).
#define H2_MAX_FRAME 16384

static __always_inline __u32 h2_len(const __u8 *b)
{
	return (__u32)b[0] << 16 | (__u32)b[1] << 8 | b[2];
}

// h2_hdr packs a frame header's length | type << 24 | flags << 32 for
// h2_client_frame.
static __always_inline __u64 h2_hdr(const __u8 *b)
{
	return h2_len(b) | (__u64)b[3] << 24 | (__u64)b[4] << 32;
}

// h2_client_frame: a frame header (h2_hdr, and its raw stream id word) a
// client may send. Global functions here and below: verified once, not once
// per path of l7_classify (inlined, the checks cost the exit programs
// 71,000 verified instructions on 6.18).
__noinline int h2_client_frame(__u64 h, __u32 sid)
{
	__u32 len = h & 0xffffff;
	__u32 type = (h >> 24) & 0xff, fl = (h >> 32) & 0xff;
	if (len > H2_MAX_FRAME || (sid & 0x80000000))
		return 0;
	switch (type) {
	case 0: // DATA from a client: its own (odd) streams; END_STREAM, PADDED (its
		// pad length byte); empty only to end its stream (clients send
		// nothing else; zero runs in other protocols' bytes look like one)
		return (sid & 1) && !(fl & ~0x09) && len >= ((fl & 0x08) ? 1 : 0) && (len || (fl & 0x01));
	case 1: // HEADERS from a client: an odd stream; END_STREAM, END_HEADERS, PADDED, PRIORITY
		return (sid & 1) && !(fl & ~0x2d) && len >= ((fl & 0x08) ? 1 : 0) + ((fl & 0x20) ? 5 : 0);
	case 2: // PRIORITY
		return sid && !fl && len == 5;
	case 3: // RST_STREAM
		return sid && !fl && len == 4;
	case 4: // SETTINGS: six bytes a setting, an ACK empty
		return !sid && !(fl & ~0x01) && (fl ? len == 0 : len % 6 == 0);
	case 6: // PING
		return !sid && !(fl & ~0x01) && len == 8;
	case 7: // GOAWAY
		return !sid && !fl && len >= 8;
	case 8: // WINDOW_UPDATE
		return !fl && len == 4;
	case 9: // CONTINUATION (of a client's HEADERS)
		return (sid & 1) && !(fl & ~0x04);
	}
	return 0; // PUSH_PROMISE (a server's), unknown types
}

// h2_midstream_start: the call in the scratch record (n bytes of a call
// that moved total) starts with a chain of client frames.
__noinline int h2_midstream_start(__u32 n, __u64 total)
{
	__u32 zero = 0;
	struct data_event *ev = bpf_map_lookup_elem(&scratch, &zero);
	if (!ev)
		return 0;
	if (n > MAX_CAPTURE)
		n = MAX_CAPTURE;
	const __u8 *b = ev->data;
	if (n < 9 || b[3] == 9 || !h2_client_frame(h2_hdr(b), be32(b + 5)))
		return 0;
	// WINDOW_UPDATE's increment is not 0, RST_STREAM's code a known one
	// (where they start the call: the prefix holds their payload).
	if (b[3] == 8 && (n < 13 || (b[9] & 0x80) || !(be32(b + 9) & 0x7fffffff)))
		return 0;
	if (b[3] == 3 && (n < 13 || be32(b + 9) > 0xd))
		return 0;
	__u64 next = 9 + (__u64)h2_len(b);
	if (next == total)
		// The call's one frame; not a DATA frame alone (a length
		// field's low bytes and what follows pass for one: a read of
		// PostgreSQL's Execute and Sync; and DATA of a stream begun
		// before the agent is nothing the parser can use).
		return b[3] != 0;
	// A frame running past the call, or a next header past the prefix or
	// cut by the call's end, is not checked: not enough (real TLS
	// handshakes hold 9-byte runs that pass as one frame header;
	// collectors/l7/capture/classify_test.go), the budget goes on.
	if (next + 9 > n)
		return 0;
	__u64 at = next;
	asm volatile("%[a] &= 4095" : [a] "+r"(at));
	const __u8 *c = b + at;
	if (!h2_client_frame(h2_hdr(c), be32(c + 5)))
		return 0;
	// A HEADERS without END_HEADERS is followed by its CONTINUATION, and
	// only it is.
	if (b[3] == 1 && !(b[4] & 0x04))
		return c[3] == 9 && be32(c + 5) == be32(b + 5);
	return c[3] != 9;
}

// PostgreSQL's first message: StartupMessage (length, protocol 3.0), or the
// SSLRequest / GSSENCRequest that may come before it. The requests are
// answered with one byte and followed by a TLS handshake or the startup
// message: they keep the connection undecided (the next record decides).
#define PG_PROTOCOL_3 196608
#define PG_SSL_REQUEST 80877103
#define PG_GSSENC_REQUEST 80877104

static __always_inline int pg_start(const __u8 *b, __u32 n, __u64 total)
{
	if (n < 8)
		return 0;
	__u32 len = be32(b), code = be32(b + 4);
	if (code == PG_PROTOCOL_3 && len >= 9 && len <= 10000 && len == total)
		return 1;
	return 0;
}

static __always_inline int pg_pre_startup(const __u8 *b, __u32 n, __u64 total)
{
	if (n < 8 || total != 8 || be32(b) != 8)
		return 0;
	__u32 code = be32(b + 4);
	return code == PG_SSL_REQUEST || code == PG_GSSENC_REQUEST;
}

// The MySQL/MariaDB server greeting (Initial Handshake, protocol 10): a
// packet header (3-byte length, sequence 0), 0x0a, then the server version
// as a NUL-terminated string starting with a digit.
static __always_inline int mysql_greeting(const __u8 *b, __u32 n, __u64 total)
{
	if (n < 8)
		return 0;
	__u32 len = b[0] | (__u32)b[1] << 8 | (__u32)b[2] << 16;
	if (b[3] != 0 || b[4] != 10 || len < 20 || len > 1024 || len + 4 > total)
		return 0;
	return b[5] >= '0' && b[5] <= '9' && b[6] >= '!' && b[6] < 0x7f;
}

// Redis: a RESP array of bulk strings ("*N\r\n$"), as every client sends
// commands, or an inline PING ("PING\r\n": redis-benchmark's ping_inline,
// health checks over telnet or nc). Other inline commands are words too
// common in text protocols to decide on.
static __always_inline int redis_start(const __u8 *b, __u32 n)
{
	if (n >= 6 && b[0] == 'P' && b[1] == 'I' && b[2] == 'N' && b[3] == 'G' && b[4] == '\r' && b[5] == '\n')
		return 1;
	if (n < 5 || b[0] != '*' || b[1] < '1' || b[1] > '9')
		return 0;
	if (b[2] == '\r')
		return b[3] == '\n' && b[4] == '$';
	if (n < 6 || b[2] < '0' || b[2] > '9')
		return 0;
	return b[3] == '\r' && b[4] == '\n' && b[5] == '$';
}

// Memcached's text protocol: a lowercase command, then a space or the line
// end (a whole short call must end its line).
static __always_inline int memcached_start(const __u8 *b, __u32 n, __u64 total)
{
	if (n < 4)
		return 0;
	__u32 w = b[0] | (b[1] << 8) | (b[2] << 16) | ((__u32)b[3] << 24);
#define W(a, b, c, d) ((__u32)(a) | ((__u32)(b) << 8) | ((__u32)(c) << 16) | ((__u32)(d) << 24))
	int hit = 0;
	switch (w) {
	case W('g', 'e', 't', ' '):
	case W('g', 'e', 't', 's'):
	case W('s', 'e', 't', ' '):
	case W('a', 'd', 'd', ' '):
	case W('c', 'a', 's', ' '):
	case W('g', 'a', 't', ' '):
	case W('g', 'a', 't', 's'):
	case W('r', 'e', 'p', 'l'):
	case W('a', 'p', 'p', 'e'):
	case W('p', 'r', 'e', 'p'):
	case W('d', 'e', 'l', 'e'):
	case W('i', 'n', 'c', 'r'):
	case W('d', 'e', 'c', 'r'):
	case W('t', 'o', 'u', 'c'):
	case W('v', 'e', 'r', 's'):
	case W('s', 't', 'a', 't'):
	case W('f', 'l', 'u', 's'):
	case W('m', 'n', '\r', '\n'):
		hit = 1;
		break;
	}
#undef W
	// meta commands: mg ms md ma me, then a space
	if (!hit && b[0] == 'm' && b[2] == ' ' &&
	    (b[1] == 'g' || b[1] == 's' || b[1] == 'd' || b[1] == 'a' || b[1] == 'e'))
		hit = 1;
	if (!hit)
		return 0;
	if (n == total) {
		__u64 e = n - 2;
		asm volatile("%[e] &= 4095" : [e] "+r"(e));
		return b[e] == '\r' && b[e + 1] == '\n';
	}
	return 1;
}

// Kafka: a request header (size, api_key, api_version, correlation id,
// client id length) whose size fits the call, api key and version in the
// ranges clients use, and a sane client id.
static __always_inline int kafka_start(const __u8 *b, __u32 n, __u64 total)
{
	if (n < 14)
		return 0;
	__u32 size = be32(b);
	__s16 key = be16(b + 4), ver = be16(b + 6);
	__s16 cid = be16(b + 12);
	if (size < 10 || (__u64)size + 4 > total || size > (64 << 20))
		return 0;
	if (key < 0 || key > 80 || ver < 0 || ver > 20)
		return 0;
	if (cid < -1 || cid > 255 || 14 + cid > size + 4)
		return 0;
	if (cid > 0 && n > 14 && (b[14] < '!' || b[14] >= 0x7f))
		return 0;
	return 1;
}

// proto_on: the protocol's collector is enabled.
static __always_inline int proto_on(__u32 p)
{
	return (proto_mask >> p) & 1;
}

static __always_inline __u32 decide(__u32 p)
{
	return proto_on(p) ? p : (CLASS_DISABLED | p);
}

// l7_classify looks at the record in the per-CPU scratch buffer (n
// captured bytes of a call that moved total) in direction request_dir (1:
// client to server) and returns a protocol (enum l7_proto), CLASS_TLS,
// CLASS_DISABLED | protocol, PG_WAIT or CLASS_NONE. A global function: the
// verifier checks it once, not once per state of its caller.
#define CLASS_WAIT 0x20 // a start that is answered before the protocol shows (SSLRequest)

// midstream: the connection was open before the agent (HTTP/2 may then be
// met in the middle).
__noinline __u32 l7_classify(__u32 n, __u64 total, __u32 request_dir, __u32 midstream)
{
	__u32 zero = 0;
	struct data_event *ev = bpf_map_lookup_elem(&scratch, &zero);
	if (!ev)
		return CLASS_NONE;
	if (n > MAX_CAPTURE)
		n = MAX_CAPTURE;
	const __u8 *b = ev->data;
	if (is_tls_record(b, n))
		return CLASS_TLS;
	if (!request_dir)
		return mysql_greeting(b, n, total) ? decide(L7_PROTO_MYSQL) : CLASS_NONE;
	if (is_request_start(b, n))
		return decide(L7_PROTO_HTTP1);
	if (is_h2_preface(b, n))
		return decide(L7_PROTO_HTTP2);
	if (pg_start(b, n, total))
		return decide(L7_PROTO_POSTGRES);
	if (pg_pre_startup(b, n, total))
		return proto_on(L7_PROTO_POSTGRES) ? CLASS_WAIT : (CLASS_DISABLED | L7_PROTO_POSTGRES);
	if (redis_start(b, n))
		return decide(L7_PROTO_REDIS);
	if (memcached_start(b, n, total))
		return decide(L7_PROTO_MEMCACHED);
	if (kafka_start(b, n, total))
		return decide(L7_PROTO_KAFKA);
	if (midstream && h2_midstream_start(n, total))
		return decide(L7_PROTO_HTTP2);
	return CLASS_NONE;
}

// classify_test runs l7_classify on a packet: total (u64 LE), request_dir
// and midstream (a byte each), then the record's bytes. Never attached:
// BPF_PROG_TEST_RUN of the classifier's table tests
// (collectors/l7/capture/classify_test.go).
SEC("socket")
int classify_test(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct data_event *ev = bpf_map_lookup_elem(&scratch, &zero);
	if (!ev)
		return CLASS_NONE;
	__u8 hdr[10];
	if (bpf_skb_load_bytes(skb, 0, hdr, sizeof(hdr)))
		return 0xff;
	__u64 total = 0;
	__builtin_memcpy(&total, hdr, 8);
	__u32 n = skb->len - sizeof(hdr);
	if (skb->len <= sizeof(hdr) || n >= MAX_CAPTURE)
		return 0xff;
	__u32 m = n - 1; // a length the verifier sees as 1..4096
	asm volatile("%[m] &= 4095" : [m] "+r"(m));
	if (bpf_skb_load_bytes(skb, sizeof(hdr), ev->data, m + 1))
		return 0xff;
	return l7_classify(m + 1, total, hdr[8], hdr[9]);
}
