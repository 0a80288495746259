package tcp

//go:generate go tool bpf2go -tags linux -cc clang -cflags "-O2 -g -Wall -Werror" -target amd64,arm64 -type conn_key -type conn_counters -type conn_hist -type listener_key -type peer_key -type sock_info -type tcp_counter -type connect_failure -type direction tcp ../../bpf/tcp.c -- -I../../bpf
