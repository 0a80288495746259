package prometheus

import (
	"strings"
	"unicode/utf8"

	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// Name translation follows the OpenTelemetry "Prometheus and OpenMetrics
// compatibility" specification (OTLP metric points to Prometheus).

// sanitize replaces every character not allowed by valid (for the given
// position) with '_' and collapses runs of '_' into one, as the
// specification requires for both metric and label names.
func sanitize(s string, valid func(r rune, first bool) bool) string {
	var b strings.Builder
	b.Grow(len(s))
	prevUnderscore := false
	for i, r := range s {
		if !valid(r, i == 0) {
			r = '_'
		}
		if r == '_' {
			if prevUnderscore {
				continue
			}
			prevUnderscore = true
		} else {
			prevUnderscore = false
		}
		b.WriteRune(r)
	}
	return b.String()
}

func isMetricNameRune(r rune, first bool) bool {
	return r == '_' || r == ':' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (!first && r >= '0' && r <= '9')
}

func isLabelNameRune(r rune, _ bool) bool {
	// Digits are valid except first; a leading digit is handled by the
	// caller with a prefix, so that "1x" keeps its digit.
	return r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9')
}

// metricName sanitizes an OpenTelemetry metric name. A leading digit gets a
// '_' prefix rather than being replaced, so "5xx.count" stays readable.
func metricName(name string) string {
	if name == "" {
		return "_"
	}
	if c := name[0]; c >= '0' && c <= '9' {
		name = "_" + name
	}
	return sanitize(name, isMetricNameRune)
}

// labelName sanitizes an attribute key into a Prometheus label name.
// Names starting with "__" are reserved by Prometheus; collapsing runs of
// '_' already rules them out. A leading digit gets the "key_" prefix used
// by the OpenTelemetry Collector.
func labelName(key string) string {
	if key == "" {
		return "key_"
	}
	if c := key[0]; c >= '0' && c <= '9' {
		key = "key_" + key
	}
	return sanitize(key, isLabelNameRune)
}

// labelValue makes a value acceptable to client_golang, which rejects
// invalid UTF-8 (that would fail the whole scrape).
func labelValue(v string) string {
	if utf8.ValidString(v) {
		return v
	}
	return strings.ToValidUTF8(v, "\uFFFD")
}

// mainUnits maps UCUM units to Prometheus base-unit words, per the
// specification (and the OpenTelemetry Collector's translator).
var mainUnits = map[string]string{
	// Time
	"d":   "days",
	"h":   "hours",
	"min": "minutes",
	"s":   "seconds",
	"ms":  "milliseconds",
	"us":  "microseconds",
	"ns":  "nanoseconds",
	// Bytes
	"By":   "bytes",
	"KiBy": "kibibytes",
	"MiBy": "mebibytes",
	"GiBy": "gibibytes",
	"TiBy": "tibibytes",
	"KBy":  "kilobytes",
	"MBy":  "megabytes",
	"GBy":  "gigabytes",
	"TBy":  "terabytes",
	// SI
	"m":  "meters",
	"V":  "volts",
	"A":  "amperes",
	"J":  "joules",
	"W":  "watts",
	"g":  "grams",
	"Hz": "hertz",
	// Misc
	"Cel": "celsius",
	"%":   "percent",
}

// perUnits maps the denominator of a "x/y" unit.
var perUnits = map[string]string{
	"s":  "second",
	"m":  "minute",
	"h":  "hour",
	"d":  "day",
	"w":  "week",
	"mo": "month",
	"y":  "year",
}

// unitWord turns an OpenTelemetry unit into the Prometheus unit word used as
// a name suffix ("" for none). Annotations in braces ("{connection}") are
// counts, unitless in Prometheus. "1" becomes "ratio" only for gauges: a
// dimensionless sum or histogram (a count) carries no suffix.
func unitWord(unit string, isGauge bool) string {
	unit = stripBraces(strings.TrimSpace(unit))
	if unit == "1" {
		if isGauge {
			return "ratio"
		}
		return ""
	}
	main, per, hasPer := strings.Cut(unit, "/")
	if main == "1" {
		main = ""
	}
	mainWord := convertUnit(main, mainUnits)
	perWord := ""
	if hasPer {
		perWord = convertUnit(per, perUnits)
	}
	switch {
	case mainWord != "" && perWord != "":
		return mainWord + "_per_" + perWord
	case perWord != "":
		return "per_" + perWord
	default:
		return mainWord
	}
}

func convertUnit(u string, table map[string]string) string {
	u = strings.TrimSpace(u)
	if u == "" {
		return ""
	}
	if w, ok := table[u]; ok {
		return w
	}
	// Unknown unit: keep it, made name-safe ("packets" -> "packets").
	return strings.Trim(sanitize(u, isLabelNameRune), "_")
}

// stripBraces removes every "{...}" annotation.
func stripBraces(u string) string {
	for {
		i := strings.IndexByte(u, '{')
		if i < 0 {
			return u
		}
		j := strings.IndexByte(u[i:], '}')
		if j < 0 {
			return u[:i]
		}
		u = u[:i] + u[i+j+1:]
	}
}

// kind is the Prometheus metric type a metric translates to.
type kind int

const (
	kindCounter kind = iota
	kindGauge
	kindHistogram // classic (explicit bucket) or native (exponential)
)

func (k kind) String() string {
	switch k {
	case kindCounter:
		return "counter"
	case kindGauge:
		return "gauge"
	default:
		return "histogram"
	}
}

// promName returns the Prometheus family name and unit word for metric m of
// kind k. The unit suffix comes before the type suffix; neither is added
// twice.
func promName(m *metricdata.Metrics, k kind, isGauge bool) (name, unit string) {
	name = metricName(m.Name)
	if k == kindCounter {
		name = strings.TrimSuffix(name, "_total")
	}
	unit = unitWord(m.Unit, isGauge)
	if unit != "" && name != unit && !strings.HasSuffix(name, "_"+unit) {
		name += "_" + unit
	}
	if k == kindCounter {
		name += "_total"
	}
	// The pieces may meet in "__" (a name ending in '_').
	return sanitize(name, isMetricNameRune), unit
}
