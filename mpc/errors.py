"""The exception hierarchy of mpcgwas.

Every error a user or an operator can meet is one of these, with a message that
names the party, peer, phase, file or column involved.  ``assert`` is kept for
internal invariants only.
"""


class MpcError(Exception):
    """Base class of every error raised on purpose by mpcgwas."""


class ParamError(MpcError, ValueError):
    """Inconsistent or unsafe arithmetic / protocol parameters."""


class EncodingError(MpcError, ValueError):
    """A value cannot be represented in the fixed-point format."""


class InputError(MpcError, ValueError):
    """Bad user input: a malformed file, an unknown ID, a wrong shape."""


class ProtocolError(MpcError):
    """Parties disagree about the protocol (tag, dtype, shape, step) or a peer
    sent something malformed."""


class PeerTimeout(ProtocolError):
    """A peer stayed silent (no data, no heartbeat) for longer than allowed."""


class PeerAborted(ProtocolError):
    """A peer announced that it stopped because of an error of its own."""


class PolicyError(MpcError):
    """A reveal that the study's reveal policy does not list, or a request from
    a party that is not allowed to make it."""


class StorageError(MpcError):
    """Stored data failed verification (checksum, manifest) or cannot be written."""
