#!/bin/sh
# lib/check-role.sh ROLE WHAT: what every role's install script does first. Run from the release
# directory. Stands in for installing ROLE's packages (WHAT names them): checks python3 (3.10 or
# later) and that ROLE/server.py starts with ROLE/ROLE.env (rendered by deployer from its .j2),
# and prints `install packages:` and `check the configuration:` lines. Writes nothing.
set -eu
role=$1
what=$2
config=$role/$role.env
if ! command -v python3 >/dev/null 2>&1; then
  echo "$role/install.sh: python3 is missing: install Debian's python3 package" >&2
  exit 1
fi
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  echo "$role/install.sh: $(python3 -V 2>&1) is too old: the stand-in needs 3.10 or later" >&2
  exit 1
fi
echo "install packages: unchanged (stand-in for $what: nothing to install;" \
  "$(python3 -V 2>&1) at $(command -v python3))"
if [ ! -f "$config" ]; then
  echo "$role/install.sh: $config is missing: deployer renders it from $config.j2" >&2
  exit 1
fi
settings=$(python3 "$role/server.py" --config "$config" --check)  # a bad setting stops here
echo "check the configuration: unchanged ($settings)"
