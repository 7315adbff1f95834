# VPC flow logs (enable_flow_logs): every accepted and rejected flow of the VPC goes to a
# CloudWatch log group, encrypted with a KMS key of its own (rotated yearly) and kept
# flow_logs_retention_in_days. The flow-logs service delivers them through a role that can write
# to that one group and nothing else. modules/network and modules/cso_network call it.

locals {
  log_group_name = "${var.name}-vpc-flow-logs"
  partition      = data.aws_partition.current.partition
  account_id     = data.aws_caller_identity.current.account_id
  log_group_arn  = "arn:${local.partition}:logs:${var.region}:${local.account_id}:log-group:${local.log_group_name}"
}

data "aws_partition" "current" {}

data "aws_caller_identity" "current" {}

# The account administers the key through IAM (the first statement is the key-policy default);
# CloudWatch Logs may use it only for this log group (the encryption context names the group).
resource "aws_kms_key" "this" {
  count = var.enable_flow_logs ? 1 : 0

  description             = "VPC flow logs of ${var.name}"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "AccountAdministersTheKeyThroughIAM"
        Effect    = "Allow"
        Principal = { AWS = "arn:${local.partition}:iam::${local.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        Sid       = "CloudWatchLogsForThisLogGroupOnly"
        Effect    = "Allow"
        Principal = { Service = "logs.${var.region}.amazonaws.com" }
        Action    = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
        Resource  = "*"
        Condition = {
          ArnEquals = { "kms:EncryptionContext:aws:logs:arn" = local.log_group_arn }
        }
      },
    ]
  })
  tags = merge(var.tags, { Name = local.log_group_name })
}

resource "aws_kms_alias" "this" {
  count = var.enable_flow_logs ? 1 : 0

  name          = "alias/${local.log_group_name}"
  target_key_id = aws_kms_key.this[0].key_id
}

resource "aws_cloudwatch_log_group" "this" {
  count = var.enable_flow_logs ? 1 : 0

  name              = local.log_group_name
  retention_in_days = var.flow_logs_retention_in_days
  kms_key_id        = aws_kms_key.this[0].arn
  tags              = merge(var.tags, { Name = local.log_group_name })
}

resource "aws_iam_role" "this" {
  count = var.enable_flow_logs ? 1 : 0

  name                 = "${var.name}-flow-logs"
  permissions_boundary = var.permissions_boundary
  # Only the flow-logs service, and only for flow logs of this account (confused-deputy guard).
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "vpc-flow-logs.amazonaws.com" }
      Action    = "sts:AssumeRole"
      Condition = {
        StringEquals = { "aws:SourceAccount" = local.account_id }
        ArnLike      = { "aws:SourceArn" = "arn:${local.partition}:ec2:${var.region}:${local.account_id}:vpc-flow-log/*" }
      }
    }]
  })
  tags = var.tags
}

# What the flow-logs documentation lists, narrowed to this log group (DescribeLogGroups has no
# narrower resource than the account's groups).
resource "aws_iam_role_policy" "this" {
  count = var.enable_flow_logs ? 1 : 0

  name = "${var.name}-flow-logs"
  role = aws_iam_role.this[0].id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid      = "WriteThisLogGroup"
        Effect   = "Allow"
        Action   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
        Resource = [local.log_group_arn, "${local.log_group_arn}:*"]
      },
      {
        Sid      = "FindTheLogGroup"
        Effect   = "Allow"
        Action   = "logs:DescribeLogGroups"
        Resource = "arn:${local.partition}:logs:${var.region}:${local.account_id}:log-group:*"
      },
    ]
  })
}

resource "aws_flow_log" "this" {
  count = var.enable_flow_logs ? 1 : 0

  vpc_id               = var.vpc_id
  traffic_type         = "ALL"
  log_destination_type = "cloud-watch-logs"
  log_destination      = aws_cloudwatch_log_group.this[0].arn
  iam_role_arn         = aws_iam_role.this[0].arn
  tags                 = merge(var.tags, { Name = var.name })
}
