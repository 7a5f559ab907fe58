"""The IKE SA and Child SA state an engine keeps."""
