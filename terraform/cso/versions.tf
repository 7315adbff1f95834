terraform {
  required_version = ">= 1.5"

  # Partial: `deploy` passes the rest (-backend-config=deployments/backend-<env>-<profile>.hcl
  # and key=<env>/cso.tfstate).
  backend "s3" {}

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 3.39, < 7.0"
    }
  }
}
