"""Errors the CLI turns into exit 2, defined apart from the modules that raise them so that
catching one does not load its engine (the Rego engine is only loaded when a policy runs)."""


class PolicyError(Exception):
    """The policy could not be loaded or evaluated; the message says where (``file:line``)."""
