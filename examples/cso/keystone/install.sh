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
config=keystone/keystone.env
marker=$HOME/.keystone-done

if ! command -v python3 >/dev/null 2>&1; then
  echo "keystone/install.sh: python3 is missing: install Debian's python3 package" >&2
  exit 1
fi
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  echo "keystone/install.sh: $(python3 -V 2>&1) is too old: the stand-in needs 3.10 or later" >&2
  exit 1
fi
echo "install packages: unchanged (stand-in for Keystone's packages and Apache WSGI: nothing" \
  "to install; $(python3 -V 2>&1) at $(command -v python3))"

if [ ! -f "$config" ]; then
  echo "keystone/install.sh: $config is missing: deployer renders it from $config.j2" >&2
  exit 1
fi
settings=$(python3 keystone/server.py --config "$config" --check)
echo "configure the database connection: unchanged ($settings; RDS is not reachable from" \
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
