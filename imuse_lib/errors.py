"""Errors that reach users as one clear line (the CLI prints ``imuse: error: <msg>``)."""


class ImuseError(Exception):
    """Base class: the message alone must tell the user what is wrong and with what."""


class DataError(ImuseError):
    """A data file is missing, altered, unreadable or malformed."""


class MediaError(ImuseError):
    """An image or audio file cannot be decoded or is unusable (silent, too short...)."""


class WeightsError(ImuseError):
    """Pretrained weights that were asked for are not available."""


class ModelMismatchError(ImuseError):
    """A model, checkpoint or index does not match what it is used with."""


class CredentialsError(ImuseError):
    """A remote service needs credentials that are not set."""
