package identity

import (
	"os"
	"os/exec"
	"slices"
	"testing"

	"go.opentelemetry.io/otel/attribute"
)

func TestParseResourceAttributes(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []string // key=value, sorted
		wantErr bool
	}{
		{in: ""},
		{in: "service.version=1.2,deployment.environment.name=prod", want: []string{"deployment.environment.name=prod", "service.version=1.2"}},
		{in: " a = 1 , b=2", want: []string{"a=1", "b=2"}},
		{in: "note=hello%20world%2C%3D", want: []string{"note=hello world,="}},
		{in: "a=1,b", wantErr: true},
		{in: "a=1;p=2", wantErr: true},
		{in: "a=%zz", wantErr: true},
	} {
		kvs, err := ParseResourceAttributes(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("%q: error %v, want error %v", tc.in, err, tc.wantErr)
			continue
		}
		var got []string
		for _, kv := range kvs {
			got = append(got, string(kv.Key)+"="+kv.Value.AsString())
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%q: %q, want %q", tc.in, got, tc.want)
		}
	}
}

func resourceOf(t *testing.T, p *Process) []string {
	t.Helper()
	for _, kv := range p.Attributes() {
		if kv.Key == KeyResource {
			return kv.Value.AsStringSlice()
		}
	}
	return nil
}

// TestResolverProgramResource: a real process's own OTEL_RESOURCE_ATTRIBUTES
// win over the host-wide attributes; service.name/namespace name the service
// and are not repeated; a process without any gets the host-wide ones; a
// value the program's SDK would discard is discarded.
func TestResolverProgramResource(t *testing.T) {
	start := func(env ...string) uint32 {
		cmd := exec.Command("sleep", "30")
		cmd.Env = append(os.Environ(), env...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return uint32(cmd.Process.Pid)
	}
	own := start("OTEL_RESOURCE_ATTRIBUTES=deployment.environment.name=prod,service.version=1.2,service.namespace=shop")
	none := start("OTEL_RESOURCE_ATTRIBUTES=")
	bad := start("OTEL_RESOURCE_ATTRIBUTES=service.version=1.2,broken")

	r := NewResolver("/proc", "host1")
	r.SetResourceAttributes([]attribute.KeyValue{
		attribute.String("deployment.environment.name", "hostwide"),
		attribute.String("telemetry.distro.name", "otelbee"),
	})
	if got, want := resourceOf(t, r.Lookup(own)), []string{"deployment.environment.name=prod", "service.version=1.2", "telemetry.distro.name=otelbee"}; !slices.Equal(got, want) {
		t.Errorf("own: %q, want %q", got, want)
	}
	if p := r.Lookup(own); p.ServiceNamespace != "shop" {
		t.Errorf("own: namespace %q", p.ServiceNamespace)
	}
	want := []string{"deployment.environment.name=hostwide", "telemetry.distro.name=otelbee"}
	if got := resourceOf(t, r.Lookup(none)); !slices.Equal(got, want) {
		t.Errorf("none: %q, want %q", got, want)
	}
	if got := resourceOf(t, r.Lookup(bad)); !slices.Equal(got, want) {
		t.Errorf("bad: %q, want %q (the whole variable discarded)", got, want)
	}
	if got := resourceOf(t, r.Lookup(0)); !slices.Equal(got, want) {
		t.Errorf("unknown_service: %q, want %q", got, want)
	}
}
