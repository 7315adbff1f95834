#!/bin/sh
# frontend/install.sh: the install script of the frontend role (phase 3, after keystone).
# deployer runs it as the login user in the new release directory (<app root>/releases/<release>)
# after uploading frontend/frontend.env there (rendered from frontend/frontend.env.j2).
# Nothing here is CSO's frontend (the Admin UI): this stands in for installing its packages and
# checks that the stand-in (frontend/server.py) will start with these settings. Reaching the
# backend is its health check's business, once it runs. Idempotent; it writes nothing.
# deployer starts cso-frontend from <app root>/current after the switch.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
release=${DEPLOY_RELEASE:-$(basename "$PWD")}

sh lib/check-role.sh frontend "the frontend's packages"
echo "configure SSL certificates: unchanged (the certificate deployer generated, in frontend/tls.crt)"
echo "release $release installed; cso-frontend starts from current after the switch"
