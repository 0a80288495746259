#!/usr/bin/env bash
# Build a real kube-apiserver for the Kubernetes e2e tests from the Kubernetes
# Go modules at a pinned release.
#
#   scripts/build-kube-apiserver.sh [outdir]   (default: ~/.cache/otelbee/kube-apiserver)
#
# Result: <outdir>/kube-apiserver. k8s.io/kubernetes points its staging modules
# (k8s.io/api, k8s.io/apiserver, ...) at ./staging; a module that requires it
# must pin each of them to the same release, which this script does from the
# release's own go.mod. The build module (its own go.mod and go.sum) lives in
# <outdir>/src, so the project's go.mod never takes Kubernetes' dependency tree.
# Cached: nothing is done when the binary exists and <outdir>/.stamp holds the
# hash of this script and the Go version. FORCE=1 rebuilds anyway.
set -euo pipefail

K8S_VERSION=v1.37.2 # staging modules are v0.<minor>.<patch> of the same release

outdir="${1:-${XDG_CACHE_HOME:-$HOME/.cache}/otelbee/kube-apiserver}"
mkdir -p "$outdir"
outdir="$(cd "$outdir" && pwd)"
bin="$outdir/kube-apiserver"
stamp="$outdir/.stamp"

command -v go >/dev/null || { echo "build-kube-apiserver: go not found in PATH" >&2; exit 1; }

hash="$( { cat "${BASH_SOURCE[0]}"; go env GOVERSION GOOS GOARCH; } | sha256sum | cut -d' ' -f1)"
if [[ -z "${FORCE:-}" && -x "$bin" && -f "$stamp" && "$(cat "$stamp")" == "$hash" ]]; then
	echo "build-kube-apiserver: up to date: $bin"
	exit 0
fi

start=$(date +%s)
rm -f "$stamp"
src="$outdir/src"
rm -rf "$src"
mkdir -p "$src"
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-buildvcs=false -mod=mod"
export GOWORK=off

staging_minor="v0.${K8S_VERSION#v1.}"
modfile="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
[[ -f "$modfile" ]] || { echo "build-kube-apiserver: no go.mod for k8s.io/kubernetes@$K8S_VERSION" >&2; exit 1; }
gover="$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$modfile")"
{
	echo "module otelbee.local/kube-apiserver-build"
	echo
	echo "go $gover"
	echo
	echo "require k8s.io/kubernetes $K8S_VERSION"
	echo
	# Every "k8s.io/x => ./staging/src/k8s.io/x" of the release becomes a pin.
	sed -n 's|^[[:space:]]*\(k8s.io/[^ ]*\) => ./staging/src/.*$|replace \1 => \1 '"$staging_minor"'|p' "$modfile"
} >"$src/go.mod"
cat >"$src/tools.go" <<'GO'
//go:build tools

package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
GO
echo "build-kube-apiserver: resolving k8s.io/kubernetes@$K8S_VERSION ($(grep -c '^replace' "$src/go.mod") staging pins)"
(cd "$src" && go mod tidy -e >/dev/null 2>&1 || true)
echo "build-kube-apiserver: building (a cold build takes several minutes)"
minor="${K8S_VERSION#v1.}"
minor="${minor%%.*}"
ldflags="-s -w"
for v in "gitVersion=$K8S_VERSION" gitMajor=1 "gitMinor=$minor" gitTreeState=clean; do
	ldflags+=" -X k8s.io/component-base/version.$v"
done
(cd "$src" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$bin" k8s.io/kubernetes/cmd/kube-apiserver)
"$bin" --version
echo "$hash" >"$stamp"
echo "build-kube-apiserver: built $bin in $(( $(date +%s) - start ))s"
