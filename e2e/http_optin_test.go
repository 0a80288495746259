package e2e

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/otelbee/otelbee/e2e/harness"
)

// TestHTTPOptInSwitches: what the semantic conventions make opt-in is off
// by default and on with its switch, against real traffic (curl calling a
// Go server, counted by curl itself): the four body-size histograms
// (--http.body-sizes) and url.scheme on client series
// (--http.client-url-scheme); server series always carry url.scheme
// (required there). No HTTP histogram has an le="0" bucket.
func TestHTTPOptInSwitches(t *testing.T) {
	harness.RequireRoot(t)
	const n = 7
	bodyFamilies := []string{"http_server_request_body_size_bytes", "http_server_response_body_size_bytes",
		"http_client_request_body_size_bytes", "http_client_response_body_size_bytes"}
	for _, tc := range []struct {
		name           string
		flags          []string
		bodies, scheme bool
	}{
		{"default", nil, false, false},
		{"switched on", []string{"--http.body-sizes", "--http.client-url-scheme"}, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			agent := harness.StartAgent(t, nil, append([]string{"--collectors=http"}, tc.flags...)...)
			sfx := strconv.Itoa(rand.IntN(1 << 30))
			srv, cli := "optin-srv-"+sfx, "optin-cli-"+sfx
			addr, stop := goServer(t, srv)
			urls := make([]string, n)
			for i := range urls {
				urls[i] = fmt.Sprintf("http://%s/users/%d", addr, i)
			}
			if got := curlCounts(t, cli, nil, urls...); got["GET 200"] != n {
				t.Fatalf("curl counted %v, want %d GET 200", got, n)
			}
			served := 0
			for _, c := range stop().Counts {
				served += c
			}
			if served != n {
				t.Fatalf("server counted %d requests, want %d", served, n)
			}
			var mfs map[string]*dto.MetricFamily
			for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
				mfs = rpScrape(t, agent.MetricsURL)
				s, _ := rpHist(mfs, "http_server_request_duration_seconds", map[string]string{"job": srv})
				c, _ := rpHist(mfs, "http_client_request_duration_seconds", map[string]string{"job": cli})
				if s == n && c == n {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("durations: server %d, client %d requests, want %d each", s, c, n)
				}
			}
			for _, fam := range bodyFamilies {
				job := srv
				if fam[5:11] == "client" {
					job = cli
				}
				got, _ := rpHist(mfs, fam, map[string]string{"job": job})
				want := uint64(0)
				if tc.bodies {
					want = n
				}
				if got != want {
					t.Errorf("%s{job=%q}: %d requests, want %d", fam, job, got, want)
				}
			}
			for fam, job := range map[string]string{"http_server_request_duration_seconds": srv, "http_client_request_duration_seconds": cli} {
				wantScheme := fam == "http_server_request_duration_seconds" || tc.scheme
				for _, m := range mfs[fam].GetMetric() {
					if !rpMatch(m, map[string]string{"job": job}) {
						continue
					}
					if has := rpMatch(m, map[string]string{"url_scheme": "http"}); has != wantScheme {
						t.Errorf("%s{job=%q} url_scheme=\"http\": %v, want %v", fam, job, has, wantScheme)
					}
				}
			}
			for name, mf := range mfs {
				if mf.GetType() != dto.MetricType_HISTOGRAM || len(name) < 5 || name[:5] != "http_" {
					continue
				}
			series:
				for _, m := range mf.GetMetric() {
					for _, b := range m.GetHistogram().GetBucket() {
						if b.GetUpperBound() == 0 {
							t.Errorf("%s has an le=\"0\" bucket", name)
							break series
						}
					}
				}
			}
		})
	}
}
