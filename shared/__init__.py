"""Code both Engine Jobs processes share: the wire contract, logging and HTTP plumbing."""
