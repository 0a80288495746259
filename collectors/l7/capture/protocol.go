package capture

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/metric"

	"github.com/otelbee/otelbee/collectors"
	"github.com/otelbee/otelbee/collectors/l7"
)

// protocolHandler runs an l7.Protocol on the engine: a parser per
// connection, fed the records in order, its exchanges to the sink.
type protocolHandler struct {
	p    l7.Protocol
	sink *Sink
	rec  l7.Record
}

func (h *protocolHandler) Name() string { return h.p.Name() }

func (h *protocolHandler) Open(c *Conn, _ *Record) {
	c.State = h.p.NewParser(&c.Conn)
}

func (h *protocolHandler) Data(c *Conn, r *Record) {
	p, ok := c.State.(l7.Parser)
	if !ok {
		return
	}
	if r.Total == 0 {
		return // a failed call (transport error): the close follows
	}
	h.rec = l7.Record{
		Dir:   r.Dir(),
		Data:  r.Data,
		Total: r.Total,
		Tail:  Tail(r.Segs, r.Total),
		Segs:  l7.Segs(r.Segs),
		Start: r.EnterNs,
		End:   r.ExitNs,
	}
	p.Feed(&h.rec, h.sink)
}

// OpenUpgraded implements Upgrading: a connection another protocol's
// handler upgraded to this one. The bytes after the upgrade's head, in the
// call that carried it, are the first record.
func (h *protocolHandler) OpenUpgraded(c *Conn, u *l7.Upgrade) {
	up, ok := h.p.(l7.Upgrader)
	if !ok {
		h.Open(c, nil)
		return
	}
	p := up.Upgraded(&c.Conn, u)
	c.State = p
	if len(u.Rest) > 0 {
		h.rec = l7.Record{Dir: l7.ToClient, Data: u.Rest, Total: uint64(len(u.Rest)), Start: u.End, End: u.End}
		p.Feed(&h.rec, h.sink)
	}
}

// Lost tells the parser both directions lost records: the engine knows a
// sequence gap, not which direction it was in.
func (h *protocolHandler) Lost(c *Conn) {
	if p, ok := c.State.(l7.Parser); ok {
		p.Lost(l7.ToServer, h.sink)
		p.Lost(l7.ToClient, h.sink)
	}
}

// LostDirs implements DirLoser: only the directions that lost records
// are resynchronised (HTTP/2 keeps the other direction's HPACK table).
func (h *protocolHandler) LostDirs(c *Conn, toServer, toClient bool) {
	if p, ok := c.State.(l7.Parser); ok {
		if toServer {
			p.Lost(l7.ToServer, h.sink)
		}
		if toClient {
			p.Lost(l7.ToClient, h.sink)
		}
	}
}

func (h *protocolHandler) End(c *Conn, end uint64, _, _ bool) {
	if p, ok := c.State.(l7.Parser); ok {
		p.Close(end, h.sink)
	}
	c.State = nil
}

func (h *protocolHandler) Housekeep(isDead func(uint32) bool, now time.Time) {
	h.sink.Housekeep(isDead, now)
}

// Collector is the collector of one l7.Protocol: its name on the command
// line is the protocol's; it shares its group's engine with every other L7
// collector (one set of kernel programs).
type Collector struct {
	p       l7.Protocol
	proto   Proto
	eng     *Engine
	deps    collectors.Deps
	h       *protocolHandler
	reg     metric.Registration
	loaded  bool
	reports bool // reports the engine's pipeline stages
}

// NewCollector returns the collector of p on e; p's name must be one the
// kernel classifies (ProtoByName). It registers p with e, so it must be
// called before the engine's first Acquire.
func NewCollector(e *Engine, deps collectors.Deps, p l7.Protocol) (*Collector, error) {
	proto, ok := ProtoByName(p.Name())
	if !ok {
		return nil, fmt.Errorf("protocol %q: the kernel's classifier does not know it", p.Name())
	}
	c := &Collector{p: p, proto: proto, eng: e, deps: deps}
	c.h = &protocolHandler{p: p, sink: NewSink(e, p)}
	e.Register(proto, c.h)
	if cp, ok := p.(l7.CapturePolicy); ok {
		if err := e.SetCapture(proto, cp.Capture()); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Name implements collectors.Collector.
func (c *Collector) Name() string { return c.p.Name() }

// Sink is the protocol's sink (tests).
func (c *Collector) Sink() *Sink { return c.h.sink }

// Load implements collectors.Collector: the first L7 collector's Load
// loads the shared kernel side.
func (c *Collector) Load(ctx context.Context) error {
	first := c.eng.Loader() == nil
	if err := c.eng.Acquire(ctx); err != nil {
		return err
	}
	c.loaded, c.reports = true, first
	if c.deps.Meter != nil {
		reg, err := c.h.sink.selfMetrics(c.deps.Meter)
		if err != nil {
			c.Close()
			return fmt.Errorf("registering %s self-metrics: %w", c.p.Name(), err)
		}
		c.reg = reg
	}
	if c.deps.Producers != nil {
		c.deps.Producers.Add(c.h.sink)
	}
	return nil
}

// Run implements collectors.Collector.
func (c *Collector) Run(ctx context.Context) error { return c.eng.Run(ctx) }

// Close implements collectors.Collector.
func (c *Collector) Close() error {
	if !c.loaded {
		return nil
	}
	c.loaded = false
	if c.reg != nil {
		c.reg.Unregister()
	}
	return c.eng.Release()
}

// PipelineStats implements collectors.PipelineReporter: the engine's stages
// when this collector loaded it.
func (c *Collector) PipelineStats() []collectors.StageStats {
	if !c.reports {
		return nil
	}
	return c.eng.PipelineStats()
}
