package capture

import (
	"bytes"

	"github.com/otelbee/otelbee/collectors/l7"
)

// Upgrading is a Handler that can take over a connection another
// protocol's handler upgraded to it (h2c: HTTP/1's 101, then HTTP/2).
type Upgrading interface {
	OpenUpgraded(c *Conn, u *l7.Upgrade)
}

// pendingUpgrade is the upgrade request an HTTP/1 handler noted at a 101,
// kept until the connection's first HTTP/2 record (the kernel re-decides
// the connection at the 101: bpf/l7/http2.h).
type pendingUpgrade struct {
	u   l7.Upgrade
	buf []byte // the slices of u
}

// SetUpgrade is for the HTTP/1 handler: at a 101 answering "Upgrade: h2c"
// it notes the request, which the HTTP/2 handler takes as its stream 1.
// It reports whether an HTTP/2 handler will take the connection over (the
// http2 collector is on): the request is then that handler's to record,
// not the 101. Called on the Run goroutine, during the handler's Data.
func (c *Conn) SetUpgrade(u l7.Upgrade) bool {
	if !c.h2Upgrade {
		return false
	}
	p := &pendingUpgrade{}
	p.buf = append(append(append(p.buf, u.Method...), u.Target...), u.Host...)
	m, t := len(u.Method), len(u.Method)+len(u.Target)
	p.u = l7.Upgrade{Method: p.buf[:m:m], Target: p.buf[m:t:t], Host: p.buf[t:], Start: u.Start, End: u.End}
	c.upgrade = p
	return true
}

// noteRest keeps what the record that carried the 101 moved after its
// head: the server's first HTTP/2 bytes (a client's read may hold both).
func (c *Conn) noteRest(r *Record) {
	p := c.upgrade
	if p == nil || p.u.Rest != nil || r.Dir() != l7.ToClient {
		return
	}
	p.u.Rest = []byte{}
	if i := bytes.Index(r.Data, []byte("\r\n\r\n")); i >= 0 && uint64(len(r.Data)) == r.Total {
		p.u.Rest = append(p.u.Rest, r.Data[i+4:]...)
	}
}

// handOver gives an HTTP/1 connection the kernel re-decided as HTTP/2 (an
// h2c upgrade) to the HTTP/2 handler: the HTTP/1 one ends it, the HTTP/2
// one starts it from the upgrade request.
func (e *Engine) handOver(c *Conn, end uint64) {
	h := e.handlers[ProtoHTTP2]
	if h == nil {
		return
	}
	c.h.End(c, end, false, false)
	c.State = nil
	c.Proto = ProtoHTTP2
	c.h = h
	p := c.upgrade
	c.upgrade = nil
	e.handedOver.Add(1)
	if uh, ok := h.(Upgrading); ok && p != nil {
		uh.OpenUpgraded(c, &p.u)
		return
	}
	h.Open(c, nil)
}

// sequence checks data record r against the records c received before
// it and tells c's handler of any lost: by direction when the handler
// takes that (DirLoser). A gap in r's own direction is a loss for sure (a
// program's calls of one direction come one after another, each record in
// the ring before its call returns). The other direction's count is what
// r's CPU saw: on a connection read and written at once (a multiplexed
// protocol) a record of it may still be on its way, so only a protocol
// that answers in order (a request's response comes after it) is told of
// a gap there, before r reaches its parser, which then pairs r right.
func (e *Engine) sequence(c *Conn, r *Record) {
	own, other, d := r.ReqRecords, r.RespRecords, 0
	if r.Dir() == l7.ToClient {
		own, other, d = r.RespRecords, r.ReqRecords, 1
	}
	lostOwn := own > c.recv[d]
	lostOther := other > c.recv[1-d] && e.multiplexed.Load()&(1<<c.Proto) == 0
	if own >= c.recv[d] {
		c.recv[d] = own + 1
	} // else a record the other direction's count had already given up
	if lostOther {
		c.recv[1-d] = other
	}
	if !lostOwn && !lostOther {
		return
	}
	lost := [2]bool{}
	lost[d], lost[1-d] = lostOwn, lostOther
	if dl, ok := c.h.(DirLoser); ok {
		dl.LostDirs(c, lost[0], lost[1])
		return
	}
	c.h.Lost(c)
}
