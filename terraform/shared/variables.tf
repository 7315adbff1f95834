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

variable "ssh_cidr_blocks" {
  description = "IPv4 CIDRs allowed to reach SSH."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "app_cidr_blocks" {
  description = "IPv4 CIDRs allowed to reach the app ports."
  type        = list(string)
  default     = ["0.0.0.0/0"]
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

variable "tags" {
  description = "Tags merged into every resource."
  type        = map(string)
  default     = {}
}
