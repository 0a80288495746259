package agent

import (
	"errors"
	"io"
	"slices"
	"testing"

	"go.opentelemetry.io/otel/attribute"
)

func TestResourceAttributesSetting(t *testing.T) {
	cfg, err := LoadConfig(nil, env(map[string]string{"OTELBEE_RESOURCE_ATTRIBUTES": "deployment.environment.name=prod,site=lab%201"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	got := serviceResourceAttributes(&cfg)
	want := append(distro(), attribute.String("deployment.environment.name", "prod"), attribute.String("site", "lab 1"))
	if !slices.Equal(got, want) {
		t.Fatalf("%v, want %v", got, want)
	}
	for _, bad := range []string{"a=1,b", "a=%zz", "a=1;p"} {
		_, err := LoadConfig([]string{"--resource.attributes=" + bad}, env(nil), io.Discard)
		var ue *UsageError
		if !errors.As(err, &ue) {
			t.Errorf("%q: %v, want a usage error", bad, err)
		}
	}
}
