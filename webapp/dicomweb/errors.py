"""Errors answered the way PS3.18 says, as JSON a person can read."""
from __future__ import annotations

from django.http import JsonResponse


class DicomWebError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message

    def response(self) -> JsonResponse:
        return JsonResponse({"error": self.message, "status": self.status}, status=self.status)


def bad_request(message: str) -> DicomWebError:
    return DicomWebError(400, message)


def not_acceptable(message: str) -> DicomWebError:
    return DicomWebError(406, message)
