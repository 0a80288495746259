package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// procAcct is one process tree's CPU (seconds) and its threads' context
// switches, voluntary (it blocked: a wait for the next request, a futex)
// and not (preempted).
type procAcct struct {
	user, sys   float64
	vcsw, ivcsw float64
}

func (a procAcct) minus(b procAcct) procAcct {
	return procAcct{a.user - b.user, a.sys - b.sys, a.vcsw - b.vcsw, a.ivcsw - b.ivcsw}
}

func (a procAcct) cpu() float64 { return a.user + a.sys }

// machineAcct is /proc/stat's first line (seconds, every CPU) and its
// context switch and interrupt counts. With tick accounting (this VM:
// CONFIG_TICK_CPU_ACCOUNTING, no IRQ time accounting) a tick in a softirq
// counts as softirq here and as system time of the task it interrupted.
type machineAcct struct {
	user, nice, system, idle, iowait, irq, softirq, steal float64
	ctxt, intr                                            float64
}

func (a machineAcct) minus(b machineAcct) machineAcct {
	return machineAcct{a.user - b.user, a.nice - b.nice, a.system - b.system, a.idle - b.idle,
		a.iowait - b.iowait, a.irq - b.irq, a.softirq - b.softirq, a.steal - b.steal,
		a.ctxt - b.ctxt, a.intr - b.intr}
}

// busy is the machine's CPU time not idle, stolen time apart.
func (a machineAcct) busy() float64 {
	return a.user + a.nice + a.system + a.irq + a.softirq
}

// accounting is where the machine's CPU went during one run.
type accounting struct {
	machine             machineAcct
	server, agent, self procAcct
	wrk                 procAcct // from wrk's own rusage once it exited
	serverNr, agentNr   int      // threads seen at the end
}

func (a accounting) minus(b accounting) accounting {
	return accounting{
		machine:  a.machine.minus(b.machine),
		server:   a.server.minus(b.server),
		agent:    a.agent.minus(b.agent),
		self:     a.self.minus(b.self),
		serverNr: a.serverNr, agentNr: a.agentNr,
	}
}

// takeAccounting reads the machine's and the processes' counters now
// (agent 0: none).
func takeAccounting(server, agent int) accounting {
	a := accounting{machine: readMachine(), server: readProcTree(server), self: readProcAcct(os.Getpid())}
	a.serverNr = threadCount(server)
	if agent != 0 {
		a.agent = readProcTree(agent)
		a.agentNr = threadCount(agent)
	}
	return a
}

func readMachine() machineAcct {
	var m machineAcct
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return m
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "cpu":
			v := func(i int) float64 {
				if i >= len(f) {
					return 0
				}
				x, _ := strconv.ParseFloat(f[i], 64)
				return x / 100 // USER_HZ
			}
			m.user, m.nice, m.system, m.idle = v(1), v(2), v(3), v(4)
			m.iowait, m.irq, m.softirq, m.steal = v(5), v(6), v(7), v(8)
		case "ctxt":
			m.ctxt, _ = strconv.ParseFloat(f[1], 64)
		case "intr":
			m.intr, _ = strconv.ParseFloat(f[1], 64)
		}
	}
	return m
}

// readProcAcct is pid's CPU (its exited children's not included) and its
// threads' context switches.
func readProcAcct(pid int) procAcct {
	var a procAcct
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return a
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	a.user, a.sys = ut/100, st/100
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(l, ":")
			if !ok {
				continue
			}
			n, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			switch k {
			case "voluntary_ctxt_switches":
				a.vcsw += n
			case "nonvoluntary_ctxt_switches":
				a.ivcsw += n
			}
		}
	}
	return a
}

// readProcTree is readProcAcct summed over pid and its descendants (nginx's
// master and workers).
func readProcTree(pid int) procAcct {
	a := readProcAcct(pid)
	kids, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	for _, k := range strings.Fields(string(kids)) {
		if n, err := strconv.Atoi(k); err == nil {
			c := readProcTree(n)
			a.user, a.sys, a.vcsw, a.ivcsw = a.user+c.user, a.sys+c.sys, a.vcsw+c.vcsw, a.ivcsw+c.ivcsw
		}
	}
	return a
}

func threadCount(pid int) int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	return len(tasks)
}

// printAccounting prints, per target and setup (medians of the rounds),
// where the machine's CPU went per request: the rows add up to the
// machine's CPU time (2 cores × the run) per request, idle and steal
// included, so what a setup adds over the baseline is attributed to the
// process (and the kind of time) it went to.
func printAccounting(targets []string, all map[string]map[string][]result) {
	fmt.Printf("\nWhere the machine's CPU went, µs per request (medians of the rounds; user/system of each process tree from /proc/<pid>/stat, the machine's from /proc/stat; \"other\" is the machine's busy time no process named here had: other processes and work charged to none; softirq is the machine's, already inside the processes' system time where it interrupted them; switches per request from /proc/<pid>/task/*/status, wrk's from its rusage):\n\n")
	fmt.Printf("| target | setup | req/s | server user | server sys | agent user | agent sys | wrk user | wrk sys | sink (harness) | other | idle | steal | total | of which softirq | server switches vol/invol | agent switches vol/invol | wrk switches vol/invol | machine switches | interrupts |\n")
	fmt.Printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, target := range targets {
		for _, s := range setups(target) {
			rs := all[target][s.name]
			if len(rs) == 0 {
				continue
			}
			m := func(f func(accounting) float64) float64 {
				return med(rs, func(r result) float64 { return perReq(f(r.acct), r) })
			}
			c := func(f func(accounting) float64) float64 {
				return med(rs, func(r result) float64 { return f(r.acct) / r.requests })
			}
			named := func(a accounting) float64 { return a.server.cpu() + a.agent.cpu() + a.wrk.cpu() + a.self.cpu() }
			fmt.Printf("| %s | %s | %.0f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f / %.2f | %.2f / %.2f | %.2f / %.2f | %.2f | %.2f |\n",
				target, s.name, med(rs, func(r result) float64 { return r.rps }),
				m(func(a accounting) float64 { return a.server.user }), m(func(a accounting) float64 { return a.server.sys }),
				m(func(a accounting) float64 { return a.agent.user }), m(func(a accounting) float64 { return a.agent.sys }),
				m(func(a accounting) float64 { return a.wrk.user }), m(func(a accounting) float64 { return a.wrk.sys }),
				m(func(a accounting) float64 { return a.self.cpu() }),
				m(func(a accounting) float64 { return a.machine.busy() - named(a) }),
				m(func(a accounting) float64 { return a.machine.idle + a.machine.iowait }),
				m(func(a accounting) float64 { return a.machine.steal }),
				m(func(a accounting) float64 {
					return a.machine.busy() + a.machine.idle + a.machine.iowait + a.machine.steal
				}),
				m(func(a accounting) float64 { return a.machine.softirq }),
				c(func(a accounting) float64 { return a.server.vcsw }), c(func(a accounting) float64 { return a.server.ivcsw }),
				c(func(a accounting) float64 { return a.agent.vcsw }), c(func(a accounting) float64 { return a.agent.ivcsw }),
				c(func(a accounting) float64 { return a.wrk.vcsw }), c(func(a accounting) float64 { return a.wrk.ivcsw }),
				c(func(a accounting) float64 { return a.machine.ctxt }), c(func(a accounting) float64 { return a.machine.intr }))
		}
	}
}
