package httpc

import (
	"github.com/otelbee/otelbee/collectors/l7/capture"
)

// selfExecutable is the executable name (the kernel's comm) of every
// otelbee agent: the traffic of processes so named is the agents' own.
// (A variable: the privileged test counts only its own process's traffic,
// not that of agents other tests run on the host meanwhile.)
var selfExecutable = "otelbee"

// selfComms are the comm names whose processes are otelbee agents: the
// name of every agent, and this agent's own when it runs under another name
// (so copies of it running renamed are left out too).
func (c *Collector) selfComms() []string {
	if c.observeSelf {
		// Tests observe their own process: no name is the agent's.
		return nil
	}
	return capture.SelfComms(selfExecutable)
}

// The engine marks the agents' executables in the kernel's executable
// filter: their connections are not tracked, and the server side of their
// client connections (a local collector receiving their export) is left
// out, counted as connections ignored for reason "self" (bpf/l7.c,
// self_ends).
