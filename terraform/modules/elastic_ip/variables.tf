variable "name" {
  description = "Name tag of the address."
  type        = string
}

variable "tags" {
  description = "Tags of the address (applied with aws_ec2_tag, see main.tf)."
  type        = map(string)
  default     = {}
}
