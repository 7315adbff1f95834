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
  description = "Prefix of every name (the system)."
  type        = string
  default     = "cso"
}

variable "topology" {
  description = "\"single\": one host per role in AZ A, one NAT gateway, the Admin UI through the jump host; \"ha\": two hosts per role across two AZs, a NAT gateway per AZ, Multi-AZ RDS, the Admin UI behind a load balancer with Cognito."
  type        = string
  default     = "single"
  nullable    = false

  validation {
    condition     = contains(["single", "ha"], var.topology)
    error_message = "TF_VAR_topology must be \"single\" or \"ha\"."
  }
}

variable "vpc_cidr" {
  description = "IPv4 CIDR of the VPC; the subnets are its quarters (/18s of a /16): public A and B, then private A and B."
  type        = string
  default     = "10.1.0.0/16"

  validation {
    condition     = can(cidrsubnet(var.vpc_cidr, 2, 3)) && try(cidrsubnet(var.vpc_cidr, 0, 0) == var.vpc_cidr, false)
    error_message = "TF_VAR_vpc_cidr must be an IPv4 CIDR in network form, /28 or wider, e.g. \"10.1.0.0/16\"."
  }
}

variable "availability_zones" {
  description = "The two availability zones (A, then B); empty takes the region's first two available ones."
  type        = list(string)
  default     = []
  nullable    = false

  validation {
    condition     = length(var.availability_zones) == 0 || length(var.availability_zones) == 2
    error_message = "TF_VAR_availability_zones must be empty or two zones, e.g. [\"eu-west-2a\", \"eu-west-2c\"]."
  }
}

# No defaults: who may reach the jump host and the Admin UI is decided per environment.
variable "admin_cidr_blocks" {
  description = "IPv4 CIDRs allowed to reach the jump host's SSH (22): TF_VAR_admin_cidr_blocks, an HCL list such as [\"203.0.113.0/24\"]."
  type        = list(string)
  nullable    = false

  validation {
    condition = length(var.admin_cidr_blocks) > 0 && alltrue([
      for cidr in var.admin_cidr_blocks : can(cidrnetmask(cidr)) && try(cidrsubnet(cidr, 0, 0) == cidr, false)
    ])
    error_message = "TF_VAR_admin_cidr_blocks (who may reach the jump host's SSH) must be a non-empty HCL list of IPv4 CIDRs in network form, e.g. TF_VAR_admin_cidr_blocks=[\"203.0.113.0/24\"], in deployments/env-<ENV>."
  }
}

variable "ui_cidr_blocks" {
  description = "IPv4 CIDRs allowed to reach the Admin UI (8102, on the load balancer in ha, on the jump host in single): TF_VAR_ui_cidr_blocks, e.g. [\"203.0.113.0/24\"]."
  type        = list(string)
  nullable    = false

  validation {
    condition = length(var.ui_cidr_blocks) > 0 && alltrue([
      for cidr in var.ui_cidr_blocks : can(cidrnetmask(cidr)) && try(cidrsubnet(cidr, 0, 0) == cidr, false)
    ])
    error_message = "TF_VAR_ui_cidr_blocks (who may reach the Admin UI) must be a non-empty HCL list of IPv4 CIDRs in network form, e.g. TF_VAR_ui_cidr_blocks=[\"203.0.113.0/24\"], in deployments/env-<ENV>."
  }
}

variable "public_key" {
  description = "SSH public key of the hosts' key pair (every host, the jump host included)."
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

variable "jump_instance_type" {
  description = "The jump host's instance type."
  type        = string
  default     = "t2.large"
}

variable "frontend_instance_type" {
  description = "The frontends' instance type."
  type        = string
  default     = "c5.2xlarge"
}

variable "backend_instance_type" {
  description = "The backends' instance type."
  type        = string
  default     = "c5.4xlarge"
}

variable "keystone_instance_type" {
  description = "The Keystone hosts' instance type."
  type        = string
  default     = "t2.xlarge"
}

variable "rabbitmq_instance_type" {
  description = "The RabbitMQ hosts' instance type."
  type        = string
  default     = "t2.xlarge"
}

variable "root_volume_size" {
  description = "Every host's root volume (gp3, encrypted), in GiB."
  type        = number
  default     = 50
}

variable "backend_port" {
  description = "The backend's port, reached from the frontends."
  type        = number
  default     = 8080
}

variable "db_engine_version" {
  description = "MySQL version of the database (major, or major.minor)."
  type        = string
  default     = "8.0"
}

variable "db_instance_class" {
  description = "The database's instance class."
  type        = string
  default     = "db.m5.4xlarge"
}

variable "db_allocated_storage" {
  description = "The database's storage, in GiB (autoscaling up to 5 times that)."
  type        = number
  default     = 100
}

variable "db_password" {
  description = "The database's master password (8-41 printable ASCII characters, none of / \" @ or space); kept in Secrets Manager too. It is in the state: see README.md."
  type        = string
  sensitive   = true

  validation {
    condition     = can(regex("^[!#-.0-?A-~]{8,41}$", var.db_password))
    error_message = "TF_VAR_db_password must be 8 to 41 printable ASCII characters other than / \" @ and space (what RDS for MySQL accepts)."
  }
}

variable "rabbitmq_password" {
  description = "RabbitMQ's password, kept in Secrets Manager for the jump host to configure the nodes with."
  type        = string
  sensitive   = true

  validation {
    condition     = length(var.rabbitmq_password) >= 12
    error_message = "TF_VAR_rabbitmq_password must be at least 12 characters."
  }
}

variable "alb_certificate_pem" {
  description = "The load balancer's TLS certificate (PEM), imported into ACM (ha; deploy generates the pair once)."
  type        = string
  default     = null
}

variable "alb_private_key_pem" {
  description = "The load balancer certificate's private key (PEM; ha). It is in the state: see README.md."
  type        = string
  default     = null
  sensitive   = true
}

variable "cognito_domain_prefix" {
  description = "The Cognito hosted UI's domain prefix (global across AWS; ha); null for <name_prefix>-<deptype>-<account id>."
  type        = string
  default     = null
}

variable "alb_access_logs_bucket" {
  description = "An S3 bucket (with the ELB log-delivery bucket policy) for the load balancer's access logs (ha); null for none."
  type        = string
  default     = null
}

variable "enable_deletion_protection" {
  description = "Deletion protection on the database and the load balancer (apply false before a destroy); null (the default) turns it on for prod only."
  type        = bool
  default     = null
}

variable "skip_final_snapshot" {
  description = "Destroy the database without its final snapshot (<name_prefix>-<deptype>-final-<creation time>)."
  type        = bool
  default     = false
}

variable "secret_recovery_window_in_days" {
  description = "Days a destroyed secret can still be restored (7-30), or 0: deleted at once, so the stack can be re-created under the same names; null (the default) is 30 for prod, 0 elsewhere."
  type        = number
  default     = null

  validation {
    condition     = var.secret_recovery_window_in_days == null || try(var.secret_recovery_window_in_days == 0 || (var.secret_recovery_window_in_days >= 7 && var.secret_recovery_window_in_days <= 30), false)
    error_message = "TF_VAR_secret_recovery_window_in_days must be 0 or 7 to 30."
  }
}

variable "dns_zone" {
  description = "The private DNS zone of the hosts; null for <deptype>.cso.internal."
  type        = string
  default     = null
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
  description = "ARN of the permissions boundary set on every role this stack creates; null for none."
  type        = string
  default     = null

  validation {
    condition     = var.permissions_boundary == null || can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:policy/.+$", var.permissions_boundary))
    error_message = "TF_VAR_permissions_boundary must be the ARN of a managed policy, e.g. arn:aws:iam::123456789012:policy/cso-permissions-boundary."
  }
}

variable "tags" {
  description = "Tags merged into every resource."
  type        = map(string)
  default     = {}
}
