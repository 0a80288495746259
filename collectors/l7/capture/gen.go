package capture

//go:generate go tool bpf2go -tags linux -cc clang -cflags "-O2 -g -Wall -Werror" -target amd64,arm64 -type conn_event -type data_event -type conn_info -type http_counter -type http_event_type -type http_role -type filter_action -type comm_key -type tgid_drops -type http_unobserved -type tgid_unobserved -type l7_proto -type l7_source -type http_conn_state -type http_dir -type go_exe -type go_offsets -type tls_counter -type l7_policy l7 ../../../bpf/l7.c -- -I../../../bpf
