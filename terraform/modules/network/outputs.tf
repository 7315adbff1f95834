output "vpc_id" {
  description = "The VPC."
  value       = try(aws_vpc.this.id, null)
}

output "vpc_ipv6_cidr_block" {
  description = "The VPC's IPv6 block (null without IPv6)."
  value       = try(aws_vpc.this.ipv6_cidr_block, null)
}

output "subnet_id" {
  description = "The public subnet."
  value       = try(aws_subnet.public.id, null)
}

output "security_group_id" {
  description = "The hosts' security group."
  value       = try(aws_security_group.this.id, null)
}

output "network_acl_id" {
  description = "The public subnet's network ACL."
  value       = try(aws_network_acl.this.id, null)
}

output "internet_gateway_id" {
  description = "The internet gateway."
  value       = try(aws_internet_gateway.this.id, null)
}

output "default_security_group_id" {
  description = "The VPC's default security group (adopted with no rules)."
  value       = try(aws_default_security_group.this.id, null)
}

output "flow_log_id" {
  description = "The VPC flow log (null unless enable_flow_logs)."
  value       = module.flow_logs.flow_log_id
}

output "flow_log_group_name" {
  description = "The CloudWatch log group of the VPC flow logs (null unless enable_flow_logs)."
  value       = module.flow_logs.log_group_name
}
