from deployer.cli import entry

entry()
