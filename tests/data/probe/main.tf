# A test-only root: one real AWS resource through the real provider, and a resource whose
# apply takes as long as var.apply_seconds (for lock and Ctrl-C tests).
terraform {
  backend "s3" {}
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 3.39, < 7.0"
    }
  }
}

variable "deptype" {
  description = "Environment name."
  type        = string
}

variable "aws_region" {
  description = "Region."
  type        = string
}

variable "aws_endpoint_url" {
  description = "Non-AWS endpoint, or empty."
  type        = string
  default     = ""
}

variable "apply_seconds" {
  description = "How long the slow resource takes to create."
  type        = number
  default     = 0
}

variable "label" {
  description = "A value to change between runs."
  type        = string
  default     = "one"
}

provider "aws" {
  region                      = var.aws_region
  skip_credentials_validation = var.aws_endpoint_url != ""
  skip_metadata_api_check     = var.aws_endpoint_url != ""
  skip_region_validation      = var.aws_endpoint_url != ""
  skip_requesting_account_id  = var.aws_endpoint_url != ""
  endpoints {
    ec2 = var.aws_endpoint_url != "" ? var.aws_endpoint_url : null
    sts = var.aws_endpoint_url != "" ? var.aws_endpoint_url : null
    iam = var.aws_endpoint_url != "" ? var.aws_endpoint_url : null
  }
}

resource "aws_vpc" "this" {
  cidr_block = "10.42.0.0/16"
  tags = {
    Name  = "probe-${var.deptype}"
    Label = var.label
  }
}

resource "terraform_data" "slow" {
  triggers_replace = [var.label, var.apply_seconds]
  provisioner "local-exec" {
    command = "sleep ${var.apply_seconds}"
  }
}

output "vpc_id" {
  description = "The VPC."
  value       = aws_vpc.this.id
}

output "label" {
  description = "The label."
  value       = var.label
}
