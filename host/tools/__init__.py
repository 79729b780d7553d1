"""The `natsedge` command-line tools: they use the hub and the edge, and nothing in host/ imports them."""
