#!/bin/sh
# Edge install: check what the service needs. The service itself (chronos-edge.service) is
# started by deploy afterwards: systemd, or the stack's nohup fallback on hosts without it.
set -eu
command -v python3 >/dev/null || { echo "python3 is missing" >&2; exit 1; }
test -f edge_server/server.py
test -f edge_server/edge.env || { echo "edge_server/edge.env was not rendered" >&2; exit 1; }
echo "edge server ready (release ${DEPLOY_RELEASE:-?})"
