package budget

import "github.com/otelbee/otelbee/agent/settings"

// Settings declares the budget's option.
func Settings(c *Config) []settings.Setting {
	return []settings.Setting{
		{Flag: "series.budget", Env: []string{"OTELBEE_SERIES_BUDGET"}, Key: "series.budget", Value: settings.Int(&c.MaxSeries),
			Check: settings.Between(&c.MaxSeries, 0, 1<<24),
			Help:  "metric series (attribute sets) all collectors keep together; a new series past it goes to its collector's `otel.metric.overflow` series, counted in `otelbee.series.budget.refused` by collector; the per-collector caps (`tcp.max-series`, `http.max_series`, `dns.max_series`, ...) stay as finer limits; 0: no budget. Each series costs ~17 kB of /metrics for TCP (two histograms), less for the others: a 5 MB scrape is ~300 TCP series (docs/benchmarks.md, Series budget)"},
	}
}
