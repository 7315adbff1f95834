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
