output "vpc_id" {
  description = "The VPC."
  value       = module.network.vpc_id
}

output "vpc_ipv6_cidr_block" {
  description = "The VPC's IPv6 block."
  value       = module.network.vpc_ipv6_cidr_block
}

output "subnet_id" {
  description = "The public subnet the hosts launch in."
  value       = module.network.subnet_id
}

output "security_group_id" {
  description = "The hosts' security group."
  value       = module.network.security_group_id
}

output "network_acl_id" {
  description = "The public subnet's network ACL."
  value       = module.network.network_acl_id
}

output "eip_allocation_ids" {
  description = "Elastic IP allocation IDs by environment."
  value       = { for env, eip in module.elastic_ip : env => eip.allocation_id }
}

output "eip_public_ips" {
  description = "Elastic IP addresses by environment."
  value       = { for env, eip in module.elastic_ip : env => eip.public_ip }
}

output "instance_profile_name" {
  description = "The instance profile the hosts run as."
  value       = module.instance_role.instance_profile_name
}

output "flow_log_group_name" {
  description = "The CloudWatch log group of the VPC flow logs (null when they are off)."
  value       = module.network.flow_log_group_name
}
