package httpc

//go:generate go tool bpf2go -tags linux -cc clang -cflags "-O2 -g -Wall -Werror" -target amd64,arm64 -type conn_event -type data_event -type conn_info -type http_counter -type http_event_type -type http_role -type filter_action -type comm_key -type tgid_drops -type http_unobserved -type tgid_unobserved http ../../bpf/http.c -- -I../../bpf
