# Maps are bare for-expressions, not try(...): they cannot fail, and try() of a map with one
# unknown element is wholly unknown, which would plan a change on every host whenever a group
# is added.

output "security_group_ids" {
  description = "Group ID by role: jump, frontend, backend, keystone, rabbitmq, database, efs and (with create_alb_security_group) alb."
  value       = { for role, group in aws_security_group.this : role => group.id }
}

output "flows" {
  description = "Every allowed flow between two groups, by rule key: from, to, port."
  value       = { for key, f in local.flow_rules : key => { from = f.from, to = f.to, port = f.port } }
}
