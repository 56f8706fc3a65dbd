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
