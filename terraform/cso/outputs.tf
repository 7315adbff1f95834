output "topology" {
  description = "The topology applied: single or ha."
  value       = var.topology
}

output "ssh_user" {
  description = "The user to SSH in as, on every host."
  value       = var.ssh_user
}

output "jump_address" {
  description = "The jump host's public address (its Elastic IP)."
  value       = try(local.jump_address, null)
}

output "jump_ssh" {
  description = "user@address of the jump host: the -J of every other host."
  value       = try("${var.ssh_user}@${local.jump_address}", null)
}

output "ssh_command" {
  description = "How to log in to the jump host."
  value       = try("ssh ${var.ssh_user}@${local.jump_address}", null)
}

output "role_private_ips" {
  description = "Private IPv4 addresses by role (jump, frontend, backend, keystone, rabbitmq), host 1 first."
  value       = try(local.role_private_ips, {})
}

output "frontend_hosts" {
  description = "The frontends' private addresses (deploy's role host list)."
  value       = try(local.role_private_ips["frontend"], [])
}

output "backend_hosts" {
  description = "The backends' private addresses (deploy's role host list)."
  value       = try(local.role_private_ips["backend"], [])
}

output "keystone_hosts" {
  description = "The Keystone hosts' private addresses (deploy's role host list)."
  value       = try(local.role_private_ips["keystone"], [])
}

output "rabbitmq_hosts" {
  description = "The RabbitMQ hosts' private addresses (deploy's role host list)."
  value       = try(local.role_private_ips["rabbitmq"], [])
}

output "role_ssh_commands" {
  description = "How to log in to each private host through the jump host, by role."
  value = try({
    for role, ips in local.role_private_ips : role => [
      for ip in ips : "ssh -J ${var.ssh_user}@${local.jump_address} ${var.ssh_user}@${ip}"
    ] if role != "jump"
  }, {})
}

output "admin_ui_url" {
  description = "The Admin UI: the load balancer (ha, behind Cognito) or the jump host, which forwards it to the frontend (single)."
  value       = try(local.ha ? module.alb[0].admin_ui_url : "https://${local.jump_address}:${local.admin_ui_port}/", null)
}

output "alb_dns_name" {
  description = "The load balancer's DNS name (ha); empty in single."
  value       = try(module.alb[0].dns_name, "")
}

output "cognito_user_pool_id" {
  description = "The Cognito user pool the Admin UI's users are added to (ha); empty in single."
  value       = try(module.alb[0].user_pool_id, "")
}

output "db_address" {
  description = "The database's DNS name (also db.<dns_zone> inside the VPC)."
  value       = try(module.data.db_address, null)
}

output "db_secret_arn" {
  description = "The Secrets Manager secret holding the database password."
  value       = try(module.data.secret_arns["db-password"], null)
}

output "rabbitmq_secret_arn" {
  description = "The Secrets Manager secret holding the RabbitMQ password."
  value       = try(module.data.secret_arns["rabbitmq-password"], null)
}

output "efs_id" {
  description = "The shared file system (mounted at /opt/scripts)."
  value       = try(module.data.efs_id, null)
}

output "dns_zone" {
  description = "The private DNS zone of the hosts."
  value       = local.dns_zone
}

output "vpc_id" {
  description = "The VPC."
  value       = try(module.network.vpc_id, null)
}

output "nat_public_ips" {
  description = "The NAT gateways' addresses: where the private hosts' outbound traffic comes from."
  value       = try(module.network.nat_public_ips, [])
}
