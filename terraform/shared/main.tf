# The network and identity every host of an environment stands on: VPC (IPv4 + IPv6), a public
# subnet, internet gateway, network ACL, security group, the default group emptied, VPC flow logs
# (prod by default), the Elastic IPs of the environments, and the role the hosts run as.

provider "aws" {
  region = var.aws_region

  # aws_endpoint_url is set by `deploy` from AWS_ENDPOINT_URL: empty for AWS itself, the local
  # sandbox (or another AWS-compatible endpoint) otherwise.
  skip_credentials_validation = local.custom_endpoint
  skip_metadata_api_check     = local.custom_endpoint
  skip_region_validation      = local.custom_endpoint
  skip_requesting_account_id  = local.custom_endpoint

  endpoints {
    cloudwatchlogs = local.endpoint
    ec2            = local.endpoint
    iam            = local.endpoint
    kms            = local.endpoint
    sts            = local.endpoint
  }
}

locals {
  custom_endpoint = var.aws_endpoint_url != ""
  endpoint        = local.custom_endpoint ? var.aws_endpoint_url : null
  name            = "${var.name_prefix}-${var.deptype}"
  # Flow logs cost money per GB: on for prod unless the env file says otherwise.
  enable_flow_logs = coalesce(var.enable_flow_logs, var.deptype == "prod")
  tags = merge({
    Project     = var.name_prefix
    Environment = var.deptype
    ManagedBy   = "deployer"
  }, var.tags)
}

module "network" {
  source = "../modules/network"

  name            = local.name
  vpc_cidr        = var.vpc_cidr
  subnet_cidr     = var.subnet_cidr
  enable_ipv6     = var.enable_ipv6
  ssh_cidr_blocks = var.ssh_cidr_blocks
  app_cidr_blocks = var.app_cidr_blocks
  app_ports       = var.app_ports

  enable_flow_logs            = local.enable_flow_logs
  flow_logs_retention_in_days = var.flow_logs_retention_in_days
  region                      = var.aws_region
  permissions_boundary        = var.permissions_boundary

  tags = local.tags
}

module "elastic_ip" {
  source   = "../modules/elastic_ip"
  for_each = toset(var.eip_environments)

  name = "${var.name_prefix}-${each.key}"
  tags = merge(local.tags, { Environment = each.key })
}

module "instance_role" {
  source = "../modules/instance_role"

  name                 = "${local.name}-host"
  permissions_boundary = var.permissions_boundary
  tags                 = local.tags
}
