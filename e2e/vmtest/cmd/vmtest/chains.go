package main

import (
	"github.com/otelbee/otelbee/collectors/dns"
	httpc "github.com/otelbee/otelbee/collectors/http"
	"github.com/otelbee/otelbee/collectors/tcp"
	"github.com/otelbee/otelbee/e2e/vmtest"
)

// chains are the collectors' declared attach plans (each package's Hooks()). When a jobs file
// runs a collector's package, every link of its chain must be loaded on some kernel of the run.
// TestChainsListEveryCollector fails when a collector package exports Hooks() and is missing
// here; TestMatrixJobs, when e2e/vmtest/jobs/matrix.json lacks a job a chain needs.
func chains() []vmtest.Chain {
	return []vmtest.Chain{
		{Collector: dns.Name, Package: "./collectors/dns", Hooks: dns.Hooks()},
		{Collector: httpc.Name, Package: "./collectors/http", Hooks: httpc.Hooks()},
		{Collector: tcp.Name, Package: "./collectors/tcp", Hooks: tcp.Hooks()},
	}
}
