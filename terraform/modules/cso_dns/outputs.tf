output "zone_id" {
  description = "The private zone."
  value       = try(aws_route53_zone.this.zone_id, null)
}

output "zone_name" {
  description = "The private zone's name."
  value       = try(aws_route53_zone.this.name, null)
}

# A bare merge of for-expressions (cannot fail; try() would make it wholly unknown in a plan).
output "fqdns" {
  description = "Every record's fully qualified name, by its short name."
  value = merge(
    { for name, record in aws_route53_record.a : name => record.fqdn },
    { for name, record in aws_route53_record.cname : name => record.fqdn },
  )
}
