"""espd: a userspace IPsec ESP data plane for Linux gateways."""

__version__ = "0.1.0"
