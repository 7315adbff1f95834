#!/bin/sh
# keystone/install.sh: the install script of the keystone role (phase 2, beside rabbitmq).
# deployer runs it as the login user in the new release directory (<app root>/releases/<release>)
# after uploading keystone/keystone.env there (rendered from keystone/keystone.env.j2).
# Nothing here is Keystone: this stands in for installing its packages, checks that the stand-in
# (keystone/server.py) has its database setting, and "bootstraps" once: ~/.keystone-done holds
# the release that did, and later releases leave it as it is. Idempotent; it writes that marker
# and nothing else. deployer starts cso-keystone from <app root>/current after the switch.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
release=${DEPLOY_RELEASE:-$(basename "$PWD")}
marker=$HOME/.keystone-done

sh lib/check-role.sh keystone "Keystone's packages and Apache WSGI"
echo "configure the database connection: unchanged (RDS is not reachable from" \
  "the sandbox: the connection is not tried here, cso-keystone logs its attempt)"

# The name goes into the marker as it is: allow only what release names are made of.
case $release in
  '' | *[!A-Za-z0-9._-]*) echo "keystone/install.sh: unexpected release name '$release'" >&2; exit 1 ;;
esac
if [ -s "$marker" ]; then
  echo "bootstrap keystone: unchanged (done by release $(head -n 1 "$marker"): $marker)"
else
  printf '%s\n' "$release" > "$marker.tmp"
  mv "$marker.tmp" "$marker"
  echo "bootstrap keystone: changed (stand-in: no admin user or endpoint is made; wrote $marker" \
    "for release $release)"
fi
echo "release $release installed; cso-keystone starts from current after the switch"
