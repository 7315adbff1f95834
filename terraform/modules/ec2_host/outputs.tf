output "instance_id" {
  description = "The instance."
  value       = try(aws_instance.this.id, null)
}

output "ami_id" {
  description = "The AMI the instance was launched from."
  value       = try(aws_instance.this.ami, null)
}

output "private_ip" {
  description = "The instance's private IPv4 address."
  value       = try(aws_instance.this.private_ip, null)
}

output "public_ip" {
  description = "The Elastic IP when associated, else the instance's public IPv4 address."
  value       = try(aws_eip_association.this[0].public_ip, aws_instance.this.public_ip, null)
}
