output "role_name" {
  description = "The role's name."
  value       = try(aws_iam_role.this.name, null)
}

output "role_arn" {
  description = "The role's ARN."
  value       = try(aws_iam_role.this.arn, null)
}

output "instance_profile_name" {
  description = "The instance profile to launch hosts with."
  value       = try(aws_iam_instance_profile.this.name, null)
}
