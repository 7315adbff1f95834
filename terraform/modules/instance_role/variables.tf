variable "name" {
  description = "Name of the role and the instance profile."
  type        = string
}

variable "managed_policy_arns" {
  description = "Managed policies attached to the role (e.g. AmazonSSMManagedInstanceCore)."
  type        = list(string)
  default     = []
}

variable "create_inline_policy" {
  description = "Give the role inline_policy as an inline policy of its own."
  type        = bool
  default     = false
}

variable "inline_policy" {
  description = "The inline policy's JSON document (with create_inline_policy)."
  type        = string
  default     = null
}

variable "permissions_boundary" {
  description = "ARN of the managed policy set as the role's permissions boundary; null for none."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags merged into every resource."
  type        = map(string)
  default     = {}
}
