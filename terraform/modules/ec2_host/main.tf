# One EC2 host, optionally on an Elastic IP. The AMI is looked up by name and owner; a newer AMI
# release does not replace a running host (ignore_changes = [ami]): replacing it is a deliberate
# act. The key pair is the host's own unless create_key_pair is false (hosts sharing one).

data "aws_ami" "this" {
  most_recent = true
  owners      = var.ami_owners

  filter {
    name   = "name"
    values = [var.ami_name_pattern]
  }

  filter {
    name   = "architecture"
    values = ["x86_64"]
  }
}

resource "aws_key_pair" "this" {
  count = var.create_key_pair ? 1 : 0

  key_name   = var.name
  public_key = var.public_key
  tags       = var.tags
}

# The key pair had no count before create_key_pair: existing states keep it.
moved {
  from = aws_key_pair.this
  to   = aws_key_pair.this[0]
}

# Security groups go in `vpc_security_group_ids` with `subnet_id` (not a network_interface
# block and no associate_public_ip_address): the subnet assigns the public IP, and the groups
# are read back as the instance's own.
resource "aws_instance" "this" {
  ami                    = data.aws_ami.this.id
  instance_type          = var.instance_type
  subnet_id              = var.subnet_id
  vpc_security_group_ids = var.security_group_ids
  iam_instance_profile   = var.instance_profile_name
  key_name               = var.create_key_pair ? one(aws_key_pair.this[*].key_name) : var.key_name
  user_data              = var.user_data

  root_block_device {
    volume_size = var.root_volume_size
    volume_type = "gp3"
    encrypted   = true
  }

  metadata_options {
    http_tokens   = "required"
    http_endpoint = "enabled"
  }

  tags        = merge(var.tags, { Name = var.name })
  volume_tags = merge(var.tags, { Name = var.name })

  lifecycle {
    ignore_changes = [ami]
  }
}

resource "aws_eip_association" "this" {
  count = var.create_eip_association ? 1 : 0

  instance_id   = aws_instance.this.id
  allocation_id = var.eip_allocation_id
}
