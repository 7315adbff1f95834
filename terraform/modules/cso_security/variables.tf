variable "name" {
  description = "Name prefix of the groups, e.g. cso-stage."
  type        = string
}

variable "vpc_id" {
  description = "The VPC the groups belong to."
  type        = string
}

# No defaults: who may reach the jump host and the Admin UI is decided per environment.
variable "admin_cidr_blocks" {
  description = "IPv4 CIDRs allowed to reach the jump host's SSH (22). Required."
  type        = list(string)
  nullable    = false

  validation {
    condition = length(var.admin_cidr_blocks) > 0 && alltrue([
      for cidr in var.admin_cidr_blocks : can(cidrnetmask(cidr)) && try(cidrsubnet(cidr, 0, 0) == cidr, false)
    ])
    error_message = "The cso_security module's admin_cidr_blocks must be a non-empty list of IPv4 CIDRs in network form, e.g. [\"203.0.113.0/24\"]."
  }
}

variable "ui_cidr_blocks" {
  description = "IPv4 CIDRs allowed to reach the Admin UI (admin_ui_port) on the load balancer or the jump host. Required."
  type        = list(string)
  nullable    = false

  validation {
    condition = length(var.ui_cidr_blocks) > 0 && alltrue([
      for cidr in var.ui_cidr_blocks : can(cidrnetmask(cidr)) && try(cidrsubnet(cidr, 0, 0) == cidr, false)
    ])
    error_message = "The cso_security module's ui_cidr_blocks must be a non-empty list of IPv4 CIDRs in network form, e.g. [\"203.0.113.0/24\"]."
  }
}

variable "create_alb_security_group" {
  description = "The load balancer's group: Admin UI in from ui_cidr_blocks, out to the frontends and to Cognito (ha)."
  type        = bool
  default     = false
}

variable "enable_jump_admin_ui" {
  description = "The jump host takes the Admin UI from ui_cidr_blocks and forwards it to the frontend (single, where there is no load balancer)."
  type        = bool
  default     = false
}

variable "admin_ui_port" {
  description = "The Admin UI's HTTPS port, on the load balancer or jump host and on the frontends."
  type        = number
  default     = 8102
}

variable "backend_port" {
  description = "The backend's port, reached from the frontends."
  type        = number
  default     = 8080
}

variable "keystone_port" {
  description = "Keystone's API port, reached from the backends."
  type        = number
  default     = 5000
}

variable "rabbitmq_tls_port" {
  description = "RabbitMQ's AMQPS port, reached from the backends and between the nodes."
  type        = number
  default     = 5671
}

variable "rabbitmq_epmd_port" {
  description = "RabbitMQ's epmd port, between the nodes."
  type        = number
  default     = 4369
}

variable "rabbitmq_dist_port" {
  description = "RabbitMQ's inter-node (Erlang distribution) port, between the nodes."
  type        = number
  default     = 25672
}

variable "database_port" {
  description = "The database's port (MySQL), reached from the backends and Keystone."
  type        = number
  default     = 3306
}

variable "tags" {
  description = "Tags merged into every resource."
  type        = map(string)
  default     = {}
}
