variable "deptype" {
  description = "The environment (stage, prod, ...): TF_VAR_deptype in deployments/env-<ENV>."
  type        = string
}

variable "aws_region" {
  description = "AWS region (set by deploy from AWS_REGION)."
  type        = string
}

variable "aws_endpoint_url" {
  description = "A non-AWS endpoint (set by deploy from AWS_ENDPOINT_URL); empty for AWS."
  type        = string
  default     = ""
}

variable "name_prefix" {
  description = "Prefix of every name (the project)."
  type        = string
  default     = "chronos"
}

variable "vpc_cidr" {
  description = "IPv4 CIDR of the VPC."
  type        = string
  default     = "10.20.0.0/16"
}

variable "subnet_cidr" {
  description = "IPv4 CIDR of the public subnet."
  type        = string
  default     = "10.20.1.0/24"
}

variable "enable_ipv6" {
  description = "IPv6 for the VPC and the subnet, with a ::/0 route to the internet gateway."
  type        = bool
  default     = true
}

# No defaults: who may reach the hosts is decided per environment, in its env file.
variable "ssh_cidr_blocks" {
  description = "IPv4 CIDRs allowed to reach SSH (22): TF_VAR_ssh_cidr_blocks, an HCL list such as [\"203.0.113.0/24\"]."
  type        = list(string)
  nullable    = false

  validation {
    condition = length(var.ssh_cidr_blocks) > 0 && alltrue([
      for cidr in var.ssh_cidr_blocks : can(cidrnetmask(cidr)) && try(cidrsubnet(cidr, 0, 0) == cidr, false)
    ])
    error_message = "TF_VAR_ssh_cidr_blocks (who may reach SSH) must be a non-empty HCL list of IPv4 CIDRs in network form, e.g. TF_VAR_ssh_cidr_blocks=[\"203.0.113.0/24\"], in deployments/env-<ENV>."
  }
}

variable "app_cidr_blocks" {
  description = "IPv4 CIDRs allowed to reach the app ports: TF_VAR_app_cidr_blocks, e.g. [\"0.0.0.0/0\"] for a public app."
  type        = list(string)
  nullable    = false

  validation {
    condition = length(var.app_cidr_blocks) > 0 && alltrue([
      for cidr in var.app_cidr_blocks : can(cidrnetmask(cidr)) && try(cidrsubnet(cidr, 0, 0) == cidr, false)
    ])
    error_message = "TF_VAR_app_cidr_blocks (who may reach the app ports) must be a non-empty HCL list of IPv4 CIDRs in network form, e.g. TF_VAR_app_cidr_blocks=[\"0.0.0.0/0\"], in deployments/env-<ENV>."
  }
}

variable "app_ports" {
  description = "TCP ports the app serves: HTTP, HTTPS, the dashboard, frp."
  type        = list(number)
  default     = [80, 443, 8080, 7000]
}

variable "eip_environments" {
  description = "The environments that get an Elastic IP (the dashboard host of each)."
  type        = list(string)
  default     = ["stage", "prod"]
}

variable "enable_flow_logs" {
  description = "VPC flow logs to an encrypted CloudWatch log group; null (the default) turns them on for prod only."
  type        = bool
  default     = null
}

variable "flow_logs_retention_in_days" {
  description = "How long the flow logs are kept, in days (a value CloudWatch Logs accepts)."
  type        = number
  default     = 365
}

variable "permissions_boundary" {
  description = "ARN of the permissions boundary set on every role this stack creates (required by modules/policies' deployment policy); null for none."
  type        = string
  default     = null

  validation {
    condition     = var.permissions_boundary == null || can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:policy/.+$", var.permissions_boundary))
    error_message = "TF_VAR_permissions_boundary must be the ARN of a managed policy, e.g. arn:aws:iam::123456789012:policy/chronos-permissions-boundary."
  }
}

variable "tags" {
  description = "Tags merged into every resource."
  type        = map(string)
  default     = {}
}
