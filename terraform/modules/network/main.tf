# One public subnet with IPv4 and IPv6 routes to the internet, a network ACL, a security group
# (SSH and the app ports from the given CIDRs only), the default group emptied, and optional VPC
# flow logs (modules/flow_logs).
# Rules are standalone resources everywhere (never mixed with inline rules).

resource "aws_vpc" "this" {
  cidr_block                       = var.vpc_cidr
  assign_generated_ipv6_cidr_block = var.enable_ipv6
  enable_dns_support               = true
  enable_dns_hostnames             = true
  tags                             = merge(var.tags, { Name = var.name })
}

resource "aws_internet_gateway" "this" {
  vpc_id = aws_vpc.this.id
  tags   = merge(var.tags, { Name = var.name })
}

resource "aws_subnet" "public" {
  vpc_id                          = aws_vpc.this.id
  cidr_block                      = var.subnet_cidr
  availability_zone               = var.availability_zone
  map_public_ip_on_launch         = true
  ipv6_cidr_block                 = var.enable_ipv6 ? cidrsubnet(aws_vpc.this.ipv6_cidr_block, 8, 1) : null
  assign_ipv6_address_on_creation = var.enable_ipv6
  tags                            = merge(var.tags, { Name = "${var.name}-public" })
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.this.id
  tags   = merge(var.tags, { Name = "${var.name}-public" })
}

resource "aws_route" "ipv4_default" {
  route_table_id         = aws_route_table.public.id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = aws_internet_gateway.this.id
}

resource "aws_route" "ipv6_default" {
  count = var.enable_ipv6 ? 1 : 0

  route_table_id              = aws_route_table.public.id
  destination_ipv6_cidr_block = "::/0"
  gateway_id                  = aws_internet_gateway.this.id
}

resource "aws_route_table_association" "public" {
  subnet_id      = aws_subnet.public.id
  route_table_id = aws_route_table.public.id
}

resource "aws_network_acl" "this" {
  vpc_id     = aws_vpc.this.id
  subnet_ids = [aws_subnet.public.id]
  tags       = merge(var.tags, { Name = var.name })
}

# The security group does the fine-grained filtering; the ACL allows all traffic both ways so
# return traffic on ephemeral ports is never cut (ACLs are stateless).
resource "aws_network_acl_rule" "ingress_ipv4" {
  network_acl_id = aws_network_acl.this.id
  rule_number    = 100
  egress         = false
  protocol       = "-1"
  rule_action    = "allow"
  cidr_block     = "0.0.0.0/0"
}

resource "aws_network_acl_rule" "egress_ipv4" {
  network_acl_id = aws_network_acl.this.id
  rule_number    = 100
  egress         = true
  protocol       = "-1"
  rule_action    = "allow"
  cidr_block     = "0.0.0.0/0"
}

resource "aws_network_acl_rule" "ingress_ipv6" {
  count = var.enable_ipv6 ? 1 : 0

  network_acl_id  = aws_network_acl.this.id
  rule_number     = 101
  egress          = false
  protocol        = "-1"
  rule_action     = "allow"
  ipv6_cidr_block = "::/0"
}

resource "aws_network_acl_rule" "egress_ipv6" {
  count = var.enable_ipv6 ? 1 : 0

  network_acl_id  = aws_network_acl.this.id
  rule_number     = 101
  egress          = true
  protocol        = "-1"
  rule_action     = "allow"
  ipv6_cidr_block = "::/0"
}

# The VPC's default security group, adopted with every rule removed: anything launched without
# an explicit group can neither be reached nor reach out.
resource "aws_default_security_group" "this" {
  vpc_id = aws_vpc.this.id
  tags   = merge(var.tags, { Name = "${var.name}-default-deny-all" })
}

resource "aws_security_group" "this" {
  name        = var.name
  description = "SSH and app ports for ${var.name} hosts"
  vpc_id      = aws_vpc.this.id
  tags        = merge(var.tags, { Name = var.name })
}

resource "aws_security_group_rule" "ssh" {
  security_group_id = aws_security_group.this.id
  type              = "ingress"
  description       = "SSH"
  protocol          = "tcp"
  from_port         = 22
  to_port           = 22
  cidr_blocks       = var.ssh_cidr_blocks
}

resource "aws_security_group_rule" "app" {
  for_each = toset([for p in var.app_ports : tostring(p)])

  security_group_id = aws_security_group.this.id
  type              = "ingress"
  description       = "app port ${each.value}"
  protocol          = "tcp"
  from_port         = tonumber(each.value)
  to_port           = tonumber(each.value)
  cidr_blocks       = var.app_cidr_blocks
}

resource "aws_security_group_rule" "egress" {
  security_group_id = aws_security_group.this.id
  type              = "egress"
  description       = "all outbound"
  protocol          = "-1"
  from_port         = 0
  to_port           = 0
  cidr_blocks       = ["0.0.0.0/0"]
}

# VPC flow logs (enable_flow_logs, off by default: they cost per GB), as modules/flow_logs has them.
module "flow_logs" {
  source = "../flow_logs"

  name                        = var.name
  vpc_id                      = aws_vpc.this.id
  enable_flow_logs            = var.enable_flow_logs
  flow_logs_retention_in_days = var.flow_logs_retention_in_days
  region                      = var.region
  permissions_boundary        = var.permissions_boundary

  tags = var.tags
}

# Until this module called modules/flow_logs, the flow-log resources were its own (flow_logs.tf):
# these keep a state made then from destroying and recreating them (the key, and the log group
# with every flow logged so far). Keep them: `deploy` skips an apply whose plan only moves, so such
# a state keeps the old addresses until its next real change is applied.
moved {
  from = aws_kms_key.flow_logs
  to   = module.flow_logs.aws_kms_key.this
}

moved {
  from = aws_kms_alias.flow_logs
  to   = module.flow_logs.aws_kms_alias.this
}

moved {
  from = aws_cloudwatch_log_group.flow_logs
  to   = module.flow_logs.aws_cloudwatch_log_group.this
}

moved {
  from = aws_iam_role.flow_logs
  to   = module.flow_logs.aws_iam_role.this
}

moved {
  from = aws_iam_role_policy.flow_logs
  to   = module.flow_logs.aws_iam_role_policy.this
}

moved {
  from = aws_flow_log.this
  to   = module.flow_logs.aws_flow_log.this
}
