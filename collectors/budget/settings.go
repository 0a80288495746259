package budget

import "github.com/otelbee/otelbee/agent/settings"

// Settings declares the budget's option.
func Settings(c *Config) []settings.Setting {
	return []settings.Setting{
		{Flag: "series.budget", Env: []string{"OTELBEE_SERIES_BUDGET"}, Key: "series.budget", Value: settings.Int(&c.MaxSeries),
			Check: settings.Between(&c.MaxSeries, 0, 1<<24),
			Help:  "metric series (attribute sets) all collectors keep together; a new series past it goes to its collector's `otel.metric.overflow` series, counted in `otelbee.series.budget.refused` by collector; the per-collector caps (`tcp.max-series`, `http.max_series`, `dns.max_series`, ...) stay as finer limits; 0: no budget. A series costs ~2.7 kB of /metrics for TCP, ~5.5 kB for an HTTP route, ~10 kB for a DNS name (docs/benchmarks.md, Series budget)"},
	}
}
