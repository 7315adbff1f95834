# The lists are bare splats, not try(...): a splat cannot fail, and try() of a list with unknown
# elements is wholly unknown, which would hide its length (a count) from the plan.

output "vpc_id" {
  description = "The VPC."
  value       = try(aws_vpc.this.id, null)
}

output "vpc_cidr_block" {
  description = "The VPC's IPv4 block."
  value       = try(aws_vpc.this.cidr_block, null)
}

output "availability_zones" {
  description = "The two availability zones, in subnet order."
  value       = local.azs
}

output "public_subnet_ids" {
  description = "The public subnets, one per AZ (A first)."
  value       = aws_subnet.public[*].id
}

output "private_subnet_ids" {
  description = "The private subnets, one per AZ (A first)."
  value       = aws_subnet.private[*].id
}

output "public_subnet_cidrs" {
  description = "The public subnets' IPv4 blocks."
  value       = local.public_subnet_cidrs
}

output "private_subnet_cidrs" {
  description = "The private subnets' IPv4 blocks."
  value       = local.private_subnet_cidrs
}

output "internet_gateway_id" {
  description = "The internet gateway."
  value       = try(aws_internet_gateway.this.id, null)
}

output "nat_gateway_ids" {
  description = "The NAT gateways (one, or one per AZ)."
  value       = aws_nat_gateway.this[*].id
}

output "nat_public_ips" {
  description = "The NAT gateways' Elastic IPs: the private hosts' outbound addresses."
  value       = module.nat_eip[*].public_ip
}

output "public_route_table_id" {
  description = "The public subnets' route table."
  value       = try(aws_route_table.public.id, null)
}

output "private_route_table_ids" {
  description = "The private subnets' route tables, one per AZ."
  value       = aws_route_table.private[*].id
}

output "default_security_group_id" {
  description = "The VPC's default security group (adopted with no rules)."
  value       = try(aws_default_security_group.this.id, null)
}

output "flow_log_group_name" {
  description = "The CloudWatch log group of the VPC flow logs (null unless enable_flow_logs)."
  value       = module.flow_logs.log_group_name
}
