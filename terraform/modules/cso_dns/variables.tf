variable "name" {
  description = "Name prefix (the zone's comment), e.g. cso-stage."
  type        = string
}

variable "zone_name" {
  description = "The private zone's name, e.g. stage.cso.internal."
  type        = string
}

variable "vpc_id" {
  description = "The VPC the zone answers in."
  type        = string
}

variable "a_records" {
  description = "Host name (relative to the zone) -> private IPv4 address. Keys must be known at plan time."
  type        = map(string)
  default     = {}
}

variable "cname_records" {
  description = "Name (relative to the zone) -> target DNS name, e.g. { db = <rds address> }. Keys must be known at plan time."
  type        = map(string)
  default     = {}
}

variable "ttl" {
  description = "The records' TTL, in seconds."
  type        = number
  default     = 60
}

variable "force_destroy" {
  description = "Delete records made outside Terraform when the zone is destroyed."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags merged into every resource that takes tags (the zone)."
  type        = map(string)
  default     = {}
}
