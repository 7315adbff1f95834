# The CSO network (terraform-aws-vpc's shape, two AZs): a VPC, an internet gateway, a public and
# a private subnet per AZ (/18s cut from vpc_cidr: public at .0 and .64, private at .128 and
# .192), NAT gateways on their own Elastic IPs (one per AZ, or a single one every private subnet
# uses), a route table per tier (public: one; private: one per AZ, to that AZ's NAT or the single
# one), the VPC's default security group adopted with no rules, and optional flow logs
# (modules/flow_logs). Nothing here is reachable yet: the security groups are
# modules/cso_security's.

locals {
  azs = slice(var.availability_zones, 0, 2)
  # /16 -> /18 (newbits 2): netnums 0 and 1 are the public subnets, 2 and 3 the private ones.
  public_subnet_cidrs  = [for i in range(2) : cidrsubnet(var.vpc_cidr, 2, i)]
  private_subnet_cidrs = [for i in range(2) : cidrsubnet(var.vpc_cidr, 2, i + 2)]
  nat_gateway_count    = var.enable_nat_gateway ? (var.single_nat_gateway ? 1 : length(local.azs)) : 0
}

resource "aws_vpc" "this" {
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true
  tags                 = merge(var.tags, { Name = var.name })
}

resource "aws_internet_gateway" "this" {
  vpc_id = aws_vpc.this.id
  tags   = merge(var.tags, { Name = var.name })
}

# Nothing launched in a public subnet gets a public address by itself: the jump host and the NAT
# gateways have Elastic IPs, the load balancer its own addresses.
resource "aws_subnet" "public" {
  count = length(local.azs)

  vpc_id            = aws_vpc.this.id
  cidr_block        = local.public_subnet_cidrs[count.index]
  availability_zone = local.azs[count.index]
  tags              = merge(var.tags, { Name = "${var.name}-public-${local.azs[count.index]}", Tier = "public" })
}

resource "aws_subnet" "private" {
  count = length(local.azs)

  vpc_id            = aws_vpc.this.id
  cidr_block        = local.private_subnet_cidrs[count.index]
  availability_zone = local.azs[count.index]
  tags              = merge(var.tags, { Name = "${var.name}-private-${local.azs[count.index]}", Tier = "private" })
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.this.id
  tags   = merge(var.tags, { Name = "${var.name}-public", Tier = "public" })
}

resource "aws_route" "public_internet_gateway" {
  route_table_id         = aws_route_table.public.id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = aws_internet_gateway.this.id
}

resource "aws_route_table_association" "public" {
  count = length(local.azs)

  subnet_id      = aws_subnet.public[count.index].id
  route_table_id = aws_route_table.public.id
}

# The NAT gateways' addresses (modules/elastic_ip: valid on provider 3.39 and 5.x/6.x alike).
module "nat_eip" {
  source = "../elastic_ip"
  count  = local.nat_gateway_count

  name = "${var.name}-nat-${local.azs[count.index]}"
  tags = var.tags
}

resource "aws_nat_gateway" "this" {
  count = local.nat_gateway_count

  allocation_id = module.nat_eip[count.index].allocation_id
  subnet_id     = aws_subnet.public[count.index].id
  tags          = merge(var.tags, { Name = "${var.name}-${local.azs[count.index]}" })

  depends_on = [aws_internet_gateway.this]
}

# One private route table per AZ whether there are one or two NAT gateways, so that going from
# one to two changes a route's target and nothing else.
resource "aws_route_table" "private" {
  count = length(local.azs)

  vpc_id = aws_vpc.this.id
  tags   = merge(var.tags, { Name = "${var.name}-private-${local.azs[count.index]}", Tier = "private" })
}

resource "aws_route" "private_nat_gateway" {
  count = local.nat_gateway_count > 0 ? length(local.azs) : 0

  route_table_id         = aws_route_table.private[count.index].id
  destination_cidr_block = "0.0.0.0/0"
  nat_gateway_id         = aws_nat_gateway.this[min(count.index, local.nat_gateway_count - 1)].id
}

resource "aws_route_table_association" "private" {
  count = length(local.azs)

  subnet_id      = aws_subnet.private[count.index].id
  route_table_id = aws_route_table.private[count.index].id
}

# The VPC's default security group, adopted with every rule removed: anything launched without
# an explicit group can neither be reached nor reach out.
resource "aws_default_security_group" "this" {
  vpc_id = aws_vpc.this.id
  tags   = merge(var.tags, { Name = "${var.name}-default-deny-all" })
}

# VPC flow logs (enable_flow_logs, off by default: they cost per GB), as modules/flow_logs has them.
module "flow_logs" {
  source = "../flow_logs"

  name                        = var.name
  vpc_id                      = aws_vpc.this.id
  enable_flow_logs            = var.enable_flow_logs
  flow_logs_retention_in_days = var.flow_logs_retention_in_days
  region                      = var.region
  permissions_boundary        = var.permissions_boundary

  tags = var.tags
}
