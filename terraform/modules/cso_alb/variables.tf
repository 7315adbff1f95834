variable "name" {
  description = "Name of the load balancer, target group, user pool and client (at most 32 characters), e.g. cso-stage."
  type        = string

  validation {
    condition     = length(var.name) <= 32
    error_message = "The cso_alb module's name must be at most 32 characters (load balancer and target group names)."
  }
}

variable "vpc_id" {
  description = "The VPC of the targets."
  type        = string
}

variable "subnet_ids" {
  description = "The public subnets the load balancer is in (two AZs)."
  type        = list(string)
}

variable "security_group_ids" {
  description = "The load balancer's security groups."
  type        = list(string)
}

variable "target_instance_ids" {
  description = "The frontend instances, by a key known at plan time (e.g. frontend-1)."
  type        = map(string)
}

variable "admin_ui_port" {
  description = "The Admin UI's HTTPS port, on the load balancer and on the frontends."
  type        = number
  default     = 8102
}

variable "health_check_path" {
  description = "The frontends' health check path (HTTPS on admin_ui_port)."
  type        = string
  default     = "/"
}

variable "certificate_pem" {
  description = "The load balancer's certificate (PEM), imported into ACM."
  type        = string
}

variable "private_key_pem" {
  description = "The certificate's private key (PEM)."
  type        = string
  sensitive   = true
}

variable "certificate_chain_pem" {
  description = "The certificate's chain (PEM); null for a self-signed certificate."
  type        = string
  default     = null
}

variable "ssl_policy" {
  description = "The HTTPS listener's TLS policy (TLS 1.2 and 1.3 only by default)."
  type        = string
  default     = "ELBSecurityPolicy-TLS13-1-2-2021-06"
}

variable "cognito_domain_prefix" {
  description = "The Cognito hosted UI's domain prefix (global across AWS); null for <name>-<account id>."
  type        = string
  default     = null
}

variable "cognito_mfa_configuration" {
  description = "Cognito MFA: OFF, ON or OPTIONAL (TOTP apps)."
  type        = string
  default     = "OPTIONAL"
}

variable "session_timeout" {
  description = "How long the load balancer's authenticated session lasts, in seconds."
  type        = number
  default     = 28800
}

variable "enable_deletion_protection" {
  description = "Refuse to delete the load balancer (turn off, apply, then destroy)."
  type        = bool
  default     = true
}

variable "access_logs_bucket" {
  description = "An S3 bucket (with the ELB log-delivery policy) for the access logs; null for none."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags merged into every resource that takes tags on provider 3.39 (not the listener and its rule)."
  type        = map(string)
  default     = {}
}
