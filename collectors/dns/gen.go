package dns

//go:generate go tool bpf2go -tags linux -cc clang -cflags "-O2 -g -Wall -Werror" -target amd64,arm64 -type dns_event -type pending_key -type pending_val -type sock_info -type proc_drops -type dns_counter -type dns_kind dns ../../bpf/dns.c -- -I../../bpf
