"""The typed errors of mmedge.

Every error a user can cause (bad input, a missing engine, a damaged package) is one of these, and its
message names the fix. Rooms raise them instead of letting an engine's traceback escape; the CLI turns
them into a one-line message and a non-zero exit code (``exit_code``).
"""

from __future__ import annotations


class MmedgeError(Exception):
    """Base class of every error mmedge raises on purpose."""

    exit_code = 1


class UsageError(MmedgeError):
    """An argument or option is invalid (unknown family, device, engine, variant, bad flag value)."""

    exit_code = 2


class UnknownFamilyError(UsageError):
    """The model family is not registered or could not be detected from the config."""


class UnknownDeviceError(UsageError):
    """The device name is not one of the known device profiles."""


class PackageError(MmedgeError):
    """A model package is missing, incomplete, damaged or written by an unknown schema version."""

    exit_code = 3


class SchemaVersionError(PackageError):
    """The manifest's ``schema_version`` is not one this mmedge can read."""


class ChecksumError(PackageError):
    """A file of the package does not match the sha256 recorded in the manifest."""


class EngineUnavailableError(MmedgeError):
    """The engine (onnxruntime, openvino, litert) needed for a run is not installed or cannot load a file."""

    exit_code = 4


class InputError(MmedgeError):
    """A task input (image, text, audio, tensor) cannot be used; the message says what to give instead."""

    exit_code = 5


class StaticShapeError(InputError):
    """An input exceeds the static-shape contract of the artifact (sequence length, batch, image size)."""


class ExportError(MmedgeError):
    """Loading, converting or writing a model failed."""

    exit_code = 6


class ParityError(ExportError):
    """An exported file's outputs differ from PyTorch beyond the family's tolerance."""


class BudgetError(MmedgeError):
    """A compressed variant cannot meet its accuracy budget, even with its most sensitive layers kept in float;
    nothing was written. The message gives the best value reached and what to change."""

    exit_code = 7
