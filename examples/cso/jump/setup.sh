#!/bin/sh
# jump/setup.sh: the install script of the jump role. deployer runs it as the login user in the
# new release directory (<app root>/releases/<release>), with DEPLOY_RELEASE, DEPLOY_APP_ROOT,
# DEPLOY_ENV, DEPLOY_ROLE and DEPLOY_HOST set, after uploading quickSetup.properties there.
# Stands in for CSO's setup.sh: the steps are in jump/quicksetup.py (a strict reader of the
# properties, never sourced), each idempotent and reported as changed or unchanged.
# Writes the release, ~/cso/ and the marker ~/.setup-done, nothing else.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
release_dir=$(dirname "$here")

# Stand-in for installing packages: the stand-ins need Debian 12's python3 (stdlib) alone.
if ! command -v python3 >/dev/null 2>&1; then
  echo "setup.sh: python3 is missing: install Debian's python3 package" >&2
  exit 1
fi
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  echo "setup.sh: $(python3 -V 2>&1) is too old: the stand-ins need python3 3.10 or later" >&2
  exit 1
fi
echo "install packages: unchanged (stand-in: nothing to install; $(python3 -V 2>&1) at $(command -v python3))"

# The Admin UI forwarder's settings (single topology only), checked before the switch.
if [ -f "$here/ui-forward.env" ]; then
  python3 "$here/ui-forward.py" --config "$here/ui-forward.env" --check
fi

exec python3 "$here/quicksetup.py" --properties "$release_dir/quickSetup.properties"
