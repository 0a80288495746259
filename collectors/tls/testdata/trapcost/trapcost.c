// trapcost calls one small function N times and prints the CPU time per
// call in nanoseconds (the process's user and system time: a uprobe's trap,
// its program and a single step are all charged to it). Each function
// begins with the instruction a probe on it hits: some the kernel emulates,
// some it single-steps out of line. Used by BenchmarkUprobeTrap.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define F(name, body)                                                                  \
	int name(int);                                                                     \
	__asm__(".text\n.globl " #name "\n.type " #name ",@function\n" #name ": " body "\n" \
	        ".size " #name ", .-" #name "\n");

F(at_sub, "sub $8,%rsp\n lea 1(%rdi),%eax\n add $8,%rsp\n ret")    // OpenSSL's SSL_read
F(at_cmp, "cmp %rdi,%rsp\n lea 1(%rdi),%eax\n ret")                // a cmp, as Go's stack check
F(at_ret, "lea 1(%rdi),%eax\n ret")                                 // probed at +3, the ret
F(at_push, "push %r13\n lea 1(%rdi),%eax\n pop %r13\n ret")         // ssl_read_internal
F(at_jcc, "test %edi,%edi\n jle 1f\n1: lea 1(%rdi),%eax\n ret")    // probed at +2, the jle
F(at_call, "call 1f\n lea 1(%rdi),%eax\n ret\n1: ret")              // Go's call of memmove
F(at_nop5, ".byte 0x0f,0x1f,0x44,0x00,0x00\n lea 1(%rdi),%eax\n ret") // a 5-byte nop

int main(int argc, char **argv) {
	if (argc != 3)
		return 2;
	static const struct {
		const char *name;
		int (*fn)(int);
	} fns[] = {{"at_sub", at_sub}, {"at_cmp", at_cmp}, {"at_ret", at_ret}, {"at_push", at_push},
	           {"at_jcc", at_jcc}, {"at_call", at_call}, {"at_nop5", at_nop5}};
	int (*fn)(int) = 0;
	for (unsigned i = 0; i < sizeof(fns) / sizeof(fns[0]); i++)
		if (!strcmp(argv[1], fns[i].name))
			fn = fns[i].fn;
	if (!fn)
		return 2;
	long n = atol(argv[2]);
	struct timespec a, b;
	volatile int s = 0;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &a);
	for (long i = 0; i < n; i++)
		s = fn(s);
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &b);
	printf("%.1f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
	return 0;
}
