#!/usr/bin/env bash
# Checks of the deployment files in deploy/ (called by tests/run.sh; runs on its own too).
# Each check uses the real tool: promtool for the Prometheus files. The metric names the rules
# and the dashboard use are checked against a real scrape by tests/e2e/ops.rs.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== promtool check config / check rules / test rules (deploy/prometheus)"
promtool check config deploy/prometheus/prometheus.yml
promtool check rules deploy/prometheus/rules.yml
promtool test rules deploy/prometheus/tests/rules_test.yml

echo "== systemd-analyze verify (deploy/systemd/appliance.service)"
# The unit names installed paths; verify a copy pointing at this checkout's setup script and a
# stand-in for the binary (verify checks that commands exist). Any warning (an unknown or
# misspelt key, a bad value) fails the check.
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
install -m 0755 /bin/true "$t/appliance"
sed -e "s|/usr/local/bin/appliance|$t/appliance|g" \
    -e "s|/usr/local/sbin/appliance-setup-host|$PWD/deploy/setup-host.sh|g" \
    deploy/systemd/appliance.service > "$t/appliance.service"
if ! out=$(systemd-analyze verify "$t/appliance.service" 2>&1) || [ -n "$out" ]; then
  echo "$out" >&2
  echo "systemd-analyze verify: FAILED" >&2
  exit 1
fi
echo "appliance.service: OK"

echo "== deploy/setup-host.sh: dry run, real run and errors on a fake sysfs"
bash tests/setup_host_test.sh

echo "== Kubernetes manifests (deploy/k8s): kubernetes-validate --strict, the NAD CRD schema, cross-checks"
# kubernetes-validate (PyPI) ships the Kubernetes OpenAPI schemas; installed once into a venv
# under target/ (Debian's python3-venv), pinned.
venv=target/deploy-venv
if ! "$venv/bin/kubernetes-validate" --version 2>/dev/null | grep -qx 1.37.0; then
  rm -rf "$venv"
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate==1.37.0
fi
"$venv/bin/python" tests/k8s_check.py

echo "== container image (deploy/container/build.sh: mmdebstrap + buildah), run in podman"
bash tests/container_test.sh
