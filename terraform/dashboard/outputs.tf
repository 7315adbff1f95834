output "host_address" {
  description = "The host's public address (the environment's Elastic IP)."
  value       = try(module.host.public_ip, null)
}

output "ssh_user" {
  description = "The user to SSH in as."
  value       = var.ssh_user
}

output "ssh_command" {
  description = "How to log in."
  value       = try("ssh ${var.ssh_user}@${module.host.public_ip}", null)
}

output "dashboard_url" {
  description = "The dashboard."
  value       = try("http://${module.host.public_ip}:${var.dashboard_port}/", null)
}

output "dashboard_port" {
  description = "The dashboard's HTTP port."
  value       = var.dashboard_port
}

output "instance_id" {
  description = "The EC2 instance."
  value       = try(module.host.instance_id, null)
}
