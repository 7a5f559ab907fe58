"""Policy: the config model -> a plan of SAs, rules and routes."""
