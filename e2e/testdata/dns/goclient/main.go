// Command goclient resolves names with Go's own resolver (PreferGo), which
// reads /etc/resolv.conf, and prints one line per lookup: "name TYPE CODE".
// Arguments are TYPE:name:count (TYPE is A, TXT or SRV; SRV names are the
// full _service._proto.domain). For the DNS collector's end-to-end test.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	r := &net.Resolver{PreferGo: true}
	failed := false
	for _, arg := range os.Args[1:] {
		parts := strings.SplitN(arg, ":", 3)
		if len(parts) != 3 {
			fmt.Fprintf(os.Stderr, "bad argument %q: want TYPE:name:count\n", arg)
			os.Exit(2)
		}
		n, err := strconv.Atoi(parts[2])
		if err != nil {
			fmt.Fprintf(os.Stderr, "bad count in %q\n", arg)
			os.Exit(2)
		}
		for range n {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := lookup(ctx, r, parts[0], parts[1])
			cancel()
			code := "NOERROR"
			var dnsErr *net.DNSError
			switch {
			case err == nil:
			case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
				code = "NXDOMAIN"
			default:
				code = "ERROR"
				failed = true
				fmt.Fprintln(os.Stderr, err)
			}
			fmt.Println(strings.TrimSuffix(parts[1], "."), parts[0], code)
		}
	}
	if failed {
		os.Exit(1)
	}
}

func lookup(ctx context.Context, r *net.Resolver, typ, name string) error {
	switch typ {
	case "A":
		_, err := r.LookupIP(ctx, "ip4", name)
		return err
	case "TXT":
		_, err := r.LookupTXT(ctx, name)
		return err
	case "SRV":
		_, _, err := r.LookupSRV(ctx, "", "", name)
		return err
	}
	return fmt.Errorf("unsupported type %s", typ)
}
