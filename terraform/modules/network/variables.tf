variable "name" {
  description = "Name prefix of every resource, e.g. chronos-stage."
  type        = string
}

variable "vpc_cidr" {
  description = "IPv4 CIDR of the VPC."
  type        = string
  default     = "10.20.0.0/16"
}

variable "subnet_cidr" {
  description = "IPv4 CIDR of the public subnet (inside vpc_cidr)."
  type        = string
  default     = "10.20.1.0/24"
}

variable "availability_zone" {
  description = "Availability zone of the public subnet; null lets AWS choose."
  type        = string
  default     = null
}

variable "enable_ipv6" {
  description = "Give the VPC an Amazon-provided IPv6 block and the subnet a /64 of it."
  type        = bool
  default     = true
}

# No defaults: who may reach the hosts is a decision per environment, never "everyone" by accident.
variable "ssh_cidr_blocks" {
  description = "IPv4 CIDRs allowed to reach SSH (22), e.g. [\"203.0.113.0/24\"]. Required."
  type        = list(string)
  nullable    = false

  validation {
    condition = length(var.ssh_cidr_blocks) > 0 && alltrue([
      for cidr in var.ssh_cidr_blocks : can(cidrnetmask(cidr)) && try(cidrsubnet(cidr, 0, 0) == cidr, false)
    ])
    error_message = "The network module's ssh_cidr_blocks must be a non-empty list of IPv4 CIDRs in network form, e.g. [\"203.0.113.0/24\"]."
  }
}

variable "app_cidr_blocks" {
  description = "IPv4 CIDRs allowed to reach the app ports, e.g. [\"0.0.0.0/0\"] for a public app. Required."
  type        = list(string)
  nullable    = false

  validation {
    condition = length(var.app_cidr_blocks) > 0 && alltrue([
      for cidr in var.app_cidr_blocks : can(cidrnetmask(cidr)) && try(cidrsubnet(cidr, 0, 0) == cidr, false)
    ])
    error_message = "The network module's app_cidr_blocks must be a non-empty list of IPv4 CIDRs in network form, e.g. [\"203.0.113.0/24\"]."
  }
}

variable "app_ports" {
  description = "TCP ports the app serves (HTTP, HTTPS, the dashboard, frp)."
  type        = list(number)
  default     = [80, 443, 8080, 7000]
}

variable "enable_flow_logs" {
  description = "VPC flow logs (all traffic) to a CloudWatch log group encrypted with a KMS key of its own."
  type        = bool
  default     = false
}

variable "flow_logs_retention_in_days" {
  description = "How long the flow-log group keeps its events, in days (a value CloudWatch Logs accepts)."
  type        = number
  default     = 365
}

variable "region" {
  description = "The provider's region: the flow-log key's policy names the regional CloudWatch Logs service."
  type        = string
}

variable "permissions_boundary" {
  description = "ARN of the managed policy set as permissions boundary of the roles this module creates; null for none."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags merged into every resource."
  type        = map(string)
  default     = {}
}
