package agent

import (
	"context"
	"sync"

	"github.com/otelbee/otelbee/collectors"
	httpc "github.com/otelbee/otelbee/collectors/http"
	"github.com/otelbee/otelbee/collectors/l7"
	"github.com/otelbee/otelbee/collectors/l7/capture"
	"github.com/otelbee/otelbee/collectors/l7/http2"
	"github.com/otelbee/otelbee/collectors/l7/kafka"
	"github.com/otelbee/otelbee/collectors/l7/memcached"
	"github.com/otelbee/otelbee/collectors/l7/mysql"
	"github.com/otelbee/otelbee/collectors/l7/postgres"
	"github.com/otelbee/otelbee/collectors/l7/redis"
)

// l7Protocols are the L7 layer's protocols besides HTTP/1 (the http
// collector), by collector name. Each runs on the one kernel capture the
// agent's L7 collectors share (one set of read/write hooks, whatever is
// enabled). Adding a protocol is its package (an l7.Protocol whose Name the
// kernel's classifier knows: capture.ProtoByName) and one line here.
var l7Protocols = map[string]func(*Config) l7.Protocol{
	"redis":     func(*Config) l7.Protocol { return redis.New() },
	"memcached": func(*Config) l7.Protocol { return memcached.New() },
	"kafka":     func(c *Config) l7.Protocol { return kafka.New(c.Kafka.Options()) },
	"postgresql": func(c *Config) l7.Protocol {
		return postgres.New(postgres.Options{QueryText: c.DB.QueryText, MaxStatements: c.DB.MaxStatements,
			MaxSummaries: c.DB.MaxSummaries, MaxCollections: c.DB.MaxCollections})
	},
	"mysql": func(c *Config) l7.Protocol {
		return mysql.New(mysql.Options{QueryText: c.DB.QueryText, MaxStatements: c.DB.MaxStatements,
			MaxSummaries: c.DB.MaxSummaries, MaxCollections: c.DB.MaxCollections})
	},
	"http2": func(c *Config) l7.Protocol {
		// HTTP/2 names routes as HTTP/1 does (http.routes, http.max_routes).
		routes, err := httpc.NewRoutes(c.HTTP.Routes, c.HTTP.MaxRoutes)
		if err != nil { // Validate checked the patterns
			routes = nil
		}
		var r http2.Router
		if routes != nil {
			r = routes
		}
		return http2.New(c.HTTP2.Options(r, c.HTTP.RouteHeuristic, c.HTTP.ClientURLScheme))
	},
}

// l7Group is the capture one agent run's L7 collectors share: made by the
// first L7 collector's factory with every L7 protocol the configuration
// enables, so the kernel's classifier knows them all when the first of them
// loads it.
type l7Group struct {
	eng  *capture.Engine
	refs int
}

var (
	l7Mu     sync.Mutex
	l7Groups = map[*Config]*l7Group{}
)

// l7Factory is the factory of the L7 collector name.
func l7Factory(name string) factory {
	return func(d collectors.Deps, c *Config) collectors.Collector {
		l7Mu.Lock()
		defer l7Mu.Unlock()
		g := l7Groups[c]
		if g == nil {
			cc := httpc.CaptureConfig(c.HTTP)
			cc.TLS = c.TLS // HTTPS plaintext feeds every L7 protocol
			g = &l7Group{eng: capture.NewEngine(d, cc)}
			for _, n := range c.Collectors {
				if p, ok := capture.ProtoByName(n); ok && (n == httpc.Name || l7Protocols[n] != nil) {
					g.eng.Enable(p)
				}
			}
			l7Groups[c] = g
		}
		g.refs++
		var col collectors.Collector
		if name == httpc.Name {
			col = httpc.NewOn(g.eng, d, c.HTTP)
		} else {
			pc, err := capture.NewCollector(g.eng, d, l7Protocols[name](c))
			if err != nil {
				return failed{name: name, err: err}
			}
			col = pc
		}
		return &l7Member{Collector: col, c: c}
	}
}

// l7Member is one L7 collector of a group: the group is forgotten when its
// last member closes (a doctor run loads and closes them one by one).
type l7Member struct {
	collectors.Collector
	c    *Config
	once sync.Once
}

func (m *l7Member) Close() error {
	err := m.Collector.Close()
	m.once.Do(func() {
		l7Mu.Lock()
		defer l7Mu.Unlock()
		if g := l7Groups[m.c]; g != nil {
			if g.refs--; g.refs == 0 {
				delete(l7Groups, m.c)
			}
		}
	})
	return err
}

// PipelineStats passes the member's stages on.
func (m *l7Member) PipelineStats() []collectors.StageStats {
	if r, ok := m.Collector.(collectors.PipelineReporter); ok {
		return r.PipelineStats()
	}
	return nil
}

// failed is a collector that could not be made: its Load says why.
type failed struct {
	name string
	err  error
}

func (f failed) Name() string               { return f.name }
func (f failed) Load(context.Context) error { return f.err }
func (f failed) Run(context.Context) error  { return nil }
func (f failed) Close() error               { return nil }

// isL7Collector reports whether name is a protocol of the shared L7 capture.
func isL7Collector(name string) bool { return name == httpc.Name || l7Protocols[name] != nil }
