"""The local cloud: a moto AWS endpoint on loopback, the offline AWS provider, emulated hosts."""
