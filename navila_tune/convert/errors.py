"""The one error type conversions raise for bad input."""

from __future__ import annotations


class ConversionError(ValueError):
    """Bad input to a conversion: the message names the file or tensor, the value and the fix."""
