"""Errors the CLI turns into exit 2, defined apart from the modules that raise them so that
catching one does not load its machinery (the Rego engine is only loaded when a policy runs,
the waivers parser when there is a waivers file)."""


class PolicyError(Exception):
    """The policy could not be loaded or evaluated; the message says where (``file:line``)."""


class WaiverError(Exception):
    """The waivers file is invalid; the message starts with ``file:line:``."""


class BaselineError(Exception):
    """The baseline report cannot be used (unreadable, not an mlsec JSON report, or a stage)."""
