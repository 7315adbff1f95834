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

variable "ssh_cidr_blocks" {
  description = "IPv4 CIDRs allowed to reach SSH (22)."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "app_cidr_blocks" {
  description = "IPv4 CIDRs allowed to reach the app ports."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "app_ports" {
  description = "TCP ports the app serves (HTTP, HTTPS, the dashboard, frp)."
  type        = list(number)
  default     = [80, 443, 8080, 7000]
}

variable "tags" {
  description = "Tags merged into every resource."
  type        = map(string)
  default     = {}
}
