variable "name" {
  description = "Name prefix of every resource, e.g. cso-stage."
  type        = string
}

variable "vpc_cidr" {
  description = "IPv4 CIDR of the VPC; its four /18 quarters (at the default /16) become the subnets: public .0 and .64, private .128 and .192."
  type        = string
  default     = "10.1.0.0/16"

  validation {
    condition     = can(cidrsubnet(var.vpc_cidr, 2, 3)) && try(cidrsubnet(var.vpc_cidr, 0, 0) == var.vpc_cidr, false)
    error_message = "The cso_network module's vpc_cidr must be an IPv4 CIDR in network form that can be cut in four, e.g. \"10.1.0.0/16\"."
  }
}

variable "availability_zones" {
  description = "The two availability zones, subnet A's first (more are ignored)."
  type        = list(string)

  validation {
    condition     = length(var.availability_zones) >= 2
    error_message = "The cso_network module needs two availability zones."
  }
}

variable "enable_nat_gateway" {
  description = "NAT gateways for the private subnets' outbound traffic."
  type        = bool
  default     = true
}

variable "single_nat_gateway" {
  description = "One NAT gateway (in public subnet A) for both private subnets instead of one per AZ."
  type        = bool
  default     = false
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
