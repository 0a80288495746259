package mysql

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/otelbee/otelbee/collectors/l7"
	"github.com/otelbee/otelbee/collectors/l7/dbwire/dbtest"
	"github.com/otelbee/otelbee/collectors/l7/internal/relay"
	"github.com/otelbee/otelbee/collectors/l7/sqlsummary"
)

func TestRealServer(t *testing.T) {
	if _, err := exec.LookPath("mariadb"); err != nil {
		t.Skip("no mariadb client")
	}
	s := dbtest.StartMariaDB(t)
	for _, c := range []struct {
		name    string
		capture relay.Capture
	}{{"kernel", relay.Kernel}, {"head 1024", relay.Capture{Head: 1024, Tail: 32}}} {
		t.Run(c.name, func(t *testing.T) {
			off := dbtest.Size(t, s.Log)
			p := New(Options{})
			tally := relay.NewTally(p, "db.query.summary", "error.type")
			var bad []string
			tally.Check = func(x *l7.Exchange) {
				m := map[string]string{}
				for _, a := range x.Attrs[:x.NAttr] {
					m[string(a.Key)] = a.Value.Emit()
				}
				if m["db.system.name"] != "mariadb" || x.End < x.Start || m["db.response.status_code"] != x.Error ||
					(m["db.namespace"] != "shop" && !strings.Contains(m["db.query.summary"], "CREATE") && m["db.query.summary"] != "SELECT") {
					bad = append(bad, fmt.Sprintf("%s %v %q", x.SpanName, m, x.Error))
				}
			}
			r := relay.Start(t, s.Addr, p, tally, c.capture)
			dbtest.MariaDBTraffic(t, r.Addr, "shop", "")
			if !r.Idle(10 * time.Second) {
				t.Fatal("relayed connections still open")
			}
			time.Sleep(200 * time.Millisecond) // the general log is written after the reply
			truth := dbtest.ReadGeneralLog(t, s.Log, off)
			want := map[string]int64{}
			for _, cmd := range []string{"Query", "Execute"} {
				for _, q := range truth.Commands[cmd] {
					want[fmt.Sprintf("db.client.operation.duration %s", sqlsummary.Summarize(q, sqlsummary.MySQL).Summary)]++
				}
			}
			// the driver prepares a statement with arguments: a prepare that
			// fails (1146) is a failed operation, which the general log
			// lists as a Prepare like any other; the client's count
			want["db.client.operation.duration SELECT no_such_table"]++
			r.Locked(func() {
				got := map[string]int64{}
				errs := map[string]int64{}
				for k, v := range tally.N {
					f := strings.Fields(k)
					if code := f[len(f)-1]; code != "-" {
						errs[code] += v
					}
					got[strings.Join(f[:len(f)-1], " ")] += v
				}
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("operations per summary:\n%s\ngeneral log:\n%s", relay.Format(got), relay.Format(want))
				}
				if fmt.Sprint(errs) != "map[1146:2]" {
					t.Errorf("errors per code: %v, want 2 of 1146", errs)
				}
				if len(tally.Drops) != 0 {
					t.Errorf("drops: %v", tally.Drops)
				}
				if len(bad) > 0 {
					t.Errorf("exchanges with wrong attributes: %v", bad)
				}
				t.Logf("%d queries and %d executes in the log\n%s", len(truth.Commands["Query"]), len(truth.Commands["Execute"]), tally)
			})
		})
	}
}
