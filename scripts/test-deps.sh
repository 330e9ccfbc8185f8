#!/usr/bin/env bash
# Installs what the test suite needs and is missing; does nothing when all is
# present, so `make test` can call it every time. Debian packages only.
set -euo pipefail

# command:package pairs the tests need. Later domains add their servers here
# (redis-server, etcd, ...).
NEEDS=(
  "git:git"
  "update-ca-certificates:ca-certificates"
  "redis-server:redis-server"
)

missing=()
for pair in "${NEEDS[@]}"; do
  cmd=${pair%%:*} pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done

if ((${#missing[@]})); then
  echo "test-deps: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

command -v go >/dev/null 2>&1 || { echo "test-deps: Go is required (go.mod names the version)" >&2; exit 1; }
echo "test-deps: ok"
