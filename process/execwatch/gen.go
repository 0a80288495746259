package execwatch

//go:generate go tool bpf2go -tags linux -cc clang -cflags "-O2 -g -Wall -Werror" -target amd64,arm64 -type exec_event -type exec_flags exec ../../bpf/exec.c -- -I../../bpf
