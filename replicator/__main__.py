from replicator.cli.main import entry

entry()
