#!/bin/bash
# EC2 user_data for the dashboard host (Amazon Linux 2023), rendered by Terraform's
# templatefile(): install Docker and Git, then write the ready marker deploy waits for.
# It also runs, unchanged, on the sandbox's Debian machines, which have no dnf and no internet:
# there it says that it skips the package installs, and still writes the marker.
#
# The two values Terraform fills in are assigned once, here, in single quotes, and the rest of
# the script uses only the shell variables. Neither can carry a quote: ssh_user is validated to a
# Linux user name (terraform/dashboard/variables.tf), and the extra key comes base64-encoded
# (base64encode() in terraform/dashboard/main.tf), so any byte of it reaches the host only as
# data, through base64 -d.
set -euo pipefail

# shellcheck disable=SC2016  # Terraform's templatefile() fills these in; the shell expands nothing
ssh_user='${ssh_user}'
# shellcheck disable=SC2016  # as above
additional_public_key_base64='${additional_public_key_base64}'

if command -v dnf >/dev/null 2>&1; then
  dnf install -y docker git
  systemctl enable --now docker
  usermod -aG docker "$ssh_user"
else
  # Not Amazon Linux (the sandbox's Debian machine, offline): nothing can be installed here.
  echo "ec2-setup: no dnf on this host: skipped installing docker and git" \
    "(git: $(command -v git || echo missing); docker: $(command -v docker || echo missing))"
fi

home=$(getent passwd "$ssh_user" | cut -d: -f6)

if [ -n "$additional_public_key_base64" ]; then
  # cloud-init has already written the key pair's key there; the extra key goes on a line of
  # its own.
  { printf '%s' "$additional_public_key_base64" | base64 -d; echo; } >>"$home/.ssh/authorized_keys"
fi

# deploy waits for this file before it installs anything.
touch "$home/.setup_complete"
chown "$ssh_user:" "$home/.setup_complete"
