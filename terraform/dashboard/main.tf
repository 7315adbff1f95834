# The dashboard host: an EC2 instance (Amazon Linux 2023) in the shared subnet, on this
# environment's Elastic IP. It reads the shared stack's outputs from its remote state; the
# driver passes where that state lives (state_bucket, state_key_prefix).

provider "aws" {
  region = var.aws_region

  # aws_endpoint_url is set by `deploy` from AWS_ENDPOINT_URL: empty for AWS itself, the local
  # sandbox (or another AWS-compatible endpoint) otherwise.
  skip_credentials_validation = local.custom_endpoint
  skip_metadata_api_check     = local.custom_endpoint
  skip_region_validation      = local.custom_endpoint
  skip_requesting_account_id  = local.custom_endpoint

  endpoints {
    ec2 = local.endpoint
    iam = local.endpoint
    sts = local.endpoint
  }
}

locals {
  custom_endpoint = var.aws_endpoint_url != ""
  endpoint        = local.custom_endpoint ? var.aws_endpoint_url : null
  name            = "${var.name_prefix}-${var.deptype}-dashboard"
  shared          = data.terraform_remote_state.shared.outputs
  eip_allocation  = lookup(local.shared.eip_allocation_ids, var.deptype, null)
  tags = merge({
    Project     = var.name_prefix
    Environment = var.deptype
    ManagedBy   = "deployer"
  }, var.tags)
}

data "terraform_remote_state" "shared" {
  backend = "s3"
  config = merge(
    {
      bucket = var.state_bucket
      key    = "${var.state_key_prefix}shared.tfstate"
      region = var.aws_region
    },
    local.custom_endpoint ? {
      endpoints                   = { s3 = var.aws_endpoint_url }
      use_path_style              = true
      skip_credentials_validation = true
      skip_requesting_account_id  = true
      skip_metadata_api_check     = true
      skip_region_validation      = true
    } : null,
  )
}

# Fails the plan with a clear message when shared has no address for this environment.
resource "terraform_data" "shared_ready" {
  input = local.eip_allocation

  lifecycle {
    precondition {
      condition     = local.eip_allocation != null
      error_message = "The shared stack has no Elastic IP for \"${var.deptype}\": add it to TF_VAR_eip_environments and apply shared first."
    }
  }
}

module "host" {
  source = "../modules/ec2_host"

  name                   = local.name
  subnet_id              = local.shared.subnet_id
  security_group_ids     = [local.shared.security_group_id]
  instance_profile_name  = local.shared.instance_profile_name
  create_eip_association = true
  eip_allocation_id      = terraform_data.shared_ready.output
  instance_type          = var.instance_type
  public_key             = var.public_key
  additional_public_key  = var.additional_public_key
  # The key travels base64-encoded: whatever its characters, the script only ever sees [A-Za-z0-9+/=].
  user_data = templatefile("${path.module}/../../scripts/ec2-setup.sh", {
    ssh_user                     = var.ssh_user
    additional_public_key_base64 = base64encode(var.additional_public_key)
  })
  tags = local.tags
}
