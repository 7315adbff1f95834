output "dns_name" {
  description = "The load balancer's DNS name."
  value       = try(aws_lb.this.dns_name, null)
}

output "arn" {
  description = "The load balancer."
  value       = try(aws_lb.this.arn, null)
}

output "admin_ui_url" {
  description = "The Admin UI: https://<dns name>:<port>/."
  value       = try("${local.admin_ui_url}/", null)
}

output "listener_arn" {
  description = "The HTTPS listener."
  value       = try(aws_lb_listener.this.arn, null)
}

output "target_group_arn" {
  description = "The frontends' target group."
  value       = try(aws_lb_target_group.this.arn, null)
}

output "certificate_arn" {
  description = "The imported certificate."
  value       = try(aws_acm_certificate.this.arn, null)
}

output "user_pool_id" {
  description = "The Cognito user pool (add the Admin UI's users here)."
  value       = try(aws_cognito_user_pool.this.id, null)
}

output "user_pool_domain" {
  description = "The Cognito hosted UI's domain prefix."
  value       = try(aws_cognito_user_pool_domain.this.domain, null)
}

output "user_pool_client_id" {
  description = "The load balancer's Cognito app client."
  value       = try(aws_cognito_user_pool_client.this.id, null)
}
