variable "name" {
  description = "Name of the role and the instance profile."
  type        = string
}

variable "managed_policy_arns" {
  description = "Managed policies attached to the role (e.g. AmazonSSMManagedInstanceCore)."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags merged into every resource."
  type        = map(string)
  default     = {}
}
