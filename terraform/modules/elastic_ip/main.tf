# An Elastic IP that works with the AWS provider 3.39 and with 5.x/6.x: it sets neither `vpc`
# (removed in 5.x) nor `domain` (unknown to 3.39); EC2-VPC accounts allocate VPC addresses by
# default. Tags go through aws_ec2_tag for the same reason (3.39 cannot tag an EIP at create
# time the way 5.x does), so the address itself ignores its tags. A VPC address's `id` is its
# allocation ID in every provider version; 3.39 leaves `allocation_id` empty on some endpoints.

resource "aws_eip" "this" {
  lifecycle {
    ignore_changes = [tags]
  }
}

resource "aws_ec2_tag" "this" {
  for_each = merge(var.tags, { Name = var.name })

  resource_id = aws_eip.this.id
  key         = each.key
  value       = each.value
}
