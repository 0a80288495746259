package otlp

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	_ "google.golang.org/grpc/encoding/gzip" // the "gzip" compressor for OTLP/gRPC
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
)

// A sender posts an encoded Export*ServiceRequest (the metrics' or the
// spans', both written by this module without protobuf objects) over
// OTLP/HTTP or OTLP/gRPC, with what the OpenTelemetry SDK's clients give:
// the signal's OTEL_EXPORTER_OTLP_* endpoint, headers, timeout,
// compression and TLS, retries with exponential backoff on the
// specification's retryable answers (HTTP 429, 502, 503, 504 honouring
// Retry-After; gRPC Unavailable, Canceled, DeadlineExceeded, Aborted,
// OutOfRange, DataLoss, and ResourceExhausted when the server sends a
// RetryInfo, honouring its delay), and the response's partial success.
// The SDK's clients take protobuf objects and marshal them into a new
// request each time (one allocation of the request's size); the sender
// sends the bytes it is given, and keeps the request and gzip buffers from
// one export to the next. One request is in flight at a time.
type sender struct {
	protocol string
	timeout  time.Duration // the whole export's, retries included (OTEL_EXPORTER_OTLP_TIMEOUT)
	retry    retrySettings
	gzip     bool

	// HTTP
	http    *http.Client
	url     string
	headers http.Header

	// gRPC
	conn   *grpc.ClientConn
	method string
	md     metadata.MD

	mu   sync.Mutex
	req  []byte       // the request buffer handed out by request()
	zbuf bytes.Buffer // the gzip'd request (HTTP)
	gz   *gzip.Writer
	resp bytes.Buffer // an HTTP response's body
}

// retrySettings are the SDK's defaults: first retry after ~5 s, growing
// 1.5× (±50 % jitter) to 30 s, for at most a minute of retrying (and
// never past the export's context).
type retrySettings struct {
	initial, max, maxElapsed time.Duration
}

var defaultRetry = retrySettings{initial: 5 * time.Second, max: 30 * time.Second, maxElapsed: time.Minute}

// maxResponseBytes bounds what is read of a response: a partial success
// or an error message, never large.
const maxResponseBytes = 64 << 10

// exportResult is what the receiver said of a request it accepted: the
// items it rejected (partial success) and why.
type exportResult struct {
	rejected int64
	message  string
}

// newSender builds the sender of signal s over proto with cfg's endpoint
// (or the signal's variables). It does not connect: the first send does.
func newSender(cfg Config, s signal, proto string) (*sender, error) {
	endpoint, err := cfg.signalEndpointURL(s, proto)
	if err != nil {
		return nil, err
	}
	ts, err := readTransportSettings(s)
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(endpoint)
	if err != nil {
		return nil, fmt.Errorf("parsing otlp endpoint %s: %w", quote(endpoint), err)
	}
	tc := ts.tls
	if u.Scheme == "https" && tc == nil {
		tc = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	snd := &sender{protocol: proto, timeout: ts.timeout, retry: defaultRetry, gzip: ts.gzip}
	if proto == ProtocolGRPC {
		creds := insecure.NewCredentials()
		if u.Scheme == "https" {
			creds = credentials.NewTLS(tc)
		}
		host := u.Host
		if u.Port() == "" {
			host += ":4317"
		}
		snd.conn, err = grpc.NewClient(host, grpc.WithTransportCredentials(creds))
		if err != nil {
			return nil, fmt.Errorf("creating the otlp grpc connection to %s: %w", quote(host), err)
		}
		snd.method = traceExportMethod
		if s == metricsSignal {
			snd.method = metricsExportMethod
		}
		snd.md = metadata.New(ts.headers)
		return snd, nil
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if u.Scheme == "https" {
		tr.TLSClientConfig = tc
	}
	snd.http = &http.Client{Transport: tr}
	snd.url = endpoint
	snd.headers = http.Header{}
	for k, v := range ts.headers {
		snd.headers.Set(k, v)
	}
	snd.headers.Set("Content-Type", "application/x-protobuf")
	snd.headers.Set("User-Agent", "otelbee")
	if ts.gzip {
		snd.headers.Set("Content-Encoding", "gzip")
	}
	return snd, nil
}

// request returns the request buffer, empty, for the caller to write the
// next request into (appendRequestField) and hand to send. Only one
// request is built and sent at a time.
func (s *sender) request() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.req[:0]
	s.req = nil
	return b
}

// appendRequestField appends body as an element of a request's field 1
// (ResourceMetrics or ResourceSpans: the two requests' only field).
func appendRequestField(req, body []byte) []byte {
	req = protowire.AppendTag(req, 1, protowire.BytesType)
	req = protowire.AppendVarint(req, uint64(len(body)))
	return append(req, body...)
}

// send sends req (from request()), retrying as the specification says
// within ctx and the timeout (OTEL_EXPORTER_OTLP_TIMEOUT: "the maximum
// time the exporter will wait for each batch export"), and returns the
// receiver's partial success.
func (s *sender) send(ctx context.Context, req []byte) (exportResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.timeout > 0 { // 0: no timeout but ctx's, as the SDK's clients
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.timeout)
		defer cancel()
	}
	body := req
	if s.gzip && s.http != nil {
		if s.gz == nil {
			s.gz = gzip.NewWriter(&s.zbuf)
		}
		s.zbuf.Reset()
		s.gz.Reset(&s.zbuf)
		if _, err := s.gz.Write(req); err != nil {
			return exportResult{}, fmt.Errorf("compressing the request: %w", err)
		}
		if err := s.gz.Close(); err != nil {
			return exportResult{}, fmt.Errorf("compressing the request: %w", err)
		}
		body = s.zbuf.Bytes()
	}
	b := &backoff.ExponentialBackOff{
		InitialInterval:     s.retry.initial,
		RandomizationFactor: backoff.DefaultRandomizationFactor,
		Multiplier:          backoff.DefaultMultiplier,
		MaxInterval:         s.retry.max,
	}
	b.Reset()
	start := time.Now()
	reusable := true
	for {
		var (
			res      exportResult
			err      error
			throttle time.Duration
			retry    bool
			done     bool
		)
		if s.conn != nil {
			res, throttle, retry, err = s.attemptGRPC(ctx, body)
			// gRPC's transport may still hold a request it failed:
			// the next export gets a new buffer.
			done = err == nil
		} else {
			res, throttle, retry, done, err = s.attemptHTTP(ctx, body)
		}
		reusable = reusable && done
		if err == nil || !retry {
			if reusable {
				s.req = req[:0]
			} else {
				s.zbuf = bytes.Buffer{}
			}
			return res, err
		}
		if ctx.Err() != nil {
			return res, fmt.Errorf("%w: %w", context.Cause(ctx), err)
		}
		elapsed := time.Since(start)
		if elapsed+throttle > s.retry.maxElapsed {
			return res, fmt.Errorf("retries would exceed %s: %w", s.retry.maxElapsed, err)
		}
		delay := max(throttle, b.NextBackOff())
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < delay {
			return res, fmt.Errorf("the next retry, in %s, would come after the export's deadline: %w", delay.Round(time.Millisecond), err)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return res, fmt.Errorf("%w: %w", context.Cause(ctx), err)
		case <-t.C:
		}
	}
}

// closeNotifier is a request body that says when the HTTP transport has
// closed it: only then may its bytes be reused (http.RoundTripper).
type closeNotifier struct {
	bytes.Reader
	closed chan struct{}
	once   sync.Once
}

func (c *closeNotifier) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

// attemptHTTP posts body once. done says the transport has let go of it.
func (s *sender) attemptHTTP(ctx context.Context, body []byte) (res exportResult, throttle time.Duration, retry, done bool, err error) {
	rb := &closeNotifier{closed: make(chan struct{})}
	rb.Reset(body)
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, rb)
	if err != nil {
		return res, 0, false, true, fmt.Errorf("building the request: %w", err)
	}
	r.ContentLength = int64(len(body))
	r.Header = s.headers.Clone()
	resp, err := s.http.Do(r)
	// The transport closes the body once it has written it, possibly just
	// after the response came back. After an answer, wait for that (it is
	// at most moments away); after a failure (a cancelled or timed-out
	// request: a shutdown must not wait), reuse the buffer only if the
	// transport let go of it already.
	defer func() {
		if err == nil || resp != nil {
			select {
			case <-rb.closed:
				done = true
			case <-time.After(time.Second):
			}
			return
		}
		select {
		case <-rb.closed:
			done = true
		default:
		}
	}()
	if err != nil {
		var ue *url.Error
		// The SDK retries what the transport calls temporary (timeouts),
		// not a refused connection.
		return res, 0, errors.As(err, &ue) && ue.Temporary(), false, err
	}
	s.resp.Reset()
	_, rerr := s.resp.ReadFrom(io.LimitReader(resp.Body, maxResponseBytes))
	resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		if rerr != nil {
			return res, 0, false, false, fmt.Errorf("reading the response: %w", rerr)
		}
		if resp.Header.Get("Content-Type") == "application/x-protobuf" {
			res, err = parseExportResponse(s.resp.Bytes())
		}
		return res, 0, false, false, err
	}
	msg := strings.TrimSpace(truncate(s.resp.String(), 256))
	if msg == "" {
		msg = "(empty)"
	}
	err = fmt.Errorf("posting to %s: %s (body: %s)", s.url, resp.Status, msg)
	switch resp.StatusCode {
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return res, retryAfter(resp.Header.Get("Retry-After")), true, false, err
	}
	return res, 0, false, false, err
}

// retryAfter reads a Retry-After header: seconds or an HTTP date.
func retryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
		return time.Duration(min(n, int64(time.Hour/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

// attemptGRPC calls the signal's Export method once with body.
func (s *sender) attemptGRPC(ctx context.Context, body []byte) (res exportResult, throttle time.Duration, retry bool, err error) {
	if len(s.md) > 0 {
		ctx = metadata.NewOutgoingContext(ctx, s.md)
	}
	in, out := rawMessage(body), rawMessage(s.resp.Bytes()[:0])
	opts := []grpc.CallOption{grpc.ForceCodecV2(rawCodec{})}
	if s.gzip {
		opts = append(opts, grpc.UseCompressor("gzip"))
	}
	err = s.conn.Invoke(ctx, s.method, &in, &out, opts...)
	if err == nil {
		res, err = parseExportResponse(out)
		return res, 0, false, err
	}
	st := status.Convert(err)
	err = fmt.Errorf("calling %s: %w", s.method, err)
	switch st.Code() {
	case codes.Canceled, codes.DeadlineExceeded, codes.Aborted, codes.OutOfRange, codes.Unavailable, codes.DataLoss:
		return res, retryInfoDelay(st), true, err
	case codes.ResourceExhausted:
		// Retryable only when the server says when (RetryInfo).
		for _, d := range st.Details() {
			if ri, ok := d.(*errdetails.RetryInfo); ok {
				return res, ri.GetRetryDelay().AsDuration(), true, err
			}
		}
	}
	return res, 0, false, err
}

func retryInfoDelay(st *status.Status) time.Duration {
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return ri.GetRetryDelay().AsDuration()
		}
	}
	return 0
}

// rawMessage is an encoded protobuf message, sent and received as it is
// by rawCodec.
type rawMessage []byte

// rawCodec is the gRPC codec of rawMessage: the request is already
// protobuf, and the response is read by parseExportResponse.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(*rawMessage)
	if !ok {
		return nil, fmt.Errorf("rawCodec cannot marshal %T", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(*m)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(*rawMessage)
	if !ok {
		return fmt.Errorf("rawCodec cannot unmarshal into %T", v)
	}
	for _, b := range data {
		*m = append(*m, b.ReadOnlyData()...)
	}
	return nil
}

func (rawCodec) Name() string { return "proto" }

// parseExportResponse reads an Export*ServiceResponse: field 1, the
// partial success, whose field 1 is the rejected items' count (data points
// or spans) and field 2 the receiver's message.
func parseExportResponse(b []byte) (exportResult, error) {
	var res exportResult
	ps, err := findField(b, 1)
	if err != nil || ps == nil {
		return res, err
	}
	for len(ps) > 0 {
		num, typ, n := protowire.ConsumeTag(ps)
		if n < 0 {
			return res, fmt.Errorf("parsing the partial success: %w", protowire.ParseError(n))
		}
		ps = ps[n:]
		switch {
		case num == 1 && typ == protowire.VarintType:
			v, m := protowire.ConsumeVarint(ps)
			if m < 0 {
				return res, fmt.Errorf("parsing the partial success: %w", protowire.ParseError(m))
			}
			res.rejected = int64(v)
			n = m
		case num == 2 && typ == protowire.BytesType:
			v, m := protowire.ConsumeBytes(ps)
			if m < 0 {
				return res, fmt.Errorf("parsing the partial success: %w", protowire.ParseError(m))
			}
			res.message = truncate(string(v), maxLoggedError)
			n = m
		default:
			n = protowire.ConsumeFieldValue(num, typ, ps)
			if n < 0 {
				return res, fmt.Errorf("parsing the partial success: %w", protowire.ParseError(n))
			}
		}
		ps = ps[n:]
	}
	if res.rejected < 0 {
		res.rejected = 0
	}
	return res, nil
}

// findField returns the last occurrence of message field num in b (nil if
// absent).
func findField(b []byte, num protowire.Number) ([]byte, error) {
	var found []byte
	for len(b) > 0 {
		n, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return nil, fmt.Errorf("parsing the export response: %w", protowire.ParseError(l))
		}
		b = b[l:]
		if n == num && typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return nil, fmt.Errorf("parsing the export response: %w", protowire.ParseError(m))
			}
			found = v
			b = b[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(n, typ, b)
		if m < 0 {
			return nil, fmt.Errorf("parsing the export response: %w", protowire.ParseError(m))
		}
		b = b[m:]
	}
	if found == nil {
		return nil, nil
	}
	return found, nil
}

// close closes the gRPC connection.
func (s *sender) close() error {
	if s.conn != nil {
		return s.conn.Close()
	}
	s.http.CloseIdleConnections()
	return nil
}
