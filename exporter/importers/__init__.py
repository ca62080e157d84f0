"""Importers for foreign weight formats: turn them into Hugging Face folders the family specs can load.

Why a separate package: each importer only knows a file layout and a name mapping; what happens after (export,
quantize, package) stays the family spec's business.
"""

from mmedge.exporter.importers.ctranslate2 import import_ctranslate2_whisper, is_ctranslate2_whisper

__all__ = ["import_ctranslate2_whisper", "is_ctranslate2_whisper"]
