// TLS plaintext data sources (OpenSSL, Go crypto/tls uprobes): owned by the
// tls collector. bpf/l7.c includes this header after l7_capture and before
// its syscall programs, so uprobe programs written here call
//
//	l7_capture(key, l7_meta(dir, CALL_BUF, SOURCE_OPENSSL, 0), buf, ret, enter_ns)
//
// with key = (tgid << 32 | fd) of the TCP connection the syscall programs
// track (accept/connect), dir DIR_READ for SSL_read and DIR_WRITE for
// SSL_write, buf the plaintext buffer, ret the bytes the call returned and
// enter_ns the entry's bpf_ktime_get_ns(). The first such call marks the
// connection CONN_TLS_PLAINTEXT: from then on the syscall source leaves it
// alone (its ciphertext is neither parsed nor counted as unobserved TLS),
// and a connection held undecided-as-TLS is classified afresh on the
// plaintext.
//
// Processes whose TLS is instrumented go in the tls_tgids map (user space
// of the tls collector): their ciphertext is not counted as unobserved TLS,
// since their plaintext is expected from here.
//
// Finding the descriptor: define L7_TLS_SYSCALL_HOOK(fd, ci) here (before
// the syscall programs); it runs at the entry of every read/write family
// call on a tracked connection, whatever its state, on the calling thread,
// so an SSL_read/SSL_write in flight on that thread can take the fd.
#pragma once
