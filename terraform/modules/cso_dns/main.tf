# The CSO hosts' names: a Route53 private zone, answered only inside the VPC, with an A record
# per host (frontend-1, backend-2, ...), per role a short name for its first host (frontend, ...)
# and CNAMEs such as db -> the RDS address.

resource "aws_route53_zone" "this" {
  name          = var.zone_name
  comment       = "CSO hosts (${var.name})"
  force_destroy = var.force_destroy

  vpc {
    vpc_id = var.vpc_id
  }

  tags = merge(var.tags, { Name = var.zone_name })
}

resource "aws_route53_record" "a" {
  for_each = var.a_records

  zone_id = aws_route53_zone.this.zone_id
  name    = each.key
  type    = "A"
  ttl     = var.ttl
  records = [each.value]
}

resource "aws_route53_record" "cname" {
  for_each = var.cname_records

  zone_id = aws_route53_zone.this.zone_id
  name    = each.key
  type    = "CNAME"
  ttl     = var.ttl
  records = [each.value]
}
