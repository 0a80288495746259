package agent

import (
	"sort"

	"github.com/otelbee/otelbee/collectors"
	"github.com/otelbee/otelbee/collectors/dns"
	httpc "github.com/otelbee/otelbee/collectors/http"
	"github.com/otelbee/otelbee/collectors/tcp"
)

// factory builds an unloaded collector from the agent's configuration.
type factory func(collectors.Deps, *Config) collectors.Collector

// factories is the explicit list of collectors the agent knows; no init()
// registration, so what exists is visible here. HTTP/1 and the protocols of
// l7Protocols share one L7 capture (l7.go).
var factories = func() map[string]factory {
	f := map[string]factory{
		dns.Name:   func(d collectors.Deps, c *Config) collectors.Collector { return dns.New(d, c.DNS) },
		tcp.Name:   func(d collectors.Deps, c *Config) collectors.Collector { return tcp.New(d, c.TCP) },
		httpc.Name: l7Factory(httpc.Name),
	}
	for name := range l7Protocols {
		f[name] = l7Factory(name)
	}
	return f
}()

// CollectorNames lists the valid values of --collectors, sorted.
func CollectorNames() []string {
	names := make([]string, 0, len(factories))
	for n := range factories {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
