package vmtest

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// Output captured from this project's build machine (Debian 12, May 2025 snapshot plus
// security updates), trimmed.
const searchOut = `linux-image-6.1.0-47-cloud-amd64-dbg - Debug symbols for linux-image-6.1.0-47-cloud-amd64
linux-image-6.1.0-50-cloud-amd64-unsigned - Linux 6.1 for x86-64 cloud
linux-image-cloud-amd64 - Linux for x86-64 cloud (meta-package)
linux-image-6.1.0-47-cloud-amd64 - Linux 6.1 for x86-64 cloud (signed)
linux-image-6.1.0-50-cloud-amd64 - Linux 6.1 for x86-64 cloud (signed)
linux-image-6.12-cloud-amd64 - Linux for x86-64 cloud (meta-package)
linux-image-6.12.100+deb12-cloud-amd64 - Linux 6.12 for x86-64 cloud (signed)
linux-image-6.12.117+deb12-cloud-amd64 - Linux 6.12 for x86-64 cloud (signed)
linux-image-6.12.117+deb12-cloud-amd64-dbg - Debug symbols for linux-image-6.12.117+deb12-cloud-amd64
linux-image-6.12.12+bpo-cloud-amd64 - Linux 6.12 for x86-64 cloud (signed)
linux-image-6.1.0-56-cloud-amd64 - Linux 6.1 for x86-64 cloud (signed)
linux-image-6.1.0-9-cloud-amd64 - Linux 6.1 for x86-64 cloud (signed)
`

const policyOut = `linux-image-6.1.0-56-cloud-amd64:
  Installed: (none)
  Candidate: 6.1.192-2
  Version table:
     6.1.192-2 500
        500 http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
linux-image-6.1.0-50-cloud-amd64:
  Installed: (none)
  Candidate: 6.1.176-1
  Version table:
     6.1.176-1 500
        500 http://deb.debian.org/debian bookworm/main amd64 Packages
linux-image-6.1.0-47-cloud-amd64:
  Installed: (none)
  Candidate: 6.1.158-1
  Version table:
     6.1.158-1 500
        500 http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
linux-image-6.1.0-9-cloud-amd64:
  Installed: (none)
  Candidate: (none)
  Version table:
`

func TestParseAptCacheSearch(t *testing.T) {
	tests := []struct {
		kernel string
		want   []string
	}{
		{"6.1", []string{
			"linux-image-6.1.0-47-cloud-amd64",
			"linux-image-6.1.0-50-cloud-amd64",
			"linux-image-6.1.0-56-cloud-amd64",
			"linux-image-6.1.0-9-cloud-amd64",
		}},
		{"6.12", []string{
			"linux-image-6.12.100+deb12-cloud-amd64",
			"linux-image-6.12.117+deb12-cloud-amd64",
			"linux-image-6.12.12+bpo-cloud-amd64",
		}},
		{"5.10", nil},
	}
	for _, tt := range tests {
		got := ParseAptCacheSearch(searchOut, KnownKernels[tt.kernel].Pattern)
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: got %q, want %q", tt.kernel, got, tt.want)
		}
	}
}

func TestParseAptCachePolicyAndPick(t *testing.T) {
	policy := ParseAptCachePolicy(policyOut)
	want := map[string]string{
		"linux-image-6.1.0-56-cloud-amd64": "6.1.192-2",
		"linux-image-6.1.0-50-cloud-amd64": "6.1.176-1",
		"linux-image-6.1.0-47-cloud-amd64": "6.1.158-1",
	}
	if !reflect.DeepEqual(policy, want) {
		t.Fatalf("policy = %v, want %v (a (none) candidate must be dropped)", policy, want)
	}
	got := PickCandidates(policy)
	wantOrder := []Candidate{
		{"linux-image-6.1.0-56-cloud-amd64", "6.1.192-2"},
		{"linux-image-6.1.0-50-cloud-amd64", "6.1.176-1"},
		{"linux-image-6.1.0-47-cloud-amd64", "6.1.158-1"},
	}
	if !reflect.DeepEqual(got, wantOrder) {
		t.Errorf("PickCandidates = %v, want %v", got, wantOrder)
	}
}

func TestPickCandidates(t *testing.T) {
	tests := []struct {
		name   string
		policy map[string]string
		first  string
	}{
		{"numeric ABI beats lexical", map[string]string{
			"linux-image-6.1.0-9-cloud-amd64":  "6.1.27-1",
			"linux-image-6.1.0-10-cloud-amd64": "6.1.38-1",
		}, "linux-image-6.1.0-10-cloud-amd64"},
		{"security update of same upstream", map[string]string{
			"linux-image-6.12.117+deb12-cloud-amd64": "6.12.117-1~deb12u1",
			"linux-image-6.12.115+deb12-cloud-amd64": "6.12.115-1~deb12u2",
		}, "linux-image-6.12.117+deb12-cloud-amd64"},
		{"backports vs security", map[string]string{
			"linux-image-6.12.12+bpo-cloud-amd64":    "6.12.12-1~bpo12+1",
			"linux-image-6.12.100+deb12-cloud-amd64": "6.12.100-1~deb12u1",
		}, "linux-image-6.12.100+deb12-cloud-amd64"},
		{"empty", map[string]string{}, ""},
	}
	for _, tt := range tests {
		got := PickCandidates(tt.policy)
		first := ""
		if len(got) > 0 {
			first = got[0].Package
		}
		if first != tt.first {
			t.Errorf("%s: picked %q, want %q (all: %v)", tt.name, first, tt.first, got)
		}
	}
}

func TestMirrorFromSources(t *testing.T) {
	tests := []struct {
		name  string
		texts []string
		want  string
	}{
		{"deb822 with security first", []string{
			"Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\nComponents: main\n",
			"Types: deb\n# http://snapshot.debian.org/archive/debian/20250520T000000Z\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\nComponents: main\n",
		}, "http://mirror.example/debian"},
		{"one-line with options", []string{
			"deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main\n",
			"deb [arch=amd64 signed-by=/k.gpg] http://ftp.de.debian.org/debian bookworm main\n",
		}, "http://ftp.de.debian.org/debian"},
		{"third party only", []string{
			"Types: deb\nURIs: https://deb.nodesource.com/node_20.x\nSuites: nodistro\nComponents: main\n",
		}, ""},
	}
	for _, tt := range tests {
		if got := mirrorFromSources(tt.texts); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestNewestCached(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{
		"linux-image-6.1.0-9-cloud-amd64_6.1.27-1_amd64.deb",
		"linux-image-6.1.0-50-cloud-amd64_6.1.176-1_amd64.deb",
		"linux-image-6.12.117+deb12-cloud-amd64_6.12.117-1~deb12u1_amd64.deb",
		"linux-image-6.1.0-50-cloud-amd64-unsigned_6.1.200-1_amd64.deb",
	} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	deb, pkg, ver, err := newestCached(dir, KnownKernels["6.1"].Pattern)
	if err != nil {
		t.Fatal(err)
	}
	if pkg != "linux-image-6.1.0-50-cloud-amd64" || ver != "6.1.176-1" || filepath.Dir(deb) != dir {
		t.Errorf("newestCached = %s %s %s", deb, pkg, ver)
	}
	if _, pkg, _, _ := newestCached(dir, KnownKernels["5.10"].Pattern); pkg != "" {
		t.Errorf("5.10: found %s in a cache without one", pkg)
	}
}

func TestDebFileName(t *testing.T) {
	name := debFileName("linux-image-x", "1:6.1-2")
	if name != "linux-image-x_1%3a6.1-2_amd64.deb" {
		t.Fatalf("debFileName = %s", name)
	}
	if p, v := splitDebFileName(name); p != "linux-image-x" || v != "1:6.1-2" {
		t.Errorf("splitDebFileName = %s %s", p, v)
	}
}

func TestParseKernelList(t *testing.T) {
	got, err := ParseKernelList("6.1, host,6.1,5.10")
	if err != nil || !reflect.DeepEqual(got, []string{"6.1", "host", "5.10"}) {
		t.Errorf("got %v, %v", got, err)
	}
	if _, err := ParseKernelList("4.19"); err == nil {
		t.Error("4.19: want an error")
	}
	if _, err := ParseKernelList(" , "); err == nil {
		t.Error("empty: want an error")
	}
}
