variable "name" {
  description = "Name of the host and its key pairs."
  type        = string
}

variable "subnet_id" {
  description = "Subnet to launch in."
  type        = string
}

variable "security_group_ids" {
  description = "Security groups of the host."
  type        = list(string)
}

variable "instance_profile_name" {
  description = "IAM instance profile the host runs as."
  type        = string
}

variable "create_eip_association" {
  description = "Associate eip_allocation_id with the host."
  type        = bool
  default     = false
}

variable "eip_allocation_id" {
  description = "Elastic IP to associate when create_eip_association."
  type        = string
  default     = null
}

variable "instance_type" {
  description = "EC2 instance type."
  type        = string
  default     = "t3.small"
}

variable "ami_name_pattern" {
  description = "AMI name filter; the newest match owned by ami_owners is used (Amazon Linux 2023)."
  type        = string
  default     = "al2023-ami-2023.*-kernel-6.1-x86_64"
}

variable "ami_owners" {
  description = "Owners the AMI must come from."
  type        = list(string)
  default     = ["amazon"]
}

variable "create_key_pair" {
  description = "Create the host's own key pair (named after it) from public_key; false launches with key_name."
  type        = bool
  default     = true
}

variable "public_key" {
  description = "SSH public key installed as the instance's key pair (with create_key_pair)."
  type        = string
  default     = null
}

variable "key_name" {
  description = "An existing key pair to launch with when create_key_pair is false."
  type        = string
  default     = null
}

variable "additional_public_key" {
  description = "A second operator key, added to authorized_keys by user_data; empty for none."
  type        = string
  default     = ""
}

variable "user_data" {
  description = "Cloud-init user data (a shell script)."
  type        = string
  default     = null
}

variable "root_volume_size" {
  description = "Root volume size in GiB."
  type        = number
  default     = 20
}

variable "tags" {
  description = "Tags merged into every resource."
  type        = map(string)
  default     = {}
}
