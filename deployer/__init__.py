"""deployer: Terraform + SSH deployments from one command."""

__version__ = "0.1.0"
