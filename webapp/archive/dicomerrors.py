"""Why a file cannot enter the archive: one exception and the DICOM failure reasons it carries."""
from __future__ import annotations

# DICOM storage failure reasons (PS3.4 Annex B / PS3.18 STOW-RS FailureReason).
OUT_OF_RESOURCES = 0xA700
DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000
TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122
PROCESSING_FAILURE = 0x0110


class InvalidDicom(Exception):
    """The file cannot be archived; ``str(exc)`` says why in words for the uploader.

    ``code`` is the DICOM failure reason that STOW-RS reports for it.
    """

    def __init__(self, reason: str, code: int = CANNOT_UNDERSTAND):
        super().__init__(reason)
        self.code = code
