#!/usr/bin/env bash
# Build the OpenTelemetry Collector distribution used by the e2e tests with the
# official builder (ocb), from e2e/otelcol/builder-config.yaml.
#
#   scripts/build-otelcol.sh [outdir]     (default: ~/.cache/otelbee/otelcol)
#
# Result: <outdir>/otelcol-otelbee. Generated sources (with their own go.mod)
# live in <outdir>/src. Cached: nothing is done when the binary exists and
# <outdir>/.stamp holds the hash of the manifest, this script and the Go version.
# Needs only Go and a Go module proxy. FORCE=1 rebuilds anyway.
set -euo pipefail

OCB_VERSION=v0.161.0 # keep in step with the component versions in the manifest

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
manifest="$repo/e2e/otelcol/builder-config.yaml"
outdir="${1:-${XDG_CACHE_HOME:-$HOME/.cache}/otelbee/otelcol}"
mkdir -p "$outdir"
outdir="$(cd "$outdir" && pwd)"
bin="$outdir/otelcol-otelbee"
stamp="$outdir/.stamp"

command -v go >/dev/null || { echo "build-otelcol: go not found in PATH" >&2; exit 1; }

hash="$( { cat "$manifest" "${BASH_SOURCE[0]}"; go env GOVERSION GOOS GOARCH; } | sha256sum | cut -d' ' -f1)"
if [[ -z "${FORCE:-}" && -x "$bin" && -f "$stamp" && "$(cat "$stamp")" == "$hash" ]]; then
	echo "build-otelcol: up to date: $bin"
	exit 0
fi

start=$(date +%s)
# The generated module sits inside this git checkout; don't let `go build` stamp
# (or fail on) the checkout's VCS state.
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-buildvcs=false"
tools="$outdir/.tools"
ocb="$tools/builder"
if [[ ! -x "$ocb" ]] || ! "$ocb" version 2>&1 | grep -q "${OCB_VERSION#v}"; then
	echo "build-otelcol: installing go.opentelemetry.io/collector/cmd/builder@$OCB_VERSION"
	mkdir -p "$tools"
	# pkg@version: the project's go.mod does not influence the tool's dependencies.
	GOBIN="$tools" go install "go.opentelemetry.io/collector/cmd/builder@$OCB_VERSION"
fi

# The manifest's output_path is relative; point it at <outdir>/src.
rm -f "$stamp"
src="$outdir/src"
mkdir -p "$src"
cfg="$outdir/builder-config.yaml"
sed -E "s|^([[:space:]]*output_path:).*|\1 $src|" "$manifest" >"$cfg"

echo "build-otelcol: building collector in $src"
(cd "$outdir" && "$ocb" --config "$cfg")

install -m 0755 "$src/otelcol-otelbee" "$bin"
"$bin" --version
echo "$hash" >"$stamp"
echo "build-otelcol: built $bin in $(( $(date +%s) - start ))s"
