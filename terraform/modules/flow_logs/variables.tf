variable "name" {
  description = "Name prefix of every resource, e.g. chronos-prod: the log group and the key's alias are <name>-vpc-flow-logs, the role <name>-flow-logs."
  type        = string
}

variable "vpc_id" {
  description = "The VPC whose flows are logged."
  type        = string
}

variable "enable_flow_logs" {
  description = "VPC flow logs (all traffic) to a CloudWatch log group encrypted with a KMS key of its own; false creates nothing."
  type        = bool
  default     = true
}

variable "flow_logs_retention_in_days" {
  description = "How long the flow-log group keeps its events, in days (a value CloudWatch Logs accepts)."
  type        = number
  default     = 365
}

variable "region" {
  description = "The provider's region: the key's policy names the regional CloudWatch Logs service, the ARNs the region."
  type        = string
}

variable "permissions_boundary" {
  description = "ARN of the managed policy set as permissions boundary of the delivery role; null for none."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags merged into every resource."
  type        = map(string)
  default     = {}
}
