# One security group per CSO role, and only the flows the architecture needs
# (docs: terraform/cso/README.md). Every flow between two groups is two rules: the ingress on the
# group reached and the egress on the group that connects, so egress is as narrow as ingress.
# Rules are standalone resources everywhere (never mixed with inline rules). A group created by
# the provider loses AWS's default allow-all egress rule, so a group with no egress rule here
# (database, efs) sends nothing.

locals {
  # The hosts' roles (the jump host reaches each of them over SSH).
  host_roles = ["frontend", "backend", "keystone", "rabbitmq"]
  groups     = concat(["jump"], local.host_roles, ["database", "efs"], var.create_alb_security_group ? ["alb"] : [])

  flows = concat(
    [for role in local.host_roles : { from = "jump", to = role, port = 22, what = "SSH from the jump host" }],
    var.create_alb_security_group ? [{ from = "alb", to = "frontend", port = var.admin_ui_port, what = "Admin UI from the load balancer" }] : [],
    var.enable_jump_admin_ui ? [{ from = "jump", to = "frontend", port = var.admin_ui_port, what = "Admin UI forwarded by the jump host" }] : [],
    [
      { from = "frontend", to = "backend", port = var.backend_port, what = "backend API from the frontends" },
      { from = "backend", to = "keystone", port = var.keystone_port, what = "Keystone from the backends" },
      { from = "backend", to = "rabbitmq", port = var.rabbitmq_tls_port, what = "AMQPS from the backends" },
      { from = "backend", to = "database", port = var.database_port, what = "MySQL from the backends" },
      { from = "keystone", to = "database", port = var.database_port, what = "MySQL from Keystone" },
    ],
    # The RabbitMQ cluster: epmd, inter-node (distribution) and AMQPS between its nodes.
    [for port in [var.rabbitmq_epmd_port, var.rabbitmq_dist_port, var.rabbitmq_tls_port] :
    { from = "rabbitmq", to = "rabbitmq", port = port, what = "RabbitMQ cluster" }],
    [for role in concat(["jump"], local.host_roles) : { from = role, to = "efs", port = 2049, what = "NFS to EFS from ${role}" }],
  )
  flow_rules = { for f in local.flows : "${f.from}-to-${f.to}-${f.port}" => f }

  # Outbound HTTP(S) to anywhere: package repositories, registries and updates sit behind
  # addresses no list can pin (CDNs), reached through the NAT gateways (the jump host: the
  # internet gateway). Nothing else leaves the VPC.
  internet_egress = {
    for pair in setproduct(concat(["jump"], local.host_roles), [80, 443]) : "${pair[0]}-${pair[1]}" => { group = pair[0], port = pair[1] }
  }
}

resource "aws_security_group" "this" {
  for_each = toset(local.groups)

  name        = "${var.name}-${each.key}"
  description = "CSO ${each.key} (${var.name})"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name}-${each.key}", Role = each.key })
}

resource "aws_security_group_rule" "ingress_from_group" {
  for_each = local.flow_rules

  security_group_id        = aws_security_group.this[each.value.to].id
  type                     = "ingress"
  description              = each.value.what
  protocol                 = "tcp"
  from_port                = each.value.port
  to_port                  = each.value.port
  source_security_group_id = each.value.from == each.value.to ? null : aws_security_group.this[each.value.from].id
  self                     = each.value.from == each.value.to ? true : null
}

resource "aws_security_group_rule" "egress_to_group" {
  for_each = local.flow_rules

  security_group_id        = aws_security_group.this[each.value.from].id
  type                     = "egress"
  description              = "${each.value.what} (to ${each.value.to})"
  protocol                 = "tcp"
  from_port                = each.value.port
  to_port                  = each.value.port
  source_security_group_id = each.value.from == each.value.to ? null : aws_security_group.this[each.value.to].id
  self                     = each.value.from == each.value.to ? true : null
}

resource "aws_security_group_rule" "jump_ssh" {
  security_group_id = aws_security_group.this["jump"].id
  type              = "ingress"
  description       = "SSH from the administrators"
  protocol          = "tcp"
  from_port         = 22
  to_port           = 22
  cidr_blocks       = var.admin_cidr_blocks
}

resource "aws_security_group_rule" "jump_admin_ui" {
  count = var.enable_jump_admin_ui ? 1 : 0

  security_group_id = aws_security_group.this["jump"].id
  type              = "ingress"
  description       = "Admin UI (forwarded to the frontend)"
  protocol          = "tcp"
  from_port         = var.admin_ui_port
  to_port           = var.admin_ui_port
  cidr_blocks       = var.ui_cidr_blocks
}

resource "aws_security_group_rule" "alb_admin_ui" {
  count = var.create_alb_security_group ? 1 : 0

  security_group_id = aws_security_group.this["alb"].id
  type              = "ingress"
  description       = "Admin UI (HTTPS)"
  protocol          = "tcp"
  from_port         = var.admin_ui_port
  to_port           = var.admin_ui_port
  cidr_blocks       = var.ui_cidr_blocks
}

# The load balancer itself calls Cognito's token and user-info endpoints (authenticate-cognito);
# they have no fixed addresses.
resource "aws_security_group_rule" "alb_cognito" {
  count = var.create_alb_security_group ? 1 : 0

  security_group_id = aws_security_group.this["alb"].id
  type              = "egress"
  description       = "HTTPS to Cognito (authenticate-cognito)"
  protocol          = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_blocks       = ["0.0.0.0/0"]
}

resource "aws_security_group_rule" "internet_egress" {
  for_each = local.internet_egress

  security_group_id = aws_security_group.this[each.value.group].id
  type              = "egress"
  description       = "packages and updates (port ${each.value.port})"
  protocol          = "tcp"
  from_port         = each.value.port
  to_port           = each.value.port
  cidr_blocks       = ["0.0.0.0/0"]
}
