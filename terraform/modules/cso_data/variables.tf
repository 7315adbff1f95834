variable "name" {
  description = "Name prefix of every resource, e.g. cso-stage (also the database identifier)."
  type        = string
}

variable "subnet_ids" {
  description = "The private subnets (one per AZ): the database's subnet group and the file system's mount targets."
  type        = list(string)
}

variable "security_group_ids" {
  description = "The database's security groups."
  type        = list(string)
}

variable "efs_security_group_ids" {
  description = "The file system's mount targets' security groups."
  type        = list(string)
}

variable "enable_multi_az" {
  description = "A standby database in a second AZ (Multi-AZ)."
  type        = bool
  default     = false
}

variable "db_engine_version" {
  description = "MySQL version (major, or major.minor)."
  type        = string
  default     = "8.0"
}

variable "db_instance_class" {
  description = "The database's instance class."
  type        = string
  default     = "db.m5.4xlarge"
}

variable "db_allocated_storage" {
  description = "The database's storage, in GiB."
  type        = number
  default     = 100
}

variable "db_max_allocated_storage" {
  description = "The ceiling storage autoscaling may grow the database to, in GiB."
  type        = number
  default     = 500
}

variable "db_username" {
  description = "The database's master user."
  type        = string
  default     = "cso_admin"
}

variable "db_password" {
  description = "The database's master password (also stored in Secrets Manager)."
  type        = string
  sensitive   = true
}

variable "rabbitmq_password" {
  description = "RabbitMQ's password, stored in Secrets Manager."
  type        = string
  sensitive   = true
}

variable "database_port" {
  description = "The database's port."
  type        = number
  default     = 3306
}

variable "db_backup_retention_period" {
  description = "Days of automated database backups."
  type        = number
  default     = 30
}

variable "enable_deletion_protection" {
  description = "Refuse to delete the database (turn off, apply, then destroy)."
  type        = bool
  default     = true
}

variable "skip_final_snapshot" {
  description = "Delete the database without a final snapshot (<name>-final-<creation time>)."
  type        = bool
  default     = false
}

variable "enable_performance_insights" {
  description = "RDS Performance Insights (7 days, encrypted with the storage key); not every small instance class supports it."
  type        = bool
  default     = true
}

variable "db_monitoring_interval" {
  description = "Enhanced monitoring's interval in seconds (1, 5, 10, 15, 30 or 60); 0 turns it off (and its role)."
  type        = number
  default     = 60

  validation {
    condition     = contains([0, 1, 5, 10, 15, 30, 60], var.db_monitoring_interval)
    error_message = "The cso_data module's db_monitoring_interval must be 0, 1, 5, 10, 15, 30 or 60."
  }
}

variable "region" {
  description = "The provider's region: the enhanced-monitoring role may write that region's RDSOSMetrics log group."
  type        = string
}

variable "permissions_boundary" {
  description = "ARN of the managed policy set as permissions boundary of the role this module creates (enhanced monitoring); null for none."
  type        = string
  default     = null
}

variable "efs_transition_to_ia" {
  description = "When files move to EFS Infrequent Access (an AFTER_N_DAYS value EFS accepts)."
  type        = string
  default     = "AFTER_30_DAYS"
}

variable "secret_recovery_window_in_days" {
  description = "Days a deleted secret can still be restored (0 deletes at once)."
  type        = number
  default     = 30
}

variable "kms_deletion_window_in_days" {
  description = "Days a deleted KMS key waits before it is gone."
  type        = number
  default     = 30
}

variable "tags" {
  description = "Tags merged into every resource."
  type        = map(string)
  default     = {}
}
