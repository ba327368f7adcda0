"""One exception family for everything fedmap reports to a user.

Callers (the CLI, the Flower apps) catch :class:`FedMapError` and print its
message as one line; anything else is a bug and keeps its traceback.
"""


class FedMapError(Exception):
    """Base class of every error fedmap raises on purpose."""


class ConfigError(FedMapError, ValueError):
    """A configuration field is unknown, missing or has a bad value; the message names the field."""


class DataError(FedMapError):
    """A dataset is missing, unreadable or malformed; the message names the path or the key."""


class CodecError(FedMapError, ValueError):
    """Bytes on the wire cannot be decoded: truncated, oversized, garbled or of a wrong version."""


class ProtocolError(FedMapError):
    """Server and client disagree about the round state (mask version, mask, lengths)."""


class UpdateRejected(FedMapError):
    """A client reply failed validation and must not reach the global model."""


class CheckpointError(FedMapError):
    """A checkpoint is missing, unreadable, fails its checksum or belongs to another run."""
