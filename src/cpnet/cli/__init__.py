"""The `cpnet` command line: a thin shell over the SDK (`cpnet.client.Client`)."""
