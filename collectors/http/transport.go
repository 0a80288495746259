package httpc

// Transport errors: a read or write that failed in a way that ends the
// connection (bpf/http.c emit_call_error) fails the requests waiting on it.
// They are reported as exchanges with no status and error.type naming the
// failure, as the HTTP conventions ask for a request that failed before a
// response was received (client) or sent (server).

// Error kinds, in series keys.
const (
	errNone  uint8 = iota
	errReset       // ECONNRESET, EPIPE, ECONNABORTED: the peer reset or went away
	errTimeout
	errOther
)

// errorTypes are the error.type values of the kinds.
var errorTypes = [...]string{errNone: "", errReset: "connection_reset", errTimeout: "timeout", errOther: "_OTHER"}

// errnoKind classifies an errno from the kernel.
func errnoKind(errno uint8) uint8 {
	switch errno {
	case 104, 32, 103: // ECONNRESET, EPIPE, ECONNABORTED
		return errReset
	case 110: // ETIMEDOUT
		return errTimeout
	}
	return errOther
}

// statusKind splits an exchange's Status: a final status code, or (Fail)
// minus the errno of the transport error that ended it.
func statusKind(status int) (uint16, uint8) {
	if status < 0 {
		return 0, errnoKind(uint8(-status))
	}
	return uint16(status), errNone
}

// Fail ends the requests waiting for a response: each whose head was seen
// goes to the sink with Status -errno and End at, the others are counted
// incomplete. Nothing more is parsed on the connection.
func (c *Conn) Fail(errno uint8, at uint64) {
	for c.n > 0 {
		p := &c.ring[c.head]
		c.head = (c.head + 1) % maxPending
		c.n--
		if !p.headDone {
			c.stats.Incomplete.Add(1)
			continue
		}
		ex := &c.ex
		ex.Method = p.method
		ex.Status = -int(errno)
		ex.Minor = p.minor
		ex.Path = p.path[:p.pathLen]
		ex.ReqBody = p.reqBody
		ex.RespBody = 0
		ex.Start = p.start
		ex.End = at
		ex.HasParent = p.hasParent
		ex.TraceID = p.traceID
		ex.ParentSpanID = p.spanID
		ex.TraceFlags = p.flags
		ex.Truncated = p.truncated
		if c.sink != nil {
			c.sink(ex)
		}
	}
	c.head = 0
	c.req.cur = nil
	c.req.state = stTunnel
	c.resp.state = stTunnel
}
