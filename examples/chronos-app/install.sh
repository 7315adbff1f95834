#!/bin/sh
# Dashboard install: (re)start the app from this release directory. Idempotent.
# The real app runs `docker compose up -d` here; the example serves one page.
set -eu
root="${DEPLOY_APP_ROOT:?run by deploy}"
pidfile="$root/dashboard.pid"
# A number of seconds, bare or double-quoted (deploy renders .env.deployment as KEY="value").
pause=$(sed -n 's/^INSTALL_PAUSE="\{0,1\}\([0-9][0-9.]*\)"\{0,1\}$/\1/p' .env.deployment 2>/dev/null || true)
if [ -n "$pause" ] && [ "$pause" != 0 ]; then echo "pausing ${pause}s (INSTALL_PAUSE)"; sleep "$pause"; fi
if [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null; then
  # Wait for the old server to let go of its port.
  for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$(cat "$pidfile")" 2>/dev/null || break; sleep 0.1; done
fi
nohup python3 app/server.py >> "$root/dashboard.log" 2>&1 < /dev/null &
echo $! > "$pidfile"
echo "dashboard started (pid $(cat "$pidfile"), release ${DEPLOY_RELEASE:-?})"
