// Command httpserver is the Go side of the HTTP overhead benchmark
// (bench/httpoverhead): a net/http hello server, either bare (-mode plain)
// or wrapped in the in-process otelhttp middleware with the OpenTelemetry
// SDK exporting spans and metrics over OTLP/HTTP (-mode otelhttp), the
// alternative otelbee is compared with. It is its own module so that the
// agent's module does not depend on otelhttp.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

func main() {
	mode := flag.String("mode", "plain", "plain or otelhttp")
	addr := flag.String("listen", "127.0.0.1:0", "listen address")
	addrFile := flag.String("addr-file", "", "write the bound address here")
	cert := flag.String("cert", "", "serve HTTPS (HTTP/1.1) with this certificate (PEM)")
	key := flag.String("key", "", "the certificate's key (PEM)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte("hello world\n"))
	})
	if *mode == "otelhttp" {
		// Endpoints come from OTEL_EXPORTER_OTLP_ENDPOINT.
		texp, err := otlptracehttp.New(ctx)
		if err != nil {
			log.Fatal(err)
		}
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(texp))
		defer tp.Shutdown(context.Background())
		mexp, err := otlpmetrichttp.New(ctx)
		if err != nil {
			log.Fatal(err)
		}
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewPeriodicReader(mexp)))
		defer mp.Shutdown(context.Background())
		otel.SetTracerProvider(tp)
		otel.SetMeterProvider(mp)
		h = otelhttp.NewHandler(h, "hello")
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	if *addrFile != "" {
		os.WriteFile(*addrFile+".tmp", []byte(ln.Addr().String()), 0o644)
		os.Rename(*addrFile+".tmp", *addrFile)
	}
	srv := &http.Server{Handler: h}
	if *cert != "" {
		// HTTP/1.1, as wrk speaks: a non-nil empty map turns off HTTP/2.
		srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
		go srv.ServeTLS(ln, *cert, *key)
	} else {
		go srv.Serve(ln)
	}
	<-ctx.Done()
	srv.Shutdown(context.Background())
}
