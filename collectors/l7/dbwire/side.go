package dbwire

import "github.com/otelbee/otelbee/collectors/l7"

// ClientIsLocal reports whether a connection's other end is on this host as
// far as the connection itself tells: a loopback peer, or a Unix socket (no
// peer address). A database operation is then recorded from the client's
// side, which the layer sees too, and a server-side parser of such a
// connection records nothing, so that an operation is never counted twice.
func ClientIsLocal(c *l7.Conn) bool {
	return c.Role == l7.RoleServer && (!c.Peer.IsValid() || c.Peer.Addr().Unmap().IsLoopback())
}

// Silent is the parser of a connection whose operations another end
// records.
type Silent struct{}

func (Silent) Feed(*l7.Record, l7.Sink) {}
func (Silent) Lost(l7.Dir, l7.Sink)     {}
func (Silent) Close(uint64, l7.Sink)    {}
