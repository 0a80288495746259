/* A C program with OpenSSL linked in statically, for the static-OpenSSL
 * discovery tests: unstripped it keeps SSL_read in .symtab, stripped only
 * the version text remains. */
#include <openssl/ssl.h>
#include <stdio.h>

int main(void) {
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	SSL *ssl = SSL_new(ctx);
	char buf[16];
	if (ssl && SSL_read(ssl, buf, sizeof buf) < 0 && SSL_write(ssl, buf, 0) < 0)
		puts(OpenSSL_version(OPENSSL_VERSION));
	return 0;
}
