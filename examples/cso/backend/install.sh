#!/bin/sh
# backend/install.sh: the install script of the backend role (phase 3, after keystone).
# deployer runs it as the login user in the new release directory (<app root>/releases/<release>)
# after uploading backend/backend.env there (rendered from backend/backend.env.j2).
# Nothing here is CSO's backend: this stands in for installing its packages and checks that the
# stand-in (backend/server.py) will start with these settings. Reaching keystone and rabbitmq
# is its health check's business, once it runs. Idempotent; it writes nothing.
# deployer starts cso-backend from <app root>/current after the switch.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
release=${DEPLOY_RELEASE:-$(basename "$PWD")}
config=backend/backend.env

if ! command -v python3 >/dev/null 2>&1; then
  echo "backend/install.sh: python3 is missing: install Debian's python3 package" >&2
  exit 1
fi
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  echo "backend/install.sh: $(python3 -V 2>&1) is too old: the stand-in needs 3.10 or later" >&2
  exit 1
fi
echo "install packages: unchanged (stand-in for the backend's packages: nothing to install;" \
  "$(python3 -V 2>&1) at $(command -v python3))"

if [ ! -f "$config" ]; then
  echo "backend/install.sh: $config is missing: deployer renders it from $config.j2" >&2
  exit 1
fi
settings=$(python3 backend/server.py --config "$config" --check)
echo "check the configuration: unchanged ($settings)"
echo "configure SSL certificates: unchanged (not emulated: the stand-in speaks plain HTTP)"
echo "release $release installed; cso-backend starts from current after the switch"
