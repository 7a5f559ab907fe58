"""The ``espd`` command and its ``demo``."""
