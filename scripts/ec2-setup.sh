#!/bin/bash
# EC2 user_data for the dashboard host (Amazon Linux 2023), rendered by Terraform's
# templatefile(): install Docker and Git, then write the ready marker deploy waits for.
set -euo pipefail

dnf install -y docker git
systemctl enable --now docker
usermod -aG docker ${ssh_user}

%{ if additional_public_key != "" ~}
echo '${additional_public_key}' >> /home/${ssh_user}/.ssh/authorized_keys
%{ endif ~}

# deploy waits for this file before it installs anything.
touch /home/${ssh_user}/.setup_complete
chown ${ssh_user}: /home/${ssh_user}/.setup_complete
