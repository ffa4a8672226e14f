#!/usr/bin/env bash
# Install promtool (Debian package `prometheus`) unless it is already on PATH. Idempotent.
# tests/test_observability.py uses it to check the alert rules, their unit tests, the
# dashboard's queries and the worker's /metrics exposition; under CI=true it must be present.
set -euo pipefail

log() { printf '[install-promtool] %s\n' "$*"; }

if command -v promtool >/dev/null 2>&1; then
  log "already installed: $(promtool --version 2>&1 | head -n1)"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi

log "installing the Debian package prometheus (for promtool)"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# --no-install-recommends: promtool is all we need, not the exporters and web assets.
$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
# The package starts a Prometheus server where an init system runs; CI only wants the tool.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
  $SUDO systemctl stop prometheus || true
fi

command -v promtool >/dev/null 2>&1 || { log "promtool still missing after install"; exit 1; }
log "installed: $(promtool --version 2>&1 | head -n1)"
