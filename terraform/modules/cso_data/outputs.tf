# The map is a bare for-expression, not try(...): it cannot fail, and try() of a map with an
# unknown element is wholly unknown.

output "secrets_kms_key_arn" {
  description = "The KMS key of the Secrets Manager secrets."
  value       = try(aws_kms_key.secrets.arn, null)
}

output "storage_kms_key_arn" {
  description = "The KMS key of the database and the file system."
  value       = try(aws_kms_key.storage.arn, null)
}

output "secret_arns" {
  description = "Secret ARN by name: db-password, rabbitmq-password."
  value       = { for name, secret in aws_secretsmanager_secret.this : name => secret.arn }
}

output "db_address" {
  description = "The database's DNS name."
  value       = try(aws_db_instance.this.address, null)
}

output "db_port" {
  description = "The database's port."
  value       = try(aws_db_instance.this.port, null)
}

output "db_identifier" {
  description = "The database instance's identifier."
  value       = try(aws_db_instance.this.identifier, null)
}

output "db_username" {
  description = "The database's master user."
  value       = try(aws_db_instance.this.username, null)
}

output "efs_id" {
  description = "The shared file system."
  value       = try(aws_efs_file_system.this.id, null)
}

output "efs_dns_name" {
  description = "The shared file system's DNS name (mount it from any private subnet)."
  value       = try(aws_efs_file_system.this.dns_name, null)
}
