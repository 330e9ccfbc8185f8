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

# A real kube-apiserver and etcd for the operator's envtest tests, compiled
# from the Go module proxy by the shared build script that sits beside the
# repository (the first build takes about 14 minutes on 2 cores; then it is
# cached under ~/.cache/rally/envtest/<version>, where the tests look when
# KUBEBUILDER_ASSETS is unset). The version matches testsvc.KubeVersion.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export K8S_VERSION=1.37.2
envtest_script=$root/../shared/k8s/build-envtest-assets.sh
if [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ -x "$KUBEBUILDER_ASSETS/kube-apiserver" ]; then
  :
elif [ -x "$HOME/.cache/rally/envtest/$K8S_VERSION/kube-apiserver" ] && [ ! -f "$envtest_script" ]; then
  :
elif [ -f "$envtest_script" ]; then
  echo "test-deps: envtest assets (kube-apiserver, etcd $K8S_VERSION)"
  bash "$envtest_script" >/dev/null
elif [ "${RALLY_TEST_SERVICES:-}" = optional ]; then
  echo "test-deps: $envtest_script not found; the envtest tests will skip" >&2
else
  echo "test-deps: $envtest_script not found: it builds kube-apiserver and etcd for the envtest tests (set RALLY_TEST_SERVICES=optional to skip those tests)" >&2
  exit 1
fi
echo "test-deps: ok"
