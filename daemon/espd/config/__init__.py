"""The configuration: the model, its TOML and IOS front ends, key files, ACLs, transforms."""
