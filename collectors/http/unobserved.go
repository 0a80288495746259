package httpc

import (
	"context"
	"fmt"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/otelbee/otelbee/collectors/l7/capture"

	"github.com/otelbee/otelbee/process/identity"
)

// Traffic the collector sees but cannot parse, per service: connections
// that are not HTTP/1.x (by what their first bytes look like), connections a
// 101 switched to another protocol, and messages whose framing was not
// captured. Counted per process in the kernel and the parser, reported per
// service (service.name, service.namespace): a process that exits keeps
// counting for its service.

// svcKey names a service.
type svcKey struct{ name, namespace string }

func (k svcKey) attrs() []attribute.KeyValue {
	kv := []attribute.KeyValue{identity.KeyServiceName.String(k.name)}
	if k.namespace != "" {
		kv = append(kv, identity.KeyServiceNamespace.String(k.namespace))
	}
	return kv
}

// perService sums cumulative per-process counts into per-service ones that
// never go down: the last values of a process no longer reported are kept
// in its service's total.
type perService[V ~[]uint64] struct {
	width   int
	svc     map[uint32]svcKey
	last    map[uint32]V
	seen    map[uint32]bool
	retired map[svcKey]V
}

func newPerService[V ~[]uint64](width int) *perService[V] {
	return &perService[V]{width: width, svc: map[uint32]svcKey{}, last: map[uint32]V{},
		seen: map[uint32]bool{}, retired: map[svcKey]V{}}
}

// observe records the current values of a process.
func (p *perService[V]) observe(tgid uint32, svc func(uint32) svcKey, vals V) {
	if _, ok := p.svc[tgid]; !ok {
		p.svc[tgid] = svc(tgid)
	}
	l := p.last[tgid]
	if l == nil {
		l = make(V, p.width)
		p.last[tgid] = l
	}
	copy(l, vals)
	p.seen[tgid] = true
}

// totals folds processes not observed since the last call into their
// service and returns the sums per service.
func (p *perService[V]) totals() map[svcKey]V {
	for tgid, l := range p.last {
		if p.seen[tgid] {
			continue
		}
		k := p.svc[tgid]
		r := p.retired[k]
		if r == nil {
			r = make(V, p.width)
			p.retired[k] = r
		}
		for i := range l {
			r[i] += l[i]
		}
		delete(p.last, tgid)
		delete(p.svc, tgid)
	}
	clear(p.seen)
	out := map[svcKey]V{}
	add := func(k svcKey, v V) {
		o := out[k]
		if o == nil {
			o = make(V, p.width)
			out[k] = o
		}
		for i := range v {
			o[i] += v[i]
		}
	}
	for k, v := range p.retired {
		add(k, v)
	}
	for tgid, v := range p.last {
		add(p.svc[tgid], v)
	}
	return out
}

// unobservedStats are the collector's per-service counters of this file.
type unobservedStats struct {
	mu      sync.Mutex
	kernel  *perService[[]uint64] // enum http_unobserved
	parser  *perService[[]uint64] // upgraded by protocol, then framing lost, body unknown
	attrSet map[svcKey][]metric.ObserveOption
}

const (
	parserFramingLost = int(upgradeCount)
	parserBodyUnknown = int(upgradeCount) + 1
	parserWidth       = int(upgradeCount) + 2
)

// unobservedReasons name the kernel's kinds (enum http_unobserved).
var unobservedReasons = capture.UnobservedReasons

func (c *Collector) serviceKey(tgid uint32) svcKey {
	if c.deps.Processes == nil {
		return svcKey{name: identity.UnknownService}
	}
	p := c.deps.Processes.Lookup(tgid)
	return svcKey{name: p.ServiceName, namespace: p.ServiceNamespace}
}

// unobservedInstruments registers the per-service counters.
func (c *Collector) unobservedInstruments() (metric.Registration, error) {
	m := c.deps.Meter
	unobserved, err := m.Int64ObservableCounter("otelbee.http.connections.unobserved", metric.WithUnit("{connection}"),
		metric.WithDescription("Connections of a service the HTTP collector cannot parse, by reason: tls (a TLS handshake), http2 (the HTTP/2 preface: prior-knowledge h2c), unknown (any other protocol)."))
	if err != nil {
		return nil, err
	}
	upgraded, err := m.Int64ObservableCounter("otelbee.http.connections.upgraded", metric.WithUnit("{connection}"),
		metric.WithDescription("Connections of a service a 101 response switched from HTTP/1 to another protocol (not parsed from then on), by network.protocol.name: websocket, h2c, other."))
	if err != nil {
		return nil, err
	}
	framing, err := m.Int64ObservableCounter("otelbee.http.framing.lost", metric.WithUnit("{request}"),
		metric.WithDescription("Requests of a service whose message framing was not captured (a chunk-size line past the captured bytes), by reason: end (the message's end was not found: the request is not reported), body_size (reported with its duration, without a body size)."))
	if err != nil {
		return nil, err
	}
	u := &unobservedStats{
		kernel:  newPerService[[]uint64](int(httpHttpUnobservedUNOBSERVED_MAX)),
		parser:  newPerService[[]uint64](parserWidth),
		attrSet: map[svcKey][]metric.ObserveOption{},
	}
	with := func(k svcKey, extra ...attribute.KeyValue) metric.ObserveOption {
		return metric.WithAttributeSet(attribute.NewSet(append(k.attrs(), extra...)...))
	}
	opts := func(k svcKey) []metric.ObserveOption {
		o := u.attrSet[k]
		if o != nil {
			return o
		}
		for _, r := range unobservedReasons {
			o = append(o, with(k, attribute.String("reason", r)))
		}
		for i := UpgradeWebSocket; i < upgradeCount; i++ {
			o = append(o, with(k, attribute.String("network.protocol.name", i.String())))
		}
		o = append(o, with(k, attribute.String("reason", "end")), with(k, attribute.String("reason", "body_size")))
		u.attrSet[k] = o
		return o
	}
	return m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		u.mu.Lock()
		defer u.mu.Unlock()
		c.readUnobserved(u)
		nr := len(unobservedReasons)
		for k, v := range u.kernel.totals() {
			ob := opts(k)
			for i, n := range v {
				if n > 0 {
					o.ObserveInt64(unobserved, int64(n), ob[i])
				}
			}
		}
		for k, v := range u.parser.totals() {
			ob := opts(k)
			for i := UpgradeWebSocket; i < upgradeCount; i++ {
				if n := v[i]; n > 0 {
					o.ObserveInt64(upgraded, int64(n), ob[nr+int(i)-1])
				}
			}
			nu := int(upgradeCount) - 1
			if n := v[parserFramingLost]; n > 0 {
				o.ObserveInt64(framing, int64(n), ob[nr+nu])
			}
			if n := v[parserBodyUnknown]; n > 0 {
				o.ObserveInt64(framing, int64(n), ob[nr+nu+1])
			}
		}
		return nil
	}, unobserved, upgraded, framing)
}

// readUnobserved takes the current per-process values: the kernel's
// unobserved map (entries of exited processes are deleted once read) and
// the parser's counters.
func (c *Collector) readUnobserved(u *unobservedStats) {
	if c.loader == nil { // unit tests: no kernel side
		return
	}
	m := c.loader.Map(httpMapUnobserved)
	var (
		tgid   uint32
		perCPU []httpTgidUnobserved
		dead   []uint32
	)
	vals := make([]uint64, httpHttpUnobservedUNOBSERVED_MAX)
	it := m.Iterate()
	for it.Next(&tgid, &perCPU) {
		clear(vals)
		for _, d := range perCPU {
			for i := range vals {
				vals[i] += d.N[i]
			}
		}
		u.kernel.observe(tgid, c.serviceKey, vals)
		if !c.alive(tgid) {
			// counted into its service from now on (totals)
			dead = append(dead, tgid)
		}
	}
	for _, t := range dead {
		m.Delete(t)
	}
	pv := make([]uint64, parserWidth)
	c.statsMu.Lock()
	for tgid, ps := range c.procs {
		for i := range ps.Upgraded {
			pv[i] = ps.Upgraded[i].Load()
		}
		pv[parserFramingLost] = ps.FramingLost.Load()
		pv[parserBodyUnknown] = ps.BodyUnknown.Load()
		u.parser.observe(tgid, c.serviceKey, pv)
	}
	c.statsMu.Unlock()
}

// registerUnobserved is called from Load.
func (c *Collector) registerUnobserved() error {
	reg, err := c.unobservedInstruments()
	if err != nil {
		return fmt.Errorf("registering http unobserved counters: %w", err)
	}
	c.unobservedReg = reg
	return nil
}

// keyTransportUnix marks the series and spans of Unix domain sockets, which
// have no server address or port.
var keyTransportUnix = attribute.String("network.transport", "unix")

// spanTransportAttrs adds a finished span's body sizes (when known), peer
// and original method; new strings are views of buf (endSpan).
func spanTransportAttrs(attrs []attribute.KeyValue, buf []byte, rec *spanRecord, server bool) ([]attribute.KeyValue, []byte) {
	if rec.reqBody >= 0 {
		attrs = append(attrs, keyReqBodySize.Int64(rec.reqBody))
	}
	if rec.respBody >= 0 {
		attrs = append(attrs, keyRespBodySize.Int64(rec.respBody))
	}
	if rec.peer.IsValid() {
		at := len(buf)
		buf = rec.peer.AppendTo(buf)
		peer := view(buf[at:]) // once: both attributes share it
		attrs = append(attrs, keyPeerAddress.String(peer), keyPeerPort.Int(int(rec.peerPort)))
		if server {
			attrs = append(attrs, keyClientAddress.String(peer))
		}
	} else if server {
		attrs = append(attrs, keyTransportUnix)
	}
	if rec.methodLen > 0 {
		// copied: a view of rec would move the worker's record to the heap
		at := len(buf)
		buf = append(buf, rec.method[:rec.methodLen]...)
		attrs = append(attrs, attribute.String("http.request.method_original", view(buf[at:])))
	}
	return attrs, buf
}
