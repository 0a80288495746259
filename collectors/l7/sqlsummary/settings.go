package sqlsummary

import "github.com/otelbee/otelbee/agent/settings"

// Config is the SQL protocols' (postgresql, mysql) part of the agent's
// configuration.
type Config struct {
	// QueryText puts db.query.text, literals replaced, on spans.
	QueryText bool
	// MaxSummaries and MaxCollections cap distinct db.query.summary and
	// db.collection.name values per process and protocol.
	MaxSummaries, MaxCollections int
	// MaxStatements caps prepared statements remembered per connection.
	MaxStatements int
}

// DefaultConfig is the configuration before any option is applied.
func DefaultConfig() Config {
	return Config{MaxSummaries: defaultMaxSummaries, MaxCollections: defaultMaxCollections, MaxStatements: 256}
}

// Settings declares the options.
func Settings(c *Config) []settings.Setting {
	return []settings.Setting{
		{Flag: "db.query-text", Env: []string{"OTELBEE_DB_QUERY_TEXT"}, Key: "db.query_text", Value: settings.Bool(&c.QueryText),
			Help: "put `db.query.text` on PostgreSQL and MySQL spans, every literal replaced by `?` (by the SQL tokenizer); off: no statement text leaves the agent"},
		{Key: "db.max_summaries", Value: settings.Int(&c.MaxSummaries), Check: settings.Between(&c.MaxSummaries, 1, 100000),
			Help: "distinct `db.query.summary` values per process and SQL protocol (16 times as many agent-wide); the rest are `_OTHER`, counted on `otelbee.db.query.overflow`"},
		{Key: "db.max_collections", Value: settings.Int(&c.MaxCollections), Check: settings.Between(&c.MaxCollections, 1, 100000),
			Help: "distinct `db.collection.name` values per process and SQL protocol (16 times as many agent-wide); the rest are `_OTHER`, counted on `otelbee.db.query.overflow`"},
		{Key: "db.max_statements", Value: settings.Int(&c.MaxStatements), Check: settings.Between(&c.MaxStatements, 1, 65536),
			Help: "prepared statements remembered per SQL connection; executions of others have no summary, counted"},
	}
}
