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

sh lib/check-role.sh rabbitmq "RabbitMQ's packages"
echo "configure SSL certificates: unchanged (not emulated: the stand-in speaks plain HTTP and TCP)"
echo "setup clustering: unchanged (the peers in rabbitmq/rabbitmq.env are probed on their cluster port" \
  "once cso-rabbitmq runs; GET /api/nodes shows them)"
echo "release $release installed; cso-rabbitmq starts from current after the switch"
