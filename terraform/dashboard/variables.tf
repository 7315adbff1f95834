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

variable "state_bucket" {
  description = "The state bucket (set by deploy), where the shared stack's state is read from."
  type        = string
}

variable "state_key_prefix" {
  description = "The environment's state key prefix (set by deploy), e.g. \"stage/\"."
  type        = string
}

variable "name_prefix" {
  description = "Prefix of every name (the project)."
  type        = string
  default     = "chronos"
}

variable "public_key" {
  description = "SSH public key of the host's key pair."
  type        = string
}

variable "additional_public_key" {
  description = "A second operator key (one OpenSSH public key line), added to authorized_keys by user_data; empty for none."
  type        = string
  default     = ""
  nullable    = false

  validation {
    condition     = var.additional_public_key == "" || can(regex("^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\\.com) [A-Za-z0-9+/]+={0,3}( [^\\r\\n]*)?$", var.additional_public_key))
    error_message = "TF_VAR_additional_public_key must be empty or one OpenSSH public key line: TYPE BASE64 [comment], e.g. \"ssh-ed25519 AAAA... you@laptop\" (no options, no line breaks)."
  }
}

variable "instance_type" {
  description = "EC2 instance type."
  type        = string
  default     = "t3.small"
}

variable "ssh_user" {
  description = "The AMI's login user."
  type        = string
  default     = "ec2-user"
  nullable    = false

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_-]{0,31}$", var.ssh_user))
    error_message = "TF_VAR_ssh_user must be a Linux user name: a lowercase letter or _, then up to 31 of a-z, 0-9, _ and -."
  }
}

variable "dashboard_port" {
  description = "The dashboard's HTTP port (must be one of shared's app_ports)."
  type        = number
  default     = 8080
}

variable "tags" {
  description = "Tags merged into every resource."
  type        = map(string)
  default     = {}
}
