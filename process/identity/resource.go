package identity

import (
	"bytes"
	"fmt"
	"sort"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
)

// KeyResource carries, on a data point or span, the observed program's other
// resource attributes ("key=value" strings, sorted by key): those of its own
// OTEL_RESOURCE_ATTRIBUTES merged over the attributes configured for every
// observed service (Resolver.SetResourceAttributes). The exporters expand it
// into the service's resource; it never leaves the agent. One attribute
// rather than one per key, so that any key a program declares is known to
// be a resource attribute, not a measurement's.
const KeyResource = attribute.Key("otelbee.internal.resource")

// ParseResourceAttributes parses the OTEL_RESOURCE_ATTRIBUTES format:
// comma-separated key=value pairs, values percent-encoded, as W3C baggage
// without properties (at most 64 pairs, 8192 bytes). On error the whole
// value is discarded, as the specification asks of SDKs.
func ParseResourceAttributes(s string) ([]attribute.KeyValue, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	b, err := baggage.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("parsing resource attributes %q: %w", s, err)
	}
	out := make([]attribute.KeyValue, 0, b.Len())
	for _, m := range b.Members() {
		if len(m.Properties()) > 0 {
			return nil, fmt.Errorf("parsing resource attributes %q: %q has properties (;), which resource attributes do not have", s, m.Key())
		}
		out = append(out, attribute.String(m.Key(), m.Value()))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// resourceFromEnviron returns the program's own OTEL_RESOURCE_ATTRIBUTES,
// without service.name and service.namespace, which name the service (see
// serviceFromEnviron). A value the program's own SDK would discard is
// discarded.
func resourceFromEnviron(env []byte) []attribute.KeyValue {
	const name = "OTEL_RESOURCE_ATTRIBUTES="
	var raw []byte
	for _, kv := range bytes.Split(env, []byte{0}) {
		if bytes.HasPrefix(kv, []byte(name)) {
			raw = kv[len(name):]
		}
	}
	kvs, err := ParseResourceAttributes(string(raw))
	if err != nil {
		return nil
	}
	out := kvs[:0]
	for _, kv := range kvs {
		if kv.Key != KeyServiceName && kv.Key != KeyServiceNamespace {
			out = append(out, kv)
		}
	}
	return out
}

// resourceAttribute merges own over base (both sorted by key; own wins)
// into one KeyResource attribute; ok is false when both are empty.
func resourceAttribute(base, own []attribute.KeyValue) (attribute.KeyValue, bool) {
	if len(base) == 0 && len(own) == 0 {
		return attribute.KeyValue{}, false
	}
	set := attribute.NewSet(append(append([]attribute.KeyValue{}, base...), own...)...) // last wins
	pairs := make([]string, 0, set.Len())
	for it := set.Iter(); it.Next(); {
		kv := it.Attribute()
		pairs = append(pairs, string(kv.Key)+"="+kv.Value.Emit())
	}
	return KeyResource.StringSlice(pairs), true
}

// SetResourceAttributes sets the resource attributes of every observed
// service (host-wide settings, the agent's telemetry.distro.*); a program's
// own OTEL_RESOURCE_ATTRIBUTES win over them. Call it before the first
// lookup: identities already cached keep what they had.
func (r *Resolver) SetResourceAttributes(kvs []attribute.KeyValue) {
	set := attribute.NewSet(kvs...) // sorted, last value of a key wins
	r.mu.Lock()
	r.base = set.ToSlice()
	r.mu.Unlock()
	r.unknown.buildAttributes(r.host, r.base)
}

func (r *Resolver) resourceAttrs() []attribute.KeyValue {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.base
}
