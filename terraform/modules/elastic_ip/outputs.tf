output "allocation_id" {
  description = "The address's allocation ID."
  value       = try(aws_eip.this.id, null)
}

output "public_ip" {
  description = "The address."
  value       = try(aws_eip.this.public_ip, null)
}
