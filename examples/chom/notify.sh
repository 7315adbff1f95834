#!/bin/sh
# The CHOM stack's notify hook: a local `on_failure` step, run on the deploying machine once per
# failed host, with DEPLOY_FAILED (what failed), DEPLOY_HOST, DEPLOY_RELEASE and DEPLOY_ENV set.
# It appends one line to NOTIFY_FILE and, when NOTIFY_WEBHOOK is set in the operator's
# environment, POSTs the same facts as JSON there (Slack- and Mattermost-style hooks take it).
# The body is built by python3's json module, so no value can break out of it.
set -eu
file=${NOTIFY_FILE:-.deployer/chom-notify.log}
mkdir -p "$(dirname "$file")"
printf '%s %s: %s failed on %s (release %s)\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  "${DEPLOY_ENV:-?}" "${DEPLOY_FAILED:-?}" "${DEPLOY_HOST:-?}" "${DEPLOY_RELEASE:-?}" >> "$file"
if [ -n "${NOTIFY_WEBHOOK:-}" ]; then
  python3 -c 'import json, os
print(json.dumps({"text": "deploy of {} failed on {}: {}".format(
    os.environ.get("DEPLOY_ENV", "?"), os.environ.get("DEPLOY_HOST", "?"),
    os.environ.get("DEPLOY_FAILED", "?"))}))' |
    curl -fsS --max-time 10 -H 'Content-Type: application/json' --data-binary @- -- "$NOTIFY_WEBHOOK" >/dev/null
fi
