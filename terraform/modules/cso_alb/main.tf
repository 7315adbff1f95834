# The Admin UI's load balancer (ha): an internet-facing ALB in the public subnets, HTTPS on
# admin_ui_port with a certificate imported into ACM, a target group of the frontends (HTTPS:
# they serve TLS on the same port), and a Cognito user pool every request is authenticated
# against (a listener rule matching every path: authenticate-cognito, then forward). The
# listener's default action forwards too, as the architecture has it; the rule, matching "/*",
# is what every request meets first.

data "aws_partition" "current" {}

data "aws_caller_identity" "current" {}

locals {
  # Cognito domain prefixes are global across AWS accounts; the account ID keeps ours apart.
  cognito_domain = coalesce(var.cognito_domain_prefix, "${var.name}-${data.aws_caller_identity.current.account_id}")
  admin_ui_url   = "https://${aws_lb.this.dns_name}:${var.admin_ui_port}"
}

resource "aws_lb" "this" {
  name                       = var.name
  load_balancer_type         = "application"
  internal                   = false
  subnets                    = var.subnet_ids
  security_groups            = var.security_group_ids
  drop_invalid_header_fields = true
  enable_deletion_protection = var.enable_deletion_protection

  dynamic "access_logs" {
    for_each = var.access_logs_bucket == null ? [] : [var.access_logs_bucket]

    content {
      bucket  = access_logs.value
      prefix  = var.name
      enabled = true
    }
  }

  tags = merge(var.tags, { Name = var.name })
}

resource "aws_lb_target_group" "this" {
  name        = var.name
  port        = var.admin_ui_port
  protocol    = "HTTPS"
  target_type = "instance"
  vpc_id      = var.vpc_id

  health_check {
    enabled  = true
    protocol = "HTTPS"
    port     = "traffic-port"
    path     = var.health_check_path
    matcher  = "200-399"
  }

  tags = merge(var.tags, { Name = var.name })
}

resource "aws_lb_target_group_attachment" "this" {
  for_each = var.target_instance_ids

  target_group_arn = aws_lb_target_group.this.arn
  target_id        = each.value
  port             = var.admin_ui_port
}

# The pair deploy generates once; the private key is in the state (terraform/cso/README.md).
resource "aws_acm_certificate" "this" {
  certificate_body  = var.certificate_pem
  private_key       = var.private_key_pem
  certificate_chain = var.certificate_chain_pem
  tags              = merge(var.tags, { Name = var.name })

  lifecycle {
    create_before_destroy = true

    precondition {
      condition     = var.certificate_pem != null && var.private_key_pem != null
      error_message = "The ha topology's load balancer needs its certificate and key: TF_VAR_alb_certificate_pem and TF_VAR_alb_private_key_pem (PEM)."
    }
  }
}

resource "aws_lb_listener" "this" {
  load_balancer_arn = aws_lb.this.arn
  port              = var.admin_ui_port
  protocol          = "HTTPS"
  ssl_policy        = var.ssl_policy
  certificate_arn   = aws_acm_certificate.this.arn

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.this.arn
  }
}

# --- Cognito ---------------------------------------------------------------------------------

# Users are made by an administrator (no self sign-up): whoever is in the pool may use the UI.
resource "aws_cognito_user_pool" "this" {
  name                     = var.name
  auto_verified_attributes = ["email"]
  username_attributes      = ["email"]
  mfa_configuration        = var.cognito_mfa_configuration

  software_token_mfa_configuration {
    enabled = true
  }

  admin_create_user_config {
    allow_admin_create_user_only = true
  }

  password_policy {
    minimum_length                   = 14
    require_lowercase                = true
    require_uppercase                = true
    require_numbers                  = true
    require_symbols                  = true
    temporary_password_validity_days = 3
  }

  account_recovery_setting {
    recovery_mechanism {
      name     = "verified_email"
      priority = 1
    }
  }

  tags = merge(var.tags, { Name = var.name })
}

resource "aws_cognito_user_pool_domain" "this" {
  domain       = local.cognito_domain
  user_pool_id = aws_cognito_user_pool.this.id
}

# The load balancer is the OAuth2 client: code flow, a client secret, and its own
# /oauth2/idpresponse as the only callback.
resource "aws_cognito_user_pool_client" "this" {
  name                                 = var.name
  user_pool_id                         = aws_cognito_user_pool.this.id
  generate_secret                      = true
  allowed_oauth_flows                  = ["code"]
  allowed_oauth_flows_user_pool_client = true
  allowed_oauth_scopes                 = ["openid", "email"]
  supported_identity_providers         = ["COGNITO"]
  callback_urls                        = ["${local.admin_ui_url}/oauth2/idpresponse"]
  prevent_user_existence_errors        = "ENABLED"
}

resource "aws_lb_listener_rule" "this" {
  listener_arn = aws_lb_listener.this.arn
  priority     = 1

  action {
    type = "authenticate-cognito"

    authenticate_cognito {
      user_pool_arn              = aws_cognito_user_pool.this.arn
      user_pool_client_id        = aws_cognito_user_pool_client.this.id
      user_pool_domain           = aws_cognito_user_pool_domain.this.domain
      on_unauthenticated_request = "authenticate"
      scope                      = "openid email"
      session_timeout            = var.session_timeout
    }
  }

  action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.this.arn
  }

  condition {
    path_pattern {
      values = ["/*"]
    }
  }
}
