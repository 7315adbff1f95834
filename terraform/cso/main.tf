# The CSO system (docs: README.md): network, security groups, host roles, the jump host and the
# frontend, backend, Keystone and RabbitMQ hosts, the database, shared file system and secrets,
# a private DNS zone and, in the ha topology, the Admin UI's load balancer with Cognito.
# `topology` switches between one host per role in AZ A and one NAT gateway ("single") and two
# hosts per role across both AZs, a NAT gateway per AZ, Multi-AZ RDS and the load balancer ("ha").

provider "aws" {
  region = var.aws_region

  # aws_endpoint_url is set by `deploy` from AWS_ENDPOINT_URL: empty for AWS itself, the local
  # sandbox (or another AWS-compatible endpoint) otherwise.
  skip_credentials_validation = local.custom_endpoint
  skip_metadata_api_check     = local.custom_endpoint
  skip_region_validation      = local.custom_endpoint
  skip_requesting_account_id  = local.custom_endpoint

  # `elb` is the load balancers' endpoint on 3.39 (v2 included); `cloudwatchlogs` is 3.39's name
  # for logs (an alias in 5.x/6.x). See README.md for 5.x and a custom endpoint.
  endpoints {
    acm            = local.endpoint
    cloudwatchlogs = local.endpoint
    cognitoidp     = local.endpoint
    ec2            = local.endpoint
    efs            = local.endpoint
    elb            = local.endpoint
    iam            = local.endpoint
    kms            = local.endpoint
    rds            = local.endpoint
    route53        = local.endpoint
    secretsmanager = local.endpoint
    sts            = local.endpoint
  }
}

locals {
  custom_endpoint = var.aws_endpoint_url != ""
  endpoint        = local.custom_endpoint ? var.aws_endpoint_url : null
  name            = "${var.name_prefix}-${var.deptype}"
  ha              = var.topology == "ha"
  # Flow logs cost money per GB: on for prod unless the env file says otherwise.
  enable_flow_logs = coalesce(var.enable_flow_logs, var.deptype == "prod")
  # A stage is torn down and rebuilt; prod is not deleted by accident.
  enable_deletion_protection     = coalesce(var.enable_deletion_protection, var.deptype == "prod")
  secret_recovery_window_in_days = coalesce(var.secret_recovery_window_in_days, var.deptype == "prod" ? 30 : 0)
  dns_zone                       = coalesce(var.dns_zone, "${var.deptype}.cso.internal")
  admin_ui_port                  = 8102
  tags = merge({
    Project     = var.name_prefix
    Environment = var.deptype
    ManagedBy   = "deployer"
  }, var.tags)

  # The hosts of every role: one in private subnet A (single), or one per AZ (ha).
  host_count = local.ha ? 2 : 1
  role_instance_types = {
    frontend = var.frontend_instance_type
    backend  = var.backend_instance_type
    keystone = var.keystone_instance_type
    rabbitmq = var.rabbitmq_instance_type
  }
  hosts = merge([
    for role, instance_type in local.role_instance_types : {
      for i in range(local.host_count) : "${role}-${i + 1}" => {
        role          = role
        az_index      = i
        instance_type = instance_type
      }
    }
  ]...)
  host_roles = keys(local.role_instance_types)

  # user_data as the dashboard has it (scripts/ec2-setup.sh): packages, the extra key, then the
  # ready marker ~/.setup_complete. The key travels base64-encoded, so the script only ever sees
  # [A-Za-z0-9+/=].
  user_data = templatefile("${path.module}/../../scripts/ec2-setup.sh", {
    ssh_user                     = var.ssh_user
    additional_public_key_base64 = base64encode(var.additional_public_key)
  })
}

# Without a state filter: the first two names stay the first two while a zone is impaired (a
# shorter list would move the subnets, and so every host, to other zones). Pin them with
# availability_zones for real environments.
data "aws_availability_zones" "available" {}

module "network" {
  source = "../modules/cso_network"

  name               = local.name
  vpc_cidr           = var.vpc_cidr
  availability_zones = length(var.availability_zones) > 0 ? var.availability_zones : data.aws_availability_zones.available.names
  enable_nat_gateway = true
  single_nat_gateway = !local.ha

  enable_flow_logs            = local.enable_flow_logs
  flow_logs_retention_in_days = var.flow_logs_retention_in_days
  region                      = var.aws_region
  permissions_boundary        = var.permissions_boundary

  tags = local.tags
}

module "security" {
  source = "../modules/cso_security"

  name                      = local.name
  vpc_id                    = module.network.vpc_id
  admin_cidr_blocks         = var.admin_cidr_blocks
  ui_cidr_blocks            = var.ui_cidr_blocks
  create_alb_security_group = local.ha
  enable_jump_admin_ui      = !local.ha
  admin_ui_port             = local.admin_ui_port
  backend_port              = var.backend_port

  tags = local.tags
}

# --- Identity --------------------------------------------------------------------------------

# The jump host sets the system up (deployment flow: it creates the database schemas and
# configures the services), so it alone may read the two passwords, and decrypt them only
# through Secrets Manager. The other hosts' role grants nothing.
data "aws_iam_policy_document" "jump" {
  statement {
    sid       = "ReadTheCsoSecrets"
    actions   = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
    resources = values(module.data.secret_arns)
  }

  statement {
    sid       = "DecryptThemThroughSecretsManager"
    actions   = ["kms:Decrypt"]
    resources = [module.data.secrets_kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["secretsmanager.${var.aws_region}.amazonaws.com"]
    }
  }
}

module "jump_role" {
  source = "../modules/instance_role"

  name                 = "${local.name}-jump"
  create_inline_policy = true
  inline_policy        = data.aws_iam_policy_document.jump.json
  permissions_boundary = var.permissions_boundary
  tags                 = local.tags
}

module "host_role" {
  source = "../modules/instance_role"

  name                 = "${local.name}-host"
  permissions_boundary = var.permissions_boundary
  tags                 = local.tags
}

# --- Hosts -----------------------------------------------------------------------------------

resource "aws_key_pair" "this" {
  key_name   = local.name
  public_key = var.public_key
  tags       = merge(local.tags, { Name = local.name })
}

module "jump_eip" {
  source = "../modules/elastic_ip"

  name = "${local.name}-jump"
  tags = local.tags
}

module "jump" {
  source = "../modules/ec2_host"

  name                   = "${local.name}-jump"
  subnet_id              = module.network.public_subnet_ids[0]
  security_group_ids     = [module.security.security_group_ids["jump"]]
  instance_profile_name  = module.jump_role.instance_profile_name
  create_eip_association = true
  eip_allocation_id      = module.jump_eip.allocation_id
  instance_type          = var.jump_instance_type
  create_key_pair        = false
  key_name               = aws_key_pair.this.key_name
  user_data              = local.user_data
  root_volume_size       = var.root_volume_size
  tags                   = merge(local.tags, { Role = "jump" })
}

module "host" {
  source   = "../modules/ec2_host"
  for_each = local.hosts

  name                  = "${local.name}-${each.key}"
  subnet_id             = module.network.private_subnet_ids[each.value.az_index]
  security_group_ids    = [module.security.security_group_ids[each.value.role]]
  instance_profile_name = module.host_role.instance_profile_name
  instance_type         = each.value.instance_type
  create_key_pair       = false
  key_name              = aws_key_pair.this.key_name
  user_data             = local.user_data
  root_volume_size      = var.root_volume_size
  tags                  = merge(local.tags, { Role = each.value.role })
}

# --- Data ------------------------------------------------------------------------------------

module "data" {
  source = "../modules/cso_data"

  name                   = local.name
  subnet_ids             = module.network.private_subnet_ids
  security_group_ids     = [module.security.security_group_ids["database"]]
  efs_security_group_ids = [module.security.security_group_ids["efs"]]
  enable_multi_az        = local.ha

  db_engine_version          = var.db_engine_version
  db_instance_class          = var.db_instance_class
  db_allocated_storage       = var.db_allocated_storage
  db_password                = var.db_password
  rabbitmq_password          = var.rabbitmq_password
  enable_deletion_protection = local.enable_deletion_protection
  skip_final_snapshot        = var.skip_final_snapshot
  permissions_boundary       = var.permissions_boundary
  region                     = var.aws_region

  secret_recovery_window_in_days = local.secret_recovery_window_in_days

  tags = local.tags
}

# What the outputs report: every role's private addresses, host 1 first.
locals {
  jump_address = module.jump.public_ip
  role_private_ips = {
    for role in concat(["jump"], local.host_roles) : role => (
      role == "jump" ? [module.jump.private_ip] :
      [for i in range(local.host_count) : module.host["${role}-${i + 1}"].private_ip]
    )
  }
}

# --- Admin UI (ha) ---------------------------------------------------------------------------

module "alb" {
  source = "../modules/cso_alb"
  count  = local.ha ? 1 : 0

  name                       = local.name
  vpc_id                     = module.network.vpc_id
  subnet_ids                 = module.network.public_subnet_ids
  security_group_ids         = [module.security.security_group_ids["alb"]]
  target_instance_ids        = { for key, host in module.host : key => host.instance_id if local.hosts[key].role == "frontend" }
  admin_ui_port              = local.admin_ui_port
  certificate_pem            = var.alb_certificate_pem
  private_key_pem            = var.alb_private_key_pem
  cognito_domain_prefix      = var.cognito_domain_prefix
  enable_deletion_protection = local.enable_deletion_protection
  access_logs_bucket         = var.alb_access_logs_bucket

  tags = local.tags
}

# --- DNS -------------------------------------------------------------------------------------

module "dns" {
  source = "../modules/cso_dns"

  name      = local.name
  zone_name = local.dns_zone
  vpc_id    = module.network.vpc_id
  a_records = merge(
    { jump = module.jump.private_ip },
    { for key, host in module.host : key => host.private_ip },
    { for role in local.host_roles : role => module.host["${role}-1"].private_ip },
  )
  cname_records = { db = module.data.db_address }

  tags = local.tags
}
