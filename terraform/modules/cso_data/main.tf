# The CSO stack's data: two KMS keys (rotated yearly) — one for Secrets Manager, one for RDS and
# EFS —, the MySQL database (Multi-AZ with enable_multi_az, encrypted, 30 days of backups), the
# shared file system (encrypted, to Infrequent Access after efs_transition_to_ia, a mount target
# per subnet) and the two passwords as Secrets Manager secrets.

data "aws_partition" "current" {}

data "aws_caller_identity" "current" {}

locals {
  account_root = "arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"
  # The key-policy default: the account administers and uses the key through IAM policies, so
  # who may decrypt is decided by the roles' own policies (the jump host's, in terraform/cso).
  key_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "AccountAdministersTheKeyThroughIAM"
      Effect    = "Allow"
      Principal = { AWS = local.account_root }
      Action    = "kms:*"
      Resource  = "*"
    }]
  })
}

resource "aws_kms_key" "secrets" {
  description             = "Secrets Manager secrets of ${var.name}"
  enable_key_rotation     = true
  deletion_window_in_days = var.kms_deletion_window_in_days
  policy                  = local.key_policy
  tags                    = merge(var.tags, { Name = "${var.name}-secrets" })
}

resource "aws_kms_alias" "secrets" {
  name          = "alias/${var.name}-secrets"
  target_key_id = aws_kms_key.secrets.key_id
}

resource "aws_kms_key" "storage" {
  description             = "RDS and EFS storage of ${var.name}"
  enable_key_rotation     = true
  deletion_window_in_days = var.kms_deletion_window_in_days
  policy                  = local.key_policy
  tags                    = merge(var.tags, { Name = "${var.name}-storage" })
}

resource "aws_kms_alias" "storage" {
  name          = "alias/${var.name}-storage"
  target_key_id = aws_kms_key.storage.key_id
}

# --- Secrets ---------------------------------------------------------------------------------

resource "aws_secretsmanager_secret" "this" {
  for_each = toset(["db-password", "rabbitmq-password"])

  name                    = "${var.name}/${each.key}"
  description             = "CSO ${each.key} (${var.name})"
  kms_key_id              = aws_kms_key.secrets.arn
  recovery_window_in_days = var.secret_recovery_window_in_days
  tags                    = merge(var.tags, { Name = "${var.name}/${each.key}" })
}

resource "aws_secretsmanager_secret_version" "this" {
  for_each = aws_secretsmanager_secret.this

  secret_id     = each.value.id
  secret_string = each.key == "db-password" ? var.db_password : var.rabbitmq_password
}

# --- Database --------------------------------------------------------------------------------

# Enhanced monitoring's delivery role: only RDS's monitoring service, for this account, may assume
# it, and it may write the RDSOSMetrics log group of this region and nothing else (what AWS's
# AmazonRDSEnhancedMonitoringRole grants, narrowed to that group; inline, as the project attaches
# no AWS-managed policies).
locals {
  os_metrics_log_group = "arn:${data.aws_partition.current.partition}:logs:${var.region}:${data.aws_caller_identity.current.account_id}:log-group:RDSOSMetrics"
}

resource "aws_iam_role" "monitoring" {
  count = var.db_monitoring_interval > 0 ? 1 : 0

  name                 = "${var.name}-rds-monitoring"
  permissions_boundary = var.permissions_boundary
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "monitoring.rds.amazonaws.com" }
      Action    = "sts:AssumeRole"
      Condition = {
        StringEquals = { "aws:SourceAccount" = data.aws_caller_identity.current.account_id }
      }
    }]
  })
  tags = merge(var.tags, { Name = "${var.name}-rds-monitoring" })
}

resource "aws_iam_role_policy" "monitoring" {
  count = var.db_monitoring_interval > 0 ? 1 : 0

  name = "${var.name}-rds-monitoring"
  role = aws_iam_role.monitoring[0].id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid      = "TheOsMetricsLogGroup"
        Effect   = "Allow"
        Action   = ["logs:CreateLogGroup", "logs:PutRetentionPolicy"]
        Resource = local.os_metrics_log_group
      },
      {
        Sid      = "ItsLogStreams"
        Effect   = "Allow"
        Action   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams", "logs:GetLogEvents"]
        Resource = "${local.os_metrics_log_group}:log-stream:*"
      },
    ]
  })
}

resource "aws_db_subnet_group" "this" {
  name        = var.name
  description = "CSO database subnets (${var.name})"
  subnet_ids  = var.subnet_ids
  tags        = merge(var.tags, { Name = var.name })
}

resource "aws_db_instance" "this" {
  identifier     = var.name
  engine         = "mysql"
  engine_version = var.db_engine_version
  instance_class = var.db_instance_class
  username       = var.db_username
  # From a sensitive variable; it is in the state (see terraform/cso/README.md).
  password = var.db_password
  port     = var.database_port

  allocated_storage     = var.db_allocated_storage
  max_allocated_storage = var.db_max_allocated_storage
  storage_type          = "gp2"
  storage_encrypted     = true
  kms_key_id            = aws_kms_key.storage.arn

  multi_az               = var.enable_multi_az
  db_subnet_group_name   = aws_db_subnet_group.this.name
  vpc_security_group_ids = var.security_group_ids
  publicly_accessible    = false

  backup_retention_period  = var.db_backup_retention_period
  copy_tags_to_snapshot    = true
  delete_automated_backups = false
  deletion_protection      = var.enable_deletion_protection
  skip_final_snapshot      = var.skip_final_snapshot
  # Unique per database: a stack destroyed, re-created and destroyed again leaves two snapshots
  # rather than failing on the first one's name (the time is fixed at creation, see lifecycle).
  final_snapshot_identifier           = "${var.name}-final-${formatdate("YYYYMMDDhhmmss", timestamp())}"
  auto_minor_version_upgrade          = true
  iam_database_authentication_enabled = true
  enabled_cloudwatch_logs_exports     = ["error"]
  # Performance Insights (7 days, free) encrypted with the storage key; OS metrics every
  # db_monitoring_interval seconds through the enhanced-monitoring role.
  performance_insights_enabled          = var.enable_performance_insights
  performance_insights_kms_key_id       = var.enable_performance_insights ? aws_kms_key.storage.arn : null
  performance_insights_retention_period = var.enable_performance_insights ? 7 : null
  monitoring_interval                   = var.db_monitoring_interval
  monitoring_role_arn                   = var.db_monitoring_interval > 0 ? aws_iam_role.monitoring[0].arn : null
  # Multi-AZ and every other change take effect at once, not in the next maintenance window.
  apply_immediately = true

  tags = merge(var.tags, { Name = var.name })

  # RDS checks the monitoring role's permissions when it is given.
  depends_on = [aws_iam_role_policy.monitoring]

  lifecycle {
    ignore_changes = [final_snapshot_identifier]
  }
}

# --- Shared file system ------------------------------------------------------------------------

resource "aws_efs_file_system" "this" {
  creation_token = var.name
  encrypted      = true
  kms_key_id     = aws_kms_key.storage.arn

  lifecycle_policy {
    transition_to_ia = var.efs_transition_to_ia
  }

  tags = merge(var.tags, { Name = var.name })
}

resource "aws_efs_mount_target" "this" {
  count = length(var.subnet_ids)

  file_system_id  = aws_efs_file_system.this.id
  subnet_id       = var.subnet_ids[count.index]
  security_groups = var.efs_security_group_ids
}
