"""The IKEv2 exchanges in protocol order, each as the requests it builds and the
messages it processes: ike_sa_init, ike_auth, create_child_sa, informational; what the
first two share with CREATE_CHILD_SA (a Child SA's proposal, selectors, keys) is in
child_setup; payload conversions between the codec and the engine's types in payloads."""
