#!/usr/bin/env bash
# Regenerates bpf/headers/<arch>/vmlinux.h from kernel BTF.
#   amd64: this machine's kernel (/sys/kernel/btf/vmlinux).
#   arm64: the BTF embedded in Debian's arm64 cloud kernel image (downloaded,
#          never installed): the .BTF blob is found by its header in the
#          uncompressed Image and dumped with bpftool.
# CO-RE relocates every field access at load time, so the header needs to
# describe *a* recent kernel, not the one the agent runs on.
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${1:-amd64}
case $arch in
amd64)
	bpftool btf dump file /sys/kernel/btf/vmlinux format c >bpf/headers/amd64/vmlinux.h
	;;
arm64)
	work=$(mktemp -d)
	trap 'rm -rf "$work"' EXIT
	mirror=$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep security | head -1 | awk '{print $2}')
	mirror=${mirror:-http://deb.debian.org/debian-security}
	cat >"$work/arm64.sources" <<SRC
Types: deb
URIs: $mirror
Suites: bookworm-security
Components: main
Architectures: arm64
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
	mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
	apt=(-o Dir::Etc::sourcelist="$work/arm64.sources" -o Dir::Etc::sourceparts=- -o Dir::State::Lists="$work/lists"
		-o Dir::Cache="$work/cache" -o APT::Architectures::=arm64 -o APT::Architecture=arm64)
	apt-get "${apt[@]}" update -qq
	pkg=$(apt-cache "${apt[@]}" search '^linux-image-6\.12.*-cloud-arm64-unsigned$' | awk '{print $1}' | sort -V | tail -1)
	echo "using $pkg" >&2
	(cd "$work" && apt-get "${apt[@]}" download "$pkg" 2>/dev/null)
	dpkg-deb -x "$work"/*.deb "$work/x"
	python3 - "$work"/x/boot/vmlinuz-* "$work/vmlinux.btf" <<'PY'
import gzip, struct, sys
b = open(sys.argv[1], 'rb').read()
if b[:2] == b'\x1f\x8b':
    b = gzip.decompress(b)
i = b.find(b'\x9f\xeb\x01\x00\x18\x00\x00\x00')  # BTF magic, version 1, header length 24
if i < 0:
    sys.exit("no BTF in the kernel image")
hdr, toff, tlen, soff, slen = struct.unpack_from('<5I', b, i + 4)
open(sys.argv[2], 'wb').write(b[i:i + hdr + max(toff + tlen, soff + slen)])
PY
	bpftool btf dump file "$work/vmlinux.btf" format c >bpf/headers/arm64/vmlinux.h
	;;
*)
	echo "usage: $0 amd64|arm64" >&2
	exit 2
	;;
esac
