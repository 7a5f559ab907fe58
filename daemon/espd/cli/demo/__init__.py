"""``espd demo``: two gateways and two hosts in network namespaces, traffic both ways."""
