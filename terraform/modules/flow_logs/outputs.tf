output "flow_log_id" {
  description = "The VPC flow log (null unless enable_flow_logs)."
  value       = try(aws_flow_log.this[0].id, null)
}

output "log_group_name" {
  description = "The CloudWatch log group of the flow logs (null unless enable_flow_logs)."
  value       = try(aws_cloudwatch_log_group.this[0].name, null)
}

output "log_group_arn" {
  description = "The log group's ARN (null unless enable_flow_logs)."
  value       = try(aws_cloudwatch_log_group.this[0].arn, null)
}

output "kms_key_arn" {
  description = "The KMS key the log group is encrypted with (null unless enable_flow_logs)."
  value       = try(aws_kms_key.this[0].arn, null)
}

output "iam_role_arn" {
  description = "The role the flow-logs service delivers through (null unless enable_flow_logs)."
  value       = try(aws_iam_role.this[0].arn, null)
}
