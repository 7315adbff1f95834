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

sh lib/check-role.sh backend "the backend's packages"
echo "configure SSL certificates: unchanged (not emulated: the stand-in speaks plain HTTP)"
echo "release $release installed; cso-backend starts from current after the switch"
