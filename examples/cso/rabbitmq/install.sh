#!/bin/sh
# rabbitmq/install.sh: the install script of the rabbitmq role (phase 2, beside keystone).
# deployer runs it as the login user in the new release directory (<app root>/releases/<release>)
# after uploading rabbitmq/rabbitmq.env there (rendered from rabbitmq/rabbitmq.env.j2).
# Nothing here is RabbitMQ: this stands in for installing its packages and checks that the
# stand-in (rabbitmq/server.py) will start with these settings. Idempotent; it writes nothing.
# deployer starts cso-rabbitmq from <app root>/current after the switch.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
release=${DEPLOY_RELEASE:-$(basename "$PWD")}
config=rabbitmq/rabbitmq.env

if ! command -v python3 >/dev/null 2>&1; then
  echo "rabbitmq/install.sh: python3 is missing: install Debian's python3 package" >&2
  exit 1
fi
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  echo "rabbitmq/install.sh: $(python3 -V 2>&1) is too old: the stand-in needs 3.10 or later" >&2
  exit 1
fi
echo "install packages: unchanged (stand-in for RabbitMQ's packages: nothing to install;" \
  "$(python3 -V 2>&1) at $(command -v python3))"

if [ ! -f "$config" ]; then
  echo "rabbitmq/install.sh: $config is missing: deployer renders it from $config.j2" >&2
  exit 1
fi
settings=$(python3 rabbitmq/server.py --config "$config" --check)
echo "check the configuration: unchanged ($settings)"
echo "configure SSL certificates: unchanged (not emulated: the stand-in speaks plain HTTP and TCP)"
echo "setup clustering: unchanged (the peers in $config are probed on their cluster port" \
  "once cso-rabbitmq runs; GET /api/nodes shows them)"
echo "release $release installed; cso-rabbitmq starts from current after the switch"
